"""Space helpers shared by the algorithm and the checkpoint format.

Spaces are stored in checkpoints as plain data (dicts of lists and strings), so that a
checkpoint loads with ``torch.load(weights_only=True)`` and never needs pickled objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

SUPPORTED_ACTION_SPACES = (spaces.Discrete, spaces.Box)
SUPPORTED_OBSERVATION_SPACES = (spaces.Box,)


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """Describe a space as plain data (inverse of :func:`space_from_dict`)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(np.atleast_1d(space.n).tolist())}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(v) for k, v in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_dict(s) for s in space.spaces]}
    raise TypeError(f"cannot store space {space!r}")


def space_from_dict(data: dict[str, Any]) -> spaces.Space:
    """Rebuild a space stored by :func:`space_to_dict`."""
    kind = data["type"]
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        low = np.asarray(data["low"], dtype=dtype).reshape(data["shape"])
        high = np.asarray(data["high"], dtype=dtype).reshape(data["shape"])
        return spaces.Box(low=low, high=high, shape=tuple(data["shape"]), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"])
    if kind == "MultiBinary":
        n = data["n"]
        return spaces.MultiBinary(n[0] if len(n) == 1 else n)
    if kind == "Dict":
        return spaces.Dict({k: space_from_dict(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_dict(s) for s in data["spaces"]])
    raise ValueError(f"unknown space type {kind!r} in checkpoint")


def action_dim(space: spaces.Space) -> int:
    """Number of network outputs needed to parameterise a distribution over ``space``."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    raise unsupported(space, "action")


def observation_dim(space: spaces.Space) -> int:
    """Length of the flat float vector a vector encoder receives for ``space``."""
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    raise unsupported(space, "observation")


def unsupported(space: spaces.Space, role: str) -> TypeError:
    return TypeError(
        f"unsupported {role} space {space}; supported: Box observations, Discrete and Box actions"
    )
