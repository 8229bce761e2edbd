"""Every batched MPE scenario against mpe2 itself: the same starts when seeded alike, the
same episodes step for step from the same states and actions (both action types, each
scenario argument), and the same start distributions."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from pettingzoo.utils.env_logger import EnvLogger
from scipy import stats

from ippo_cli.envs.mpe import BATCHED_ENVS, BatchedMPE
from ippo_cli.envs.mpe.draws import Integers, Uniform, draw_rows, draw_rows_from_each_state

# id -> (mpe2 module, kwargs of both); every scenario argument mpe2 takes is set in some case.
CASES = {
    "simple": ("simple_v3", {"max_cycles": 20}),
    "push": ("simple_push_v3", {}),
    "adversary": ("simple_adversary_v3", {}),
    "adversary_partial": (
        "simple_adversary_v3",
        {"N": 4, "num_agent_neighbors": 2, "num_landmark_neighbors": 6},
    ),
    "reference": ("simple_reference_v3", {}),
    "reference_local": ("simple_reference_v3", {"local_ratio": 0.1}),
    "crypto": ("simple_crypto_v3", {}),
    "speaker_listener": ("simple_speaker_listener_v4", {}),
    "tag": ("simple_tag_v3", {}),
    "tag_partial": (
        "simple_tag_v3",
        {
            "num_good": 2,
            "num_adversaries": 2,
            "num_obstacles": 3,
            "num_agent_neighbors": 2,
            "num_landmark_neighbors": 4,
            "curriculum": True,
            "terminate_on_success": True,
        },
    ),
    "tag_success": ("simple_tag_v3", {"terminate_on_success": True}),
    "world_comm": ("simple_world_comm_v3", {}),
    "line": ("simple_line_v1", {}),
    "line_success": ("simple_line_v1", {"N": 2, "terminate_on_success": True}),
    "line_N8": ("simple_line_v1", {"N": 8, "max_cycles": 5}),
    "formation": ("simple_formation_v1", {}),
    "treasure": ("collect_treasure_v1", {}),
    "treasure_counts": (
        "collect_treasure_v1",
        {"num_collectors": 2, "num_deposits": 1, "num_treasures": 9, "max_cycles": 40},
    ),
    "formation_success": ("simple_formation_v1", {"N": 1, "terminate_on_success": True}),
    "formation_N7": ("simple_formation_v1", {"N": 7, "max_cycles": 5}),
    "world_comm_counts": (
        "simple_world_comm_v3",
        {"num_good": 1, "num_adversaries": 2, "num_obstacles": 0, "num_food": 1, "num_forests": 3},
    ),
    "spread": ("simple_spread_v3", {}),
    "spread_N5": ("simple_spread_v3", {"N": 5, "local_ratio": 0.3, "max_cycles": 30}),
    "spread_partial": (
        "simple_spread_v3",
        {"N": 4, "num_agent_neighbors": 2, "num_landmark_neighbors": 5, "curriculum": True},
    ),
    "spread_success": ("simple_spread_v3", {"N": 1, "terminate_on_success": True}),
}
FIRST_CASES = list({module: case for case, (module, _) in reversed(CASES.items())}.values())
TOL = 1e-5
STARTS = 400  # per scenario, for the start distribution tests


@pytest.fixture(autouse=True)
def _quiet_mpe2_clipping():
    # Out-of-range continuous actions are part of the test; mpe2 warns on each one.
    EnvLogger.suppress_output()
    yield
    EnvLogger.unsuppress_output()


def make_pair(case: str, continuous: bool = False):
    """(mpe2 parallel_env factory, batched class, kwargs) of a case."""
    module, kwargs = CASES[case]
    make = importlib.import_module(f"mpe2.{module}").parallel_env
    kwargs = {**kwargs, "continuous_actions": continuous}
    return make, BATCHED_ENVS[f"mpe2.{module}.parallel_env"], kwargs


def seeded_alike(cls: type[BatchedMPE], kwargs: dict, seeds: list[int]) -> BatchedMPE:
    """A batched env whose row e starts as a one-env batched env seeded seeds[e]."""
    states = []
    for seed in seeds:
        one = cls(1, **kwargs)
        one.reset(seed=seed)
        states.append(one.get_state())
    env = cls(len(seeds), **kwargs)
    env.reset(seed=0)
    state = env.get_state()
    state["arrays"] = {
        name: np.concatenate(
            [np.asarray(s["arrays"][name], dtype=getattr(env, name).dtype) for s in states]
        ).tolist()
        for name in state["arrays"]
    }
    env.set_state(state)
    return env


def random_actions(env: BatchedMPE, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniform actions; continuous ones partly outside [0, 1] so that clipping is exercised."""
    out = {}
    for a in env.possible_agents:
        space = env.action_spaces[a]
        if env.continuous_actions:
            out[a] = rng.uniform(-0.3, 1.3, (env.num_envs, *space.shape)).astype(np.float32)
        else:
            out[a] = rng.integers(space.n, size=env.num_envs)
    return out


