"""SLURM (slurm_up.sh's one-node cluster): `launcher=slurm` sweeps go through sbatch."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cluster.conftest import PARTITION, SHORT_RUN, cluster_env
from tests.conftest import HANG_GUARD_SECONDS

SLURM = [
    "launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def ippo(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ippo_cli", *args],
        cwd=cwd,
        env={**cluster_env(), "COLUMNS": "250"},  # table rows on one line each
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )


def sweep(tmp_path, overrides):
    sweep_dir = tmp_path / "sweep"
    result = ippo(
        ["train", "-m", *SLURM, *SHORT_RUN, *overrides, f"hydra.sweep.dir={sweep_dir}"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    return sweep_dir, json.loads((sweep_dir / "summary.json").read_text()), result


def test_the_node_is_idle_in_its_partition():
    result = subprocess.run(
        ["sinfo"], env=cluster_env(), capture_output=True, text=True, timeout=30
    )
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert row.split()[0] == f"{PARTITION}*" and row.split()[4] == "idle"


def test_two_job_sweep_runs_through_sbatch_and_is_summarised(tmp_path):
    sweep_dir, summary, _ = sweep(tmp_path, ["seed=0,1"])
    assert [j["status"] for j in summary["jobs"]] == ["completed", "completed"]
    assert [j["env_steps"] for j in summary["jobs"]] == [512, 512]
    for job in ("0", "1"):  # each job's run directory, as with launcher=basic
        run = sweep_dir / job
        assert (run / "checkpoints" / "last.pt").is_file()
        assert (run / "metrics.jsonl").read_text().count("\n") == 8  # 2 envs x 32 steps
    # The jobs ran as one SLURM array: submitit kept sbatch's script and each task's log.
    (script,) = (sweep_dir / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --array=0-1" in script.read_text()
    assert len(list((sweep_dir / ".submitit").glob("*_[01]/*_log.out"))) == 2
    (sweep_dir / "summary.json").unlink()
    again = ippo(["summary", str(sweep_dir)], tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((sweep_dir / "summary.json").read_text())["jobs"] == summary["jobs"]


def test_a_job_failing_on_the_node_is_reported_with_its_reason(tmp_path):
    # The factory builds on this side (pre-flight passes) and raises on the SLURM node.
    _, summary, result = sweep(
        tmp_path,
        ["env.factory=tests.cluster.node_env.make", "+env.kwargs.fail_on_node=false,true"],
    )
    good, bad = summary["jobs"]
    assert good["status"] == "completed"
    assert bad["status"] == "failed"
    assert "no scenario files on node ippo-node (SLURM job" in bad["error"]
    assert "no scenario files on node ippo-node" in result.stdout  # the printed table
