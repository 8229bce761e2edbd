"""The world every batched MPE scenario shares: state arrays, mpe2's physics and action
decoding, same-step autoreset and the vector-env interface.

Every env of a run is one row of a few arrays (agent positions, velocities and messages,
landmark positions, step counts, and a scenario's own arrays such as its goal), and one step
of all envs is a handful of numpy operations over those rows. Each operation follows mpe2
(``_mpe_utils/core.py`` physics, ``_mpe_utils/simple_env.py`` action decoding, reward mixing
and truncation) in the same order and dtypes (float32 actions and observations, float64
state), so a batched env and an mpe2 env in the same state produce the same observations,
rewards, terminations and truncations (tests/test_mpe_parity.py). A scenario module adds only
what an mpe2 scenario holds: its entities, its start draws, observations and rewards.

The envs speak the vector-env interface the trainer uses (``ippo_cli.envs.vector``): per-agent
dicts of arrays with a leading ``num_envs`` axis, ``active``/``final_obs``/``_final_obs`` infos
and same-step autoreset. Every reset draws from one numpy Generator, row after row in mpe2's
order (``draws.py``): a batched env of one env seeded ``s`` starts as mpe2 seeded ``s`` and
resets as it does after; row ``e`` of a larger batch continues the same stream. ``get_state``
is plain data: the arrays and that Generator's state, from which ``set_state`` continues exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

# mpe2 World and SimpleEnv constants.
DT = 0.1
DAMPING = 0.25
CONTACT_FORCE = 1e2
CONTACT_MARGIN = 1e-3
SENSITIVITY = 5.0  # an agent's force per unit of action, unless it sets accel
MOVE_DIM = 5  # no_action, move_left, move_right, move_down, move_up
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)
STATE_VERSION = 2

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Body:
    """An mpe2 agent's properties (``core.Agent`` defaults)."""

    name: str
    movable: bool = True
    silent: bool = False
    collide: bool = True
    size: float = 0.05
    accel: float | None = None
    max_speed: float | None = None
    mass: float = 1.0


@dataclass(frozen=True)
class Mark:
    """An mpe2 landmark's properties (never movable here)."""

    collide: bool = True
    size: float = 0.05


def obs_space(n: int) -> spaces.Box:
    inf = np.float32(np.inf)
    return spaces.Box(low=-inf, high=+inf, shape=(n,), dtype=np.float32)


def positive_int(key: str, value: Any) -> int:
    """``value`` as an int >= 1, else ValueError naming ``key``."""
    return count(key, value, 1)


def optional_positive_int(key: str, value: Any) -> int | None:
    return None if value is None else positive_int(key, value)


def ratio(key: str, value: Any) -> float:
    """``value`` as a float in [0, 1], else ValueError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key}={value} must be in [0, 1]")
    return float(value)


def flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value} must be a bool")
    return value


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance over the last axis, as mpe2 computes it."""
    return np.sqrt(np.sum(np.square(a - b), axis=-1))


