"""Shared helpers: compose a training config as the CLI does, and run the trainer."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ippo_cli.cli import compose_config
from ippo_cli.config import register_configs

REPO = Path(__file__).resolve().parents[1]
# tests/cluster/ needs SLURM, Ray and two torchrun nodes: `make test-cluster` runs it
# (tests/cluster/run.sh sets IPPO_CLUSTER_DIR); `make test` does not collect it.
collect_ignore = [] if os.environ.get("IPPO_CLUSTER_DIR") else ["cluster"]
# How long a test waits for a subprocess before calling it hung: a guard, never a
# threshold a working run could miss on a loaded machine.
HANG_GUARD_SECONDS = 900
# Small, fast settings for learning probes.
FAST = [
    "algorithm.learn_step=256",
    "algorithm.batch_size=64",
    "algorithm.lr=0.003",
    "env.num_envs=4",
    "eval_every=0",
    "eval_episodes=2",
    "checkpoint.every=0",
]


def train_config(overrides: list[str]):
    """The composed `ippo train` config for these overrides (quiet, no wandb, eager:
    tests of compiling ask for it)."""
    register_configs()
    base = ["logger=none", "progress=false", "hardware.vec_env=sync", "hardware.torch_compile=null"]
    return compose_config("train", base + overrides)


def probe_overrides(env_class: str, **kwargs) -> list[str]:
    """Overrides selecting a probe env of tests/probe_envs.py through env=pettingzoo."""
    out = ["env=pettingzoo", f"env.factory=tests.probe_envs.{env_class}", "env.name=probe"]
    out += [f"+env.kwargs.{k}={v}" for k, v in kwargs.items()]
    return out


def job_trainer(tmp_path: Path, name: str, overrides: list[str]):
    """A trainer in its own run directory ``tmp_path / name``, made as Hydra makes a job's."""
    from ippo_cli.trainer import Trainer

    (tmp_path / name).mkdir()
    return Trainer(train_config(overrides), tmp_path / name)


def run_training(tmp_path: Path, overrides: list[str]):
    """Train in-process; returns the trainer (its agent and run directory)."""
    from ippo_cli.trainer import Trainer

    trainer = Trainer(train_config(overrides), tmp_path)
    trainer.summary = trainer.run()
    return trainer


def run_cli(
    args: list[str], cwd: Path, timeout: float = HANG_GUARD_SECONDS, script: bool = False, **popen
) -> subprocess.CompletedProcess:
    """Run `ippo ...` as a user would, in a subprocess. With ``script``, through the `ippo`
    command installed beside this Python, whose path starts with its own directory
    (``python -m ippo_cli`` puts the working directory first)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    ippo = [str(Path(sys.executable).with_name("ippo"))]
    return subprocess.run(
        [*(ippo if script else [sys.executable, "-m", "ippo_cli"]), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def sample_batch(space, n: int, seed: int = 0):
    """``n`` samples of ``space`` stacked the way the vector env delivers them."""
    from gymnasium import spaces

    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {k: np.stack([s[k] for s in samples]) for k in space.spaces}
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([s[i] for s in samples]) for i in range(len(space.spaces)))
    return np.stack(samples)


@contextlib.contextmanager
def training_process(args: list[str], cwd: Path, run_dir: Path, rows: int = 1):
    """`ippo train` in a background subprocess, handed over once its metrics.jsonl has
    ``rows`` rows (or it ended); killed on the way out if it still runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ippo_cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        metrics = run_dir / "metrics.jsonl"
        # Only a guard against a hang: the run is handed over when the rows are there.
        guard = time.monotonic() + HANG_GUARD_SECONDS
        while proc.poll() is None and not (
            metrics.exists() and metrics.read_text().count("\n") >= rows
        ):
            if time.monotonic() > guard:
                pytest.fail(f"no {rows} metrics rows in {HANG_GUARD_SECONDS} s: {args}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(autouse=True)
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)
