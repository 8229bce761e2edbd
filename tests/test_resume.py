"""Exact resume: a run stopped and resumed ends where an uninterrupted run ends."""

import json
import signal

import pytest
import torch

from ippo_cli import checkpoint
from tests.conftest import HANG_GUARD_SECONDS, run_cli, training_process

BASE = [
    "env=speaker_listener",
    "env.backend=pettingzoo",  # mpe2 envs, restored by replaying actions (batched and
    "env.num_envs=4",  # worker processes: test_batched_mpe, test_vector_env)
    "logger=none",
    "progress=false",
    "algorithm.learn_step=512",
    "eval_episodes=2",
    "checkpoint.every=1024",
    # Bitwise comparisons: no automatic thread count that could fall back from 2 threads
    # to 1 in one run and not the other.
    "hardware.learn_threads=1",
]
WALL_CLOCK = ("wall_time", "steps_per_second")


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


def _weights(run_dir):
    agent = checkpoint.load(run_dir / "checkpoints" / "last.pt")["agent"]
    return {
        f"{table}/{net}/{k}": v
        for table in ("actors", "critics")
        for net, sd in agent[table].items()
        for k, v in sd.items()
    }


def _assert_same_run(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert _rows(a) == _rows(b)


def _train(tmp_path, name, *extra):
    result = run_cli(["train", *BASE, *extra, f"hydra.run.dir={tmp_path / name}"], tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / name


@pytest.mark.parametrize("eval_every", [1024, 1536])  # 1536: the short run ends off-schedule
def test_n_steps_resumed_for_n_more_equals_2n_steps(tmp_path, eval_every):
    # Without annealing: an annealed lr follows total_steps, which the resume changes.
    constant = "algorithm.anneal_lr=false"
    full = _train(
        tmp_path, "full", "algorithm.total_steps=4096", f"eval_every={eval_every}", constant
    )
    half = _train(
        tmp_path, "half", "algorithm.total_steps=2048", f"eval_every={eval_every}", constant
    )
    result = run_cli(["train", f"resume={half}", "algorithm.total_steps=4096"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "outputs").exists()  # continued in its own run directory
    _assert_same_run(full, half)


def test_a_run_stopped_by_a_signal_resumes_exactly(tmp_path):
    full = _train(tmp_path, "full", "algorithm.total_steps=6144", "eval_every=1024")
    run_dir = tmp_path / "stopped"
    args = [
        "train",
        *BASE,
        "algorithm.total_steps=6144",
        "eval_every=1024",
        f"hydra.run.dir={run_dir}",
    ]
    with training_process(args, tmp_path, run_dir, rows=3) as proc:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=HANG_GUARD_SECONDS)
    assert proc.returncode == 130
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["trainer"]["env_steps"] < 6144
    result = run_cli(["train", f"resume={run_dir / 'checkpoints' / 'last.pt'}"], tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_same_run(full, run_dir)


def test_resume_refuses_overrides_that_change_the_experiment(tmp_path):
    half = _train(tmp_path, "half", "algorithm.total_steps=1024", "eval_every=1024")
    for override in ("env.num_envs=2", "algorithm.lr=0.01", "network.latent_dim=8", "seed=3"):
        result = run_cli(["train", f"resume={half}", override], tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"'{override}' would change the experiment" in lines[0]
    result = run_cli(["train", f"resume={tmp_path / 'nowhere'}"], tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_keep_last_keeps_only_the_newest_step_checkpoints(tmp_path):
    run = _train(
        tmp_path,
        "run",
        "algorithm.total_steps=2560",
        "eval_every=0",
        "checkpoint.every=512",
        "checkpoint.keep_last=2",
    )
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step_2048.pt", "step_2560.pt"]
