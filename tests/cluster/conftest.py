"""Fixtures of the cluster tests (`make test-cluster`, tests/cluster/run.sh): they run
inside the network namespace that run.sh made, where slurm_up.sh's SLURM answers on
loopback. The main suite never collects this directory (tests/conftest.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

CLUSTER_DIR = Path(os.environ.get("IPPO_CLUSTER_DIR", "/tmp/ippo-cluster"))
PARTITION = "ippo"
# The short runs of every cluster test: a probe env, a few updates, no compiling.
SHORT_RUN = [
    "env=pettingzoo",
    "env.factory=tests.probe_envs.ObsRewardEnv",
    "env.name=probe",
    "env.num_envs=2",
    "algorithm.learn_step=64",
    "algorithm.total_steps=512",
    "eval_every=256",
    "eval_episodes=2",
    "hardware.torch_compile=null",
    "logger=none",
    "progress=false",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    """The environment of a command run on the cluster: SLURM's config, gloo on loopback,
    this checkout importable (the probe envs live in tests/), wandb offline."""
    repo = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    for key in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return {
        **env,
        "SLURM_CONF": str(CLUSTER_DIR / "slurm.conf"),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": repo,
        "WANDB_MODE": "offline",
    }


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster on 127.0.0.1 (two CPUs), started by this process and shut down
    after the tests; yields the address sweep jobs connect to. Its workers import from
    this checkout (the probe envs), as a real cluster's would from a shared checkout."""
    ray = pytest.importorskip("ray")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PYTHONPATH", cluster_env()["PYTHONPATH"])  # inherited by Ray's workers
    context = ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
    )
    monkeypatch.undo()
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
