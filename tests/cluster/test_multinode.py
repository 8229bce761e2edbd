"""Multi-node data parallel: two torchrun launches, node ranks 0 and 1, meeting at a
rendezvous on 127.0.0.1 as two machines would, train one `hardware=distributed` run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from tests.cluster.conftest import SHORT_RUN, cluster_env, free_port
from tests.conftest import HANG_GUARD_SECONDS, REPO

WORKER = REPO / "tests" / "distributed_worker.py"
# How long a node may take to stop once told (or once its peer died): a guard against a
# hang, far above the seconds it takes.
STOP_GUARD_SECONDS = 120


def torchrun(node_rank: int, port: int, args: list[str], cwd: Path) -> subprocess.Popen:
    """One node's `torchrun` (one process per node), in its own session as on its own
    machine, so that a signal to one node reaches that node alone."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        f"--node_rank={node_rank}",
        "--nproc_per_node=1",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        *args,
    ]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=cluster_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@contextmanager
def two_nodes(args_of, tmp_path: Path):
    """Nodes 0 and 1 started with ``args_of(node_rank)``; killed on the way out if they
    still run."""
    port = free_port()
    nodes = [torchrun(r, port, args_of(r), tmp_path / f"node{r}") for r in (0, 1)]
    try:
        yield nodes
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def kill_node(node: subprocess.Popen) -> None:
    """The machine dies: its torchrun and the workers it started (in sessions of their
    own) are killed at once."""
    for pid in [*children(node.pid), node.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.communicate()


def finish(nodes, guard: float = HANG_GUARD_SECONDS) -> list[tuple[int, str, str]]:
    """Each node's exit status, stdout and stderr once it ended (within ``guard`` s)."""
    outputs = [n.communicate(timeout=guard) for n in nodes]
    return [(n.returncode, *out) for n, out in zip(nodes, outputs, strict=True)]


def wait_for_rows(metrics: Path, nodes) -> None:
    guard = time.monotonic() + HANG_GUARD_SECONDS
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert all(n.poll() is None for n in nodes), "a node ended before training"
        assert time.monotonic() < guard, "no metrics rows: the nodes never met"
        time.sleep(0.2)


def cli(node_rank: int, tmp_path: Path, extra: list[str]) -> list[str]:
    run_dir = tmp_path / f"node{node_rank}" / "run"
    return [
        "-m",
        "ippo_cli",
        "train",
        "hardware=distributed",
        *SHORT_RUN,
        *extra,
        f"hydra.run.dir={run_dir}",
    ]


def checksum(weights: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(weights[key].numpy().tobytes())
    return digest.hexdigest()[:16]


def test_two_nodes_end_with_identical_weights(tmp_path):
    out = tmp_path / "shared"  # what a shared filesystem would be
    out.mkdir()
    with two_nodes(lambda r: [str(WORKER), "trainer", str(out)], tmp_path) as nodes:
        results = finish(nodes)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    sums = [checksum(r["weights"]) for r in ranks]
    for node, value in enumerate(sums):
        print(f"node {node} final weights sha256: {value}")
    assert sums[0] == sums[1]
    assert all(r["data_parallel"] for r in ranks)
    assert not torch.equal(ranks[0]["obs"], ranks[1]["obs"])  # each node its own envs
    assert [r["env_steps"] for r in ranks] == [512, 512]  # both nodes' steps counted


def test_only_global_rank_0_writes_and_total_steps_counts_both_nodes(tmp_path):
    with two_nodes(lambda r: cli(r, tmp_path, []), tmp_path) as nodes:
        (code0, out0, err0), (code1, out1, err1) = finish(nodes)
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    run = tmp_path / "node0" / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 2 nodes x 2 envs x 32 steps = 128 env steps per update: 512 in 4 updates.
    assert [r["env_steps"] for r in rows] == [128, 256, 384, 512]
    assert (run / "checkpoints" / "last.pt").is_file()
    assert out0.count("ippo train") == 1 and "ippo train" not in out1
    assert sorted(p.name for p in (tmp_path / "node1").iterdir()) == []


def test_ctrl_c_on_one_node_stops_both_cleanly(tmp_path):
    long_run = ["algorithm.total_steps=10000000", "eval_every=0"]
    with two_nodes(lambda r: cli(r, tmp_path, long_run), tmp_path) as nodes:
        run = tmp_path / "node0" / "run"
        wait_for_rows(run / "metrics.jsonl", nodes)
        os.killpg(nodes[0].pid, signal.SIGINT)  # Ctrl-C in node 0's terminal
        started = time.monotonic()
        (_, out0, err0), (code1, _, err1) = finish(nodes, STOP_GUARD_SECONDS)
        print(f"both nodes stopped {time.monotonic() - started:.1f} s after Ctrl-C on node 0")
    assert "stopped by a signal" in err0 and "interrupted: saved" in err0
    assert code1 == 0, err1[-3000:]  # node 1 was asked to stop by its peer: a clean end
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] and summary["env_steps"] < 10000000
    assert (run / "checkpoints" / "last.pt").is_file()


def test_a_dead_node_makes_the_other_exit_with_one_line(tmp_path):
    long_run = ["algorithm.total_steps=10000000", "eval_every=0"]
    with two_nodes(lambda r: cli(r, tmp_path, long_run), tmp_path) as nodes:
        wait_for_rows(tmp_path / "node0" / "run" / "metrics.jsonl", nodes)
        kill_node(nodes[1])
        started = time.monotonic()
        _, err0 = nodes[0].communicate(timeout=STOP_GUARD_SECONDS)
        print(f"node 0 exited {time.monotonic() - started:.1f} s after node 1 died")
    ours = [line for line in err0.splitlines() if line.startswith("ippo: error:")]
    print("\n".join(ours))
    assert nodes[0].returncode != 0
    assert len(ours) == 1 and "lost the data-parallel run's other ranks" in ours[0]
    assert "Traceback" not in err0.split("ippo: error:")[0]  # our worker printed no traceback
