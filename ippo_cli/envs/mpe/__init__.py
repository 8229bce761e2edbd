"""Batched numpy versions of mpe2's scenarios (``env.backend=batched``).

``core.py`` holds the world every scenario shares (state arrays, physics, action decoding,
autoreset, the vector-env interface), ``draws.py`` the start draws in mpe2's order, and one
module per scenario its entities, starts, observations and rewards, as mpe2 itself does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ippo_cli.envs.mpe.collect_treasure import BatchedCollectTreasure
from ippo_cli.envs.mpe.core import BatchedMPE
from ippo_cli.envs.mpe.simple import BatchedSimple
from ippo_cli.envs.mpe.simple_adversary import BatchedSimpleAdversary
from ippo_cli.envs.mpe.simple_crypto import BatchedSimpleCrypto
from ippo_cli.envs.mpe.simple_formation import BatchedSimpleFormation
from ippo_cli.envs.mpe.simple_line import BatchedSimpleLine
from ippo_cli.envs.mpe.simple_push import BatchedSimplePush
from ippo_cli.envs.mpe.simple_reference import BatchedSimpleReference
from ippo_cli.envs.mpe.simple_spread import BatchedSimpleSpread
from ippo_cli.envs.mpe.simple_tag import BatchedSimpleTag
from ippo_cli.envs.mpe.simple_world_comm import BatchedSimpleWorldComm
from ippo_cli.envs.mpe.speaker_listener import BatchedSpeakerListener

BATCHED_ENVS: dict[str, type[BatchedMPE]] = {
    f"mpe2.{cls.mpe2_name}.parallel_env": cls
    for cls in (
        BatchedSimple,
        BatchedSimpleAdversary,
        BatchedSimpleCrypto,
        BatchedSimplePush,
        BatchedSimpleReference,
        BatchedSpeakerListener,
        BatchedSimpleSpread,
        BatchedSimpleTag,
        BatchedSimpleWorldComm,
        BatchedSimpleLine,
        BatchedSimpleFormation,
        BatchedCollectTreasure,
    )
}


def batched_support(factory: str, kwargs: Mapping[str, Any], wrappers: Sequence[Any]) -> str | None:
    """Why an env config cannot run with ``env.backend=batched`` (None: it can)."""
    cls = BATCHED_ENVS.get(factory)
    if cls is None:
        known = ", ".join(cls.mpe2_name for cls in BATCHED_ENVS.values())
        return f"env.factory={factory} has no batched version (batched mpe2: {known})"
    if wrappers:
        return "env.backend=batched takes no env.wrappers"
    try:
        cls(1, **kwargs)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def make_batched_env(
    factory: str, kwargs: Mapping[str, Any], wrappers: Sequence[Any], num_envs: int
) -> BatchedMPE:
    """The batched env for an mpe2 factory path and its kwargs; ValueError if there is none."""
    problem = batched_support(factory, kwargs, wrappers)
    if problem is not None:
        raise ValueError(problem)
    return BATCHED_ENVS[factory](num_envs, **kwargs)


__all__ = ["BATCHED_ENVS", "BatchedMPE", "batched_support", "make_batched_env"]
