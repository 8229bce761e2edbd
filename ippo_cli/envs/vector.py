"""Vectorised PettingZoo ParallelEnvs with same-step autoreset.

``SyncVecEnv`` steps every env in-process; ``AsyncVecEnv`` gives each worker process a
contiguous slice of the envs. Both run the same ``_EnvRunner`` code on identically laid-out
buffers (shared memory for async), so their outputs are bit-identical.

Outputs are dicts keyed by every agent of ``possible_agents``, batched over envs. Rewards and
dones are float32 with NaN where the agent was absent from that env's step; observations are
zeros where the agent is inactive; ``infos[agent]`` holds ``active``, ``final_obs``,
``_final_obs`` and the env's own info keys collated gymnasium-style (``key`` + ``_key`` mask).
After an autoreset an env's infos are the reset's; the finished step's info is its
``final_info``.

Observation spaces may be Box/Discrete/MultiDiscrete/MultiBinary, or a Dict/Tuple of those (one
level): ``obs[agent]`` (and ``infos[agent]["final_obs"]``) is then a dict ``{key: array}`` or a
tuple of arrays, each batched over envs and stored in its own shared-memory buffer.

Seeding and exact resume: ``reset(seed=s)`` gives env e the base seed ``s + e`` (or the list
entry) for its first episode; its k-th autoreset reseeds with ``episode_seed(base, k)``. Each env
also records the action rows it was stepped with since its episode began, so ``get_state()``
(plain data: lists, dicts, ints, floats, strings, None) and ``set_state()`` restore every env
exactly by reseeding and replaying, provided the env is deterministic given its reset seed and
actions. ``reset(seed=None)`` keeps unseeded autoresets and makes the state unrestorable.
"""

from __future__ import annotations

import copy as copylib
import math
import multiprocessing as mp
import operator
import os
import signal
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

EnvFn = Callable[[], ParallelEnv]
# One agent's batched observation: an array with a leading num_envs axis, or for Dict/Tuple
# spaces a dict/tuple of such arrays (one per subspace).
ObsArray = np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]
Batch = dict[str, np.ndarray]  # agent -> array with a leading num_envs axis
ObsBatch = dict[str, ObsArray]
# (env index, {agent: non-empty info dict}) for the envs that reported something.
EnvInfos = list[tuple[int, dict[str, dict[str, Any]]]]

_RESERVED_INFO_KEYS = ("active", "final_obs", "_final_obs")  # "final_info" is ours too
_LEAF_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
_ALIGN = 64
STATE_VERSION = 1


