"""Cross-play for `ippo eval`: who plays each agent group of a checkpoint.

Each group plays with the checkpoint's own policy unless ``+replace.<group>=...`` names
another: ``random`` (uniform over the action space) or a checkpoint (or run directory)
whose policy for the same group takes over. A replacement must have the group, with the
same agents and the same observation and action spaces.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from ippo_cli import checkpoint
from ippo_cli.checkpoint import CheckpointError
from ippo_cli.ippo import IPPO
from ippo_cli.masks import action_masks, env_defined_actions

RANDOM = "random"


class RandomPolicy:
    """Uniform over each agent's action space: among the legal actions where the env gives
    an action mask, and the env's own action where it defines one. It samples even when
    asked to act deterministically (a uniform distribution has no mode to take). Acts on
    one env's observations."""

    def __init__(self, action_spaces: Mapping[str, spaces.Space], seed: int) -> None:
        self.action_spaces = {}
        for agent, space in action_spaces.items():
            space = copy.deepcopy(space)
            space.seed(zlib.crc32(f"{seed}:{agent}".encode()))
            self.action_spaces[agent] = space

    def get_action(
        self,
        obs: Mapping[str, Any],
        infos: Mapping[str, Any] | None = None,
        *,
        deterministic: bool = False,
    ) -> tuple[dict[str, Any]]:
        actions = {}
        for agent in obs:
            space = self.action_spaces[agent]
            masks = action_masks(infos, [agent], space, 1)
            action = space.sample(None if masks is None else _sample_mask(space, masks[0, 0]))
            imposed = env_defined_actions(infos, [agent], space, 1)
            if imposed is not None and imposed[1][0, 0]:
                action = np.asarray(imposed[0][0, 0], space.dtype)[()]
            actions[agent] = action
        return (actions,)


def _sample_mask(space: spaces.Space, mask: np.ndarray) -> Any:
    """Our boolean action mask (ippo_cli.masks) in the form ``space.sample`` takes."""
    if isinstance(space, spaces.MultiDiscrete):
        bounds = np.cumsum(np.asarray(space.nvec).reshape(-1))[:-1]
        return tuple(part.astype(np.int8) for part in np.split(mask, bounds))
    if isinstance(space, spaces.MultiBinary):  # 2: the bit is drawn; 0: it is forced to 0
        return np.where(mask.reshape(space.shape), 2, 0).astype(np.int8)
    return mask.astype(np.int8)


class Lineup:
    """The policies playing a checkpoint's groups: its own agent, or replacements.

    Plays like an ``IPPO`` agent (ippo_cli.episodes.Player). Each group acts in turn, in the
    checkpoint's group order, so a group replaced by the same policy draws the same
    samples as the unreplaced agent."""

    def __init__(self, agent: IPPO, players: Mapping[str, IPPO | RandomPolicy]) -> None:
        self.agent_ids = list(agent.agent_ids)
        self.grouped_agents = dict(agent.grouped_agents)
        self.players = dict(players)
        self.training = agent.training

    def set_training_mode(self, training: bool) -> None:
        self.training = training
        for player in self.players.values():
            if isinstance(player, IPPO):
                player.set_training_mode(training)

    def get_action(
        self,
        obs: Mapping[str, Any],
        infos: Mapping[str, Any] | None = None,
        *,
        deterministic: bool = False,
    ) -> tuple[dict[str, Any]]:
        actions: dict[str, Any] = {}
        for group, agents in self.grouped_agents.items():
            present = {a: obs[a] for a in agents if a in obs}
            if present:
                acted = self.players[group].get_action(present, infos, deterministic=deterministic)
                actions.update(acted[0])
        return (actions,)


def build_lineup(
    agent: IPPO, ckpt: Path, replace: Mapping[str, str], seed: int, device: str
) -> tuple[Lineup, dict[str, str]]:
    """The line-up for ``+replace.<group>=random|PATH`` and, per group, the policy that
    plays it (``random`` or a checkpoint path). Every replacement is checked before
    anything plays; a bad one raises ValueError (CheckpointError) naming it."""
    players: dict[str, IPPO | RandomPolicy] = dict.fromkeys(agent.grouped_agents, agent)
    policies = dict.fromkeys(agent.grouped_agents, str(ckpt))
    loaded: dict[Path, IPPO] = {}
    for group, value in replace.items():
        if group not in agent.grouped_agents:
            raise ValueError(
                f"replace.{group}: checkpoint '{ckpt}' has no group '{group}'; its groups: "
                f"{', '.join(agent.grouped_agents)}"
            )
        if value == RANDOM:
            members = agent.grouped_agents[group]
            players[group] = RandomPolicy({a: agent.action_spaces[a] for a in members}, seed)
            policies[group] = RANDOM
            continue
        path = _replacement_path(group, value)
        if path not in loaded:
            loaded[path] = _load_agent(group, path, device)
        _check_same_group(agent, loaded[path], group, path)
        players[group] = loaded[path]
        policies[group] = str(path)
    return Lineup(agent, players), policies


def _replacement_path(group: str, value: str) -> Path:
    """The checkpoint file ``+replace.<group>=value`` names (a file or run directory)."""
    looks_like_path = "/" in value or value.endswith(".pt") or Path(value).exists()
    if not value or not looks_like_path:
        raise ValueError(
            f"replace.{group}={value} is neither '{RANDOM}' nor a checkpoint path "
            "(a .pt file or a run directory)"
        )
    try:
        return checkpoint.resolve_checkpoint(value)
    except CheckpointError as exc:
        raise CheckpointError(f"replace.{group}: {exc}") from None


def _load_agent(group: str, path: Path, device: str) -> IPPO:
    try:
        data = checkpoint.load(path, device)
        if "agent" not in data:
            raise CheckpointError(f"checkpoint '{path}' holds no agent")
        return IPPO.from_dict(data["agent"], device)
    except CheckpointError as exc:
        raise CheckpointError(f"replace.{group}: {exc}") from None


def _check_same_group(agent: IPPO, other: IPPO, group: str, path: Path) -> None:
    """``other`` can play ``group`` of ``agent``: it has the group, with the same spaces
    and the same agents."""
    if group not in other.grouped_agents:
        raise ValueError(
            f"replace.{group}: checkpoint '{path}' has no group '{group}'; its groups: "
            f"{', '.join(other.grouped_agents)}"
        )
    mine, theirs = agent.grouped_agents[group], other.grouped_agents[group]
    for kind, own, their in (
        ("observation", agent.observation_spaces[mine[0]], other.observation_spaces[theirs[0]]),
        ("action", agent.action_spaces[mine[0]], other.action_spaces[theirs[0]]),
    ):
        if own != their:
            raise ValueError(
                f"replace.{group}: group '{group}' has {kind} space {own} here but {their} "
                f"in '{path}'"
            )
    if mine != theirs:
        raise ValueError(
            f"replace.{group}: group '{group}' is {', '.join(mine)} here but "
            f"{', '.join(theirs)} in '{path}'"
        )
