"""Tests for ippo_cli.envs.vector (SyncVecEnv / AsyncVecEnv)."""

from __future__ import annotations

import copy
import functools
import multiprocessing as mp
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from mpe2 import simple_speaker_listener_v4, simple_spread_v3
from omegaconf import OmegaConf

from ippo_cli.envs.factory import build_env
from ippo_cli.envs.vector import (
    AsyncPettingZooVecEnv,
    AsyncVecEnv,
    EnvOutputError,
    SyncVecEnv,
    episode_seed,
    make_vec_env,
)
from tests.conftest import probe_overrides, train_config
from tests.probe_envs import (
    ActionRewardEnv,
    ConstantRewardEnv,
    DictObsEnv,
    DyingAgentEnv,
    DyingProcessEnv,
    HangingEnv,
    InfoEnv,
    NonFiniteEnv,
    RaisingEnv,
    TupleObsEnv,
)

KINDS = ["sync", "async"]


def speaker_listener():
    return simple_speaker_listener_v4.parallel_env(continuous_actions=True, max_cycles=25)


def spread(max_cycles: int = 25):
    return simple_spread_v3.parallel_env(max_cycles=max_cycles)


def make(kind: str, env_fns, **kwargs):
    if kind == "sync":
        return SyncVecEnv(env_fns)
    return AsyncVecEnv(env_fns, num_workers=kwargs.pop("num_workers", 2), **kwargs)


