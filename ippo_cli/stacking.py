"""`launcher=stacked`: the jobs of a sweep trained as members of stacks in this process.

:func:`plan_stacks` groups the jobs whose configs agree in everything but the member
keys (``MEMBER_KEYS``: the seed and the scalar hyperparameters that change no shape);
each group becomes stacks of at most ``max_members`` members, and the log says how the
jobs were grouped and why. :func:`run_stacked_jobs` trains each stack with
:class:`~ippo_cli.run_stack.RunStack` and writes every job's ``summary.json`` as a solo
run would. Jobs that cannot be members (``resume=``, ``hpo=evolution``) run alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ippo_cli.cores import run_cores

log = logging.getLogger("ippo")

# Keys in which the members of one stack may differ.
MEMBER_KEYS = (
    "seed",
    "algorithm.lr",
    "algorithm.ent_coef",
    "algorithm.clip_coef",
    "algorithm.vf_coef",
    "algorithm.gamma",
    "algorithm.gae_lambda",
    "algorithm.max_grad_norm",
    "algorithm.target_kl",
    "algorithm.signalling",
    "algorithm.listening",
    "logger",
)


@dataclass
class Job:
    """One job of the sweep: its number, overrides, composed config and run directory."""

    num: int
    overrides: list[str]
    cfg: DictConfig
    run_dir: Path


def solo_reason(cfg: DictConfig) -> str | None:
    """Why a job cannot be a member of a stack, or None."""
    if cfg.get("resume"):
        return "resume= continues a saved run"
    if cfg.get("hpo") is not None:
        return "hpo=evolution trains a population of its own"
    if cfg.hardware.distributed:
        return "hardware=distributed"
    return None


def shared_part(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` without the member keys: what the members of one stack share."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in MEMBER_KEYS:
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.get(part, {})
        node.pop(last, None)
    return data


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            keys.append(f"{prefix}{k}")
    return keys


def plan_stacks(jobs: list[Job], max_members: int) -> tuple[list[list[Job]], list[str]]:
    """The stacks (lists of jobs; a one-job list runs alone) and the lines that say why."""
    groups: dict[str, list[Job]] = {}
    shared: dict[str, dict[str, Any]] = {}
    solos: list[list[Job]] = []
    notes: list[str] = []
    for job in jobs:
        reason = solo_reason(job.cfg)
        if reason is not None:
            solos.append([job])
            notes.append(f"job {job.num} runs alone: {reason}")
            continue
        part = shared_part(job.cfg)
        key = json.dumps(part, sort_keys=True, default=str)
        groups.setdefault(key, []).append(job)
        shared.setdefault(key, part)
    stacks: list[list[Job]] = []
    keys = list(groups)
    for i, key in enumerate(keys):
        members = groups[key]
        chunks = [members[j : j + max_members] for j in range(0, len(members), max_members)]
        stacks += chunks
        nums = ", ".join(str(job.num) for job in members)
        why = ""
        if i > 0:
            differ = _differences(shared[keys[0]], shared[key])
            why = f"; differs from the first stack's jobs in {', '.join(differ[:4])}"
        split = (
            f", split in {len(chunks)} stacks (max_members={max_members})"
            if len(chunks) > 1
            else ""
        )
        notes.append(f"jobs {nums} train as one stack{split}{why}")
    return stacks + solos, notes


def member_config(cfg: DictConfig, members: int) -> DictConfig:
    """A member's config: its env workers share the machine with the other members'."""
    if members > 1 and cfg.hardware.num_workers is None and cfg.env.backend != "batched":
        workers = max(1, run_cores(cfg.hardware) // members)
        cfg.hardware.num_workers = workers
        if workers == 1 and cfg.hardware.vec_env in ("async", "auto"):
            cfg.hardware.vec_env = "sync"
    return cfg


def run_stack(jobs: list[Job], notes: list[str] = ()) -> list[dict[str, Any]]:
    """Train ``jobs`` as one stack; returns each job's summary (with its status). A job
    whose trainer cannot be built (its env raises, ...) is recorded as failed."""
    from ippo_cli.run_control import first_line
    from ippo_cli.run_stack import MemberLogs, RunStack
    from ippo_cli.sweep import metrics_summary
    from ippo_cli.trainer import Trainer

    trainers: dict[int, Trainer] = {}
    summaries: dict[int, dict[str, Any]] = {}
    # What a trainer logs while it is built (its compile choice, a failure) goes to its
    # job's train.log, as a solo run's would.
    logs = MemberLogs([job.run_dir / "train.log" for job in jobs])
    try:
        with logs:
            for i, job in enumerate(jobs):
                with logs.member(i):
                    try:
                        trainers[i] = Trainer(
                            member_config(job.cfg, len(jobs)), job.run_dir, stacked_runs=len(jobs)
                        )
                    except Exception as exc:
                        error = first_line(str(exc), type(exc).__name__)
                        log.error("job failed to start: %s", error, exc_info=True)
                        summaries[i] = {
                            **metrics_summary(job.run_dir),
                            "interrupted": False,
                            "status": "failed",
                            "error": error,
                        }
    finally:
        logs.close()
    if trainers:
        stack = RunStack(list(trainers.values()), notes)
        summaries.update(zip(trainers, stack.run(), strict=True))
    return [summaries[i] for i in range(len(jobs))]
