"""Action masks and env-defined actions, read from PettingZoo infos.

``info[agent]["action_mask"]`` (1 = legal) restricts a Discrete, MultiDiscrete or
MultiBinary action; ``info[agent]["env_defined_actions"]`` (None = the policy acts)
imposes an action on the agent. Both arrive either as one env's raw info, or collated by
the vector env as ``(num_envs, ...)`` arrays with a ``_key`` mask of the envs that gave
one. The functions here return one layout for a group: (env, agent-in-group, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces


def mask_dim(space: spaces.Space) -> int | None:
    """Length of an action mask for ``space`` (None: the space takes no mask)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape))
    return None


def _entry(info: Any, key: str, num_envs: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(values with a leading env axis, which envs provided one) for one agent's info."""
    provided = np.zeros(num_envs, dtype=bool)
    if not isinstance(info, Mapping) or info.get(key) is None:
        return None, provided
    value = info[key]
    flags = info.get("_" + key)
    if flags is not None:  # collated by the vector env
        provided[:] = np.asarray(flags, dtype=bool)
        if value.dtype == object:  # envs disagreed on shape; keep the ones given
            rows = [np.asarray(v) if p else None for v, p in zip(value, provided, strict=True)]
            return rows, provided
        return np.asarray(value), provided
    value = np.asarray(value)
    provided[:] = True
    # One env's raw info (a single row) applies to every env of the batch.
    return (
        np.broadcast_to(value, (num_envs, *value.shape)) if value.ndim <= 1 else value
    ), provided


def action_masks(
    infos: Mapping[str, Any] | None,
    agents: Sequence[str],
    space: spaces.Space,
    num_envs: int,
    active: np.ndarray | None = None,
) -> np.ndarray | None:
    """Boolean masks ``(num_envs, len(agents), mask_dim)``, or None if no agent gave one.

    Envs and agents without a mask get all-True rows. A mask of the wrong length, a mask
    on a Box space, or one that allows no action for an active agent is an error.
    """
    if not infos:
        return None
    dim = mask_dim(space)
    out: np.ndarray | None = None
    for i, agent in enumerate(agents):
        value, provided = _entry(infos.get(agent), "action_mask", num_envs)
        if value is None or not provided.any():
            continue
        if dim is None:
            raise ValueError(
                f"action_mask given for agent '{agent}', but masks are not supported for "
                f"its action space {space}"
            )
        if out is None:
            out = np.ones((num_envs, len(agents), dim), dtype=bool)
        for e in np.flatnonzero(provided):
            row = np.asarray(value[e]).reshape(-1)
            if row.shape[0] != dim:
                raise ValueError(
                    f"action_mask of agent '{agent}' has length {row.shape[0]}; its action "
                    f"space {space} needs {dim}"
                )
            out[e, i] = row.astype(bool)
        _check_some_action_allowed(out[:, i], agent, space, active, i)
    return out


def _check_some_action_allowed(
    masks: np.ndarray, agent: str, space: spaces.Space, active: np.ndarray | None, i: int
) -> None:
    if isinstance(space, spaces.MultiBinary):
        return  # all bits masked just forces every bit to 0
    live = np.ones(masks.shape[0], bool) if active is None else active[:, i]
    if isinstance(space, spaces.MultiDiscrete):
        bounds = np.cumsum(np.asarray(space.nvec).reshape(-1))[:-1]
        empty = np.stack([s.any(-1) for s in np.split(masks, bounds, axis=-1)], -1).all(-1)
        empty = ~empty
    else:
        empty = ~masks.any(-1)
    bad = np.flatnonzero(empty & live)
    if bad.size:
        raise ValueError(f"action_mask of agent '{agent}' allows no action (env {bad[0]})")


def env_defined_actions(
    infos: Mapping[str, Any] | None,
    agents: Sequence[str],
    space: spaces.Space,
    num_envs: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(actions (num_envs, len(agents), *action_shape), imposed (num_envs, len(agents)))``
    for env-defined actions, or None when no agent has one.

    Discrete spaces take a one-value array; other spaces an action-shaped array. Rows
    that are None or NaN leave the choice to the policy.
    """
    if not infos:
        return None
    shape = () if isinstance(space, spaces.Discrete) else tuple(space.shape)
    actions: np.ndarray | None = None
    imposed = np.zeros((num_envs, len(agents)), dtype=bool)
    for i, agent in enumerate(agents):
        value, provided = _entry(infos.get(agent), "env_defined_actions", num_envs)
        if value is None or not provided.any():
            continue
        if actions is None:
            actions = np.zeros((num_envs, len(agents), *shape), dtype=np.float64)
        for e in np.flatnonzero(provided):
            row = np.asarray(value[e], dtype=np.float64)
            if np.isnan(row).any():
                continue
            expected = (1,) if shape == () else shape
            if row.reshape(-1).shape != (int(np.prod(expected)),):
                raise ValueError(
                    f"env_defined_actions of agent '{agent}' has shape {row.shape}; its "
                    f"action space {space} needs {expected}"
                )
            actions[e, i] = row.reshape(shape) if shape else row.reshape(-1)[0]
            imposed[e, i] = True
    if actions is None or not imposed.any():
        return None
    return actions, imposed