def random_actions(venv, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for agent in venv.possible_agents:
        space = venv.single_action_space(agent)
        if isinstance(space, spaces.Discrete):
            out[agent] = rng.integers(0, space.n, venv.num_envs)
        else:
            out[agent] = rng.uniform(space.low, space.high, (venv.num_envs, *space.shape))
    return out


@pytest.fixture(autouse=True)
def no_orphans():
    yield
    assert mp.active_children() == []


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtypes_box_actions(kind):
    with make(kind, [speaker_listener] * 3) as venv:
        assert venv.num_envs == 3
        assert venv.possible_agents == venv.agents == ["speaker_0", "listener_0"]
        obs_dims = {"speaker_0": 3, "listener_0": 11}
        assert venv.single_action_space("listener_0").shape == (5,)
        obs, infos = venv.reset(seed=0)
        for a, dim in obs_dims.items():
            assert obs[a].shape == (3, dim) and obs[a].dtype == np.float32
            assert infos[a]["active"].dtype == bool and infos[a]["active"].all()
            assert not infos[a]["_final_obs"].any() and not infos[a]["final_obs"].any()
        obs, rew, term, trunc, infos = venv.step(random_actions(venv, np.random.default_rng(0)))
        for a, dim in obs_dims.items():
            assert obs[a].shape == (3, dim) and obs[a].dtype == np.float32
            for arr in (rew[a], term[a], trunc[a]):
                assert arr.shape == (3,) and arr.dtype == np.float32
            assert infos[a]["final_obs"].shape == (3, dim)
            assert infos[a]["final_obs"].dtype == np.float32
            assert infos[a]["_final_obs"].shape == (3,)
            assert infos[a]["active"].shape == (3,)
            assert not np.isnan(rew[a]).any()


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_discrete_actions(kind):
    with make(kind, [spread] * 2) as venv:
        assert venv.single_action_space("agent_0") == spaces.Discrete(5)
        assert set(venv.observation_spaces) == {"agent_0", "agent_1", "agent_2"}
        venv.reset(seed=1)
        acts = {a: np.array([0, 4]) for a in venv.possible_agents}
        obs, rew, term, trunc, _ = venv.step(acts)
        assert obs["agent_2"].shape == (2, 18) and obs["agent_2"].dtype == np.float32
        assert rew["agent_0"].shape == (2,) and term["agent_0"].tolist() == [0.0, 0.0]
        with pytest.raises(ValueError, match="shape"):
            venv.step({a: np.zeros((2, 1), int) for a in venv.possible_agents})


@pytest.mark.parametrize("kind", KINDS)
def test_int_and_list_seeds_match_direct_envs(kind):
    with make(kind, [spread] * 3) as venv:
        obs, _ = venv.reset(seed=7)
        for i in range(3):
            ref, _ = spread().reset(seed=7 + i)
            for a in venv.possible_agents:
                np.testing.assert_array_equal(obs[a][i], ref[a])
        assert not np.array_equal(obs["agent_0"][0], obs["agent_0"][1])
        obs, _ = venv.reset(seed=[5, 3, 5])
        np.testing.assert_array_equal(obs["agent_0"][0], obs["agent_0"][2])
        np.testing.assert_array_equal(obs["agent_0"][1], spread().reset(seed=3)[0]["agent_0"])
        with pytest.raises(ValueError):
            venv.reset(seed=[1, 2])


@pytest.mark.parametrize("kind", KINDS)
def test_same_step_autoreset_matches_raw_env(kind):
    fn = functools.partial(spread, max_cycles=5)
    raws = [fn(), fn()]
    for i, raw in enumerate(raws):
        raw.reset(seed=11 + i)
    rng = np.random.default_rng(3)
    truncations = 0
    episodes = [0, 0]
    with make(kind, [fn, fn]) as venv:
        venv.reset(seed=11)
        for _ in range(12):
            acts = random_actions(venv, rng)
            obs, rew, term, trunc, infos = venv.step(acts)
            for i, raw in enumerate(raws):
                o, r, te, tr, _ = raw.step({a: int(acts[a][i]) for a in raw.agents})
                done = all(te[a] or tr[a] for a in r)
                for a in venv.possible_agents:
                    assert rew[a][i] == np.float32(r[a])
                    assert trunc[a][i] == float(tr[a]) and term[a][i] == 0.0
                    assert infos[a]["_final_obs"][i] == done
                    if done:
                        np.testing.assert_array_equal(infos[a]["final_obs"][i], o[a])
                    else:
                        assert not infos[a]["final_obs"][i].any()
                    assert infos[a]["active"][i]
                if done:
                    truncations += 1
                    episodes[i] += 1  # autoresets are seeded from (base seed, episode)
                    o, _ = raw.reset(seed=episode_seed(11 + i, episodes[i]))
                for a in venv.possible_agents:
                    np.testing.assert_array_equal(obs[a][i], o[a])
    assert truncations == 4
    assert episode_seed(11, 1) != episode_seed(11, 2) != episode_seed(12, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_per_env_dones_are_independent(kind):
    fns = [functools.partial(ConstantRewardEnv, episode_len=n) for n in (2, 3)]
    with make(kind, fns) as venv:
        venv.reset()
        terms, finals = [], []
        for _ in range(6):
            obs, rew, term, trunc, infos = venv.step({"agent_0": np.zeros(2, int)})
            assert rew["agent_0"].tolist() == [1.0, 1.0]
            assert trunc["agent_0"].tolist() == [0.0, 0.0]
            assert infos["agent_0"]["active"].all() and (obs["agent_0"] == 1.0).all()
            terms.append(term["agent_0"].tolist())
            finals.append(infos["agent_0"]["_final_obs"].tolist())
        expected = [[0, 0], [1, 0], [0, 1], [1, 0], [0, 0], [1, 1]]
        assert terms == expected
        assert finals == [[bool(x) for x in row] for row in expected]


@pytest.mark.parametrize("kind", KINDS)
def test_dying_agent(kind):
    with make(kind, [DyingAgentEnv] * 2) as venv:
        obs, infos = venv.reset()
        assert infos["agent_1"]["active"].all()
        act = {"agent_0": np.zeros(2, int), "agent_1": np.zeros(2, int)}
        venv.step(act)
        obs, rew, term, _, infos = venv.step(act)  # step 2: agent_1 terminates
        assert term["agent_1"].tolist() == [1.0, 1.0] and rew["agent_1"].tolist() == [1.0, 1.0]
        np.testing.assert_allclose(infos["agent_1"]["final_obs"], [[2 / 6, 1.0]] * 2)
        assert infos["agent_1"]["_final_obs"].all() and not infos["agent_1"]["active"].any()
        assert not obs["agent_1"].any() and infos["agent_0"]["active"].all()

        # A dead agent needs no action: NaN rows and a missing key are both accepted.
        nan_act = {"agent_0": np.zeros(2), "agent_1": np.full(2, np.nan)}
        for actions in (nan_act, {"agent_0": np.zeros(2, int)}):
            obs, rew, term, trunc, infos = venv.step(actions)
            for arr in (rew, term, trunc):
                assert np.isnan(arr["agent_1"]).all() and not np.isnan(arr["agent_0"]).any()
            assert not obs["agent_1"].any() and not infos["agent_1"]["active"].any()
            assert not infos["agent_1"]["final_obs"].any()
            assert not infos["agent_1"]["_final_obs"].any()
        venv.step(act)
        obs, rew, term, _, infos = venv.step(act)  # step 6: episode ends, autoreset
        assert term["agent_0"].all() and np.isnan(term["agent_1"]).all()
        assert infos["agent_1"]["active"].all()
        np.testing.assert_array_equal(obs["agent_1"], [[0.0, 1.0]] * 2)
        for o in obs.values():
            assert not np.isnan(o).any()
        with pytest.raises(KeyError, match="agent_1"):
            venv.step({"agent_0": np.zeros(2, int)})


@pytest.mark.parametrize("kind", KINDS)
def test_info_collation(kind):
    fns = [InfoEnv, functools.partial(InfoEnv, tag=None), ConstantRewardEnv]
    with make(kind, fns) as venv:
        _, infos = venv.reset()
        info = infos["agent_0"]
        assert info["step"].tolist() == [0, 0, 0] and info["step"].dtype == np.int64
        assert info["_step"].tolist() == [True, True, False]
        assert info["tag"].dtype == object and info["tag"][0] == "x"
        assert info["_tag"].tolist() == [True, False, False]
        act = {"agent_0": np.zeros(3, int)}
        for t in (1, 2, 3):
            _, _, term, _, infos = venv.step(act)
            info = infos["agent_0"]
            # At t=3 InfoEnv autoresets: the infos are the reset's (step=0), as in gymnasium,
            # and the finished step's info is kept under final_info.
            assert info["step"].tolist() == [t % 3, t % 3, 0]
            assert info["_step"].tolist() == [True, True, False]
            assert info["_tag"].tolist() == [True, False, False]
            if t == 3:
                assert info["_final_info"].tolist() == [True, True, False]
                assert info["final_info"][0]["step"] == 3
            else:
                assert "final_info" not in info
        assert term["agent_0"].tolist() == [1.0, 1.0, 0.0]
        assert venv.step(act)[4]["agent_0"]["step"].tolist() == [1, 1, 0]


def test_sync_and_async_are_bit_identical():
    runs = []
    for venv in (SyncVecEnv([speaker_listener] * 4), AsyncVecEnv([speaker_listener] * 4, 2)):
        rng = np.random.default_rng(0)
        with venv:
            out = [venv.reset(seed=123)]
            out += [venv.step(random_actions(venv, rng)) for _ in range(60)]
        runs.append(out)
    for sync_out, async_out in zip(*runs, strict=True):
        for s_part, a_part in zip(sync_out, async_out, strict=True):
            for agent in s_part:
                s, a = s_part[agent], a_part[agent]
                if isinstance(s, dict):
                    assert s.keys() == a.keys()
                    pairs = [(s[k], a[k]) for k in s]
                else:
                    pairs = [(s, a)]
                for x, y in pairs:
                    assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert sum(o[4]["speaker_0"]["_final_obs"].sum() for o in runs[0][1:]) == 8


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_are_copies(kind):
    with make(kind, [DyingAgentEnv] * 2) as venv:
        venv.reset()
        act = {"agent_0": np.zeros(2, int), "agent_1": np.zeros(2, int)}
        out = venv.step(act)
        saved = copy.deepcopy(out)
        venv.step(act)  # agent_1 dies: every output array changes
        for part, ref in zip(out, saved, strict=True):
            for agent in ref:
                if isinstance(ref[agent], dict):
                    for key in ref[agent]:
                        np.testing.assert_array_equal(part[agent][key], ref[agent][key])
                else:
                    np.testing.assert_array_equal(part[agent], ref[agent])


class _RecordingEnv(ActionRewardEnv):
    def step(self, actions):
        self.received = actions
        filled = {a: actions.get(a, np.zeros(self.action_space(a).shape)) for a in self.agents}
        return super().step(filled)


def test_actions_given_per_env_with_nan_rows_skipped():
    fn = functools.partial(_RecordingEnv, "box", n_agents=2)
    with SyncVecEnv([fn, fn]) as venv:
        venv.reset()
        acts = {"agent_0": np.array([[0.25], [0.5]]), "agent_1": np.array([[np.nan], [-0.5]])}
        venv.step(acts)
        got0, got1 = venv.envs[0].received, venv.envs[1].received
        assert list(got0) == ["agent_0"] and list(got1) == ["agent_0", "agent_1"]
        assert got0["agent_0"].dtype == np.float32 and got0["agent_0"].tolist() == [0.25]
        assert got1["agent_1"].tolist() == [-0.5]
        acts["agent_0"][0] = 9.0
        assert got0["agent_0"].tolist() == [0.25]
    fn = functools.partial(_RecordingEnv, "discrete")
    with SyncVecEnv([fn, fn]) as venv:
        venv.reset()
        venv.step({"agent_0": np.array([2.0, np.nan])})
        assert venv.envs[0].received == {"agent_0": 2} and venv.envs[1].received == {}
        assert type(venv.envs[0].received["agent_0"]) is int


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "what, value", [("reward", "nan"), ("reward", "-inf"), ("termination", "nan")]
)
def test_a_non_finite_step_value_from_the_env_is_named_not_taken_for_absence(kind, what, value):
    # Env 1 of 3 turns bad at its 3rd step; NaN in the outputs would mean "absent agent".
    fns = [functools.partial(NonFiniteEnv, what, after=n, value=value) for n in (99, 3, 99)]
    with make(kind, fns) as venv:
        venv.reset(seed=0)
        act = {"agent_0": np.zeros(3, int)}
        for _ in range(2):
            _, rew, term, _, _ = venv.step(act)
            assert np.isfinite(rew["agent_0"]).all() and np.isfinite(term["agent_0"]).all()
        message = f"non-finite {what} ({value}) from agent 'agent_0' in env 1 at step 3 of its"
        with pytest.raises(EnvOutputError, match=re.escape(message)):
            venv.step(act)


def test_async_env_exception_names_env():
    fns = [ConstantRewardEnv, ConstantRewardEnv, RaisingEnv, ConstantRewardEnv]
    with AsyncVecEnv(fns, num_workers=2) as venv:
        venv.reset()
        venv.step({"agent_0": np.zeros(4, int)})
        with pytest.raises(RuntimeError, match=r"^env 2 raised ValueError: bad action$") as err:
            venv.step({"agent_0": np.ones(4, int)})
        assert "Traceback" in err.value.worker_traceback
        assert "ValueError: bad action" in err.value.worker_traceback
        with pytest.raises(RuntimeError, match="worker error"):
            venv.step({"agent_0": np.zeros(4, int)})
        venv.close()
        venv.close()


def test_async_dead_worker():
    fns = [ConstantRewardEnv, DyingProcessEnv, ConstantRewardEnv]
    with AsyncVecEnv(fns, num_workers=2) as venv:
        venv.reset()
        with pytest.raises(RuntimeError, match=r"worker 1 \(envs 1\.\.2\) died"):
            venv.step({"agent_0": np.ones(3, int)})


def test_async_hanging_worker_times_out():
    # The hanging worker is the first one waited for: the error names it however long the
    # other takes to answer on a loaded machine.
    with AsyncVecEnv([HangingEnv, ConstantRewardEnv], num_workers=2, timeout=2.0) as venv:
        venv.reset()
        with pytest.raises(RuntimeError, match=r"worker 0 \(envs 0\.\.0\) did not answer"):
            venv.step({"agent_0": np.ones(2, int)})


def test_async_spawn_context_and_worker_clamping():
    fns = [functools.partial(ConstantRewardEnv, episode_len=2)] * 2
    with AsyncVecEnv(fns, num_workers=8, context="spawn") as venv:
        assert venv.num_workers == 2
        venv.reset()
        venv.step({"agent_0": np.zeros(2, int)})
        _, rew, term, _, infos = venv.step({"agent_0": np.zeros(2, int)})
        assert rew["agent_0"].tolist() == [1.0, 1.0] and term["agent_0"].tolist() == [1.0, 1.0]
        assert infos["agent_0"]["_final_obs"].all()
    with AsyncVecEnv(fns, num_workers=0) as venv:
        assert venv.num_workers == 1


@pytest.mark.parametrize("kind", KINDS)
def test_close_is_idempotent(kind):
    venv = make_vec_env([ConstantRewardEnv] * 2, kind=kind, num_workers=2)
    assert isinstance(venv, SyncVecEnv if kind == "sync" else AsyncVecEnv)
    venv.reset()
    venv.close()
    venv.close()
    with pytest.raises(RuntimeError, match="closed"):
        venv.reset()


def test_make_vec_env_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'threads'"):
        make_vec_env([ConstantRewardEnv], kind="threads")


# --- Dict / Tuple observation spaces ------------------------------------------------------------

TWO_ACTS = {"agent_0": np.zeros(2, int), "agent_1": np.zeros(2, int)}


def _leaves(x):
    """(path, array) pairs of a nested dict/tuple output, for exhaustive comparisons."""
    if isinstance(x, dict):
        return [(f"{k}/{p}", v) for k, sub in x.items() for p, v in _leaves(sub)]
    if isinstance(x, tuple | list):
        return [(f"{i}/{p}", v) for i, sub in enumerate(x) for p, v in _leaves(sub)]
    return [("", x)]


@pytest.mark.parametrize("kind", KINDS)
def test_dict_observations(kind):
    with make(kind, [DictObsEnv] * 2) as venv:
        assert isinstance(venv.single_observation_space("agent_0"), spaces.Dict)
        obs, infos = venv.reset()
        expect = {"id": ((2,), np.int64), "image": ((2, 8, 8, 3), np.uint8)}
        expect["pos"] = ((2, 2), np.float32)
        for a in ("agent_0", "agent_1"):
            for out in (obs[a], infos[a]["final_obs"]):
                assert isinstance(out, dict) and list(out) == ["id", "image", "pos"]
                assert {k: (v.shape, v.dtype) for k, v in out.items()} == expect
            assert not any(v.any() for v in infos[a]["final_obs"].values())
        assert (obs["agent_1"]["image"] == 2).all() and obs["agent_1"]["id"].tolist() == [1, 1]
        np.testing.assert_array_equal(obs["agent_1"]["pos"], [[0.0, -1.0]] * 2)

        first = venv.step(TWO_ACTS)
        saved = copy.deepcopy(first)
        obs, _, term, _, infos = venv.step(TWO_ACTS)  # t=2: agent_1 dies
        for part, ref in zip(first, saved, strict=True):  # outputs are copies
            for (_, x), (_, y) in zip(_leaves(part), _leaves(ref), strict=True):
                np.testing.assert_array_equal(x, y)
        assert term["agent_1"].tolist() == [1.0, 1.0] and not infos["agent_1"]["active"].any()
        final = infos["agent_1"]["final_obs"]
        assert infos["agent_1"]["_final_obs"].all() and (final["image"] == 22).all()
        assert final["id"].tolist() == [0, 0] and final["image"].dtype == np.uint8
        np.testing.assert_array_equal(final["pos"], [[0.5, -1.0]] * 2)
        assert not any(v.any() for v in obs["agent_1"].values())  # zeros where inactive
        assert (obs["agent_0"]["image"] == 21).all() and obs["agent_0"]["id"].tolist() == [2, 2]
        assert not any(v.any() for v in infos["agent_0"]["final_obs"].values())

        obs, _, _, _, infos = venv.step({"agent_0": np.zeros(2, int)})
        assert not any(v.any() for v in infos["agent_1"]["final_obs"].values())
        obs, _, term, _, infos = venv.step({"agent_0": np.zeros(2, int)})  # t=4: autoreset
        final = infos["agent_0"]["final_obs"]
        assert term["agent_0"].all() and infos["agent_0"]["_final_obs"].all()
        assert (final["image"] == 41).all() and final["id"].tolist() == [1, 1]
        np.testing.assert_array_equal(final["pos"], [[1.0, 0.0]] * 2)
        assert infos["agent_1"]["active"].all() and (obs["agent_1"]["image"] == 2).all()
        assert (obs["agent_0"]["image"] == 1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_tuple_observations(kind):
    with make(kind, [TupleObsEnv] * 2) as venv:
        obs, infos = venv.reset()
        expect = [((2, 3), np.float32), ((2,), np.int64), ((2, 4), np.int8), ((2, 2), np.int64)]
        for out in (obs["agent_0"], infos["agent_1"]["final_obs"]):
            assert isinstance(out, tuple) and [(v.shape, v.dtype) for v in out] == expect
        assert obs["agent_1"][1].tolist() == [1, 1] and obs["agent_1"][3].tolist() == [[0, 1]] * 2
        venv.step(TWO_ACTS)
        obs, _, _, _, infos = venv.step(TWO_ACTS)  # t=2: agent_1 dies
        box, disc, bits, multi = infos["agent_1"]["final_obs"]
        np.testing.assert_array_equal(box, np.full((2, 3), 0.5, np.float32))
        assert disc.tolist() == [3, 3] and bits.tolist() == [[0, 1, 0, 0]] * 2
        assert multi.tolist() == [[2, 1]] * 2
        assert not any(v.any() for v in obs["agent_1"]) and obs["agent_0"][1].tolist() == [2, 2]
        assert not any(v.any() for v in infos["agent_0"]["final_obs"])


def test_structured_observations_sync_and_async_are_bit_identical():
    fns = [
        DictObsEnv,
        functools.partial(DictObsEnv, episode_len=3, death_step=1),
        TupleObsEnv,
        functools.partial(TupleObsEnv, episode_len=5, death_step=3),
    ]
    for group in (fns[:2] * 2, fns[2:] * 2):
        runs = []
        for venv in (SyncVecEnv(group), AsyncVecEnv(group, num_workers=2)):
            with venv:
                out = [venv.reset(seed=0)]
                for t in range(14):
                    alive = out[-1][-1]  # infos of the last reset/step
                    acts = {
                        a: np.full(4, t % 2)
                        for a in venv.possible_agents
                        if alive[a]["active"].any() or t % 2  # no key, or NaN rows if dead
                    }
                    out.append(venv.step(acts))
            runs.append(out)
        leaves = [_leaves(run) for run in runs]
        assert len(leaves[0]) == len(leaves[1]) > 100
        for (p, x), (q, y) in zip(*leaves, strict=True):
            assert p == q and x.dtype == y.dtype and x.tobytes() == y.tobytes(), p


class _NestedObsEnv(ConstantRewardEnv):
    def __init__(self, space):
        super().__init__()
        self._obs_space = space


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "space",
    [
        spaces.Dict({"x": spaces.Dict({"y": spaces.Discrete(2)})}),
        spaces.Tuple((spaces.Discrete(2), spaces.Tuple((spaces.Discrete(2),)))),
        spaces.Dict({"x": spaces.Text(5)}),
    ],
)
def test_unsupported_observation_spaces(kind, space):
    name = type(space).__name__
    with pytest.raises(NotImplementedError, match=f"{name}.*agent_0"):
        make(kind, [functools.partial(_NestedObsEnv, space)])


# --- compatibility with the reference's AsyncPettingZooVecEnv ---------------------------------


def test_reference_async_pettingzoo_vec_env_loop():
    assert AsyncPettingZooVecEnv is AsyncVecEnv
    num_envs = 4
    env = AsyncPettingZooVecEnv(
        [
            lambda: simple_speaker_listener_v4.parallel_env(continuous_actions=True, max_cycles=25)
            for _ in range(num_envs)
        ],
        copy=True,
        context=None,
    )
    with env:
        obs, info = env.reset()
        observation_spaces = [env.single_observation_space(agent) for agent in env.agents]
        action_spaces = [env.single_action_space(agent) for agent in env.agents]
        assert [s.shape for s in observation_spaces] == [(3,), (11,)]
        scores = np.zeros((num_envs, len(env.agents)))
        for _ in range(30):
            action = {
                agent: np.stack([space.sample() for _ in range(num_envs)]) * 2
                for agent, space in zip(env.agents, action_spaces, strict=True)
            }
            clipped_action = {
                agent: np.clip(action[agent], space.low, space.high)
                for agent, space in zip(env.agents, action_spaces, strict=True)
            }
            obs, reward, terminated, truncated, info = env.step(clipped_action)
            scores += np.array(list(reward.values())).transpose()
            term = np.array(list(terminated.values())).transpose()
            assert term.shape == (num_envs, 2) and not np.isnan(term).any()
            assert not any(np.isnan(terminated[agent]).any() for agent in env.agents)
        assert scores.shape == (num_envs, 2) and (scores < 0).all()
    # The reference's positional (env_fns, copy) and the full keyword signature.
    with AsyncPettingZooVecEnv([speaker_listener] * 2, True) as env:
        assert env.num_workers >= 1 and env.reset()[0]["listener_0"].shape == (2, 11)
    with AsyncVecEnv([spread] * 2, 2, None, 60.0, True) as env:
        assert env.num_workers == 2 and env.reset()[0]["agent_0"].shape == (2, 18)


@pytest.mark.parametrize("kind", KINDS)
def test_env_fns_returning_one_shared_env_object(kind):
    shared = spread()
    with make(kind, [lambda: shared] * 3, num_workers=1) as venv:
        obs, _ = venv.reset(seed=0)
        for i in range(3):
            np.testing.assert_array_equal(obs["agent_0"][i], spread().reset(seed=i)[0]["agent_0"])


# --- env configs in conf/env --------------------------------------------------------------------

CONF_ENV = Path(__file__).resolve().parents[1] / "conf" / "env"
EXPECTED_ENVS = {
    "simple_adversary": {"adversary_0": (8,), "agent_0": (10,), "agent_1": (10,)},
    "pistonball": {f"piston_{i}": (32, 32, 3) for i in range(20)},
    "knights_archers_zombies": {a: (27, 5) for a in ("archer_0", "archer_1")}
    | {a: (27, 5) for a in ("knight_0", "knight_1")},
}


def _config_env_fn(name: str, **overrides):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_ENV / f"{name}.yaml"))
    assert set(cfg) - {"backend"} == {"name", "factory", "kwargs", "wrappers", "num_envs"}
    kwargs = {**cfg["kwargs"], **overrides}

    def fn():
        with warnings.catch_warnings():  # pettingzoo's old-creation-API deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            return build_env(cfg["factory"], kwargs, cfg["wrappers"])

    return cfg, fn


