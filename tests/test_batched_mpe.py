"""The batched numpy MPE backend's interface: exact state round trips, seeded resets,
autoreset, bad actions and configs, `ippo train env.backend=batched` end to end (its parity
with mpe2: tests/test_mpe_parity.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from pettingzoo.utils.env_logger import EnvLogger

from ippo_cli import checkpoint
from ippo_cli.cli import UserError, preflight
from ippo_cli.config import register_configs
from ippo_cli.envs.mpe import batched_support
from ippo_cli.envs.mpe.simple_spread import BatchedSimpleSpread
from ippo_cli.envs.mpe.speaker_listener import BatchedSpeakerListener
from ippo_cli.trainer import Trainer
from tests.conftest import run_cli, run_training
from tests.test_mpe_parity import random_actions
from tests.test_resume import _assert_same_run


@pytest.fixture(autouse=True)
def _quiet_mpe2_clipping():
    # Out-of-range continuous actions are part of the test; mpe2 warns on each one.
    EnvLogger.suppress_output()
    yield
    EnvLogger.unsuppress_output()


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
        ("pettingzoo.sisl.waterworld_v4.parallel_env", {}, [], "waterworld_v4.parallel_env has no"),
        ("mpe2.simple_spread_v3.parallel_env", {}, [{"factory": "x.y"}], "takes no env.wrappers"),
        (
            "mpe2.simple_spread_v3.parallel_env",
            {"benchmark_data": True},
            [],
            "env.kwargs.benchmark_data=True is not supported by env.backend=batched (only False)",
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
        (["env=simple_spread", "env.backend=batched", "+env.kwargs.benchmark_data=true"], "bench"),
    ],
)
def test_bad_backend_is_refused_before_the_run(overrides, message):
    register_configs()
    with pytest.raises(UserError, match=message):
        preflight("train", overrides)


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["env.backend=jax"], "env.backend=jax is invalid: use pettingzoo or batched"),
        (
            ["env=simple_spread", "env.backend=batched", "+env.kwargs.benchmark_data=true"],
            "env.backend=batched: env.kwargs.benchmark_data=True is not supported by "
            "env.backend=batched (only False)",
        ),
        (
            ["env=simple_line", "+env.kwargs.bogus=1"],
            "env.backend=batched: env.kwargs.bogus is not an argument of the batched "
            "simple_line_v1",
        ),
        (
            ["env=simple_spread", "env.backend=batched", "env.kwargs.N=0"],
            "env.backend=batched: env.kwargs.N=0 must be an int >= 1",
        ),
        (
            ["env=simple_tag", "env.kwargs.num_good=0"],
            "env.backend=batched: env.kwargs.num_good=0 must be an int >= 1",
        ),
        (
            ["env=simple_world_comm", "env.kwargs.num_forests=-1"],
            "env.backend=batched: env.kwargs.num_forests=-1 must be an int >= 0",
        ),
        (
            ["env=collect_treasure", "env.kwargs.num_deposits=7"],
            "env.backend=batched: env.kwargs.num_deposits=7 must be <= 6",
        ),
    ],
    ids=["backend", "unsupported", "unknown", "N", "num_good", "num_forests", "num_deposits"],
)
def test_cli_bad_batched_config_is_one_line(tmp_path, overrides, line):
    result = run_cli(["train", *overrides, "logger=none"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"ippo: error: {line}"]
    assert not (tmp_path / "outputs").exists()


def test_cli_env_without_batched_version_is_one_line(tmp_path):
    result = run_cli(["train", "env=pistonball", "env.backend=batched"], tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "ippo: error: env.backend=batched: env.factory=pettingzoo.butterfly.pistonball_v6."
        "parallel_env has no batched version (batched mpe2: "
    )
    assert "collect_treasure_v1" in line  # every mpe2 scenario is listed


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
    # N steps resumed for N more equal 2N in one go only at a constant lr: an annealed one
    # follows total_steps, which the resume below changes.
    "algorithm.anneal_lr=false",
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
