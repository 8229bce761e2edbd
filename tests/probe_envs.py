"""Tiny deterministic PettingZoo envs (ParallelEnvs, and two AEC envs) for vector-env tests
and learning probes.

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
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import AgentSelector


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


def _discrete_or_box(action_space: str) -> spaces.Space:
    """``"discrete"``: Discrete(3); ``"box"``: a Box(1,) in [-1, 1]."""
    if action_space == "discrete":
        return spaces.Discrete(3)
    if action_space == "box":
        return _box(1)
    raise ValueError(f"unknown action_space {action_space!r}")


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
        agents = [f"agent_{i}" for i in range(n_agents)]
        super().__init__(agents, _box(2), _discrete_or_box(action_space), episode_len=episode_len)

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


class ClockTruncationEnv(_ProbeEnv):
    """Agents ``agent_0`` and ``agent_1`` (group ``agent``) and ``other_0`` (group ``other``)
    see ``[t / 10, agent index]``; reward 1 per step; nobody terminates. Group ``agent`` is
    truncated after a length drawn at each reset from 2..5, ``other_0`` one step earlier
    (then absent until the episode ends): envs and groups are cut at different steps, and
    a final observation (``t`` = the length) never equals the reset one (``t`` = 0)."""

    def __init__(self) -> None:
        agents = ("agent_0", "agent_1", "other_0")
        super().__init__(agents, _box(2), spaces.Discrete(2), episode_len=None, max_steps=5)

    def reset(self, seed: int | None = None, options: dict | None = None):
        out = super().reset(seed, options)
        self.max_steps = int(self.np_random.integers(2, 6))
        return out

    def _truncated(self, agent: str) -> bool:
        return self.t >= self.max_steps - (agent == "other_0")

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self.t / 10, self.possible_agents.index(agent)], np.float32)


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


class RendezvousEnv(ConstantRewardEnv):
    """Its first ``reset`` in a process writes a marker in ``directory`` and waits until
    ``parties`` processes have done so: jobs built on it finish only when that many run at
    the same time. ``timeout`` (s) only keeps a job that waits in vain from hanging for
    ever; it raises then."""

    def __init__(self, directory: str, parties: int = 2, timeout: float = 600.0) -> None:
        super().__init__()
        self.directory, self.parties, self.timeout = directory, parties, timeout

    def reset(self, seed: int | None = None, options: dict | None = None):
        marker = os.path.join(self.directory, f"pid{os.getpid()}")
        if not os.path.exists(marker):
            os.makedirs(self.directory, exist_ok=True)
            open(marker, "w").close()
            deadline = time.monotonic() + self.timeout
            while len(os.listdir(self.directory)) < self.parties:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no other job ran within {self.timeout} s")
                time.sleep(0.05)
        return super().reset(seed, options)


class PidRecordingEnv(ConstantRewardEnv):
    """Records which process runs it: its first seeded ``reset`` creates the empty file
    ``seed<seed>.pid<pid>`` in ``directory`` (a vector env reset with seed s gives env i
    the seed s + i)."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory
        self.recorded = False

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None and not self.recorded:
            os.makedirs(self.directory, exist_ok=True)
            open(os.path.join(self.directory, f"seed{seed}.pid{os.getpid()}"), "w").close()
            self.recorded = True
        return super().reset(seed, options)


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


# Learning probes for action spaces, observation spaces, action masks and env-defined actions.
# Their ``noise`` adds a uniform reward noise in [-noise, noise]: once a deterministic probe
# is solved, every advantage is a critic error of ~1e-3 that per-minibatch normalisation
# blows up to unit scale, which can unlearn the solution; noise keeps advantages honest.


def _reward_noise(env: _ProbeEnv, noise: float) -> float:
    return noise * float(env.np_random.uniform(-1.0, 1.0)) if noise else 0.0