def assert_obs(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0, err_msg=what)


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("case", list(CASES))
def test_one_env_seeded_alike_starts_and_resets_as_mpe2(case, continuous):
    make, cls, kwargs = make_pair(case, continuous)
    ref = make(**kwargs)
    env = cls(1, **kwargs)
    assert env.possible_agents == ref.possible_agents
    for a in env.possible_agents:
        assert env.single_action_space(a) == ref.action_space(a)
        assert env.single_observation_space(a) == ref.observation_space(a)
    for seed in (0, 1, 12345):
        ref_obs, _ = ref.reset(seed=seed)
        obs, _ = env.reset(seed=seed)
        for again in range(2):  # then an unseeded reset: both continue their stream
            for a in env.possible_agents:
                np.testing.assert_array_equal(obs[a][0], ref_obs[a], err_msg=f"{a} {again}")
            ref_obs, _ = ref.reset()
            obs, _ = env.reset()


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("case", list(CASES))
def test_an_episode_matches_mpe2_step_for_step(case, continuous):
    make, cls, kwargs = make_pair(case, continuous)
    seeds = [100, 101, 102]
    refs = [make(**kwargs) for _ in seeds]
    for ref, seed in zip(refs, seeds, strict=True):
        ref.reset(seed=seed)
    env = seeded_alike(cls, kwargs, seeds)
    # Crowd env 0's agents and landmarks, so that collisions with agents and obstacles,
    # landmarks reached and episodes ended early are part of the comparison.
    state = env.get_state()
    world = refs[0].unwrapped.world
    for i, agent in enumerate(world.agents):
        agent.state.p_pos = np.array([0.05 * i, 0.1 * i])
        state["arrays"]["pos"][0][i] = [0.05 * i, 0.1 * i]
    for j, landmark in enumerate(world.landmarks):
        landmark.state.p_pos = np.array([0.05 * j + 0.02, 0.1 * j - 0.03])
        state["arrays"]["landmarks"][0][j] = [0.05 * j + 0.02, 0.1 * j - 0.03]
    obs, _ = env.set_state(state)
    for e, ref in enumerate(refs):
        for a in env.possible_agents:
            assert_obs(obs[a][e], ref.unwrapped.observe(a), f"{a} start env {e}")

    rng = np.random.default_rng(7)
    live = [True] * len(refs)
    for t in range(kwargs.get("max_cycles", 25)):
        actions = random_actions(env, rng)
        obs, rewards, terms, truncs, infos = env.step(actions)
        for e, ref in enumerate(refs):
            if not live[e]:
                continue
            ref_obs, ref_rew, ref_term, ref_trunc, _ = ref.step(
                {a: actions[a][e] for a in ref.agents}
            )
            ended = bool(infos[env.possible_agents[0]]["_final_obs"][e])
            for a in env.possible_agents:
                what = f"{a} t={t} env {e}"
                assert_obs(infos[a]["final_obs"][e] if ended else obs[a][e], ref_obs[a], what)
                assert abs(rewards[a][e] - ref_rew[a]) < TOL, (what, rewards[a][e], ref_rew[a])
                assert (terms[a][e], truncs[a][e]) == (ref_term[a], ref_trunc[a]), what
            assert ended == (not ref.agents), t  # mpe2 ended the episode where we did
            live[e] = not ended
    assert not any(live)


def _reset_observations(case: str, episodes: int):
    make, cls, kwargs = make_pair(case)
    ref = make(**kwargs)
    ref_obs = [ref.reset(seed=seed)[0] for seed in range(episodes)]
    obs, _ = cls(episodes, **kwargs).reset(seed=episodes)
    return {a: (obs[a], np.stack([o[a] for o in ref_obs])) for a in obs}


