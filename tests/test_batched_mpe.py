"""The batched numpy MPE backend: the same game as mpe2, step for step, and the same starts
in distribution; exact state round trips; `ippo train env.backend=batched` end to end."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from mpe2 import simple_speaker_listener_v4, simple_spread_v3
from omegaconf import OmegaConf
from pettingzoo.utils.env_logger import EnvLogger
from scipy import stats

from ippo_cli import checkpoint
from ippo_cli.cli import UserError, preflight
from ippo_cli.config import register_configs
from ippo_cli.envs.batched_mpe import (
    BatchedMPE,
    BatchedSimpleSpread,
    BatchedSpeakerListener,
    batched_support,
)
from ippo_cli.trainer import Trainer
from tests.conftest import run_cli, run_training
from tests.test_resume import _assert_same_run

# name -> (mpe2 parallel_env, batched class, kwargs of both)
SCENARIOS = {
    "speaker_listener": (simple_speaker_listener_v4.parallel_env, BatchedSpeakerListener, {}),
    "spread_N3": (simple_spread_v3.parallel_env, BatchedSimpleSpread, {"N": 3}),
    "spread_N5": (
        simple_spread_v3.parallel_env,
        BatchedSimpleSpread,
        {"N": 5, "local_ratio": 0.3, "max_cycles": 30},
    ),
}


@pytest.fixture(autouse=True)
def _quiet_mpe2_clipping():
    # Out-of-range continuous actions are part of the test; mpe2 warns on each one.
    EnvLogger.suppress_output()
    yield
    EnvLogger.unsuppress_output()


def mirror(batched: BatchedMPE, envs: list) -> tuple[dict, dict]:
    """Load each mpe2 env's world into the matching row of ``batched`` via set_state."""
    state = batched.get_state()
    arrays = {name: np.array(value) for name, value in state["arrays"].items()}
    for e, env in enumerate(envs):
        raw = env.unwrapped
        world = raw.world
        arrays["pos"][e] = [a.state.p_pos for a in world.agents]
        arrays["vel"][e] = [a.state.p_vel for a in world.agents]
        arrays["comm"][e] = [a.state.c for a in world.agents]
        arrays["landmarks"][e] = [lm.state.p_pos for lm in world.landmarks]
        arrays["steps"][e] = raw.steps
        if "goal" in arrays:
            arrays["goal"][e] = world.landmarks.index(world.agents[0].goal_b)
    state["arrays"] = {name: value.tolist() for name, value in arrays.items()}
    return batched.set_state(state)