class SpaceActionRewardEnv(_ProbeEnv):
    """Constant obs of ones; reward depends only on the action, in any action space.

    ``"discrete"``: ``Discrete(3)``, 1 for action 1; ``"box"``: ``Box(-1, 1, (1,))``,
    ``1 - |a - 0.5|``; ``"multidiscrete"``: ``MultiDiscrete([3, 3])``, 0.5 per sub-action
    matching ``[1, 2]``; ``"multibinary"``: ``MultiBinary(4)``, the fraction of bits matching
    ``[1, 0, 1, 0]``. An action outside the space raises ValueError.
    """

    SPACES = {
        "discrete": spaces.Discrete(3),
        "box": _box(1),
        "multidiscrete": spaces.MultiDiscrete([3, 3]),
        "multibinary": spaces.MultiBinary(4),
    }
    TARGETS = {
        "discrete": np.array([1]),
        "box": np.array([0.5]),
        "multidiscrete": np.array([1, 2]),
        "multibinary": np.array([1, 0, 1, 0]),
    }

    def __init__(self, action_space: str = "discrete", noise: float = 0.0) -> None:
        if action_space not in self.SPACES:
            raise ValueError(f"unknown action_space {action_space!r}")
        super().__init__(("agent_0",), _box(2), self.SPACES[action_space])
        self.kind = action_space
        self.noise = noise

    def _reward(self, agent: str, action: Any) -> float:
        space = self._act_space
        typed = int(action) if self.kind == "discrete" else np.asarray(action, space.dtype)
        if not space.contains(typed):
            raise ValueError(f"action {action!r} is not in {space}")
        a = np.asarray(action, np.float64).reshape(-1)
        target = self.TARGETS[self.kind]
        paid = 1.0 - abs(a[0] - target[0]) if self.kind == "box" else np.mean(a == target)
        return float(paid) + _reward_noise(self, self.noise)


class ObsKeyRewardEnv(_ProbeEnv):
    """A random key ``k`` is shown through the observation space ``kind``; reward 1 iff the
    (Discrete) action equals ``k``. Nothing but the named part of the observation tells ``k``.

    ``"image"``: ``Box(0, 255, (12, 12, 3), uint8)`` whose left (k=0) or right (k=1) half is
    bright, the other half dark; ``"dict"``: ``{"img": constant uint8 image, "vec": ones(2),
    "id": k}``, k in 0..2; ``"tuple"``: ``(constant image, ones(2), k)``; ``"discrete"``: the
    observation is ``k`` itself, from ``Discrete(3)``.
    """

    SMALL_IMAGE = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    VEC = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, kind: str = "image", noise: float = 0.0) -> None:
        if kind == "image":
            obs: spaces.Space = spaces.Box(0, 255, (12, 12, 3), np.uint8)
        elif kind == "dict":
            obs = spaces.Dict({"img": self.SMALL_IMAGE, "vec": self.VEC, "id": spaces.Discrete(3)})
        elif kind == "tuple":
            obs = spaces.Tuple((self.SMALL_IMAGE, self.VEC, spaces.Discrete(3)))
        elif kind == "discrete":
            obs = spaces.Discrete(3)
        else:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.noise = noise
        self.n_keys = 2 if kind == "image" else 3
        super().__init__(("agent_0",), obs, spaces.Discrete(self.n_keys))
        self.key = 0

    def _new_state(self) -> None:
        self.key = int(self.np_random.integers(self.n_keys))

    @staticmethod
    def observation(kind: str, key: int) -> Any:
        """The observation showing ``key`` (also used by tests to query the policy)."""
        if kind == "image":
            img = np.zeros((12, 12, 3), np.uint8)
            img[:, key * 6 : key * 6 + 6] = 255
            return img
        img = np.full((8, 8, 3), 100, np.uint8)
        vec = np.ones(2, np.float32)
        if kind == "dict":
            return {"img": img, "vec": vec, "id": key}
        if kind == "tuple":
            return (img, vec, key)
        return key

    def _obs(self, agent: str) -> Any:
        return self.observation(self.kind, self.key)

    def _reward(self, agent: str, action: Any) -> float:
        # Against the key the agent acted on: _new_state runs after rewards in step().
        return float(int(action) == self.key) + _reward_noise(self, self.noise)


