"""Data-parallel training: two CPU ranks (gloo) under torchrun end with identical weights."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, probe_overrides, run_cli

WORKER = REPO / "tests" / "distributed_worker.py"


def _torchrun(args, cwd, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _ranks(out):
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between ranks"


def test_two_cpu_ranks_step_own_envs_and_end_with_identical_weights(tmp_path):
    result = _torchrun([str(WORKER), "trainer", str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["data_parallel"] and r1["data_parallel"]
    # Each rank saw its own observations (seeded apart) ...
    assert not torch.equal(r0["obs"], r1["obs"])
    # ... and yet, with gradients averaged every minibatch, the replicas never diverged.
    _assert_same_weights(r0["weights"], r1["weights"])
    # total_steps counts env steps over both ranks.
    assert r0["env_steps"] == r1["env_steps"] == 512
    # Only rank 0 writes checkpoints.
    assert (tmp_path / "run0" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "run1" / "checkpoints").exists()


def test_accelerator_argument_makes_ippo_data_parallel(tmp_path):
    pytest.importorskip("accelerate")
    result = _torchrun([str(WORKER), "accelerator", str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["data_parallel"] and r1["data_parallel"]
    _assert_same_weights(r0["weights"], r1["weights"])


def test_accelerator_single_process_uses_its_device():
    accelerate = pytest.importorskip("accelerate")
    from gymnasium import spaces

    from ippo_cli import IPPO

    accelerator = accelerate.Accelerator(cpu=True)
    box = spaces.Box(-1, 1, (3,))
    agent = IPPO([box], [spaces.Discrete(2)], ["a_0"], device="meta", accelerator=accelerator)
    assert agent.device == accelerator.device
    assert not agent.data_parallel  # one process: nothing to synchronise
    assert agent.clone().accelerator is accelerator


def test_cli_distributed_run_writes_one_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "-m",
        "ippo_cli",
        "train",
        *probe_overrides("ObsRewardEnv"),
        "hardware=distributed",
        "env.num_envs=2",
        "algorithm.learn_step=64",
        "algorithm.total_steps=256",
        "eval_every=128",
        "eval_episodes=2",
        "logger=none",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    result = _torchrun(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.pt").exists()
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # 2 ranks x 2 envs x 32 steps = 128 env steps per update
    assert result.stdout.count("ippo train") == 1  # rank 0 alone reports
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("env", "extra", "message"),
    [
        ({}, ["hardware=distributed"], "must be started by torchrun"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, [], "add hardware=distributed"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, ["-m", "hardware=distributed", "seed=0,1"], "-m"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, ["hardware=distributed", "hpo=evolution"], "hpo"),
    ],
)
def test_launch_mismatch_refused_in_one_line(tmp_path, monkeypatch, env, extra, message):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = run_cli(["train", *probe_overrides("ObsRewardEnv"), *extra], tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()
