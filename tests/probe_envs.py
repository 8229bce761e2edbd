"""Tiny deterministic PettingZoo ParallelEnvs for vector-env tests and learning probes.

Each step's returned dicts hold exactly the agents alive at the start of that step; agents
that terminate or truncate are then removed from ``self.agents``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class _ProbeEnv(ParallelEnv):
    """Shared reset/step plumbing; subclasses override the ``_obs``/``_reward``/``_done`` hooks."""

    metadata = {"name": "probe_v0"}

    def __init__(
        self,
        agents: Sequence[str],
        obs_space: spaces.Space,
        act_space: spaces.Space,
        episode_len: int | None = 1,
        max_steps: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.possible_agents = list(agents)
        self.agents: list[str] = []
        self._obs_space = obs_space
        self._act_space = act_space
        self.episode_len = episode_len
        self.max_steps = max_steps
        self._seed = seed
        self.np_random: np.random.Generator | None = None
        self.t = 0

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def _obs(self, agent: str) -> Any:
        # Ones, not zeros: a zero input through LayerNorm leaves a network nothing to learn with.
        return np.ones(self._obs_space.shape, self._obs_space.dtype)

    def _reward(self, agent: str, action: Any) -> float:
        return 1.0

    def _terminated(self, agent: str) -> bool:
        return self.episode_len is not None and self.t >= self.episode_len

    def _truncated(self, agent: str) -> bool:
        return self.max_steps is not None and self.t >= self.max_steps

    def _info(self, agent: str) -> dict:
        return {}

    def _new_state(self) -> None:
        """Called after reset and after every step, before observations are built."""

    def reset(self, seed: int | None = None, options: dict | None = None):
        # Without a seed, keep the existing stream (like gymnasium envs), seeding lazily once.
        if seed is not None or self.np_random is None:
            self.np_random = np.random.default_rng(seed if seed is not None else self._seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        self._new_state()
        return {a: self._obs(a) for a in self.agents}, {a: self._info(a) for a in self.agents}

    def step(self, actions: dict[str, Any]):
        self.t += 1
        rewards = {a: float(self._reward(a, actions[a])) for a in self.agents}
        terms = {a: bool(self._terminated(a)) for a in self.agents}
        truncs = {a: bool(self._truncated(a)) for a in self.agents}
        self._new_state()
        obs = {a: self._obs(a) for a in self.agents}
        infos = {a: self._info(a) for a in self.agents}
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


def _box(n: int) -> spaces.Box:
    return spaces.Box(-1.0, 1.0, (n,), np.float32)


class ConstantRewardEnv(_ProbeEnv):
    """Constant obs 1.0, reward 1.0 every step, terminates after ``episode_len`` steps."""

    def __init__(self, agents: Sequence[str] = ("agent_0",), episode_len: int = 5) -> None:
        super().__init__(agents, _box(1), spaces.Discrete(2), episode_len=episode_len)

    def _obs(self, agent: str) -> np.ndarray:
        return np.ones(1, np.float32)


class ActionRewardEnv(_ProbeEnv):
    """Constant obs of ones; reward depends only on the action.

    ``"discrete"``: 1 for action 1; ``"box"``: ``1 - |a - 0.5|``.
    """

    def __init__(
        self, action_space: str = "discrete", n_agents: int = 1, episode_len: int = 1
    ) -> None:
        if action_space == "discrete":
            act: spaces.Space = spaces.Discrete(3)
        elif action_space == "box":
            act = _box(1)
        else:
            raise ValueError(f"unknown action_space {action_space!r}")
        agents = [f"agent_{i}" for i in range(n_agents)]
        super().__init__(agents, _box(2), act, episode_len=episode_len)

    def _reward(self, agent: str, action: Any) -> float:
        if isinstance(self._act_space, spaces.Discrete):
            return float(int(action) == 1)
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        return 1.0 - abs(float(a[0]) - 0.5)


class ObsRewardEnv(_ProbeEnv):
    """obs[0] is a random ±1 (from ``np_random``); reward 1 iff action == (obs[0] > 0)."""

    def __init__(self, n_agents: int = 1, episode_len: int = 1, seed: int | None = None) -> None:
        agents = [f"agent_{i}" for i in range(n_agents)]
        super().__init__(agents, _box(2), spaces.Discrete(2), episode_len=episode_len, seed=seed)
        self._signs: dict[str, float] = {}

    def _new_state(self) -> None:
        self._signs = {a: float(self.np_random.choice((-1.0, 1.0))) for a in self.possible_agents}

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self._signs[agent], 0.0], np.float32)

    def _reward(self, agent: str, action: Any) -> float:
        # Rewarded against the obs the agent acted on: _new_state runs after rewards in step().
        return float(int(action) == int(self._signs[agent] > 0))


class OppositeRewardEnv(_ProbeEnv):
    """``bob_0`` is rewarded for action 0, ``bob_1`` for action 1; obs one-hot identifies them."""

    def __init__(self, episode_len: int = 1) -> None:
        super().__init__(("bob_0", "bob_1"), _box(2), spaces.Discrete(2), episode_len=episode_len)

    def _obs(self, agent: str) -> np.ndarray:
        return np.eye(2, dtype=np.float32)[self.possible_agents.index(agent)]

    def _reward(self, agent: str, action: Any) -> float:
        return float(int(action) == self.possible_agents.index(agent))


class TruncationEnv(_ProbeEnv):
    """Constant obs, reward 1 per step, never terminates, truncates after ``max_steps``."""

    def __init__(self, max_steps: int = 3) -> None:
        super().__init__(
            ("agent_0",), _box(1), spaces.Discrete(2), episode_len=None, max_steps=max_steps
        )

    def _obs(self, agent: str) -> np.ndarray:
        return np.ones(1, np.float32)


class DyingAgentEnv(_ProbeEnv):
    """``agent_1`` terminates at ``death_step``; ``agent_0`` runs to ``episode_len``.

    obs = [t / episode_len, agent index], so final observations are distinguishable.
    """

    def __init__(self, episode_len: int = 6, death_step: int = 2) -> None:
        super().__init__(
            ("agent_0", "agent_1"), _box(2), spaces.Discrete(2), episode_len=episode_len
        )
        self.death_step = death_step

    def _obs(self, agent: str) -> np.ndarray:
        idx = self.possible_agents.index(agent)
        return np.array([self.t / self.episode_len, idx], np.float32)

    def _terminated(self, agent: str) -> bool:
        limit = self.death_step if agent == "agent_1" else self.episode_len
        return self.t >= limit


class InfoEnv(ConstantRewardEnv):
    """Puts ``{"step": t, "tag": tag}`` in its info on every step and reset (``tag=None`` means
    "not provided" for collation)."""

    def __init__(self, episode_len: int = 3, tag: str | None = "x") -> None:
        super().__init__(episode_len=episode_len)
        self.tag = tag

    def _info(self, agent: str) -> dict:
        return {"step": self.t, "tag": self.tag}


class RaisingEnv(ConstantRewardEnv):
    """``step`` raises ValueError("bad action") when given action 1."""

    def step(self, actions: dict[str, Any]):
        if any(int(a) == 1 for a in actions.values()):
            raise ValueError("bad action")
        return super().step(actions)


class DyingProcessEnv(ConstantRewardEnv):
    """``step`` kills its process with ``os._exit(1)`` when given action 1."""

    def step(self, actions: dict[str, Any]):
        if any(int(a) == 1 for a in actions.values()):
            os._exit(1)
        return super().step(actions)


class HangingEnv(ConstantRewardEnv):
    """``step`` sleeps for ``sleep`` seconds when given action 1."""

    def __init__(self, sleep: float = 600.0) -> None:
        super().__init__()
        self.sleep = sleep

    def step(self, actions: dict[str, Any]):
        if any(int(a) == 1 for a in actions.values()):
            time.sleep(self.sleep)
        return super().step(actions)


class DictObsEnv(DyingAgentEnv):
    """``Dict`` observations; ``agent_1`` dies at ``death_step``, ``agent_0`` at ``episode_len``.

    ``image`` is filled with ``10 * t + idx + 1``, ``pos`` is ``[t / episode_len, -idx]`` and ``id``
    is ``(t + idx) % 3``, so every step's (and every final) observation is distinguishable.
    """

    SPACE = spaces.Dict(
        {
            "image": spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "id": spaces.Discrete(3),
        }
    )

    def __init__(self, episode_len: int = 4, death_step: int = 2) -> None:
        super().__init__(episode_len=episode_len, death_step=death_step)
        self._obs_space = self.SPACE

    def _obs(self, agent: str) -> dict[str, Any]:
        idx = self.possible_agents.index(agent)
        return {
            "image": np.full((8, 8, 3), 10 * self.t + idx + 1, np.uint8),
            "pos": np.array([self.t / self.episode_len, -idx], np.float32),
            "id": (self.t + idx) % 3,
        }


class TupleObsEnv(DyingAgentEnv):
    """``Tuple`` observations (Box, Discrete, MultiBinary, MultiDiscrete), dying like
    ``DictObsEnv``: ``(full(3, t / episode_len), (t + idx) % 5, bits of t, [t % 3, idx])``."""

    SPACE = spaces.Tuple(
        (
            spaces.Box(-1.0, 1.0, (3,), np.float32),
            spaces.Discrete(5),
            spaces.MultiBinary(4),
            spaces.MultiDiscrete([3, 2]),
        )
    )

    def __init__(self, episode_len: int = 4, death_step: int = 2) -> None:
        super().__init__(episode_len=episode_len, death_step=death_step)
        self._obs_space = self.SPACE

    def _obs(self, agent: str) -> tuple:
        idx = self.possible_agents.index(agent)
        bits = np.array([(self.t >> i) & 1 for i in range(4)], np.int8)
        return (
            np.full(3, self.t / self.episode_len, np.float32),
            (self.t + idx) % 5,
            bits,
            np.array([self.t % 3, idx], np.int64),
        )