def episode_seed(base_seed: int, episode: int) -> int:
    """Reset seed of episode ``episode`` (0, 1, ...) of an env whose base seed is ``base_seed``:
    the base seed itself for episode 0, then a 31-bit int derived from (base_seed, episode)."""
    if episode == 0:
        return int(base_seed)
    entropy = [int(base_seed) % (1 << 64), int(episode)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def _is_plain(value: Any) -> bool:
    """True for None/bool/int/float/str and lists/dicts (str keys) of those, recursively."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


class EnvOutputError(ValueError):
    """An env returned a step value that cannot be learned from (a NaN or infinite reward,
    termination or truncation); the message names the agent, the env and the step."""


def non_finite_outcome(reward: Any, terminated: Any, truncated: Any) -> str | None:
    """``"reward (nan)"`` (or termination, truncation) for the first of one agent's step
    values that is NaN or infinite; None when all are finite. An absent agent has no values
    here: NaN in the vector env's outputs means absent, so the env's own NaN must stop here.
    """
    for name, value in (("reward", reward), ("termination", terminated), ("truncation", truncated)):
        try:
            array = isinstance(value, np.ndarray)
            finite = np.isfinite(value).all() if array else math.isfinite(value)
        except TypeError:
            continue  # not a number (None, a string): storing it decides what happens
        if not finite:
            return f"{name} ({value})"
    return None


def _storage(space: spaces.Space, agent: str, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Per-env (shape, dtype) used to store a value of ``space``."""
    if isinstance(space, spaces.Discrete):
        return (), np.dtype(np.int64)
    if isinstance(space, _LEAF_SPACES):
        return tuple(space.shape), np.dtype(space.dtype)
    raise NotImplementedError(f"{what} space {space} of agent {agent!r} is not supported yet")


def _obs_leaves(space: spaces.Space, agent: str) -> tuple[str | None, list[tuple[Any, Any]]]:
    """``(kind, [(key, (shape, dtype)), ...])`` of an observation space: kind is ``None`` for a
    plain space (one leaf, key ``None``), ``"dict"`` or ``"tuple"`` for one level of nesting."""
    if isinstance(space, spaces.Dict | spaces.Tuple):
        kind = "dict" if isinstance(space, spaces.Dict) else "tuple"
        items = space.spaces.items() if kind == "dict" else enumerate(space.spaces)
        leaves = []
        for key, sub in items:
            if not isinstance(sub, _LEAF_SPACES):
                what = "nested Dict/Tuple" if isinstance(sub, spaces.Dict | spaces.Tuple) else "it"
                raise NotImplementedError(
                    f"observation space {space} of agent {agent!r}: subspace {key!r} is {sub}; "
                    f"{what} is not supported"
                )
            leaves.append((key, _storage(sub, agent, "observation")))
        return kind, leaves
    return None, [(None, _storage(space, agent, "observation"))]


def _obs_write(buf: ObsArray, e: int, value: Any) -> None:
    """Write one env's observation ``value`` into row ``e`` of ``buf``."""
    if isinstance(buf, dict):
        for key, arr in buf.items():
            arr[e] = value[key]
    elif isinstance(buf, tuple):
        if len(value) != len(buf):
            raise ValueError(f"Tuple observation has {len(value)} items, expected {len(buf)}")
        for arr, item in zip(buf, value, strict=True):
            arr[e] = item
    else:
        buf[e] = value


def _obs_fill(buf: ObsArray, index: Any, value: Any) -> None:
    """Set rows ``index`` of every array of ``buf`` to ``value``."""
    arrays = buf.values() if isinstance(buf, dict) else buf if isinstance(buf, tuple) else (buf,)
    for arr in arrays:
        arr[index] = value


def _obs_clone(buf: ObsArray) -> ObsArray:
    if isinstance(buf, dict):
        return {key: arr.copy() for key, arr in buf.items()}
    if isinstance(buf, tuple):
        return tuple(arr.copy() for arr in buf)
    return buf.copy()


def _make_envs(env_fns: Sequence[EnvFn], envs: list[ParallelEnv] | None = None) -> list:
    """Call every env_fn, appending to ``envs`` (so a failure can name the env being built).

    An env object returned twice (``[lambda: env] * n``) is deep-copied, so that no two slots
    step the same env."""
    envs = [] if envs is None else envs
    seen: set[int] = set()
    for fn in env_fns:
        env = fn()
        if id(env) in seen:
            env = copylib.deepcopy(env)
        seen.add(id(env))
        envs.append(env)
    return envs


def _action_converter(space: spaces.Space) -> Callable[[np.ndarray], Any]:
    """Turn a float64 action row into what the env expects (always a fresh object)."""
    if isinstance(space, spaces.Discrete):
        return int
    if isinstance(space, spaces.Box):
        dtype = np.dtype(space.dtype)
        return lambda row: row.astype(dtype)
    return lambda row: row.astype(np.int64)


class _Layout:
    """Byte layout of every batched buffer, shared by the parent and the async workers."""

    FIELDS = ("obs", "final_obs", "has_final", "reward", "term", "trunc", "active", "action")
    OBS_FIELDS = ("obs", "final_obs")

    def __init__(
        self,
        agents: Sequence[str],
        obs_spaces: dict[str, spaces.Space],
        act_spaces: dict[str, spaces.Space],
        num_envs: int,
    ) -> None:
        # (field, agent, subspace key or None, byte offset, full shape, dtype)
        self.entries: list[tuple[str, str, Any, int, tuple[int, ...], np.dtype]] = []
        self.obs_kinds: dict[str, str | None] = {}
        offset = 0
        for agent in agents:
            kind, leaves = _obs_leaves(obs_spaces[agent], agent)
            self.obs_kinds[agent] = kind
            act_shape, _ = _storage(act_spaces[agent], agent, "action")
            per_env: dict[str, list[tuple[Any, tuple[tuple[int, ...], np.dtype]]]] = {
                "obs": leaves,
                "final_obs": leaves,
            }
            per_env |= {
                "has_final": ((), np.dtype(bool)),
                "reward": ((), np.dtype(np.float32)),
                "term": ((), np.dtype(np.float32)),
                "trunc": ((), np.dtype(np.float32)),
                "active": ((), np.dtype(bool)),
                # float64 holds every int action exactly and keeps NaN ("no action") rows.
                "action": (act_shape, np.dtype(np.float64)),
            }
            for field in self.FIELDS:
                items = per_env[field] if field in self.OBS_FIELDS else [(None, per_env[field])]
                for key, (shape, dtype) in items:
                    full = (num_envs, *shape)
                    self.entries.append((field, agent, key, offset, full, dtype))
                    nbytes = int(np.prod(full)) * dtype.itemsize
                    offset += -(-nbytes // _ALIGN) * _ALIGN
        self.nbytes = max(offset, _ALIGN)

    def views(self, memory: Any, start: int = 0, stop: int | None = None) -> dict[str, dict]:
        """``{field: {agent: array}}`` views into ``memory``, restricted to envs [start, stop).

        For a Dict/Tuple observation space, ``obs``/``final_obs`` hold a dict/tuple of arrays.
        """
        raw = np.frombuffer(memory, dtype=np.uint8, count=self.nbytes)
        out: dict[str, dict[str, Any]] = {field: {} for field in self.FIELDS}
        parts: dict[tuple[str, str], list[tuple[Any, np.ndarray]]] = {}
        for field, agent, key, offset, shape, dtype in self.entries:
            count = int(np.prod(shape)) * dtype.itemsize
            arr = raw[offset : offset + count].view(dtype).reshape(shape)[start:stop]
            if field in self.OBS_FIELDS and self.obs_kinds[agent] is not None:
                parts.setdefault((field, agent), []).append((key, arr))
            else:
                out[field][agent] = arr
        for agent, kind in self.obs_kinds.items():
            for field in self.OBS_FIELDS:
                if kind == "dict":
                    out[field][agent] = dict(parts.get((field, agent), []))
                elif kind == "tuple":
                    out[field][agent] = tuple(arr for _, arr in parts.get((field, agent), []))
        return out


class _EnvRunner:
    """Steps a list of envs and writes their results into (possibly shared) buffers."""

    def __init__(
        self,
        envs: list[ParallelEnv],
        agents: list[str],
        obs_spaces: dict[str, spaces.Space],
        act_spaces: dict[str, spaces.Space],
        bufs: dict[str, dict[str, np.ndarray]],
        offset: int = 0,
    ) -> None:
        for i, env in enumerate(envs):
            if list(env.possible_agents) != agents:
                raise ValueError(
                    f"env {offset + i} has possible_agents {env.possible_agents}, expected {agents}"
                )
        self.envs = envs
        self.agents = agents
        self.bufs = bufs
        self.offset = offset
        self.convert = {a: _action_converter(act_spaces[a]) for a in agents}
        self.current = 0  # env being processed, so a worker can name it in error reports
        # Per env: base seed (None: unseeded), episode number, and the action rows (one
        # {agent: float64 row} per step, NaN rows included) since the episode began.
        self.base_seeds: list[int | None] = [None] * len(envs)
        self.episodes = [0] * len(envs)
        self.history: list[list[dict[str, np.ndarray]]] = [[] for _ in envs]

    def _write_obs(self, e: int, env: ParallelEnv, obs: dict[str, Any]) -> None:
        alive = set(env.agents)
        for a in self.agents:
            self.bufs["active"][a][e] = a in alive
            if a in alive and a in obs:
                _obs_write(self.bufs["obs"][a], e, obs[a])
            else:
                _obs_fill(self.bufs["obs"][a], e, 0)

    @staticmethod
    def _keep_info(info: dict, agents: list[str]) -> dict[str, dict[str, Any]]:
        return {a: d for a, d in info.items() if a in agents and d}

    def _actions(self, env: ParallelEnv, rows: dict[str, np.ndarray]) -> dict[str, Any]:
        """The env's action dict from float64 rows: alive agents whose row is not all NaN."""
        actions = {}
        for a in env.agents:
            row = rows[a]
            if not np.isnan(row).all():
                actions[a] = self.convert[a](row)
        return actions

    def _clear_finals(self) -> None:
        for a in self.agents:
            _obs_fill(self.bufs["final_obs"][a], slice(None), 0)
            self.bufs["has_final"][a][:] = False

    def reset(self, seeds: list[int | None], options: dict | None) -> EnvInfos:
        self._clear_finals()
        infos: EnvInfos = []
        for e, env in enumerate(self.envs):
            self.current = e
            self.base_seeds[e], self.episodes[e], self.history[e] = seeds[e], 0, []
            obs, info = env.reset(seed=seeds[e], options=options)
            self._write_obs(e, env, obs)
            if kept := self._keep_info(info, self.agents):
                infos.append((self.offset + e, kept))
        return infos

    def step(self) -> EnvInfos:
        b = self.bufs
        # Rewrite every output row, so nothing stale survives from an earlier step.
        for a in self.agents:
            b["reward"][a][:] = np.nan
            b["term"][a][:] = np.nan
            b["trunc"][a][:] = np.nan
            _obs_fill(b["final_obs"][a], slice(None), 0)
            b["has_final"][a][:] = False
        infos: EnvInfos = []
        for e, env in enumerate(self.envs):
            self.current = e
            rows = {a: b["action"][a][e].copy() for a in self.agents}
            self.history[e].append(rows)
            obs, rew, term, trunc, info = env.step(self._actions(env, rows))
            all_done = True
            for a in self.agents:
                if a not in rew:
                    continue
                bad = non_finite_outcome(rew[a], term.get(a, False), trunc.get(a, False))
                if bad is not None:
                    raise EnvOutputError(
                        f"non-finite {bad} from agent '{a}' in env {self.offset + e} at step "
                        f"{len(self.history[e])} of its episode"
                    )
                terminated, truncated = bool(term.get(a, False)), bool(trunc.get(a, False))
                b["reward"][a][e] = rew[a]
                b["term"][a][e] = terminated
                b["trunc"][a][e] = truncated
                if terminated or truncated:
                    if a in obs:
                        _obs_write(b["final_obs"][a], e, obs[a])
                        b["has_final"][a][e] = True
                else:
                    all_done = False
            if all_done or not env.agents:
                # Seeded from (base seed, episode number), so a restore can replay it; an
                # unseeded env (base None) continues its own RNG stream. As in gymnasium's
                # same-step autoreset, the infos describe the new episode (its action masks
                # and env-defined actions govern the next action) and the finished step's
                # info moves to "final_info".
                step_info = info
                self.episodes[e] += 1
                self.history[e] = []
                base = self.base_seeds[e]
                seed = None if base is None else episode_seed(base, self.episodes[e])
                obs, info = env.reset(seed=seed)
                info = {a: dict(d) for a, d in info.items()}
                for a, d in step_info.items():
                    if d and a in self.agents:
                        info.setdefault(a, {})["final_info"] = d
            self._write_obs(e, env, obs)
            if kept := self._keep_info(info, self.agents):
                infos.append((self.offset + e, kept))
        return infos

    def get_state(self) -> list[dict[str, Any]]:
        """Per env ``{"base_seed", "episode", "actions": {agent: [row, ...]}}`` (plain data)."""
        return [
            {
                "base_seed": self.base_seeds[e],
                "episode": self.episodes[e],
                "actions": {
                    a: np.array([rows[a] for rows in hist], dtype=np.float64).tolist()
                    for a in self.agents
                },
            }
            for e, hist in enumerate(self.history)
        ]

    def restore(self, states: list[dict[str, Any]], options: dict | None) -> EnvInfos:
        """Reseed each env for its episode and replay its action rows (``{agent: float64 array
        of shape (steps, *action_shape)}``) through the normal conversion, without autoresets.
        """
        self._clear_finals()
        infos: EnvInfos = []
        for e, (env, state) in enumerate(zip(self.envs, states, strict=True)):
            self.current = e
            base, episode, actions = state["base_seed"], state["episode"], state["actions"]
            seed = episode_seed(base, episode)
            obs, info = env.reset(seed=seed, options=options if episode == 0 else None)
            steps = len(actions[self.agents[0]])
            history = []
            for t in range(steps):
                rows = {a: actions[a][t] for a in self.agents}
                history.append(rows)
                obs, rew, term, trunc, info = env.step(self._actions(env, rows))
                ended = [a for a in self.agents if a in rew and (term.get(a) or trunc.get(a))]
                if len(ended) == sum(a in rew for a in self.agents) or not env.agents:
                    raise ValueError(
                        f"replay diverged: episode {episode} (seed {seed}) ended after "
                        f"{t + 1} of {steps} recorded steps; is the env deterministic given "
                        "its reset seed and actions?"
                    )
            self.base_seeds[e], self.episodes[e], self.history[e] = base, episode, history
            self._write_obs(e, env, obs)
            if kept := self._keep_info(info, self.agents):
                infos.append((self.offset + e, kept))
        return infos

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _collate_value(out: dict[str, Any], key: str, e: int, value: Any, num_envs: int) -> None:
    arr = out.get(key)
    if arr is None:
        if isinstance(value, bool | int | float | np.number | np.bool_ | np.ndarray) and (
            np.asarray(value).dtype.kind in "biufc"
        ):
            value_arr = np.asarray(value)
            arr = np.zeros((num_envs, *value_arr.shape), dtype=value_arr.dtype)
        else:
            arr = np.full(num_envs, None, dtype=object)
        out[key] = arr
        out["_" + key] = np.zeros(num_envs, dtype=bool)
    try:
        arr[e] = value
    except (ValueError, TypeError):
        # A value that does not fit the first one's shape/dtype: degrade to per-env objects.
        obj = np.empty(num_envs, dtype=object)
        for i, row in enumerate(arr):
            obj[i] = row
        obj[e] = value
        out[key] = obj
    out["_" + key][e] = True


class _BaseVecEnv:
    """Parent-side logic shared by both vector envs: API, action packing, output copies."""

    num_envs: int
    possible_agents: list[str]
    agents: list[str]
    observation_spaces: dict[str, spaces.Space]
    action_spaces: dict[str, spaces.Space]
    closed: bool = True

    def _setup(self, env: ParallelEnv, num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError("env_fns must not be empty")
        self.num_envs = num_envs
        self.possible_agents = list(env.possible_agents)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: env.observation_space(a) for a in self.agents}
        self.action_spaces = {a: env.action_space(a) for a in self.agents}
        self._layout = _Layout(self.agents, self.observation_spaces, self.action_spaces, num_envs)
        self._needs_reset = True
        # Why get_state() cannot be restored (None: it can), and the last reset's options.
        self._unrestorable: str | None = "the vector env has not been reset"
        self._options: dict | None = None

    def single_observation_space(self, agent: str) -> spaces.Space:
        """Observation space of ``agent`` in one env."""
        return self.observation_spaces[agent]

    def single_action_space(self, agent: str) -> spaces.Space:
        """Action space of ``agent`` in one env."""
        return self.action_spaces[agent]

    def _seeds(self, seed: int | Sequence[int] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int | np.integer):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = [None if s is None else operator.index(s) for s in seed]
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        return seeds

    def _write_actions(self, actions: dict[str, np.ndarray]) -> None:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise KeyError(f"actions for unknown agents {sorted(unknown)}")
        for a in self.possible_agents:
            buf = self._bufs["action"][a]
            if a not in actions:
                if self._bufs["active"][a].any():
                    raise KeyError(f"missing actions for alive agent {a!r}")
                buf[:] = np.nan
                continue
            act = np.asarray(actions[a])
            if act.shape != buf.shape:
                raise ValueError(f"actions[{a!r}] has shape {act.shape}, expected {buf.shape}")
            buf[:] = act

    def _outputs(self, env_infos: EnvInfos) -> dict[str, dict[str, Any]]:
        b = self._bufs
        infos: dict[str, dict[str, Any]] = {
            a: {
                "active": b["active"][a].copy(),
                "final_obs": _obs_clone(b["final_obs"][a]),
                "_final_obs": b["has_final"][a].copy(),
            }
            for a in self.possible_agents
        }
        for e, info in env_infos:
            for a, d in info.items():
                for key, value in d.items():
                    if value is not None and key not in _RESERVED_INFO_KEYS:
                        _collate_value(infos[a], key, e, value, self.num_envs)
        return infos

    def _obs_copy(self) -> ObsBatch:
        return {a: _obs_clone(self._bufs["obs"][a]) for a in self.possible_agents}

    def _reset(self, seeds: list[int | None], options: dict | None) -> EnvInfos:
        raise NotImplementedError

    def _step(self) -> EnvInfos:
        raise NotImplementedError

    def _get_state(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _restore(self, states: list[dict[str, Any]], options: dict | None) -> EnvInfos:
        raise NotImplementedError

    def reset(
        self, seed: int | Sequence[int] | None = None, options: dict | None = None
    ) -> tuple[ObsBatch, dict[str, dict[str, Any]]]:
        """Reset every env; an int seed gives env i ``seed + i``, a list one seed per env.

        With seeds, env i's later autoresets use ``episode_seed(seed_i, k)`` for its k-th
        autoreset (and no options); with ``seed=None`` they are unseeded."""
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        seeds = self._seeds(seed)
        self._needs_reset, self._unrestorable = True, "reset() failed"
        env_infos = self._reset(seeds, options)
        self._needs_reset = False
        if seed is None:
            self._unrestorable = "reset(seed=None) was used, so episodes are not reproducible"
        elif None in seeds:
            self._unrestorable = f"reset() got no seed for env {seeds.index(None)}"
        elif not _is_plain(options):
            self._unrestorable = "the reset options are not plain data (lists/dicts/numbers)"
        else:
            self._unrestorable = None
        self._options = copylib.deepcopy(options) if _is_plain(options) else None
        return self._obs_copy(), self._outputs(env_infos)

    def get_state(self) -> dict[str, Any]:
        """Plain-data state from which ``set_state`` restores every env exactly.

        ``{"version", "restorable", "reason", "num_envs", "agents", "options", "base_seeds",
        "episodes", "seeds", "actions"}``: per env its base seed, current episode number
        (0 = the one started by ``reset``), that episode's reset seed, and
        ``actions[e][agent]``, the float64 action rows (lists of floats, or a float for
        Discrete; NaN where no action was given) of every step since the episode began.
        ``restorable`` is False (``reason`` says why) after ``reset(seed=None)``.
        """
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        envs = self._get_state()
        base_seeds = [s["base_seed"] for s in envs]
        episodes = [s["episode"] for s in envs]
        return {
            "version": STATE_VERSION,
            "restorable": self._unrestorable is None,
            "reason": self._unrestorable,
            "num_envs": self.num_envs,
            "agents": list(self.possible_agents),
            "options": copylib.deepcopy(self._options),
            "base_seeds": base_seeds,
            "episodes": episodes,
            "seeds": [
                None if b is None else episode_seed(b, k)
                for b, k in zip(base_seeds, episodes, strict=True)
            ],
            "actions": [s["actions"] for s in envs],
        }

    def _check_state(self, state: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Validate a ``get_state`` dict; per env ``{"base_seed", "episode", "actions":
        {agent: float64 array (steps, *action_shape)}}``."""
        if not isinstance(state, Mapping):
            raise ValueError(f"env state must be a dict, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"env state version {state.get('version')!r} != {STATE_VERSION}")
        if not state.get("restorable"):
            reason = state.get("reason") or "no reason given"
            raise ValueError(f"env state is not restorable: {reason}")
        if state.get("num_envs") != self.num_envs:
            raise ValueError(
                f"env state has {state.get('num_envs')} envs, this has {self.num_envs}"
            )
        if list(state.get("agents") or ()) != self.possible_agents:
            raise ValueError(
                f"env state has agents {state.get('agents')}, this env has {self.possible_agents}"
            )
        out = []
        try:
            for e in range(self.num_envs):
                base, episode = state["base_seeds"][e], state["episodes"][e]
                for name, value, low in (("base seed", base, None), ("episode", episode, 0)):
                    if isinstance(value, bool) or not isinstance(value, int):
                        raise ValueError(f"env {e}: {name} {value!r} is not an int")
                    if low is not None and value < low:
                        raise ValueError(f"env {e}: {name} {value} is negative")
                if state["seeds"][e] != episode_seed(base, episode):
                    raise ValueError(
                        f"env {e}: seed {state['seeds'][e]} != episode_seed({base}, {episode})"
                    )
                rows = state["actions"][e]
                if set(rows) != set(self.possible_agents):
                    raise ValueError(f"env {e}: actions for agents {sorted(rows)}")
                actions = {}
                for a in self.possible_agents:
                    shape = self._bufs["action"][a].shape[1:]
                    arr = np.asarray(rows[a], dtype=np.float64).reshape(-1, *shape)
                    if arr.shape != (len(rows[a]), *shape):
                        raise ValueError(f"env {e}: action rows of {a!r} are not of shape {shape}")
                    actions[a] = arr
                if len({len(arr) for arr in actions.values()}) > 1:
                    raise ValueError(f"env {e}: agents have different numbers of action rows")
                out.append({"base_seed": base, "episode": episode, "actions": actions})
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"malformed env state ({type(exc).__name__}: {exc})") from None
        return out

    def set_state(self, state: Mapping[str, Any]) -> tuple[ObsBatch, dict[str, dict[str, Any]]]:
        """Restore a ``get_state`` dict: reset every env with its episode's seed and replay its
        action rows (no autoresets). Returns ``(obs, infos)`` as the interrupted ``step``/
        ``reset`` returned them; later steps match the uninterrupted run bit for bit.

        Raises ValueError if the state is not restorable or does not fit this vector env."""
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        envs = self._check_state(state)
        options = state.get("options")
        self._needs_reset = True  # until the restore has succeeded
        self._unrestorable = "set_state() failed"
        env_infos = self._restore(envs, copylib.deepcopy(options))
        self._needs_reset = False
        self._unrestorable = None
        self._options = copylib.deepcopy(options)
        return self._obs_copy(), self._outputs(env_infos)

    def step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[ObsBatch, Batch, Batch, Batch, dict[str, dict[str, Any]]]:
        """Step every env with ``actions[agent]`` of shape ``(num_envs, *action_shape)``.

        Returns ``(obs, rewards, terminations, truncations, infos)``; finished envs are reset
        in the same call (their ``obs`` come from the reset, ``final_obs`` from the step).
        """
        self._write_actions(actions)
        env_infos = self._step()
        b = self._bufs
        agents = self.possible_agents
        return (
            self._obs_copy(),
            {a: b["reward"][a].copy() for a in agents},
            {a: b["term"][a].copy() for a in agents},
            {a: b["trunc"][a].copy() for a in agents},
            self._outputs(env_infos),
        )

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class SyncVecEnv(_BaseVecEnv):
    """Steps all envs sequentially in the calling process."""

    def __init__(self, env_fns: Sequence[EnvFn]) -> None:
        envs = _make_envs(env_fns)
        if not envs:
            raise ValueError("env_fns must not be empty")
        self._setup(envs[0], len(envs))
        self._memory = bytearray(self._layout.nbytes)
        self._bufs = self._layout.views(self._memory)
        self._runner = _EnvRunner(
            envs, self.agents, self.observation_spaces, self.action_spaces, self._bufs
        )
        self.envs = envs
        self.closed = False

    def _reset(self, seeds: list[int | None], options: dict | None) -> EnvInfos:
        return self._runner.reset(seeds, options)

    def _step(self) -> EnvInfos:
        return self._runner.step()

    def _get_state(self) -> list[dict[str, Any]]:
        return self._runner.get_state()

    def _restore(self, states: list[dict[str, Any]], options: dict | None) -> EnvInfos:
        return self._runner.restore(states, options)

    def close(self) -> None:
        """Close every env (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._runner.close()


def _worker(
    env_fns: list[EnvFn],
    start: int,
    pipe: Connection,
    parent_pipe: Connection | None,
    memory: Any,
    layout: _Layout,
    agents: list[str],
    obs_spaces: dict[str, spaces.Space],
    act_spaces: dict[str, spaces.Space],
) -> None:
    # Ctrl-C goes to the whole process group; the parent handles it and closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pipe is not None:
        parent_pipe.close()
    envs: list[ParallelEnv] = []

    def error(exc: BaseException, env: int) -> tuple[str, Any]:
        msg = " ".join(str(exc).splitlines())
        if isinstance(exc, EnvOutputError):  # says which env itself
            return "bad_output", (start + env, msg, traceback.format_exc())
        return "error", (start + env, f"{type(exc).__name__}: {msg}", traceback.format_exc())

    try:
        _make_envs(env_fns, envs)
        bufs = layout.views(memory, start, start + len(envs))
        runner = _EnvRunner(envs, agents, obs_spaces, act_spaces, bufs, offset=start)
        pipe.send(("ok", None))
    except Exception as exc:
        pipe.send(error(exc, min(len(envs), len(env_fns) - 1)))
        return
    while True:
        try:
            cmd, data = pipe.recv()
        except (EOFError, OSError):
            break  # parent is gone
        try:
            if cmd == "step":
                infos = runner.step()
                pipe.send(("ok", infos or None))
            elif cmd == "reset":
                pipe.send(("ok", runner.reset(*data) or None))
            elif cmd == "get_state":
                pipe.send(("ok", runner.get_state()))
            elif cmd == "restore":
                pipe.send(("ok", runner.restore(*data) or None))
            elif cmd == "close":
                runner.close()
                pipe.send(("ok", None))
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as exc:
            pipe.send(error(exc, runner.current))


class WorkerError(RuntimeError):
    """An env or worker failure in ``AsyncVecEnv``; ``worker_traceback`` holds the remote trace."""

    def __init__(self, message: str, worker_traceback: str = "") -> None:
        super().__init__(message)
        self.worker_traceback = worker_traceback


class AsyncVecEnv(_BaseVecEnv):
    """Steps contiguous slices of the envs in daemon worker processes over shared memory.

    Per call only a tiny command/reply crosses each worker's pipe (plus infos, when an env in
    the slice reported any); observations, rewards, dones and actions live in shared memory.

    ``context`` is a multiprocessing start method; ``None`` means ``"fork"`` where available
    (so lambdas work as env_fns), else the platform default. ``copy`` exists for compatibility
    with the reference's ``AsyncPettingZooVecEnv`` and is ignored: outputs are always copies.
    """

    def __init__(
        self,
        env_fns: Sequence[EnvFn],
        num_workers: int | None = None,
        context: str | None = None,
        timeout: float = 60.0,
        copy: bool = True,
    ) -> None:
        if isinstance(num_workers, bool):
            # The reference's signature is (env_fns, copy, context): a positional copy flag.
            num_workers = None
        if context is None and "fork" in mp.get_all_start_methods():
            context = "fork"
        env_fns = list(env_fns)
        if not env_fns:
            raise ValueError("env_fns must not be empty")
        probe = env_fns[0]()
        try:
            self._setup(probe, len(env_fns))
        finally:
            probe.close()
        n = self.num_envs
        workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        self.num_workers = max(1, min(int(workers), n))
        self.timeout = float(timeout)
        ctx = mp.get_context(context)
        self._memory = ctx.RawArray("B", self._layout.nbytes)
        self._bufs = self._layout.views(self._memory)
        w = self.num_workers
        self._slices = [(i * n // w, (i + 1) * n // w) for i in range(w)]
        self._pipes: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        self._failed = False
        self.closed = False
        try:
            for i, (start, stop) in enumerate(self._slices):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker,
                    name=f"AsyncVecEnv-worker-{i}",
                    args=(
                        env_fns[start:stop],
                        start,
                        child,
                        parent,
                        self._memory,
                        self._layout,
                        self.agents,
                        self.observation_spaces,
                        self.action_spaces,
                    ),
                    daemon=True,
                )
                proc.start()
                # Closing our copy of the child end lets recv() see EOF if the worker dies.
                child.close()
                self._pipes.append(parent)
                self._procs.append(proc)
            self._gather()
        except BaseException:
            self.close()
            raise

    def _describe(self, i: int) -> str:
        start, stop = self._slices[i]
        return f"worker {i} (envs {start}..{stop - 1})"

    def _send(self, command: str, per_worker: list[Any] | None = None) -> None:
        if self._failed:
            raise RuntimeError("AsyncVecEnv is unusable after a worker error; close it")
        for i, pipe in enumerate(self._pipes):
            try:
                pipe.send((command, per_worker[i] if per_worker is not None else None))
            except OSError as exc:
                self._failed = True
                raise WorkerError(f"{self._describe(i)} died ({exc})") from None

    def _gather(self) -> EnvInfos:
        return [item for data in self._gather_all() for item in data or ()]

    def _gather_all(self) -> list[Any]:
        """Every worker's reply data, in worker order."""
        # Until every reply is in, the pipes are out of sync (also on Ctrl-C): only close() is
        # safe then, so the env counts as failed until this returns normally.
        self._failed = True
        deadline = time.monotonic() + self.timeout
        replies: list[Any] = []
        first_error: WorkerError | EnvOutputError | None = None
        for i, pipe in enumerate(self._pipes):
            try:
                if not pipe.poll(max(0.0, deadline - time.monotonic())):
                    raise WorkerError(
                        f"{self._describe(i)} did not answer within {self.timeout:g} s"
                    )
                status, data = pipe.recv()
            except (EOFError, OSError):
                self._procs[i].join(1.0)
                code = self._procs[i].exitcode
                first_error = first_error or WorkerError(
                    f"{self._describe(i)} died (exit code {code})"
                )
                continue
            except WorkerError as exc:
                first_error = first_error or exc
                continue
            if status == "ok":
                replies.append(data)
            elif status == "bad_output":
                first_error = first_error or EnvOutputError(data[1])
            else:
                env, message, tb = data
                first_error = first_error or WorkerError(f"env {env} raised {message}", tb)
        if first_error is not None:
            raise first_error
        self._failed = False
        return replies

    def _reset(self, seeds: list[int | None], options: dict | None) -> EnvInfos:
        self._send("reset", [(seeds[start:stop], options) for start, stop in self._slices])
        return self._gather()

    def _step(self) -> EnvInfos:
        self._send("step")
        return self._gather()

    def _get_state(self) -> list[dict[str, Any]]:
        self._send("get_state")
        return [env for states in self._gather_all() for env in states]

    def _restore(self, states: list[dict[str, Any]], options: dict | None) -> EnvInfos:
        self._send("restore", [(states[start:stop], options) for start, stop in self._slices])
        return self._gather()

    def close(self) -> None:
        """Shut the workers down (terminating any that do not answer) and free shared memory."""
        if self.closed:
            return
        self.closed = True
        if not self._failed:
            try:
                self._send("close")
                self._gather()
            except Exception:
                pass
        for proc in self._procs:
            proc.join(0.0 if self._failed else 1.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self._pipes:
            pipe.close()
        self._bufs = {}
        self._memory = None


def episodes_ended(terminations: Batch, truncations: Batch, agents: Sequence[str]) -> np.ndarray:
    """Which envs a step's outputs show ending their episode (and being reset): those in
    which every agent is done, an absent agent (NaN) counting as done."""
    done = np.stack(
        [np.nan_to_num(np.maximum(terminations[a], truncations[a]), nan=1.0) for a in agents],
        axis=1,
    )
    return (done > 0).all(axis=1)


# The reference implementation's class name; same constructor arguments accepted.
AsyncPettingZooVecEnv = AsyncVecEnv


def make_vec_env(
    env_fns: Sequence[EnvFn], kind: str = "sync", num_workers: int | None = None, **kwargs: Any
) -> SyncVecEnv | AsyncVecEnv:
    """Build a ``"sync"`` or ``"async"`` vector env; extra kwargs go to ``AsyncVecEnv``."""
    if kind == "sync":
        return SyncVecEnv(env_fns)
    if kind == "async":
        return AsyncVecEnv(env_fns, num_workers=num_workers, **kwargs)
    raise ValueError(f"unknown vector env kind {kind!r} (expected 'sync' or 'async')")
