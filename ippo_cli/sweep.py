"""Summaries of `ippo train -m` sweeps: one row per job, groups of seeds, learning curves.

Built automatically at the end of every multirun (``SweepSummaryCallback``) and on demand
with ``ippo summary DIR`` (also for a sweep that is still running or was interrupted).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ippo_cli.files import write_json, write_text_atomic
from ippo_cli.loggers import read_metrics
from ippo_cli.plots import figure, label

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
CURVES_PNG = "learning_curves.png"
CSV_FIELDS = (
    "job",
    "group",
    "overrides",
    "status",
    "final_eval",
    "best_eval",
    "env_steps",
    "wall_time",
    "error",
    "run_dir",
)
SUMMARY_USAGE = "usage: ippo summary DIR   (a sweep directory, e.g. outputs/multirun/<date>/<time>)"


class SweepError(Exception):
    """Not a sweep directory (or none at all): one line, exit status 2."""


# ------------------------------------------------------------------ reading
def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (those with ``.hydra/overrides.yaml``), by job number."""
    dirs = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(
        dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    )


def eval_curve(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(env_steps, eval/return) points, one per step (the last one wins)."""
    points: dict[float, float] = {}
    for r in rows:
        value = r.get("eval/return")
        if value is not None and r.get("env_steps") is not None:
            points[float(r["env_steps"])] = float(value)
    return sorted(points.items())


def metrics_summary(run_dir: Path, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What metrics.jsonl (or its ``rows``, already read) tells about a run that wrote no
    summary (failed or still running)."""
    if rows is None:
        rows = read_metrics(run_dir / "metrics.jsonl")
    curve = eval_curve(rows)
    steps = [r["env_steps"] for r in rows if r.get("env_steps") is not None]
    walls = [r["wall_time"] for r in rows if isinstance(r.get("wall_time"), int | float)]
    return {
        "env_steps": max(steps) if steps else 0,
        "wall_time": max(walls) if walls else None,
        "final_eval": None,
        "best_eval": max(v for _, v in curve) if curve else None,
        "run_dir": str(run_dir),
    }


def _overrides(job_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    return [str(o) for o in data or []]


def is_seed(override: str) -> bool:
    """A ``seed=...`` override (seeds of one configuration form a group)."""
    return override.lstrip("+~").split("=", 1)[0] == "seed"


def _job_row(job_dir: Path) -> dict[str, Any]:
    overrides = _overrides(job_dir)
    rows = read_metrics(job_dir / "metrics.jsonl")  # once: a long run's file is large
    path = job_dir / "summary.json"
    summary: dict[str, Any] | None = None
    if path.is_file():
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            summary = None
    if summary is None:
        info = metrics_summary(job_dir, rows)
        status, error = "incomplete", None
    else:
        info = {**metrics_summary(job_dir, rows), **summary}
        status = summary.get("status") or (
            "interrupted" if summary.get("interrupted") else "completed"
        )
        error = summary.get("error")
    return {
        "job": job_dir.name,
        "overrides": overrides,
        "status": status,
        "final_eval": info.get("final_eval"),
        "best_eval": info.get("best_eval"),
        "env_steps": info.get("env_steps"),
        "wall_time": info.get("wall_time"),
        "error": error,
        "run_dir": str(job_dir),
        "_curve": eval_curve(rows),
    }


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def build_summary(sweep_dir: str | Path) -> dict[str, Any]:
    """Jobs and seed groups of a sweep directory (nothing is written)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SweepError(f"'{sweep_dir}' is not a directory")
    dirs = job_dirs(sweep_dir)
    if not dirs and not (sweep_dir / "multirun.yaml").is_file():
        raise SweepError(
            f"'{sweep_dir}' is not a sweep directory (no multirun.yaml and no job "
            "directories with .hydra/overrides.yaml)"
        )
    jobs = [_job_row(d) for d in dirs]
    keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in jobs:
        key = tuple(o for o in job["overrides"] if not is_seed(o))
        keys.setdefault(key, []).append(job)
    # A group is named by the overrides that differ between groups ("(all jobs)" if one).
    shared = set.intersection(*(set(k) for k in keys)) if keys else set()
    groups = []
    for key, members in keys.items():
        name = " ".join(o for o in key if o not in shared) or "(all jobs)"
        done = [j for j in members if j["status"] == "completed" and j["final_eval"] is not None]
        mean, std = _stats([j["final_eval"] for j in done])
        best_mean, _ = _stats([j["best_eval"] for j in done if j["best_eval"] is not None])
        for j in members:
            j["group"] = name
        groups.append(
            {
                "group": name,
                "overrides": list(key),
                "jobs": [j["job"] for j in members],
                "seeds": len(done),
                "final_eval_mean": mean,
                "final_eval_std": std,
                "best_eval_mean": best_mean,
                "statuses": {s: sum(j["status"] == s for j in members) for s in _statuses(members)},
                "_curves": [j["_curve"] for j in members if j["_curve"]],
            }
        )
    return {"sweep_dir": str(sweep_dir), "jobs": jobs, "groups": groups}


def _statuses(members: list[dict[str, Any]]) -> list[str]:
    return sorted({j["status"] for j in members})


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


# ------------------------------------------------------------------ writing
def write_summary(sweep_dir: str | Path, console: Any = None, quiet: bool = False) -> dict:
    """Build the summary, write summary.json, summary.csv and learning_curves.png into the
    sweep directory, print the tables; returns the summary."""
    sweep_dir = Path(sweep_dir)
    summary = build_summary(sweep_dir)
    public = {**summary, "jobs": _public(summary["jobs"]), "groups": _public(summary["groups"])}
    write_json(sweep_dir / SUMMARY_JSON, public)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for job in public["jobs"]:
        writer.writerow({**job, "overrides": " ".join(job["overrides"])})
    write_text_atomic(sweep_dir / SUMMARY_CSV, buf.getvalue())
    plot_curves(summary["groups"], sweep_dir / CURVES_PNG, title=str(sweep_dir))
    if not quiet:
        print_summary(summary, console)
    return public


def plot_curves(groups: list[dict[str, Any]], out_path: Path, title: str = "") -> Path:
    """Each group's mean evaluation return against env steps, with a min..max band."""
    with figure(out_path, size=(8, 4.5)) as ax:
        _plot_groups(ax, groups)
        label(ax, "env steps", "evaluation return (mean over seeds, band: min..max)", legend=False)
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return out_path


def _plot_groups(ax: Any, groups: list[dict[str, Any]]) -> None:
    for group in groups:
        by_step: dict[float, list[float]] = {}
        for curve in group["_curves"]:
            for step, value in curve:
                by_step.setdefault(step, []).append(value)
        if not by_step:
            continue
        steps = sorted(by_step)
        mean = [sum(by_step[s]) / len(by_step[s]) for s in steps]
        (line,) = ax.plot(
            steps, mean, "o-", ms=3, label=f"{group['group']} (n={len(group['_curves'])})"
        )
        lo = [min(by_step[s]) for s in steps]
        hi = [max(by_step[s]) for s in steps]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def display_override(override: str, digits: int = 4) -> str:
    """An override as a table shows it: a float value rounded to ``digits`` significant
    digits (``algorithm.lr=0.000123456789`` -> ``algorithm.lr=0.0001235``); summary.csv
    and summary.json keep the full value."""
    key, sep, value = override.partition("=")
    if not sep or not any(c in value for c in ".eE"):
        return override
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}={number:.{digits}g}" if math.isfinite(number) else override


def display_group(name: str) -> str:
    """A group name (overrides joined by spaces) with its float values rounded."""
    return " ".join(display_override(o) for o in name.split(" "))


def _table(title: str) -> Any:
    """A compact table: no outer edge, one space between columns, so that the number
    columns keep their width on an 80-column terminal."""
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), pad_edge=False)