class BatchedMPE:
    """The world arrays, physics, autoreset and vector-env API shared by every scenario.

    A scenario calls ``__init__`` with its agents (``Body``), landmarks (``Mark``), message
    size and any arrays of its own, and implements ``_draw_starts``, ``_observations`` and
    ``_rewards`` (and ``_terminal`` when it can end an episode early).
    """

    mpe2_name: str
    # mpe2 arguments accepted only at these values (anything else changes the game);
    # RENDER_ONLY arguments change how mpe2 draws, which `ippo eval` leaves to mpe2.
    FIXED_KWARGS: dict[str, Any] = {"render_mode": None, "benchmark_data": False}
    RENDER_ONLY = ("dynamic_rescaling",)

    def __init__(
        self,
        num_envs: int,
        bodies: Sequence[Body],
        marks: Sequence[Mark],
        dim_c: int,
        max_cycles: int,
        continuous_actions: bool,
        extra_kwargs: Mapping[str, Any],
        extra_arrays: Mapping[str, tuple[tuple[int, ...], type]] | None = None,
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
        self.num_envs = positive_int("env.num_envs", num_envs)
        self.max_cycles = positive_int("env.kwargs.max_cycles", max_cycles)
        self.continuous_actions = flag("env.kwargs.continuous_actions", continuous_actions)
        self.bodies = list(bodies)
        self.possible_agents = [b.name for b in bodies]
        self.agents = list(self.possible_agents)
        self.dim_c = dim_c
        n, a = self.num_envs, len(bodies)
        self.pos = np.zeros((n, a, 2))
        self.vel = np.zeros((n, a, 2))
        self.landmarks = np.zeros((n, len(marks), 2))
        self.comm = np.zeros((n, a, dim_c))
        self.steps = np.zeros(n, dtype=np.int64)
        self._extra = dict(extra_arrays or {})
        for name, (shape, dtype) in self._extra.items():
            setattr(self, name, np.zeros((n, *shape), dtype=dtype))
        self._set_physics(bodies, marks)
        self.action_spaces = {b.name: self._action_space(b) for b in bodies}
        obs = self._observations()
        self.observation_spaces = {b.name: obs_space(obs[b.name].shape[1]) for b in bodies}
        self._rng: np.random.Generator | None = None
        self._needs_reset = True
        self.closed = False

    def _set_physics(self, bodies: Sequence[Body], marks: Sequence[Mark]) -> None:
        self._movable = np.flatnonzero([b.movable for b in bodies])
        self._speaking = np.flatnonzero([not b.silent for b in bodies])
        self._accel = np.array([SENSITIVITY if b.accel is None else b.accel for b in bodies])
        self._mass = np.array([b.mass for b in bodies])
        self._max_speed = np.array([np.inf if b.max_speed is None else b.max_speed for b in bodies])
        self._limited = np.flatnonzero([b.max_speed is not None for b in bodies])
        # Colliders: agents and landmarks that collide; forces act on colliding agents only.
        sizes = np.array([b.size for b in bodies] + [m.size for m in marks])
        collide = np.array([b.collide for b in bodies] + [m.collide for m in marks])
        self._hit_agents = np.flatnonzero(collide[: len(bodies)])
        self._hit_all = np.flatnonzero(collide)
        self._hit_size = sizes[self._hit_agents][:, None] + sizes[self._hit_all][None]
        self._hit_self = self._hit_agents[:, None] == self._hit_all[None]

    def _action_space(self, body: Body) -> spaces.Space:
        """SimpleEnv's action space: movement (5) and/or a message, summed when continuous,
        multiplied when discrete (one index for both)."""
        if body.movable:
            size = MOVE_DIM
        else:
            size = 0 if self.continuous_actions else 1
        if not body.silent:
            size = size + self.dim_c if self.continuous_actions else size * self.dim_c
        if self.continuous_actions:
            return spaces.Box(low=0, high=1, shape=(size,))
        return spaces.Discrete(size)

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
        ``max_cycles`` or ended early are reset in the same call (``obs`` from the reset,
        ``final_obs`` from the step)."""
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise KeyError(f"actions for unknown agents {sorted(unknown)}")
        force = self._apply_actions(actions)
        force[:, self._hit_agents] += self._collision_forces()
        self._integrate(force)
        self._post_step()
        self.steps += 1
        rewards = self._rewards().astype(np.float32)
        truncated = self.steps >= self.max_cycles
        terminated = self._terminal() & ~truncated
        obs = self._observations()
        ended = truncated | terminated
        final = obs
        if ended.any():
            self._reset_rows(np.flatnonzero(ended))
            obs = self._observations()
        return (
            obs,
            {a: rewards[:, i] for i, a in enumerate(self.possible_agents)},
            {a: terminated.astype(np.float32) for a in self.possible_agents},
            {a: truncated.astype(np.float32) for a in self.possible_agents},
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
        return ("pos", "vel", "landmarks", "comm", "steps", *self._extra)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.vel[rows] = 0.0
        self.comm[rows] = 0.0
        self.steps[rows] = 0
        self._draw_starts(rows, self._rng)

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

    def _apply_actions(self, actions: Mapping[str, np.ndarray]) -> np.ndarray:
        """SimpleEnv._set_action and World.update_agent_state: every agent's action force
        (zero for immovable agents) and its message (zeros for silent agents)."""
        force = np.zeros_like(self.pos)
        for i, body in enumerate(self.bodies):
            act = self._action(actions, body.name)
            if body.movable:
                if self.continuous_actions:
                    move, act = act[:, :MOVE_DIM], act[:, MOVE_DIM:]
                    # mpe2 subtracts in float32, then adds to a float64 zero vector.
                    u = np.stack([move[:, 2] - move[:, 1], move[:, 4] - move[:, 3]], -1)
                    u = u.astype(np.float64)
                else:
                    u, act = MOVES[act % MOVE_DIM], act // MOVE_DIM
                force[:, i] = u * self._accel[i]
            if not body.silent:
                self.comm[:, i] = act if self.continuous_actions else np.eye(self.dim_c)[act]
        return force

    def _collision_forces(self) -> np.ndarray:
        """World.apply_environment_force on each colliding agent from every other collider."""
        entities = np.concatenate([self.pos, self.landmarks], axis=1)
        delta = entities[:, self._hit_agents, None] - entities[:, None, self._hit_all]
        dist = np.sqrt(np.sum(np.square(delta), axis=-1))
        k = CONTACT_MARGIN
        penetration = np.logaddexp(0, -(dist - self._hit_size) / k) * k
        with np.errstate(invalid="ignore", divide="ignore"):  # an agent and itself: 0 / 0
            force = CONTACT_FORCE * delta / dist[..., None] * penetration[..., None]
        force[:, self._hit_self] = 0.0
        return force.sum(axis=2)

    def _integrate(self, force: np.ndarray) -> None:
        """World.integrate_state for the movable agents, speed limits included."""
        m = self._movable
        self.pos[:, m] += self.vel[:, m] * DT
        self.vel[:, m] = self.vel[:, m] * (1 - DAMPING)
        self.vel[:, m] += (force[:, m] / self._mass[m, None]) * DT
        if len(self._limited):
            lim = self._limited
            vel = self.vel[:, lim]
            speed = np.sqrt(np.square(vel[..., 0]) + np.square(vel[..., 1]))
            fast = speed > self._max_speed[lim]
            with np.errstate(invalid="ignore", divide="ignore"):  # at rest: 0 / 0, not used
                capped = vel / speed[..., None] * self._max_speed[lim, None]
            self.vel[:, lim] = np.where(fast[..., None], capped, vel)

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

    # ------------------------------------------------------- the scenario's part
    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """Scenario.reset_world for ``rows``: positions, goals, ... (velocities, messages and
        step counts are zeroed already)."""
        raise NotImplementedError

    def _post_step(self) -> None:
        """Scenario.post_step: what a scenario changes after the physics, before rewards."""

    def _observations(self) -> Batch:
        """Scenario.observation of every agent, float32."""
        raise NotImplementedError

    def _rewards(self) -> np.ndarray:
        """``(num_envs, agents)`` rewards, mixed with the global reward as SimpleEnv does."""
        raise NotImplementedError

    def _terminal(self) -> np.ndarray:
        """Scenario.is_terminal per env (never, unless the scenario ends episodes early)."""
        return np.zeros(self.num_envs, dtype=bool)


def nearest_first(relative: np.ndarray, n: int | None) -> np.ndarray:
    """partial_observability.nearest_entities: for entity positions ``relative`` to an
    observer (``(..., K, 2)``), the indices of the ``n`` nearest, nearest first (all K in
    order when n is None)."""
    k = relative.shape[-2]
    if n is None:
        return np.broadcast_to(np.arange(k), relative.shape[:-1])
    return np.argsort(np.linalg.norm(relative, axis=-1), axis=-1)[..., :n]


def pick(values: np.ndarray, order: np.ndarray, n: int | None) -> np.ndarray:
    """``values[..., order, :]`` zero-padded to ``n`` slots (partial_observability's
    ``padded_*`` helpers); ``(..., n * d)`` flat per observer."""
    chosen = np.take_along_axis(values, order[..., None], axis=-2)
    if n is not None and chosen.shape[-2] < n:
        pad = np.zeros((*chosen.shape[:-2], n - chosen.shape[-2], chosen.shape[-1]))
        chosen = np.concatenate([chosen, pad], axis=-2)
    return chosen.reshape(*chosen.shape[:-2], -1)


def others(n: int) -> np.ndarray:
    """``others[i]``: every agent index but ``i``, in order (``(n, n - 1)``)."""
    return np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.int64).reshape(
        n, n - 1
    )


def positions(draws: list[np.ndarray]) -> np.ndarray:
    """Per-entity ``uniform(low, high, 2)`` draws as ``(rows, entities, 2)``."""
    return np.stack(draws, axis=1)


def bound_penalty(pos: np.ndarray) -> np.ndarray:
    """simple_tag's and simple_world_comm's ``bound`` summed over both coordinates: 0 inside
    0.9, linear to 1, then exponential capped at 10."""
    x = np.abs(pos)
    with np.errstate(over="ignore"):
        outside = np.minimum(np.exp(2 * x - 2), 10)
    penalty = np.where(x < 0.9, 0.0, np.where(x < 1.0, (x - 0.9) * 10, outside))
    return penalty[..., 0] + penalty[..., 1]


def count(key: str, value: Any, least: int) -> int:
    """``value`` as an int >= ``least``, else ValueError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ValueError(f"{key}={value} must be an int >= {least}")
    return int(value)


def matched_distances(dists: np.ndarray) -> np.ndarray:
    """Per env, ``dists[i, match[i]]`` for the agent-to-target matching of least total
    distance (scipy's ``linear_sum_assignment``, as simple_line and simple_formation use):
    ``(envs, n, n)`` -> ``(envs, n)``. Small n: every permutation at once; larger: scipy."""
    envs, n, _ = dists.shape
    if n > 6:
        from scipy.optimize import linear_sum_assignment

        return np.stack([d[linear_sum_assignment(d)] for d in dists])
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    candidates = dists[:, np.arange(n), perms]  # [e, permutation, agent]
    best = candidates.sum(axis=2).argmin(axis=1)
    return candidates[np.arange(envs), best]
