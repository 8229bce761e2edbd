"""Where the jobs of a sweep run (the `launcher` config group), and how many cores each gets.

A job that shares the machine with other jobs of its sweep must not start one env worker
per core: with the joblib launcher running J jobs at once each job gets cores // J of
them; on SLURM or Ray each job gets the cores it asked for.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ippo_cli.cores import available_cores

# launcher preset -> (Hydra plugin module, what to install)
PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "'ippo-cli[ray]'"),
}


def missing_plugin(preset: str) -> str | None:
    """Why ``launcher=<preset>`` cannot run here, or None when its plugin is installed."""
    if preset not in PLUGINS:
        return None
    module, package = PLUGINS[preset]
    if importlib.util.find_spec(module) is None:
        return f"launcher={preset} needs the Hydra plugin {module}: pip install {package}"
    return None


def job_cores(launcher: Any, cores: int | None = None) -> int | None:
    """Cores one job of a sweep may use under ``launcher`` (hydra.launcher), or None
    when the job has the machine to itself (the basic launcher runs jobs one by one)."""
    target = str(launcher.get("_target_", ""))
    cores = cores or available_cores()
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or -1)
        # joblib's convention: -1 means one job per core, -2 all cores but one, ...
        at_once = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        return max(1, cores // at_once)
    if "hydra_submitit_launcher" in target:
        return launcher.get("cpus_per_task")
    if "hydra_ray_launcher" in target:
        num_cpus = launcher.get("ray", {}).get("remote", {}).get("num_cpus")
        return None if num_cpus is None else max(1, int(num_cpus))
    return None


def share_cores(cfg: Any, launcher: Any) -> str | None:
    """Fit a sweep job to its share of the cores (unless the user set ``hardware.cores``):
    ``hardware.cores`` caps its env workers (``num_workers`` null) and its automatic
    learning threads, which still start at 1 for small minibatches and fall back to 1 when
    starved; returns what was decided, for the log."""
    cores = job_cores(launcher)
    hardware = cfg.hardware
    if cores is None or hardware.get("cores") is not None:
        return None
    hardware.cores = cores
    if cores == 1 and hardware.num_workers is None and hardware.vec_env in ("async", "auto"):
        hardware.vec_env = "sync"  # one worker process would only add IPC
    if hardware.threads == 0:
        hardware.threads = cores
    return (
        f"sweep job: {cores} core(s): hardware.cores={cores}, "
        f"vec_env={hardware.vec_env}, threads={hardware.threads}"
    )
