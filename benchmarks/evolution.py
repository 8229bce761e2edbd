"""Evolution benchmark: `ippo train hpo=evolution` (population 4) against one run with
the defaults, at equal total env steps on speaker_listener.

The single run is evaluated every 40,960 steps; the population at every evolution
(its best member's fitness, ``hpo.eval_loop`` episodes). Both end with the same final
evaluation: 20 deterministic episodes on the training run's evaluation seeds (the single
run's last policy; the population's elite through `ippo eval`). Results in
benchmarks/results/evolution.{json,png}.

    python -m benchmarks.evolution [--steps 491520] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.learning import eval_curve
from benchmarks.speaker_listener import run_reference
from ippo_cli.files import write_json
from ippo_cli.plots import figure, label

RESULTS = Path(__file__).resolve().parent / "results"
FINAL_EPISODES = 20
POPULATION = ["hpo=evolution", "hpo.population_size=4", "hpo.evo_steps=20480", "hpo.eval_loop=10"]


def train(name: str, seed: int, steps: int, run_dir: Path, extra: list[str]) -> dict:
    cmd, wall, rows = run_reference(seed, steps, run_dir, 40960, FINAL_EPISODES, extra)
    curve = eval_curve(rows)
    run = {
        "curve": curve,
        "wall_time_s": round(wall, 1),
        "env_steps": curve[-1][0],
        "command": " ".join(cmd[2:]),
    }
    if "hpo=evolution" in extra:
        members = [r for r in rows if "fitness" in r and "member" in r]
        last = max(r["generation"] for r in members)
        run["final_population"] = [
            {k: r[k] for k in ("member", "lineage", "mutation", "fitness", "architecture")}
            | {k: v for k, v in r.items() if k.startswith("hp/")}
            for r in members
            if r["generation"] == last
        ]
        run["final_eval"] = evaluate(run_dir / "checkpoints" / "elite.pt", seed)
    else:
        run["final_eval"] = curve[-1][1]
    print(f"{name}: final eval {run['final_eval']:.2f} ({run['wall_time_s']:.0f} s)", flush=True)
    return run


def evaluate(ckpt: Path, seed: int) -> float:
    """`ippo eval` of a checkpoint on the training runs' evaluation seeds."""
    from ippo_cli.trainer import EVAL_SEED_OFFSET

    cmd = [
        sys.executable,
        "-m",
        "ippo_cli",
        "eval",
        f"ckpt={ckpt}",
        f"episodes={FINAL_EPISODES}",
        f"seed={seed + EVAL_SEED_OFFSET}",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((ckpt.parent / "eval.json").read_text())["return"]["mean"]


def plot(result: dict, out: Path) -> None:
    labels = {
        "single": "single run, defaults (eval, 20 episodes)",
        "evolution": "evolution, population 4 (best fitness, 10 episodes)",
    }
    with figure(out) as ax:
        for name, run in result["runs"].items():
            steps, returns = zip(*run["curve"], strict=True)
            ax.plot(steps, returns, marker=".", label=labels[name])
        label(
            ax,
            "env steps (summed over the population)",
            "eval return (sum over agents)",
            "speaker_listener: evolution vs a single run at equal env steps",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=491_520)  # 6 evolutions of 4 x 20,480
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bench/evolution"))
    args = parser.parse_args()

    runs = {
        "single": train("single", args.seed, args.steps, args.runs_dir / "single", []),
        "evolution": train(
            "evolution", args.seed, args.steps, args.runs_dir / "evolution", POPULATION
        ),
    }
    result = {
        "benchmark": "speaker_listener: hpo=evolution (population 4) vs a single default run",
        "total_steps": args.steps,
        "final_eval": {"episodes": FINAL_EPISODES, "deterministic": True},
        "runs": runs,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "evolution.json", result)
    plot(result, RESULTS / "evolution.png")


if __name__ == "__main__":
    main()
