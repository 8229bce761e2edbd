"""What `ippo summary` costs on a big sweep: a fabricated sweep directory of N jobs (each
with the files a finished job leaves: .hydra/overrides.yaml, summary.json and a
metrics.jsonl of R rows of speaker_listener's width), summarised the way `ippo summary DIR`
does, timed. Results in benchmarks/results/sweep_summary.json.

    python -m benchmarks.sweep_summary [--jobs 1000] [--rows 977] [--seeds 10]

977 rows: a 2,000,000-step speaker_listener run logs one row per 2,048-step update.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from ippo_cli.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"
# Keys of a speaker_listener metrics row (two agents: per-agent losses and returns).
ROW_KEYS = [
    "update",
    "env_steps",
    "wall_time",
    "steps_per_second",
    "episodes",
    "return",
    "episode_length",
    "lr",
    *[
        f"{a}/{k}"
        for a in ("speaker_0", "listener_0")
        for k in (
            "policy_loss",
            "value_loss",
            "entropy",
            "approx_kl",
            "clip_frac",
            "explained_variance",
            "grad_norm",
            "return",
            "updates",
        )
    ],
]
EVAL_EVERY_ROWS = 10


def fabricate(sweep: Path, jobs: int, rows: int, seeds: int) -> None:
    rng = random.Random(0)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for job in range(jobs):
        run = sweep / str(job)
        (run / ".hydra").mkdir(parents=True)
        lr = 1e-4 * (1 + job // seeds)
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- algorithm.lr={lr:.6g}\n- seed={job % seeds}\n"
        )
        lines = []
        for r in range(1, rows + 1):
            row = {k: rng.random() for k in ROW_KEYS}
            row.update(update=r, env_steps=2048 * r, wall_time=0.5 * r)
            if r % EVAL_EVERY_ROWS == 0:
                row.update({"eval/return": -rng.random() * 30, "eval/return_std": 1.0})
            lines.append(json.dumps(row))
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        write_json(
            run / "summary.json",
            {
                "env_steps": 2048 * rows,
                "wall_time": 0.5 * rows,
                "final_eval": -rng.random() * 30,
                "best_eval": -rng.random() * 10,
                "run_dir": str(run),
                "interrupted": False,
                "status": "completed",
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=977)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    from ippo_cli.sweep import build_summary, write_summary

    root = Path(tempfile.mkdtemp(prefix="ippo-summary-"))
    try:
        sweep = root / "sweep"
        sweep.mkdir()
        fabricate(sweep, args.jobs, args.rows, args.seeds)
        size = sum(f.stat().st_size for f in sweep.rglob("*") if f.is_file())
        c0, t0 = time.process_time(), time.perf_counter()
        build_summary(sweep)
        c1, t1 = time.process_time(), time.perf_counter()
        with open(os.devnull, "w") as devnull:
            from rich.console import Console

            write_summary(sweep, console=Console(file=devnull))
        c2, t2 = time.process_time(), time.perf_counter()
    finally:
        shutil.rmtree(root)
    result = {
        "jobs": args.jobs,
        "rows_per_job": args.rows,
        "groups": args.jobs // args.seeds,
        "sweep_mb": size / 1e6,
        "read_s": t1 - t0,
        "read_cpu_s": c1 - c0,
        "summary_s": t2 - t1,
        "summary_cpu_s": c2 - c1,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "sweep_summary.json", result)
    print(
        f"{args.jobs} jobs x {args.rows} metrics rows ({size / 1e6:.0f} MB, "
        f"{result['groups']} groups): reading them {result['read_s']:.1f} s "
        f"({result['read_cpu_s']:.1f} s CPU); `ippo summary` (read, write summary.json/.csv, "
        f"plot, print) {result['summary_s']:.1f} s ({result['summary_cpu_s']:.1f} s CPU)"
    )


if __name__ == "__main__":
    main()
