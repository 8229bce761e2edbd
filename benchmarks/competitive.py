"""Cross-play benchmark: the competitive MPE scenarios, each side against its co-trained
opponent and against the random policy.

For each scenario and seed, `ippo train env=<name> seed=<s>` trains both sides; then
`ippo eval` plays its last checkpoint as trained, each side against the random policy
(the other side's groups `+replace.<group>=random`) and random against random. A side's
return is the sum of its groups' returns (eval.json's ``players``), each group's summed
over its agents. Writes benchmarks/results/competitive.json, with every command, and
prints a table per scenario (mean ± std over seeds).

    python -m benchmarks.competitive [--scenarios simple_tag ...] [--seeds 0 1 2]
        [--steps N] [--episodes 100] [--quick] [-- extra ippo train overrides]

``--steps`` overrides the config's own `algorithm.total_steps`. ``--quick`` (2,048 steps,
5 episodes) checks that the benchmark runs; its results go to ``--runs-dir``, not to
benchmarks/results.
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

import numpy as np

from ippo_cli.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"
# scenario -> its sides, each a list of agent groups (agents are named <group>_<n>)
SIDES = {
    "simple_adversary": {"adversary": ["adversary"], "agents": ["agent"]},
    "simple_crypto": {"eve": ["eve"], "alice+bob": ["alice", "bob"]},
    "simple_push": {"adversary": ["adversary"], "agent": ["agent"]},
    "simple_tag": {"adversaries": ["adversary"], "agent": ["agent"]},
    "simple_world_comm": {"adversaries": ["leadadversary", "adversary"], "agents": ["agent"]},
}
EVAL_SEED = 0  # every matchup plays the same episode starts
QUICK_STEPS, QUICK_EPISODES = 2048, 5


def ippo(*args: str) -> list[str]:
    return [sys.executable, "-m", "ippo_cli", *args]


def train(scenario: str, seed: int, run_dir: Path, steps: int | None, extra: list[str]) -> dict:
    cmd = ippo(
        "train", f"env={scenario}", f"seed={seed}", "logger=none", "progress=false",
        "eval_every=0", "checkpoint.every=0", f"hydra.run.dir={run_dir}",
        *([f"algorithm.total_steps={steps}"] if steps else []), *extra,
    )  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return {"command": " ".join(cmd[2:]), "wall_time_s": round(wall, 1)}


def play(run_dir: Path, random_groups: list[str], episodes: int, sides: dict) -> dict:
    """`ippo eval` of the run's last checkpoint with ``random_groups`` played at random:
    the command, who played each group, and each side's and group's return."""
    cmd = ippo(
        "eval", f"ckpt={run_dir}", f"episodes={episodes}", f"seed={EVAL_SEED}",
        *(f"+replace.{g}=random" for g in random_groups),
    )  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    players = json.loads((run_dir / "checkpoints" / "eval.json").read_text())["players"]
    groups = {g: p["return"]["mean"] for g, p in players.items()}
    return {
        "command": " ".join(cmd[2:]),
        "policies": {g: p["policy"] for g, p in players.items()},
        "groups": groups,
        "sides": {side: sum(groups[g] for g in members) for side, members in sides.items()},
    }


def matchups(sides: dict) -> dict[str, list[str]]:
    """Matchup name -> the groups played at random."""
    out: dict[str, list[str]] = {"trained vs trained": []}
    for side in sides:
        others = [g for other, members in sides.items() if other != side for g in members]
        out[f"{side} trained vs random"] = others
    out["random vs random"] = [g for members in sides.values() for g in members]
    return out


def run_scenario(scenario: str, args: argparse.Namespace, steps: int | None) -> dict:
    sides = SIDES[scenario]
    seeds, summary = {}, {}
    for seed in args.seeds:
        run_dir = args.runs_dir / f"{scenario}_seed{seed}"
        trained = train(scenario, seed, run_dir, steps, args.extra)
        games = {
            name: play(run_dir, random_groups, args.episodes, sides)
            for name, random_groups in matchups(sides).items()
            # random vs random is the same game for every seed: played once
            if name != "random vs random" or seed == args.seeds[0]
        }
        seeds[str(seed)] = {"train": trained, "matchups": games}
        print(f"{scenario} seed {seed}: trained in {trained['wall_time_s']:.0f} s", flush=True)
    for name in matchups(sides):
        played = [s["matchups"][name] for s in seeds.values() if name in s["matchups"]]
        summary[name] = {
            side: {
                "mean": float(np.mean([p["sides"][side] for p in played])),
                "std": float(np.std([p["sides"][side] for p in played])),
                "runs": len(played),
            }
            for side in sides
        }
    return {"sides": sides, "seeds": seeds, "summary": summary}


def table(result: dict) -> str:
    """A scenario's summary as a Markdown table: each side's return per matchup."""
    sides = list(result["sides"])
    lines = [
        "| matchup | " + " | ".join(sides) + " |",
        "|---|" + "---:|" * len(sides),
    ]
    for name, row in result["summary"].items():
        cells = [f"{row[s]['mean']:.2f} ± {row[s]['std']:.2f}" for s in sides]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", choices=list(SIDES), default=list(SIDES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override total_steps")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes")
    parser.add_argument("--quick", action="store_true", help="a tiny budget, to check it runs")
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bench/competitive"))
    parser.add_argument("extra", nargs="*", help="extra `ippo train` overrides")
    args = parser.parse_args()
    steps = QUICK_STEPS if args.quick else args.steps
    if args.quick:
        args.episodes = QUICK_EPISODES

    scenarios = {}
    for scenario in args.scenarios:
        scenarios[scenario] = run_scenario(scenario, args, steps)
        scenarios[scenario]["table"] = table(scenarios[scenario])
        print(f"{scenario}: return of each side (mean ± std over seeds)", flush=True)
        print(scenarios[scenario]["table"] + "\n", flush=True)
    result = {
        "benchmark": "competitive MPE: each side vs its co-trained opponent and vs random",
        "quick": args.quick,
        "train_steps": steps or "each config's algorithm.total_steps",
        "eval": {"episodes": args.episodes, "seed": EVAL_SEED, "deterministic": True},
        "scenarios": scenarios,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    out = (args.runs_dir if args.quick else RESULTS) / "competitive.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
