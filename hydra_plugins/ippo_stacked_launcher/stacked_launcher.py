"""The Hydra launcher behind `launcher=stacked`: the jobs of a sweep trained as members of
stacks in this process (:mod:`ippo_cli.stacking`).

Hydra sets up each job as its basic launcher would (run directory, ``.hydra/``, job
number); then the jobs are grouped into stacks and trained; each job's run directory
ends as a solo run's would. Hydra finds launchers in the ``hydra_plugins`` package;
:func:`ippo_cli.config.register_configs` registers this one (an editable install hides
it from Hydra's scan).
"""

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("ippo.stacked")


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.ippo_stacked_launcher.stacked_launcher.StackedLauncher"
    # The most jobs trained as one stack (memory grows with it); more form more stacks.
    max_members: int = 16


class StackedLauncher(Launcher):
    def __init__(self, max_members: int = 16) -> None:
        if max_members < 1:
            raise ValueError(f"hydra.launcher.max_members={max_members} is invalid: must be >= 1")
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _sweep_config(self, overrides: Sequence[str], num: int) -> DictConfig:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = num
            config.hydra.job.num = num
        return config

    def _run_job(self, overrides: Sequence[str], num: int, task: TaskFunction) -> JobReturn:
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=task,
            config=self._sweep_config(overrides, num),
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from ippo_cli.stacking import Job, plan_stacks

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

        def set_up(cfg: DictConfig) -> Any:
            # Hydra has made the run directory and written .hydra/; training comes later.
            return OmegaConf.create(OmegaConf.to_container(cfg)), HydraConfig.get()

        returns: dict[int, JobReturn] = {}
        jobs = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            ret = self._run_job(overrides, num, set_up)
            returns[num] = ret
            cfg, hydra_cfg = ret.return_value
            jobs.append(Job(num, list(overrides), cfg, Path(hydra_cfg.runtime.output_dir)))
        stacks, notes = plan_stacks(jobs, self.max_members)
        log.info("stacked launcher: %d jobs in %d stack(s)", len(jobs), len(stacks))
        for note in notes:
            log.info("  %s", note)
        for stack in stacks:
            # Training logs as a job does: records to the members' train.log files,
            # warnings to the console.
            configure_log(hydra_cfg.job_logging, hydra_cfg.verbose)
            if len(stack) == 1:
                job = stack[0]
                returns[job.num] = self._run_job(job.overrides, job.num, self.task_function)
                continue
            for job, value in zip(stack, _train_stack(stack, notes), strict=True):
                returns[job.num]._return_value = value
                returns[job.num].status = JobStatus.COMPLETED
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]


def _train_stack(stack: list, notes: list[str]) -> list[float | None]:
    """Train one stack of jobs; write each job's summary.json; returns each job's final
    evaluation. Ctrl-C ends the sweep here (after its summary), as with a solo job."""
    from ippo_cli.files import write_json
    from ippo_cli.stacking import run_stack

    summaries = run_stack(stack, notes)
    values = []
    for job, summary in zip(stack, summaries, strict=True):
        write_json(job.run_dir / "summary.json", summary)
        if summary["status"] == "failed":
            print(
                f"ippo: error: job {job.num} failed: {summary['error']} "
                f"(run directory: {job.run_dir})",
                file=sys.stderr,
            )
        else:
            final = summary.get("final_eval")
            shown = "-" if final is None else f"{final:.3f}"
            print(f"job {job.num}: final eval {shown} ({summary['status']}): {job.run_dir}")
        values.append(summary.get("final_eval"))
    if any(s["status"] == "interrupted" for s in summaries):
        from ippo_cli.sweep import SweepSummaryCallback

        sweep_dir = stack[0].run_dir.parent
        print(
            f"interrupted: saved each member's checkpoints/last.pt in {sweep_dir}", file=sys.stderr
        )
        SweepSummaryCallback().on_multirun_end(
            OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
        )
        raise SystemExit(130)
    return values