@pytest.mark.parametrize("name", list(EXPECTED_ENVS))
def test_env_config_builds_and_steps(name):
    cfg, fn = _config_env_fn(name)
    n = cfg["num_envs"]
    rng = np.random.default_rng(0)
    with SyncVecEnv([fn] * n) as venv:
        assert venv.possible_agents == list(EXPECTED_ENVS[name])
        obs, _ = venv.reset(seed=0)
        for _ in range(20):
            obs, rew, _, _, infos = venv.step(random_actions(venv, rng))
        for agent, shape in EXPECTED_ENVS[name].items():
            space = venv.single_observation_space(agent)
            assert isinstance(space, spaces.Box) and space.shape == shape
            assert obs[agent].shape == (n, *shape) and obs[agent].dtype == space.dtype
            assert rew[agent].shape == (n,)
    if name == "pistonball":
        assert space.dtype == np.uint8


def test_knights_archers_zombies_agent_dies_mid_episode():
    # Seed 4 with everyone walking forward: knight_0 meets a zombie at step 20 of the episode.
    _, fn = _config_env_fn("knights_archers_zombies")
    with SyncVecEnv([fn]) as venv:
        venv.reset(seed=4)
        forward = {a: np.zeros(1, int) for a in venv.possible_agents}
        for _ in range(40):
            acts = {a: forward[a] for a in venv.possible_agents if venv._bufs["active"][a][0]}
            obs, rew, term, _, infos = venv.step(acts)
            active = {a: bool(infos[a]["active"][0]) for a in venv.possible_agents}
            if not all(active.values()):
                break
        dead = [a for a, alive in active.items() if not alive]
        assert any(active.values()) and dead, "no agent died alone within 40 steps"
        assert all(term[a][0] == 1.0 and infos[a]["_final_obs"][0] for a in dead)
        assert all(not obs[a][0].any() for a in dead)
        obs, rew, term, _, infos = venv.step({a: forward[a] for a in active if active[a]})
        assert all(np.isnan(rew[a][0]) and not infos[a]["active"][0] for a in dead)


