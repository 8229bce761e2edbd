"""Space helpers shared by the algorithm and the checkpoint format.

Spaces are stored in checkpoints as plain data (dicts of lists and strings), so that a
checkpoint loads with ``torch.load(weights_only=True)`` and never needs pickled objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

SUPPORTED_ACTION_SPACES = (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)
SUPPORTED_OBSERVATION_SPACES = (
    spaces.Box,
    spaces.Discrete,
    spaces.MultiDiscrete,
    spaces.MultiBinary,
    spaces.Dict,
    spaces.Tuple,
)
SUPPORTED_OBSERVATIONS_TEXT = (
    "Box (vector, or image of 3 dims), Discrete, 1-D MultiDiscrete, MultiBinary, "
    "and a Dict or Tuple of these (one level, not nested)"
)
SUPPORTED_ACTIONS_TEXT = "Discrete, Box, 1-D MultiDiscrete and MultiBinary"


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """Describe a space as plain data (inverse of :func:`space_from_dict`)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": _bound_to_data(space.low),
            "high": _bound_to_data(space.high),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(np.atleast_1d(space.n).tolist())}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(v) for k, v in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_dict(s) for s in space.spaces]}
    raise TypeError(f"cannot store space {describe(space)}")


def space_from_dict(data: dict[str, Any]) -> spaces.Space:
    """Rebuild a space stored by :func:`space_to_dict`."""
    kind = data["type"]
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(data["shape"])
        low = np.broadcast_to(np.asarray(data["low"], dtype=dtype), shape).copy()
        high = np.broadcast_to(np.asarray(data["high"], dtype=dtype), shape).copy()
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(
            data["nvec"], dtype=data.get("dtype", "int64"), start=data.get("start")
        )
    if kind == "MultiBinary":
        n = data["n"]
        return spaces.MultiBinary(n[0] if len(n) == 1 else n)
    if kind == "Dict":
        return spaces.Dict({k: space_from_dict(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_dict(s) for s in data["spaces"]])
    raise ValueError(f"unknown space type {kind!r} in checkpoint")


def _bound_to_data(bound: np.ndarray) -> Any:
    """A Box bound as plain data: one number when uniform (images), else nested lists."""
    flat = bound.reshape(-1)
    if flat.size > 0 and (flat == flat[0]).all():
        return flat[0].item()
    return bound.tolist()


def action_dim(space: spaces.Space) -> int:
    """Number of network outputs needed to parameterise a distribution over ``space``."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return int(space.nvec.sum())
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape))
    raise unsupported(space, "action")


def action_shape(space: spaces.Space) -> tuple[int, ...]:
    """Storage shape of one action as the actor produces it: () for Discrete, else (k,).

    k is the number of sub-actions (``len(nvec)``) for MultiDiscrete and the number of
    elements for Box and MultiBinary (multi-dimensional ones are flattened).
    """
    if isinstance(space, spaces.Discrete):
        return ()
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return (len(space.nvec),)
    if isinstance(space, spaces.Box | spaces.MultiBinary):
        return (int(np.prod(space.shape)),)
    raise unsupported(space, "action")


def action_is_integer(space: spaces.Space) -> bool:
    """Whether actions are stored as integers (Discrete, MultiDiscrete) rather than floats.

    MultiBinary actions are sampled as 0./1. floats.
    """
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        action_shape(space)  # rejects multi-dimensional MultiDiscrete
        return True
    if isinstance(space, spaces.Box | spaces.MultiBinary):
        return False
    raise unsupported(space, "action")


def check_action_space(space: spaces.Space, role: str = "action") -> None:
    """Raise the one-line TypeError of :func:`unsupported` if ``space`` cannot be an action."""
    if not isinstance(space, SUPPORTED_ACTION_SPACES) or (
        isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim != 1
    ):
        raise unsupported(space, role)


def describe(space: Any, limit: int = 200) -> str:
    """``repr(space)`` on one line, shortened to ``limit`` characters."""
    text = " ".join(repr(space).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unsupported(space: spaces.Space, role: str, reason: str = "") -> TypeError:
    """The one-line error for a space this package cannot handle in ``role``.

    ``role`` starts with "action" or "observation" (e.g. ``"observation of agent 'a'"``);
    ``reason`` optionally says what is wrong with an otherwise supported type.
    """
    supported = SUPPORTED_ACTIONS_TEXT if role.startswith("action") else SUPPORTED_OBSERVATIONS_TEXT
    kind = "action" if role.startswith("action") else "observation"
    why = f" ({reason})" if reason else ""
    return TypeError(
        f"{role}: unsupported space {describe(space)}{why}; supported {kind} spaces: {supported}"
    )
