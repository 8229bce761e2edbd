"""Learning benchmark: each shipped env config, as `ippo train env=<name>` gives it.

Trains every config on several seeds (two runs at a time: the development machine has 2
cores), recording the deterministic evaluation return (mpe2, summed over agents) against
env steps, the first env step at which it reaches -25 and -20, the final return and the
wall time, in benchmarks/results/learning.{json,png}.

    python -m benchmarks.learning [--configs speaker_listener speaker_listener_discrete]
        [--seeds 0 1 2] [--jobs 2] [--steps N] [--reuse] [-- extra ippo train overrides]

``--steps`` overrides the config's own `algorithm.total_steps` (the shipped budget);
``--reuse`` summarises runs already finished in ``--runs-dir`` instead of repeating them.
Configs not named keep their runs stored in learning.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from ippo_cli.files import write_json
from ippo_cli.plots import figure, label

RESULTS = Path(__file__).resolve().parent / "results"
EVAL_EVERY = 50_000
EVAL_EPISODES = 20
THRESHOLDS = (-25.0, -20.0)
# config name -> the `ippo train` arguments that select it (nothing else is changed)
CONFIGS = {
    "speaker_listener": ["env=speaker_listener"],
    "speaker_listener_discrete": ["env=speaker_listener", "env.kwargs.continuous_actions=false"],
    "simple_spread": ["env=simple_spread"],
    "simple_reference": ["env=simple_reference"],
}
# Scripted listeners on mpe2 (issue 9; 200 episodes, summed over both agents).
SPEAKER_LISTENER_SCALE = {"plateau (listener to the centre)": -32.9, "perfect communication": -13.5}


def first_at(curve: list[list[float]], threshold: float) -> int | None:
    """The first evaluated env step whose return is ``threshold`` or better."""
    return next((int(s) for s, r in curve if r >= threshold), None)


def selection(name: str) -> list[str]:
    """The `ippo train` arguments of a config of ``CONFIGS``, else of the env config ``name``."""
    return CONFIGS.get(name, [f"env={name}"])


def train(
    name: str, seed: int, runs_dir: Path, steps: int | None, extra: list[str], reuse: bool
) -> dict:
    run_dir = runs_dir / f"{name}_seed{seed}"
    if reuse and (run_dir / "summary.json").is_file():
        done = json.loads((run_dir / "summary.json").read_text())
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        return {
            **summarise(run_dir),
            "wall_time_s": round(done["wall_time"], 1),
            "command": "ippo_cli train " + " ".join(overrides),
        }
    cmd, wall, _ = run_train(
        [
            *selection(name), "logger=none", "progress=false", f"seed={seed}",
            f"eval_every={EVAL_EVERY}", f"eval_episodes={EVAL_EPISODES}", "checkpoint.every=0",
            *([f"algorithm.total_steps={steps}"] if steps else []), *extra,
        ],
        run_dir,
    )  # fmt: skip
    return {**summarise(run_dir), "wall_time_s": round(wall, 1), "command": " ".join(cmd[2:])}


def run_train(args: list[str], run_dir: Path) -> tuple[list[str], float, list[dict]]:
    """`ippo train <args>` into ``run_dir`` in a subprocess: the command, its wall seconds
    and the rows of its metrics.jsonl (every learning benchmark trains through this)."""
    cmd = [sys.executable, "-m", "ippo_cli", "train", *args, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return cmd, time.perf_counter() - start, metrics(run_dir)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def eval_curve(rows: list[dict]) -> list[list[float]]:
    """(env steps, evaluation return) of every row with an evaluation."""
    return [[r["env_steps"], r["eval/return"]] for r in rows if r.get("eval/return") is not None]


def summarise(run_dir: Path) -> dict:
    """Curve, thresholds and final return of one finished run directory."""
    rows = metrics(run_dir)
    curve = eval_curve(rows)
    steps = curve[-1][0]
    return {
        "curve": curve,
        "final": curve[-1][1],
        "best": max(r for _, r in curve),
        **{f"steps_to_{int(-t)}": first_at(curve, t) for t in THRESHOLDS},
        "env_steps": steps,
        "steps_per_second": round(steps / max(r.get("wall_time", 0) for r in rows), 1),
    }


def plot(result: dict, out: Path) -> None:
    names = list(result["configs"])
    with figure(out, size=(5.5 * len(names), 4), columns=len(names)) as axes:
        for ax, name in zip(axes, names, strict=True):
            for seed, run in result["configs"][name].items():
                steps, returns = zip(*run["curve"], strict=True)
                ax.plot(np.array(steps) / 1e6, returns, lw=1.2, label=f"seed {seed}")
            if name.startswith("speaker_listener"):
                for text, value in SPEAKER_LISTENER_SCALE.items():
                    ax.axhline(value, color="k", ls=":", lw=1)
                    ax.text(0, value + 0.5, text, fontsize=8)
                ax.axhline(-20, color="g", ls="--", lw=1, label="-20")
            label(
                ax,
                "env steps (millions)",
                "deterministic eval return (sum over agents)",
                legend=False,
            )
            ax.set_title(f"env={name}", fontsize=10)
            ax.legend(fontsize=8)


def table(result: dict) -> str:
    lines = [
        "| config | seed | steps to -25 | steps to -20 | final (at steps) | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for name, seeds in result["configs"].items():
        for seed, run in seeds.items():
            to = [f"{run[k] // 1000}k" if run[k] is not None else "-" for k in THRESHOLD_KEYS]
            lines.append(
                f"| {name} | {seed} | {to[0]} | {to[1]} | "
                f"{run['final']:.2f} ({run['env_steps'] / 1e6:.2f}M) | "
                f"{run['wall_time_s']:.0f} s |"
            )
        finals = [run["final"] for run in seeds.values()]
        lines.append(f"| {name} | mean | | | {np.mean(finals):.2f} | |")
    return "\n".join(lines)


THRESHOLD_KEYS = [f"steps_to_{int(-t)}" for t in THRESHOLDS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["speaker_listener", "speaker_listener_discrete"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--steps", type=int, default=None, help="override total_steps")
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bench/learning"))
    parser.add_argument(
        "--reuse", action="store_true", help="summarise finished runs found in --runs-dir"
    )
    parser.add_argument("extra", nargs="*", help="extra `ippo train` overrides")
    args = parser.parse_args()
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        sys.exit(f"learning: unknown config {unknown[0]!r}; known: {', '.join(CONFIGS)}")

    jobs = [(name, seed) for name in args.configs for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            job: pool.submit(train, *job, args.runs_dir, args.steps, args.extra, args.reuse)
            for job in jobs
        }
        runs = {job: f.result() for job, f in futures.items()}
    # Configs not run this time keep their stored runs (README and docs quote them).
    stored = RESULTS / "learning.json"
    configs = json.loads(stored.read_text())["configs"] if stored.is_file() else {}
    configs.update(
        {name: {str(seed): runs[(name, seed)] for seed in args.seeds} for name in args.configs}
    )
    result = {
        "benchmark": "learning: each shipped env config with its defaults",
        "eval": {"every": EVAL_EVERY, "episodes": EVAL_EPISODES, "deterministic": True},
        "configs": configs,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "learning.json", result)
    plot(result, RESULTS / "learning.png")
    print(table(result))


if __name__ == "__main__":
    main()