# --- exact resume: get_state / set_state ------------------------------------------------------


def _torch_round_trip(state, tmp_path):
    """A checkpoint must be plain data: save it and load it back with weights_only=True."""
    import torch

    path = tmp_path / "env_state.pt"
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def _assert_identical(x, y):
    xs, ys = _leaves(x), _leaves(y)
    assert len(xs) == len(ys) > 0
    for (p, a), (q, b) in zip(xs, ys, strict=True):
        assert p == q and a.dtype == b.dtype and a.shape == b.shape, p
        assert a.tobytes() == b.tobytes(), p


@pytest.mark.parametrize(
    "src, dst", [("sync", "sync"), ("async", "async"), ("sync", "async"), ("async", "sync")]
)
def test_set_state_resumes_bit_identically(src, dst, tmp_path):
    fns = [speaker_listener] * 3
    rng = np.random.default_rng(5)
    with make(src, fns) as venv:
        venv.reset(seed=42)
        for _ in range(40):
            at_40 = venv.step(random_actions(venv, rng))
        state = _torch_round_trip(venv.get_state(), tmp_path)
        actions = [random_actions(venv, rng) for _ in range(60)]
        ref = [venv.step(acts) for acts in actions]
        ref_state = venv.get_state()
    assert state["restorable"] and state["reason"] is None
    assert state["episodes"] == [1, 1, 1] and state["base_seeds"] == [42, 43, 44]
    assert state["seeds"] == [episode_seed(42 + e, 1) for e in range(3)]
    assert [len(env["listener_0"]) for env in state["actions"]] == [15] * 3
    assert sum(out[4]["speaker_0"]["_final_obs"].sum() for out in ref) == 9  # 50, 75, 100
    with make(dst, fns) as venv:
        venv.reset(seed=42)
        obs, infos = venv.set_state(state)
        _assert_identical((obs, infos), (at_40[0], at_40[4]))
        _assert_identical([venv.step(acts) for acts in actions], ref)
        assert venv.get_state() == ref_state


