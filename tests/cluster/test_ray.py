"""Ray: `launcher=ray` sweeps run as Ray tasks on a local cluster (conftest.ray_cluster)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cluster.conftest import SHORT_RUN, cluster_env
from tests.conftest import HANG_GUARD_SECONDS


def test_two_job_sweep_runs_as_ray_tasks_each_on_its_cpu_share(tmp_path, ray_cluster):
    sweep_dir = tmp_path / "sweep"
    args = [
        "train",
        "-m",
        "launcher=ray",
        f"hydra.launcher.ray.init.address={ray_cluster}",
        "hydra.launcher.ray.remote.num_cpus=1",
        *SHORT_RUN,
        "seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "ippo_cli", *args],
        cwd=tmp_path,
        env=cluster_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["completed", "completed"]
    assert "(_run_job pid=" in result.stdout + result.stderr  # Ray workers' output
    for job in ("0", "1"):
        # The job asked Ray for one CPU and fitted itself to it.
        log = (sweep_dir / job / "train.log").read_text()
        assert "sweep job: 1 core(s): hardware.cores=1, vec_env=sync" in log
        assert (sweep_dir / job / "checkpoints" / "last.pt").is_file()
