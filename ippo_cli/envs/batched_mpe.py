"""Batched numpy versions of mpe2's ``simple_speaker_listener_v4`` and ``simple_spread_v3``.

Every env of a run is one row of a few arrays (positions, velocities, landmarks, messages,
step counts), and one step of all envs is a handful of numpy operations over those rows. Each
operation follows mpe2 (``_mpe_utils/core.py`` physics, ``_mpe_utils/simple_env.py`` action
decoding, rewards and truncation, the two scenarios' observations) in the same order and the
same dtypes (float32 actions and observations, float64 state), so a batched env and an mpe2 env
in the same state produce the same observations and rewards (tests/test_batched_mpe.py).

The envs speak the vector-env interface the trainer uses (``ippo_cli.envs.vector``): per-agent
dicts of arrays with a leading ``num_envs`` axis, ``active``/``final_obs``/``_final_obs`` infos
and same-step autoreset. Where they differ: every reset of every env draws from one numpy
Generator, seeded by ``reset(seed=s)``, so ``s`` reproduces the whole batch (env ``e`` does not
start as mpe2 reset with ``s + e`` would; the start distributions are the same). ``get_state``
is plain data: the arrays and that Generator's state, from which ``set_state`` continues exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

# mpe2 World and SimpleEnv constants (no entity here sets max_speed, accel, mass or noise).
DT = 0.1
DAMPING = 0.25
CONTACT_FORCE = 1e2
CONTACT_MARGIN = 1e-3
SENSITIVITY = 5.0
MASS = 1.0
# Discrete movement actions: no_action, move_left, move_right, move_down, move_up.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)
STATE_VERSION = 1

Batch = dict[str, np.ndarray]


def _action_space(n: int, continuous: bool) -> spaces.Space:
    return spaces.Box(low=0, high=1, shape=(n,)) if continuous else spaces.Discrete(n)


def _obs_space(n: int) -> spaces.Box:
    inf = np.float32(np.inf)
    return spaces.Box(low=-inf, high=+inf, shape=(n,), dtype=np.float32)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{key}={value} must be an int >= 1")
    return int(value)


class BatchedMPE:
    """The world arrays, physics, autoreset and vector-env API shared by both scenarios.

    Subclasses set the agents and landmarks and implement ``_decode_actions``,
    ``_draw_starts``, ``_observations`` and ``_rewards``.
    """

    mpe2_name: str
    # mpe2 arguments accepted only at these values (anything else changes the game);
    # RENDER_ONLY arguments change how mpe2 draws, which `ippo eval` leaves to mpe2.
    FIXED_KWARGS: dict[str, Any] = {"render_mode": None, "benchmark_data": False}
    RENDER_ONLY = ("dynamic_rescaling",)
    EXTRA_ARRAYS: tuple[str, ...] = ()  # scenario state besides the shared arrays

    def __init__(
        self,
        num_envs: int,
        agents: Sequence[str],
        movable: Sequence[bool],
        num_landmarks: int,
        dim_c: int,
        max_cycles: int,
        continuous_actions: bool,
        extra_kwargs: Mapping[str, Any],
    ) -> None:
        for key, value in extra_kwargs.items():
            if key in self.RENDER_ONLY:
                continue
            if key not in self.FIXED_KWARGS:
                raise ValueError(
                    f"env.kwargs.{key} is not an argument of the batched {self.mpe2_name}"
                )
            if value != self.FIXED_KWARGS[key]:
                raise ValueError(
                    f"env.kwargs.{key}={value} is not supported by env.backend=batched "
                    f"(only {self.FIXED_KWARGS[key]})"
                )
        self.num_envs = _positive_int("env.num_envs", num_envs)
        self.max_cycles = _positive_int("env.kwargs.max_cycles", max_cycles)
        if not isinstance(continuous_actions, bool):
            raise ValueError(f"env.kwargs.continuous_actions={continuous_actions} must be a bool")
        self.continuous_actions = continuous_actions
        self.possible_agents = list(agents)
        self.agents = list(agents)
        n, a = self.num_envs, len(agents)
        self.pos = np.zeros((n, a, 2))
        self.vel = np.zeros((n, a, 2))
        self.landmarks = np.zeros((n, num_landmarks, 2))
        self.comm = np.zeros((n, a, dim_c))
        self.steps = np.zeros(n, dtype=np.int64)
        movable_index = np.flatnonzero(movable)
        self._moving = slice(None) if len(movable_index) == a else movable_index
        self._rng: np.random.Generator | None = None
        self._needs_reset = True
        self.closed = False

    # ------------------------------------------------------------ interface
    def single_observation_space(self, agent: str) -> spaces.Space:
        """Observation space of ``agent`` in one env."""
        return self.observation_spaces[agent]

    def single_action_space(self, agent: str) -> spaces.Space:
        """Action space of ``agent`` in one env."""
        return self.action_spaces[agent]

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[Batch, dict[str, dict[str, Any]]]:
        """Reset every env. ``seed`` seeds the Generator all resets draw from (None keeps its
        stream, or starts an unseeded one). ``options`` is ignored, as mpe2 does."""
        self._check_open()
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        self._reset_rows(np.arange(self.num_envs))
        self._needs_reset = False
        return self._observations(), self._infos(None, None)

    def step(
        self, actions: Mapping[str, np.ndarray]
    ) -> tuple[Batch, Batch, Batch, Batch, dict[str, dict[str, Any]]]:
        """Step every env with ``actions[agent]`` of shape ``(num_envs, *action_shape)``.

        Returns ``(obs, rewards, terminations, truncations, infos)``; envs that reached
        ``max_cycles`` are reset in the same call (``obs`` from the reset, ``final_obs`` from
        the step)."""
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise KeyError(f"actions for unknown agents {sorted(unknown)}")
        force = self._decode_actions(actions)
        self._integrate(force)
        self.steps += 1
        rewards = self._rewards().astype(np.float32)
        obs = self._observations()
        ended = self.steps >= self.max_cycles
        final = obs
        if ended.any():
            self._reset_rows(np.flatnonzero(ended))
            obs = self._observations()
        truncated = ended.astype(np.float32)
        return (
            obs,
            {a: rewards[:, i] for i, a in enumerate(self.possible_agents)},
            {a: np.zeros(self.num_envs, dtype=np.float32) for a in self.possible_agents},
            {a: truncated.copy() for a in self.possible_agents},
            self._infos(final, ended),
        )

    def get_state(self) -> dict[str, Any]:
        """Plain data (lists, dicts, ints, floats, strings) from which ``set_state`` continues
        exactly: every state array and the reset Generator's state."""
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() before get_state()")
        return {
            "version": STATE_VERSION,
            "backend": "batched",
            "env": self.mpe2_name,
            "restorable": True,
            "reason": None,
            "num_envs": self.num_envs,
            "agents": list(self.possible_agents),
            "rng": self._rng.bit_generator.state,
            "arrays": {name: getattr(self, name).tolist() for name in self._state_arrays()},
        }

    def set_state(self, state: Mapping[str, Any]) -> tuple[Batch, dict[str, dict[str, Any]]]:
        """Restore a ``get_state`` dict; returns ``(obs, infos)`` as the step (or reset) that
        preceded it returned them, apart from ``final_obs``.

        Raises ValueError if the state does not fit this env."""
        self._check_open()
        if not isinstance(state, Mapping):
            raise ValueError(f"env state must be a dict, got {type(state).__name__}")
        expected = {
            "version": STATE_VERSION,
            "backend": "batched",
            "env": self.mpe2_name,
            "num_envs": self.num_envs,
            "agents": self.possible_agents,
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(f"env state has {key}={state.get(key)!r}, this env has {value!r}")
        arrays = {}
        try:
            for name in self._state_arrays():
                current = getattr(self, name)
                arr = np.asarray(state["arrays"][name], dtype=current.dtype)
                if arr.shape != current.shape:
                    raise ValueError(
                        f"env state array {name!r} has shape {arr.shape}, expected {current.shape}"
                    )
                arrays[name] = arr
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed env state ({type(exc).__name__}: {exc})") from None
        for name, arr in arrays.items():
            getattr(self, name)[...] = arr
        self._rng = rng
        self._needs_reset = False
        return self._observations(), self._infos(None, None)

    def close(self) -> None:
        """Mark the env closed (idempotent); it holds no processes or files."""
        self.closed = True

    # ------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    def _state_arrays(self) -> tuple[str, ...]:
        return ("pos", "vel", "landmarks", "comm", "steps", *self.EXTRA_ARRAYS)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.vel[rows] = 0.0
        self.comm[rows] = 0.0
        self.steps[rows] = 0
        self._draw_starts(rows, self._rng)

    def _integrate(self, force: np.ndarray) -> None:
        """World.integrate_state for the movable agents (the only movable entities here)."""
        m = self._moving
        self.pos[:, m] += self.vel[:, m] * DT
        self.vel[:, m] = self.vel[:, m] * (1 - DAMPING)
        self.vel[:, m] += (force[:, m] / MASS) * DT

    def _infos(self, final: Batch | None, ended: np.ndarray | None) -> dict[str, dict[str, Any]]:
        n = self.num_envs
        infos = {}
        for a in self.possible_agents:
            final_obs = np.zeros((n, *self.observation_spaces[a].shape), dtype=np.float32)
            has_final = np.zeros(n, dtype=bool) if ended is None else ended.copy()
            if final is not None:
                final_obs[ended] = final[a][ended]
            infos[a] = {
                "active": np.ones(n, dtype=bool),
                "final_obs": final_obs,
                "_final_obs": has_final,
            }
        return infos

    def _action(self, actions: Mapping[str, np.ndarray], agent: str) -> np.ndarray:
        """``agent``'s actions as mpe2 receives them: float32 clipped to [0, 1] (pettingzoo's
        ClipOutOfBoundsWrapper) or int indices checked against the Discrete space."""
        if agent not in actions:
            raise KeyError(f"missing actions for alive agent {agent!r}")
        space = self.action_spaces[agent]
        shape = (self.num_envs, *space.shape)
        act = np.asarray(actions[agent])
        if act.shape != shape:
            raise ValueError(f"actions[{agent!r}] has shape {act.shape}, expected {shape}")
        if isinstance(space, spaces.Box):
            return np.clip(act.astype(np.float32), space.low, space.high)
        index = act.astype(np.int64)
        if index.min() < 0 or index.max() >= space.n or not np.array_equal(index, act):
            bad = act[(index != act) | (index < 0) | (index >= space.n)][0]
            raise ValueError(f"actions[{agent!r}] has {bad}, outside Discrete({space.n})")
        return index

    def _movement(self, action: np.ndarray) -> np.ndarray:
        """SimpleEnv._set_action's physical force from a movable agent's actions."""
        if self.continuous_actions:
            # mpe2 subtracts in float32, then adds to a float64 zero vector.
            u = np.stack([action[..., 2] - action[..., 1], action[..., 4] - action[..., 3]], -1)
            return u.astype(np.float64) * SENSITIVITY
        return MOVES[action] * SENSITIVITY

    def _decode_actions(self, actions: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _observations(self) -> Batch:
        raise NotImplementedError

    def _rewards(self) -> np.ndarray:
        raise NotImplementedError


class BatchedSpeakerListener(BatchedMPE):
    """``simple_speaker_listener_v4``: the speaker (immovable) sees the goal landmark's colour
    and says a 3-vector; the listener (silent) sees its velocity, the landmarks relative to it
    and the message, and both are rewarded with minus its squared distance to the goal."""

    mpe2_name = "simple_speaker_listener_v4"
    EXTRA_ARRAYS = ("goal",)
    LANDMARK_COLORS = np.array([[0.65, 0.15, 0.15], [0.15, 0.65, 0.15], [0.15, 0.15, 0.65]])

    def __init__(
        self,
        num_envs: int,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        super().__init__(
            num_envs,
            ["speaker_0", "listener_0"],
            movable=[False, True],
            num_landmarks=3,
            dim_c=3,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
        )
        self.goal = np.zeros(self.num_envs, dtype=np.int64)
        self.observation_spaces = {"speaker_0": _obs_space(3), "listener_0": _obs_space(11)}
        self.action_spaces = {
            "speaker_0": _action_space(3, continuous_actions),
            "listener_0": _action_space(5, continuous_actions),
        }

    def _decode_actions(self, actions: Mapping[str, np.ndarray]) -> np.ndarray:
        say = self._action(actions, "speaker_0")
        self.comm[:, 0] = say if self.continuous_actions else np.eye(3)[say]
        force = np.zeros_like(self.pos)
        force[:, 1] = self._movement(self._action(actions, "listener_0"))
        return force

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        n = len(rows)
        self.goal[rows] = rng.integers(3, size=n)
        self.pos[rows] = rng.uniform(-1, 1, (n, 2, 2))
        self.landmarks[rows] = rng.uniform(-1, 1, (n, 3, 2))

    def _observations(self) -> Batch:
        relative = self.landmarks - self.pos[:, 1:2]
        listener = np.concatenate(
            [self.vel[:, 1], relative.reshape(self.num_envs, -1), self.comm[:, 0]], axis=1
        )
        return {
            "speaker_0": self.LANDMARK_COLORS[self.goal].astype(np.float32),
            "listener_0": listener.astype(np.float32),
        }

    def _rewards(self) -> np.ndarray:
        goal = self.landmarks[np.arange(self.num_envs), self.goal]
        reward = -np.sum(np.square(self.pos[:, 1] - goal), axis=1)
        return np.stack([reward, reward], axis=1)


class BatchedSimpleSpread(BatchedMPE):
    """``simple_spread_v3``: N agents cover N landmarks. Each agent sees its velocity and
    position, the landmarks and the other agents relative to it, and the others' (silent)
    messages; its reward mixes the shared coverage reward (minus the sum over landmarks of the
    nearest agent's distance) and its own collision penalty by ``local_ratio``."""

    mpe2_name = "simple_spread_v3"
    FIXED_KWARGS = {
        **BatchedMPE.FIXED_KWARGS,
        "curriculum": False,
        "terminate_on_success": False,
        "num_agent_neighbors": None,
        "num_landmark_neighbors": None,
    }
    SIZE = 0.15  # agent radius; landmarks do not collide

    def __init__(
        self,
        num_envs: int,
        N: int = 3,
        local_ratio: float = 0.5,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        n = _positive_int("env.kwargs.N", N)
        if isinstance(local_ratio, bool) or not 0.0 <= local_ratio <= 1.0:
            raise ValueError(f"env.kwargs.local_ratio={local_ratio} must be in [0, 1]")
        super().__init__(
            num_envs,
            [f"agent_{i}" for i in range(n)],
            movable=[True] * n,
            num_landmarks=n,
            dim_c=2,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
        )
        self.n = n
        self.local_ratio = float(local_ratio)
        self.observation_spaces = {a: _obs_space(6 * n) for a in self.possible_agents}
        self.action_spaces = {a: _action_space(5, continuous_actions) for a in self.possible_agents}
        # others[i]: every agent but i, in order (the scenario's `others`).
        self._others = np.array([[j for j in range(n) if j != i] for i in range(n)]).reshape(n, -1)
        self._rows = np.arange(n)[:, None]
        self._diagonal = np.eye(n, dtype=bool)

    def _decode_actions(self, actions: Mapping[str, np.ndarray]) -> np.ndarray:
        moves = np.stack([self._action(actions, a) for a in self.possible_agents], axis=1)
        return self._movement(moves) + self._collision_forces()

    def _collision_forces(self) -> np.ndarray:
        """World.apply_environment_force between every pair of agents."""
        delta = self.pos[:, :, None] - self.pos[:, None]  # [e, i, j] = pos_i - pos_j
        dist = np.sqrt(np.sum(np.square(delta), axis=-1))
        k = CONTACT_MARGIN
        penetration = np.logaddexp(0, -(dist - 2 * self.SIZE) / k) * k
        with np.errstate(invalid="ignore", divide="ignore"):  # i == j: 0 / 0, dropped below
            force = CONTACT_FORCE * delta / dist[..., None] * penetration[..., None]
        force[:, self._diagonal] = 0.0
        return force.sum(axis=2)

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        shape = (len(rows), self.n, 2)
        self.pos[rows] = rng.uniform(-1, 1, shape)
        self.landmarks[rows] = rng.uniform(-1, 1, shape)

    def _observations(self) -> Batch:
        n_envs = self.num_envs
        to_landmarks = self.landmarks[:, None] - self.pos[:, :, None]
        to_agents = self.pos[:, None] - self.pos[:, :, None]  # [e, i, j] = pos_j - pos_i
        to_others = to_agents[:, self._rows, self._others]
        obs = np.concatenate(
            [
                self.vel,
                self.pos,
                to_landmarks.reshape(n_envs, self.n, -1),
                to_others.reshape(n_envs, self.n, -1),
                self.comm[:, self._others].reshape(n_envs, self.n, -1),
            ],
            axis=2,
        ).astype(np.float32)
        return {a: obs[:, i] for i, a in enumerate(self.possible_agents)}

    def _rewards(self) -> np.ndarray:
        to_landmarks = self.pos[:, :, None] - self.landmarks[:, None]
        nearest = np.sqrt(np.sum(np.square(to_landmarks), axis=-1)).min(axis=1)
        coverage = -nearest.sum(axis=1)
        delta = self.pos[:, :, None] - self.pos[:, None]
        touching = np.sqrt(np.sum(np.square(delta), axis=-1)) < 2 * self.SIZE
        collisions = touching.sum(axis=2) - 1  # every agent touches itself
        return coverage[:, None] * (1 - self.local_ratio) - collisions * self.local_ratio


BATCHED_ENVS: dict[str, type[BatchedMPE]] = {
    "mpe2.simple_speaker_listener_v4.parallel_env": BatchedSpeakerListener,
    "mpe2.simple_spread_v3.parallel_env": BatchedSimpleSpread,
}


def batched_support(factory: str, kwargs: Mapping[str, Any], wrappers: Sequence[Any]) -> str | None:
    """Why an env config cannot run with ``env.backend=batched`` (None: it can)."""
    cls = BATCHED_ENVS.get(factory)
    if cls is None:
        return f"env.factory={factory} has no batched version (batched: {', '.join(BATCHED_ENVS)})"
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