@pytest.mark.parametrize("kind", KINDS)
def test_set_state_with_dying_agent_and_nan_rows(kind, tmp_path):
    def acts(infos, t):  # NaN rows for dead agents
        return {a: np.where(infos[a]["active"], t % 2, np.nan) for a in ("agent_0", "agent_1")}

    with make(kind, [DyingAgentEnv] * 2) as venv:
        _, infos = venv.reset(seed=0)
        for t in range(9):  # episode 2, t=3: agent_1 died at t=2
            at_9 = venv.step(acts(infos, t))
            infos = at_9[4]
        state = _torch_round_trip(venv.get_state(), tmp_path)
        ref = []
        for t in range(9, 17):
            ref.append(venv.step(acts(infos, t)))
            infos = ref[-1][4]
    rows = state["actions"][1]["agent_1"]
    assert len(rows) == 3 and rows[:2] == [0.0, 1.0] and np.isnan(rows[2])
    with make(kind, [DyingAgentEnv] * 2) as venv:
        obs, infos = venv.set_state(state)  # no reset() needed first
        assert not infos["agent_1"]["active"].any()
        _assert_identical((obs, infos), (at_9[0], at_9[4]))
        out = []
        for t in range(9, 17):
            out.append(venv.step(acts(infos, t)))
            infos = out[-1][4]
        _assert_identical(out, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_set_state_refuses_unrestorable_or_mismatched_states(kind):
    with make(kind, [speaker_listener] * 2) as venv:
        with pytest.raises(ValueError, match="not restorable: .*not been reset"):
            venv.set_state(venv.get_state())
        venv.reset()
        venv.step(random_actions(venv, np.random.default_rng(0)))
        state = venv.get_state()
        assert state["restorable"] is False and state["seeds"] == [None, None]
        with pytest.raises(ValueError, match=r"not restorable: reset\(seed=None\)"):
            venv.set_state(state)
        venv.reset(seed=3)
        venv.step(random_actions(venv, np.random.default_rng(0)))
        good = venv.get_state()
        bad_rows = [{"speaker_0": [[0.0]], "listener_0": [[0.0] * 5]}] * 2
        for bad, match in [
            ({**good, "num_envs": 3}, "3 envs"),
            ({**good, "agents": ["speaker_0"]}, "agents"),
            ({**good, "seeds": [1, 2]}, "episode_seed"),
            ({**good, "actions": bad_rows}, "shape"),
            ({**good, "actions": []}, "malformed"),
        ]:
            with pytest.raises(ValueError, match=match):
                venv.set_state(bad)
        obs, _ = venv.set_state(good)  # still usable after refusals
        assert obs["listener_0"].shape == (2, 11)


def test_set_state_detects_a_replay_past_the_episode_end():
    with SyncVecEnv([speaker_listener]) as venv:
        venv.reset(seed=0)
        state = venv.get_state()
        row = {"speaker_0": [0.5] * 3, "listener_0": [0.5] * 5}
        state["actions"] = [{a: [r] * 30 for a, r in row.items()}]  # 25-step episodes
        with pytest.raises(ValueError, match="ended after 25 of 30"):
            venv.set_state(state)


def test_autoreset_seeds_differ_per_episode_and_match_sync_async():
    fn = functools.partial(spread, max_cycles=5)
    runs = []
    for venv in (SyncVecEnv([fn, fn]), AsyncVecEnv([fn, fn], num_workers=2)):
        with venv:
            starts = [venv.reset(seed=7)[0]["agent_0"]]
            for _ in range(15):  # autoresets after steps 5, 10, 15
                starts.append(venv.step({a: np.zeros(2, int) for a in venv.agents})[0]["agent_0"])
            state = venv.get_state()
        assert state["episodes"] == [3, 3]
        assert state["seeds"] == [episode_seed(7, 3), episode_seed(8, 3)]
        runs.append(np.stack(starts[::5]))  # (episode, env, obs)
    np.testing.assert_array_equal(runs[0], runs[1])
    for k, episode_starts in enumerate(runs[0]):
        for e in range(2):
            ref, _ = fn().reset(seed=episode_seed(7 + e, k))
            np.testing.assert_array_equal(episode_starts[e], ref["agent_0"])
    firsts = runs[0][:, 0]  # env 0: every episode starts differently
    assert len({row.tobytes() for row in firsts}) == len(firsts) == 4


def test_auto_vec_env_uses_workers_only_when_they_can_run_side_by_side(monkeypatch):
    from ippo_cli.envs import factory
    from ippo_cli.envs.factory import vec_env_kind

    monkeypatch.setattr(factory, "available_cores", lambda: 2)
    assert vec_env_kind("auto", num_envs=8, num_workers=None) == "async"
    # A fast env steps in-process: worker round trips would cost more than they save...
    assert vec_env_kind("auto", num_envs=8, num_workers=None, step_seconds=2e-4) == "sync"
    assert vec_env_kind("auto", num_envs=8, num_workers=None, step_seconds=5e-3) == "async"
    # ...unless each worker gets enough of them: 16 envs of 0.2 ms is 3.2 ms per step.
    assert vec_env_kind("auto", num_envs=32, num_workers=None, step_seconds=2e-4) == "async"
    assert vec_env_kind("auto", num_envs=32, num_workers=None, step_seconds=2e-5) == "sync"
    # The share counts the envs per worker that will actually run: 5 envs on 2 -> 3.
    assert vec_env_kind("auto", num_envs=5, num_workers=None, step_seconds=3.4e-4) == "async"
    assert vec_env_kind("auto", num_envs=4, num_workers=None, step_seconds=3.4e-4) == "sync"
    assert vec_env_kind("auto", num_envs=1, num_workers=None) == "sync"
    assert vec_env_kind("auto", num_envs=8, num_workers=1) == "sync"
    assert vec_env_kind("sync", num_envs=8, num_workers=None) == "sync"
    monkeypatch.setattr(factory, "available_cores", lambda: 1)
    assert vec_env_kind("auto", num_envs=8, num_workers=None) == "sync"
    assert vec_env_kind("async", num_envs=8, num_workers=None) == "async"


def test_auto_vec_env_times_the_env_and_steps_where_its_timing_says(monkeypatch):
    from ippo_cli.envs import factory
    from ippo_cli.envs.vector import AsyncVecEnv, SyncVecEnv

    monkeypatch.setattr(factory, "available_cores", lambda: 2)
    cfg = train_config(["env=simple_spread", "env.backend=pettingzoo", "env.num_envs=2"]).env
    measured = factory.env_step_seconds(build_env(cfg.factory, cfg.kwargs))
    assert measured is not None and measured > 0
    # A step that sleeps 2 ms is timed at 2 ms or more, however loaded the machine.
    slow = train_config(probe_overrides("SlowStepEnv") + ["env.num_envs=2"]).env
    env = factory.make_train_env(slow, 2, "auto", None)
    try:
        assert isinstance(env, AsyncVecEnv)
    finally:
        env.close()
    # The choice follows the timing (the thresholds themselves are tested above): an mpe2
    # step of ~0.3 ms is too little to share out; a 5 ms step is not. Timing is replaced
    # by these figures, so a loaded machine cannot change the outcome.
    timed = []
    for seconds, kind in ((3e-4, SyncVecEnv), (5e-3, AsyncVecEnv)):
        monkeypatch.setattr(
            factory, "env_step_seconds", lambda env, s=seconds: timed.append(env) or s
        )
        env = factory.make_train_env(cfg, 2, "auto", None)
        try:
            assert isinstance(env, kind)
        finally:
            env.close()
    assert len(timed) == 2 and all(hasattr(env, "possible_agents") for env in timed)
    # Nothing is timed when there is no choice to make.
    timed.clear()
    factory.make_train_env(cfg, 2, "sync", None).close()
    factory.make_train_env(cfg, 2, "auto", 1).close()
    assert timed == []
