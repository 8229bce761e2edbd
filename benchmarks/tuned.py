"""The seed loop shared by the tuned-config learning benchmarks (benchmarks.simple_spread,
benchmarks.simple_reference): `ippo train env=<name> seed=N` with nothing else changed,
one seed after another (the tuned learner uses both cores of the development machine).

Records, per seed, the deterministic evaluation return (mpe2, summed over agents, 20
episodes every 50,000 env steps) against env steps, the final and best returns and the
wall time, in benchmarks/results/<name>.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.learning import EVAL_EPISODES, EVAL_EVERY, train
from ippo_cli.files import write_json
from ippo_cli.plots import figure, label

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class TunedBenchmark:
    """One env config's learning benchmark: its target and the scale it is read against."""

    name: str  # the env config (conf/env/<name>.yaml) and the results' file name
    title: str  # the plot's title
    target: float  # every seed at or above this at the end
    goal: float | None  # a stretch goal, recorded alongside
    scale: dict[str, float]  # scripted agents' returns on mpe2, label -> return


def plot(bench: TunedBenchmark, result: dict, out: Path) -> None:
    with figure(out) as ax:
        for seed, run in result["seeds"].items():
            steps, returns = zip(*run["curve"], strict=True)
            ax.plot(np.array(steps) / 1e6, returns, marker=".", label=f"seed {seed}")
        for text, value in bench.scale.items():
            ax.axhline(value, color="k", ls=":", lw=1)
            ax.text(0, value + 0.7, text, fontsize=8)
        ax.axhline(bench.target, color="g", ls="--", lw=1, label=f"target {bench.target:g}")
        label(
            ax,
            "env steps (millions)",
            "deterministic eval return (sum over agents)",
            bench.title,
            legend=False,
        )
        ax.legend(fontsize=8)


def main(bench: TunedBenchmark, doc: str) -> None:
    """Parse the command line (``doc``: the calling module's docstring), train each seed,
    and write benchmarks/results/<name>.{json,png}."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override total_steps")
    parser.add_argument("--runs-dir", type=Path, default=Path(f"outputs/bench/{bench.name}"))
    parser.add_argument(
        "--reuse", action="store_true", help="summarise finished runs found in --runs-dir"
    )
    parser.add_argument("extra", nargs="*", help="extra `ippo train` overrides")
    args = parser.parse_args()

    seeds = {}
    for seed in args.seeds:
        run = train(bench.name, seed, args.runs_dir, args.steps, args.extra, args.reuse)
        seeds[str(seed)] = run
        print(
            f"seed {seed}: final {run['final']:.2f} at {run['env_steps'] / 1e6:.2f}M steps, "
            f"best {run['best']:.2f}, {run['wall_time_s']:.0f} s",
            flush=True,
        )
    finals = [run["final"] for run in seeds.values()]
    result = {
        "benchmark": f"{bench.name} learning, tuned defaults",
        "eval": {"every": EVAL_EVERY, "episodes": EVAL_EPISODES, "deterministic": True},
        "target": bench.target,
        **({"goal": bench.goal} if bench.goal is not None else {}),
        "all_seeds_meet_target": all(f >= bench.target for f in finals),
        "scripted_references": bench.scale,
        "seeds": seeds,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{bench.name}.json", result)
    plot(bench, result, RESULTS / f"{bench.name}.png")
    print(
        f"finals {', '.join(f'{f:.2f}' for f in finals)} (mean {np.mean(finals):.2f}); "
        f"target {bench.target:g}: every seed meets it: {result['all_seeds_meet_target']}"
    )
