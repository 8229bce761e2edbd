"""Where a run's numbers go: metrics.jsonl, wandb (offline by default), and plots."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ippo_cli.files import finite, strict_json
from ippo_cli.plots import figure, label

log = logging.getLogger("ippo")

# Fields that depend on the wall clock; everything else in metrics.jsonl is reproducible.
WALL_CLOCK_FIELDS = ("wall_time", "steps_per_second")


class RunLogger:
    """Appends one JSON row per update to ``metrics.jsonl`` and mirrors it to wandb."""

    def __init__(
        self,
        run_dir: Path,
        logger_cfg: Any,
        config: dict[str, Any],
        run_id: str | None = None,
    ) -> None:
        self.metrics_path = run_dir / "metrics.jsonl"
        self._file = self.metrics_path.open("a", encoding="utf-8")
        self.wandb_run = None
        if logger_cfg.kind == "wandb" and logger_cfg.wandb.mode != "disabled":
            self.wandb_run = _start_wandb(run_dir, logger_cfg.wandb, config, run_id)

    @property
    def wandb_id(self) -> str | None:
        return None if self.wandb_run is None else self.wandb_run.id

    def log(self, row: dict[str, Any], to_wandb: bool = True) -> None:
        """Append ``row`` to metrics.jsonl and, unless ``to_wandb`` is False, to wandb."""
        clean = finite(row)
        self._file.write(strict_json(clean) + "\n")
        self._file.flush()
        if self.wandb_run is not None and to_wandb:
            numbers = {k: v for k, v in clean.items() if v is not None}
            self.wandb_run.log(numbers, step=int(row["env_steps"]))

    def log_image(self, key: str, path: Path) -> None:
        """Attach a picture (the learning curve) to the wandb run."""
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Image(str(path))})

    def log_video(self, key: str, path: Path, step: int) -> None:
        """Attach a rendered episode (GIF) to the wandb run."""
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Video(str(path), format="gif")}, step=step)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish()
            except Exception as exc:  # a failing sync must not lose the run
                log.warning("wandb finish failed: %s", exc)
            self.wandb_run = None


def _start_wandb(run_dir: Path, cfg: Any, config: dict[str, Any], run_id: str | None):
    """Start wandb; an online run that cannot log in or connect falls back to offline."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    def init(mode: str):
        return wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags),
            config=config,
            dir=str(run_dir),
            name=f"{run_dir.parent.name}/{run_dir.name}",
            id=run_id,
            resume="allow",
            mode=mode,
            # The members of a stack of runs (launcher=stacked) log one run each.
            reinit="create_new",
            settings=wandb.Settings(
                console="off", x_disable_stats=True, init_timeout=60, disable_git=True
            ),
        )

    try:
        return init(cfg.mode)
    except Exception as exc:
        if cfg.mode == "offline":
            log.warning("wandb could not start (%s); continuing without it", exc)
            return None
        log.warning("wandb online failed (%s); logging offline instead", exc)
        try:
            return init("offline")
        except Exception as exc2:
            log.warning("wandb offline failed too (%s); continuing without it", exc2)
            return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a half-written last line (a running job) is skipped."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def plot_learning_curve(metrics_path: Path, out_path: Path, title: str = "") -> Path:
    """Training and evaluation return (summed over agents) against env steps."""
    rows = read_metrics(metrics_path)
    train = [(r["env_steps"], r["return"]) for r in rows if r.get("return") is not None]
    evals = [(r["env_steps"], r["eval/return"]) for r in rows if r.get("eval/return") is not None]
    with figure(out_path) as ax:
        if train:
            ax.plot(*zip(*train, strict=True), label="training episodes", alpha=0.7)
        if evals:
            ax.plot(*zip(*evals, strict=True), "o-", label="evaluation (deterministic)")
        label(ax, "env steps", "episode return (sum over agents)", title)
    return out_path
