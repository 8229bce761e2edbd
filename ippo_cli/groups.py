"""Agent groups: agents whose ids share the prefix before the final ``_`` form a group."""


def group_id_of(agent_id: str) -> str:
    """The group of an agent: its id up to the final ``_`` (``bob_0`` -> ``bob``)."""
    return agent_id.rsplit("_", 1)[0]