def random_actions(env: BatchedMPE, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniform actions; continuous ones partly outside [0, 1] so that clipping is exercised."""
    out = {}
    for a in env.possible_agents:
        space = env.action_spaces[a]
        if env.continuous_actions:
            shape = (env.num_envs, *space.shape)
            out[a] = rng.uniform(-0.3, 1.3, shape).astype(np.float32)
        else:
            out[a] = rng.integers(space.n, size=env.num_envs)
    return out


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_an_episode_matches_mpe2_step_for_step(scenario, continuous):
    make, cls, kwargs = SCENARIOS[scenario]
    n = 4
    envs = [make(continuous_actions=continuous, **kwargs) for _ in range(n)]
    first = [env.reset(seed=100 + e)[0] for e, env in enumerate(envs)]
    batched = cls(n, continuous_actions=continuous, **kwargs)
    assert batched.possible_agents == envs[0].possible_agents
    for a in batched.possible_agents:
        assert batched.single_action_space(a) == envs[0].action_space(a)
        assert batched.single_observation_space(a) == envs[0].observation_space(a)
    batched.reset(seed=0)
    # Crowd env 0's agents (the speaker_listener listener onto a landmark), so that
    # collisions and their forces are part of the comparison.
    world = envs[0].unwrapped.world
    for i, agent in enumerate(world.agents):
        agent.state.p_pos = np.array([0.05 * i, 0.1 * i])
    first[0] = {a: envs[0].unwrapped.observe(a) for a in envs[0].agents}
    obs, infos = mirror(batched, envs)
    for a in batched.possible_agents:
        np.testing.assert_allclose(obs[a], np.stack([o[a] for o in first]), atol=1e-5)
        assert obs[a].dtype == np.float32 and infos[a]["active"].all()

    rng = np.random.default_rng(7)
    max_cycles = kwargs.get("max_cycles", 25)
    collided = False
    for t in range(max_cycles):
        actions = random_actions(batched, rng)
        obs, rewards, terms, truncs, infos = batched.step(actions)
        last = t == max_cycles - 1
        for e, env in enumerate(envs):
            ref_obs, ref_rew, ref_term, ref_trunc, _ = env.step(
                {a: actions[a][e] for a in env.agents}
            )
            for a in batched.possible_agents:
                seen = infos[a]["final_obs"][e] if last else obs[a][e]
                assert infos[a]["_final_obs"][e] == last
                np.testing.assert_allclose(seen, ref_obs[a], atol=1e-5, err_msg=f"{a} t={t}")
                assert abs(rewards[a][e] - ref_rew[a]) < 1e-5, (a, t)
                assert truncs[a][e] == ref_trunc[a] == last
                assert terms[a][e] == ref_term[a] == 0
            pos = np.array([agent.state.p_pos for agent in env.unwrapped.world.agents])
            dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
            collided |= bool((dist[np.triu_indices(len(pos), 1)] < 0.3).any())
    assert not any(env.agents for env in envs)  # mpe2 ended its episodes where we truncated
    if cls is BatchedSimpleSpread:
        assert collided


def _mpe2_starts(make, kwargs, episodes):
    env = make(**kwargs)
    pos, landmarks, goals = [], [], []
    for seed in range(episodes):
        env.reset(seed=seed)
        world = env.unwrapped.world
        pos.append([a.state.p_pos for a in world.agents])
        landmarks.append([lm.state.p_pos for lm in world.landmarks])
        if make is simple_speaker_listener_v4.parallel_env:
            goals.append(world.landmarks.index(world.agents[0].goal_b))
    return np.array(pos), np.array(landmarks), np.array(goals)


@pytest.mark.parametrize("scenario", ["speaker_listener", "spread_N3"])
def test_reset_distributions_match_mpe2(scenario):
    make, cls, kwargs = SCENARIOS[scenario]
    episodes = 1500
    ref_pos, ref_landmarks, ref_goals = _mpe2_starts(make, kwargs, episodes)
    batched = cls(episodes, **kwargs)
    batched.reset(seed=0)
    state = batched.get_state()["arrays"]
    pos, landmarks = np.array(state["pos"]), np.array(state["landmarks"])
    assert not np.any(state["vel"]) and not np.any(state["comm"]) and not np.any(state["steps"])

    def same(ours, ref):
        return stats.ks_2samp(ours.ravel(), ref.ravel()).pvalue > 1e-3

    # Per entity and coordinate, so a wrong range, shape or entity ordering shows.
    for ours, ref in ((pos, ref_pos), (landmarks, ref_landmarks)):
        for i in range(ref.shape[1]):
            for xy in range(2):
                assert same(ours[:, i, xy], ref[:, i, xy]), (i, xy)
    # The test has the power to see a slightly narrower spread.
    assert not same(pos * 0.9, ref_pos)
    if scenario == "speaker_listener":
        goals = np.array(state["goal"])
        counts = np.stack([np.bincount(g, minlength=3) for g in (goals, ref_goals)])
        assert stats.chi2_contingency(counts).pvalue > 1e-3
        skewed = np.bincount(np.where(np.arange(episodes) % 5 == 0, 0, goals), minlength=3)
        assert stats.chi2_contingency(np.stack([skewed, counts[1]])).pvalue < 1e-3


def test_state_round_trip_continues_exactly_across_autoresets():
    env = BatchedSimpleSpread(6, N=3, max_cycles=5, continuous_actions=True)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs = env.step(random_actions(env, rng))[0]
    buf = io.BytesIO()
    torch.save(env.get_state(), buf)  # a checkpoint holds it
    buf.seek(0)
    twin = BatchedSimpleSpread(6, N=3, max_cycles=5, continuous_actions=True)
    twin.reset(seed=99)
    restored, _ = twin.set_state(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(restored["agent_1"], obs["agent_1"])
    for _ in range(12):  # two autoresets: the reset Generator was restored too
        actions = random_actions(env, rng)
        a, b = env.step(actions), twin.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):
            for agent in env.possible_agents:
                np.testing.assert_array_equal(x[agent], y[agent])
    with pytest.raises(ValueError, match="num_envs=6, this env has 5"):
        BatchedSimpleSpread(5, N=3).set_state(env.get_state())
    with pytest.raises(ValueError, match="env='simple_spread_v3', this env has"):
        BatchedSpeakerListener(6).set_state(env.get_state())


def test_seeded_resets_repeat_and_episodes_end_at_max_cycles():
    env = BatchedSpeakerListener(8, max_cycles=3)
    first, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    other, _ = env.reset(seed=6)
    np.testing.assert_array_equal(first["listener_0"], again["listener_0"])
    assert not np.array_equal(first["listener_0"], other["listener_0"])
    actions = {"speaker_0": np.zeros(8, dtype=np.int64), "listener_0": np.full(8, 2)}
    for t in range(1, 4):
        obs, _, _, truncs, infos = env.step(actions)
        assert (truncs["listener_0"] == (t == 3)).all()
    assert infos["listener_0"]["_final_obs"].all()
    # The final observation moved right (action 2); the new episode starts at rest.
    assert (infos["listener_0"]["final_obs"][:, 0] > 0).all()
    assert not obs["listener_0"][:, :2].any() and env.get_state()["arrays"]["steps"] == [0] * 8


def test_bad_actions_name_the_agent():
    env = BatchedSpeakerListener(2)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({})
    env.reset(seed=0)
    ok = {"speaker_0": np.array([0, 1]), "listener_0": np.array([4, 0])}
    with pytest.raises(ValueError, match=r"actions\['listener_0'\] has 5, outside Discrete\(5\)"):
        env.step({**ok, "listener_0": np.array([5, 0])})
    with pytest.raises(ValueError, match=r"actions\['speaker_0'\] has shape \(3,\)"):
        env.step({**ok, "speaker_0": np.array([0, 1, 2])})
    with pytest.raises(KeyError, match="missing actions for alive agent 'listener_0'"):
        env.step({"speaker_0": ok["speaker_0"]})
    with pytest.raises(KeyError, match="unknown agents"):
        env.step({**ok, "bob_0": ok["speaker_0"]})
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(ok)


@pytest.mark.parametrize(
    ("factory", "kwargs", "wrappers", "message"),
    [
        ("mpe2.simple_push_v3.parallel_env", {}, [], "simple_push_v3.parallel_env has no batched"),
        ("mpe2.simple_spread_v3.parallel_env", {}, [{"factory": "x.y"}], "takes no env.wrappers"),
        (
            "mpe2.simple_spread_v3.parallel_env",
            {"terminate_on_success": True},
            [],
            "env.kwargs.terminate_on_success=True is not supported",
        ),
        ("mpe2.simple_spread_v3.parallel_env", {"local_ratio": 2}, [], "local_ratio=2 must be in"),
        ("mpe2.simple_speaker_listener_v4.parallel_env", {"N": 3}, [], "env.kwargs.N is not an"),
        ("mpe2.simple_speaker_listener_v4.parallel_env", {"max_cycles": 0}, [], "max_cycles=0"),
    ],
)
def test_unsupported_configs_are_named(factory, kwargs, wrappers, message):
    assert message in batched_support(factory, kwargs, wrappers)


def test_supported_configs_pass():
    spread = "mpe2.simple_spread_v3.parallel_env"
    assert batched_support(spread, {"N": 4, "dynamic_rescaling": False}, []) is None
    listener = "mpe2.simple_speaker_listener_v4.parallel_env"
    assert batched_support(listener, {"continuous_actions": True}, []) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["env.backend=numba"], "env.backend=numba is invalid: use pettingzoo or batched"),
        (["env=pistonball", "env.backend=batched"], "pistonball_v6.parallel_env has no batched"),
        (["env=simple_spread", "env.backend=batched", "+env.kwargs.curriculum=true"], "curricu"),
    ],
)
def test_bad_backend_is_refused_before_the_run(overrides, message):
    register_configs()
    with pytest.raises(UserError, match=message):
        preflight("train", overrides)


def test_cli_bad_backend_is_one_line(tmp_path):
    result = run_cli(["train", "env.backend=jax", "logger=none"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ippo: error: env.backend=jax is invalid: use pettingzoo or batched"
    ]
    assert not (tmp_path / "outputs").exists()


def test_simple_spread_trains_on_the_batched_backend(tmp_path):
    overrides = [
        "env=simple_spread",
        "env.backend=batched",
        "env.kwargs.N=4",
        "env.num_envs=16",
        "algorithm.learn_step=512",
        "algorithm.total_steps=1024",
        "eval_every=0",
        "eval_episodes=1",
        "checkpoint.every=0",
    ]
    trainer = run_training(tmp_path, overrides)
    assert isinstance(trainer.env, BatchedSimpleSpread) and trainer.env.num_envs == 16
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows if "steps_per_second" in r] == [512, 1024]
    # 16 envs x 32 vector steps of 25-step episodes: each env ended one in the first rollout.
    assert rows[0]["episodes"] == 16 and rows[0]["episode_length"] == 25
    assert trainer.summary["final_eval"] is not None  # evaluated on mpe2 itself


BATCHED_RUN = [
    "env=speaker_listener",
    "env.backend=batched",
    "env.num_envs=16",
    "algorithm.learn_step=512",
    "eval_every=1024",
    "eval_episodes=2",
    "checkpoint.every=1024",
]


def test_cli_batched_run_evaluates_on_mpe2_and_resumes_exactly(tmp_path):
    full = tmp_path / "full"
    args = ["train", *BATCHED_RUN, "logger=none", "progress=false", "algorithm.total_steps=3072"]
    result = run_cli([*args, f"hydra.run.dir={full}"], tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_cli(["eval", f"ckpt={full}", "episodes=2", "render=true"], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((full / "checkpoints" / "eval.json").read_text())
    assert report["env"] == "speaker_listener" and report["episodes"] == 2
    assert (full / "checkpoints" / "eval.gif").stat().st_size > 0  # drawn by mpe2

    # Half the steps, then resumed (in-process, as the CLI does it) to the same end.
    half = tmp_path / "half"
    half.mkdir()
    run_training(half, [*BATCHED_RUN, "algorithm.total_steps=1536"])
    data = checkpoint.load(half / "checkpoints" / "last.pt")
    assert data["trainer"]["env"]["backend"] == "batched"
    cfg = OmegaConf.create(data["config"])
    cfg.algorithm.total_steps = 3072
    Trainer(cfg, half, resume=data).run()
    _assert_same_run(full, half)