class MaskedActionEnv(_ProbeEnv):
    """Action masks in ``info["action_mask"]``; receiving a masked action raises ValueError.

    Each sub-action (one for ``"discrete"``: ``Discrete(4)``; two for ``"multidiscrete"``:
    ``MultiDiscrete([4, 4])``) pays ``PAY[a]`` (averaged over sub-actions), but action 0,
    the best paid, is always masked, and a random one of actions 1..3 is masked too
    three times in four. So the best allowed action is 1, or 2 when 1 is masked.
    obs = ``[1, *allowed]`` (the masks as floats).

    Masks are redrawn after every step; with ``redraw_on_reset`` also on every reset (then
    the first action of an episode must follow the reset's info, not the last step's).
    """

    PAY = np.array([1.0, 0.6, 0.3, 0.0])

    def __init__(
        self,
        action_space: str = "discrete",
        redraw_on_reset: bool = False,
        episode_len: int = 1,
        noise: float = 0.0,
    ) -> None:
        if action_space == "discrete":
            act: spaces.Space = spaces.Discrete(4)
        elif action_space == "multidiscrete":
            act = spaces.MultiDiscrete([4, 4])
        else:
            raise ValueError(f"unknown action_space {action_space!r}")
        self.dims = 1 if action_space == "discrete" else 2
        super().__init__(("agent_0",), _box(1 + 4 * self.dims), act, episode_len=episode_len)
        self.redraw_on_reset = redraw_on_reset
        self.noise = noise
        self.allowed: np.ndarray | None = None

    @staticmethod
    def mask(extra: Sequence[int]) -> np.ndarray:
        """The (concatenated) mask forbidding action 0 and, per sub-action, ``extra[i]``
        (0: nothing more)."""
        allowed = np.ones((len(extra), 4), bool)
        allowed[:, 0] = False
        for i, e in enumerate(extra):
            if e:
                allowed[i, e] = False
        return allowed.reshape(-1)

    def _new_state(self) -> None:
        if self.t > 0 or self.allowed is None or self.redraw_on_reset:
            self.allowed = self.mask(self.np_random.integers(4, size=self.dims))

    def _obs(self, agent: str) -> np.ndarray:
        return np.concatenate([[1.0], self.allowed]).astype(np.float32)

    def _info(self, agent: str) -> dict:
        return {"action_mask": self.allowed.astype(np.int8)}

    def _reward(self, agent: str, action: Any) -> float:
        a = np.asarray(action, np.int64).reshape(-1)
        legal = self.allowed.reshape(self.dims, 4)[np.arange(self.dims), a]
        if not legal.all():
            raise ValueError(f"masked action {a.tolist()} taken (mask {self.allowed.tolist()})")
        return float(self.PAY[a].mean()) + _reward_noise(self, self.noise)


class SlowStepEnv(ConstantRewardEnv):
    """ConstantRewardEnv whose every step takes ``seconds``: a stand-in for a heavy env."""

    def __init__(self, seconds: float = 0.002) -> None:
        super().__init__()
        self.seconds = seconds

    def step(self, actions: dict[str, Any]):
        time.sleep(self.seconds)
        return super().step(actions)


class InterleavedGroupsEnv(_ProbeEnv):
    """Agents ``a_0``, ``b_0``, ``a_1``: groups a and b interleave in agent order.

    Random observations in [0, 1); each agent is paid its position + 1 (1, 2, 3) every
    step; no termination, truncation every ``max_steps`` steps.
    """

    def __init__(self, max_steps: int = 3) -> None:
        agents = ("a_0", "b_0", "a_1")
        super().__init__(agents, _box(2), spaces.Discrete(3), episode_len=None, max_steps=max_steps)

    def _obs(self, agent: str) -> np.ndarray:
        return self.np_random.random(2).astype(np.float32)

    def _reward(self, agent: str, action: Any) -> float:
        return float(self.possible_agents.index(agent) + 1)


class EnvDefinedActionEnv(_ProbeEnv):
    """Every other step the env imposes an action through ``info["env_defined_actions"]``.

    Obs of ones, one-step episodes. A per-env step counter (kept across resets) decides:
    on odd steps the env imposes ``IMPOSED`` (``Discrete(3)``: 0; ``Box(1)``: -0.7) and
    pays 2 for it; receiving any other action on such a step raises ValueError. On the
    other steps the policy acts and is paid 1 for action 1 (Discrete) or ``1 - |a - 0.5|``
    (Box), so the imposed action is the one a free step does not pay for: a learner that
    took imposed steps as its own choices would see the imposed action beat every free
    one. ``counts`` (class-level) records how many imposed and free steps all instances saw.
    """

    IMPOSED = {"discrete": np.array([0]), "box": np.array([-0.7], np.float32)}
    counts: dict[str, int] = {"imposed": 0, "free": 0}

    def __init__(self, action_space: str = "discrete", noise: float = 0.0) -> None:
        super().__init__(("agent_0",), _box(2), _discrete_or_box(action_space))
        self.imposed = self.IMPOSED[action_space]
        self.noise = noise
        self.steps = 0  # survives resets
        self._imposed_now = False

    def _imposing(self) -> bool:
        return self.steps % 2 == 1

    def _info(self, agent: str) -> dict:
        return {"env_defined_actions": self.imposed.copy() if self._imposing() else None}

    def step(self, actions: dict[str, Any]):
        self._imposed_now = self._imposing()
        self.steps += 1
        for action in actions.values():
            got = np.asarray(action, self.imposed.dtype).reshape(-1)
            if self._imposed_now and not np.array_equal(got, self.imposed):
                raise ValueError(f"env-defined action {self.imposed} replaced by {action!r}")
        type(self).counts["imposed" if self._imposed_now else "free"] += 1
        return super().step(actions)

    def _reward(self, agent: str, action: Any) -> float:
        if self._imposed_now:
            paid = 2.0
        elif isinstance(self._act_space, spaces.Discrete):
            paid = float(int(action) == 1)
        else:
            paid = 1.0 - abs(float(np.clip(np.asarray(action), -1.0, 1.0)[0]) - 0.5)
        return paid + _reward_noise(self, self.noise)