@pytest.mark.parametrize("case", FIRST_CASES)
def test_start_distributions_match_mpe2(case):
    """Each observation coordinate at the start, over many starts (batched: rows of one
    env; mpe2: one env per seed), passes a two-sample KS test."""
    for agent, (ours, ref) in _reset_observations(case, STARTS).items():
        for k in range(ref.shape[1]):
            pvalue = stats.ks_2samp(ours[:, k], ref[:, k], method="asymp").pvalue
            assert pvalue > 1e-4, (agent, k, pvalue)


def test_the_distribution_test_sees_a_narrower_spread():
    ours, ref = _reset_observations("spread", STARTS)["agent_0"]
    assert stats.ks_2samp(0.6 * ours[:, 2], ref[:, 2]).pvalue < 1e-4  # its x position


@pytest.mark.parametrize(
    "program",
    [
        [Integers(3), Uniform(-1, 1, 2), Uniform(-1, 1, 2)],
        [Integers(2), Integers(3), Uniform(-0.9, 0.9, 2), Uniform(0, 6.28)],
        [Integers(1), Uniform(-1, 1, 2), Integers(1), Integers(3)],  # integers(1) draws nothing
        [Integers(2**31 + 1), Uniform(-1, 1, 2)],  # Lemire redraws half the time: numpy's path
    ],
)
def test_draws_for_many_rows_equal_the_generator_called_row_by_row(program):
    for seed in range(3):
        fast, slow = np.random.default_rng(seed), np.random.default_rng(seed)
        slow.integers(5)  # an odd number of integers buffered before: both start so
        fast.integers(5)
        for rows in (1, 2, 7):
            got = draw_rows(fast, rows, program)
            for row in range(rows):
                for k, call in enumerate(program):
                    if isinstance(call, Integers):
                        assert got[k][row] == slow.integers(call.high)
                    else:
                        np.testing.assert_array_equal(
                            got[k][row], slow.uniform(call.low, call.high, call.size)
                        )
            assert fast.bit_generator.state == slow.bit_generator.state
        # With each row's starting state: the same draws, and states continuing as they do.
        again = np.random.Generator(np.random.PCG64())
        again.bit_generator.state = slow.bit_generator.state
        values, states = draw_rows_from_each_state(again, 5, program)
        for row, start in enumerate(states):
            assert start == slow.bit_generator.state
            for k, call in enumerate(program):
                expected = (
                    slow.integers(call.high)
                    if isinstance(call, Integers)
                    else slow.uniform(call.low, call.high, call.size)
                )
                np.testing.assert_array_equal(values[k][row], expected)
        assert again.bit_generator.state == slow.bit_generator.state


def _on_slots(env: BatchedMPE) -> np.ndarray:
    return np.array(env.get_state()["arrays"]["slots"][0])


def _on_circle(env: BatchedMPE) -> np.ndarray:
    return np.array(env.get_state()["arrays"]["landmarks"][0]) + [[0.5, 0.0]]


@pytest.mark.parametrize(
    ("case", "placed"),
    [("line_success", _on_slots), ("formation_success", _on_circle)],
    ids=["line", "formation"],
)
def test_episodes_end_on_success_as_mpe2(case, placed):
    """Agents put where the scenario wants them end the episode at the next step in both."""
    make, cls, kwargs = make_pair(case)
    ref, env = make(**kwargs), cls(1, **kwargs)
    ref.reset(seed=3)
    env.reset(seed=3)
    state = env.get_state()
    state["arrays"]["pos"][0] = placed(env).tolist()
    env.set_state(state)
    for agent, at in zip(ref.unwrapped.world.agents, placed(env), strict=True):
        agent.state.p_pos = at.copy()
    still = {a: np.zeros(1, dtype=np.int64) for a in env.possible_agents}
    _, rewards, terms, truncs, _ = env.step(still)
    _, ref_rew, ref_term, ref_trunc, _ = ref.step({a: 0 for a in ref.agents})
    for a in env.possible_agents:
        assert terms[a][0] == ref_term[a] == 1 and truncs[a][0] == ref_trunc[a] == 0
        assert abs(rewards[a][0] - ref_rew[a]) < TOL