def _number_column(table: Any, header: str) -> None:
    table.add_column(header, justify="right", no_wrap=True)


def _text_column(table: Any, header: str, min_width: int = 0) -> None:
    """A column that folds long text onto several lines rather than squeeze the others."""
    table.add_column(header, overflow="fold", min_width=min_width or None)


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """Print the jobs and the seed groups as tables. Long override text (group names,
    errors) folds onto several lines and floats are rounded, so the number columns stay
    whole at any terminal width; seed and error columns appear only when some job has one."""
    from rich.console import Console

    console = console or Console()
    rows = summary["jobs"]
    seeds = [next((o.split("=", 1)[1] for o in j["overrides"] if is_seed(o)), "-") for j in rows]
    show_seed = any(s != "-" for s in seeds)
    show_error = any(j["error"] for j in rows)
    jobs = _table(f"sweep {summary['sweep_dir']}")
    _number_column(jobs, "job")
    _text_column(jobs, "group", min_width=12)
    if show_seed:
        _number_column(jobs, "seed")
    jobs.add_column("status", no_wrap=True)
    for header in ("final\neval", "best\neval", "env\nsteps", "wall\ns"):
        _number_column(jobs, header)
    if show_error:
        _text_column(jobs, "error", min_width=12)
    for j, seed in zip(rows, seeds, strict=True):
        cells = [j["job"], display_group(j.get("group", ""))]
        cells += [seed] if show_seed else []
        cells += [
            j["status"],
            _fmt(j["final_eval"]),
            _fmt(j["best_eval"]),
            f"{j['env_steps']:,}" if j["env_steps"] is not None else "-",
            _fmt(j["wall_time"], 1),
        ]
        cells += [j["error"] or ""] if show_error else []
        jobs.add_row(*cells)
    groups = _table("groups (over seeds)")
    _text_column(groups, "group", min_width=12)
    _number_column(groups, "seeds")
    _number_column(groups, "final eval\nmean ± std")
    _number_column(groups, "best eval\nmean")
    _text_column(groups, "jobs")
    for g in summary["groups"]:
        final = (
            "-"
            if g["final_eval_mean"] is None
            else f"{g['final_eval_mean']:.3f} ± {g['final_eval_std']:.3f}"
        )
        statuses = ", ".join(f"{n} {s}" for s, n in g["statuses"].items())
        groups.add_row(
            display_group(g["group"]), str(g["seeds"]), final, _fmt(g["best_eval_mean"]), statuses
        )
    console.print(jobs)
    console.print(groups)
    console.print(
        f"written: {Path(summary['sweep_dir']) / SUMMARY_CSV}, {SUMMARY_JSON}, {CURVES_PNG}",
        soft_wrap=True,
    )


# ------------------------------------------------------------------ entry points
class SweepSummaryCallback(Callback):
    """Writes the sweep summary at the end of every `ippo train -m`."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            write_summary(sweep_dir)
        except Exception as exc:  # a summary problem must not turn a finished sweep into an error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"ippo: warning: no sweep summary for {sweep_dir}: {first}", file=sys.stderr)


def summary_command(args: list[str]) -> None:
    """`ippo summary DIR`."""
    if any(a in ("-h", "--help") for a in args):
        print(SUMMARY_USAGE)
        return
    if len(args) != 1:
        _fail(f"summary takes one sweep directory; {SUMMARY_USAGE}")
    try:
        write_summary(Path(args[0]))
    except SweepError as exc:
        _fail(str(exc))


def _fail(message: str, status: int = 2) -> None:
    print(f"ippo: error: {message}", file=sys.stderr)
    raise SystemExit(status)