class StaggeredDeathEnv(_ProbeEnv):
    """Group ``a`` of three agents dying at random steps 1..``episode_len`` (drawn at reset);
    the episode ends when the last one dies. obs = ``[1, t / episode_len, idx / 3]``; reward
    1 for action 1 and a random 0 or 1 otherwise, so returns vary."""

    def __init__(self, episode_len: int = 6) -> None:
        agents = ("a_0", "a_1", "a_2")
        super().__init__(agents, _box(3), spaces.Discrete(2), episode_len=episode_len)
        self.death: dict[str, int] = {}

    def reset(self, seed: int | None = None, options: dict | None = None):
        out = super().reset(seed, options)
        steps = self.np_random.integers(1, self.episode_len + 1, size=len(self.possible_agents))
        self.death = dict(zip(self.possible_agents, steps.tolist(), strict=True))
        return out

    def _obs(self, agent: str) -> np.ndarray:
        idx = self.possible_agents.index(agent)
        return np.array([1.0, self.t / self.episode_len, idx / 3], np.float32)

    def _reward(self, agent: str, action: Any) -> float:
        return 1.0 if int(action) == 1 else float(self.np_random.integers(2))

    def _terminated(self, agent: str) -> bool:
        return self.t >= self.death[agent]


class NonFiniteEnv(ConstantRewardEnv):
    """From step ``after`` on (counted over the env's life), ``what`` of agent_0 is NaN:
    ``"obs"``, ``"reward"`` or ``"termination"``; with ``value="inf"``, infinite."""

    def __init__(
        self, what: str = "obs", after: int = 300, episode_len: int = 5, value: str = "nan"
    ) -> None:
        super().__init__(episode_len=episode_len)
        self.what, self.after, self.total, self.bad = what, after, 0, float(value)

    def _broken(self, what: str, agent: str) -> bool:
        return self.what == what and agent == "agent_0" and self.total >= self.after

    def _obs(self, agent: str) -> Any:
        obs = super()._obs(agent)
        return obs * self.bad if self._broken("obs", agent) else obs

    def _reward(self, agent: str, action: Any) -> float:
        return self.bad if self._broken("reward", agent) else 1.0

    def step(self, actions: dict[str, Any]):
        self.total += 1
        obs, rewards, terms, truncs, infos = super().step(actions)
        if self._broken("termination", "agent_0"):
            terms["agent_0"] = self.bad
        return obs, rewards, terms, truncs, infos


class SimultaneousAEC(AECEnv):
    """An AEC env whose two agents both act every cycle; the state advances once per cycle
    (``is_parallelizable``). Each agent's reward is its own action (0 or 1), so it learns."""

    metadata = {"name": "simultaneous_aec_v0", "is_parallelizable": True}
    # Applies the cycle's actions at its last agent's turn; the turn-based subclass does
    # not wait for the cycle to end.
    per_turn = False

    def __init__(self, episode_len: int = 5) -> None:
        super().__init__()
        self.possible_agents = ["player_0", "player_1"]
        self.episode_len = episode_len
        self.render_mode = None
        # The state advances per move (turn-based) or per cycle of moves.
        self._last_t = episode_len * (len(self.possible_agents) if self.per_turn else 1)
        self._spaces = (_box(1), spaces.Discrete(2))

    def observation_space(self, agent: str) -> spaces.Space:
        return self._spaces[0]

    def action_space(self, agent: str) -> spaces.Space:
        return self._spaces[1]

    def observe(self, agent: str) -> np.ndarray:
        return np.full(1, self.t / self._last_t, np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.agents = list(self.possible_agents)
        self.t = 0
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.reset()
        self._pending: dict[str, Any] = {}

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._pending[agent] = action
        self._clear_rewards()
        if self.per_turn or self._selector.is_last():
            self.t += 1
            for a, act in self._pending.items():
                self.rewards[a] = float(act)
            self._pending = {}
            if self.t >= self._last_t:
                self.terminations = dict.fromkeys(self.agents, True)
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()


class TurnBasedAEC(SimultaneousAEC):
    """The same game played in turns: each move changes the state before the next agent
    acts, so the agents do not act together and PettingZoo's aec_to_parallel does not
    apply (no ``is_parallelizable``)."""

    metadata = {"name": "turn_based_aec_v0"}
    per_turn = True
