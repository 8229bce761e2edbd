"""The MPE suite's results table (issue 22): per mpe2 scenario, the random and scripted
references, ours per seed, and published IPPO figures.

Every return is deterministic evaluation on mpe2, summed over all agents (each agent's own
mpe2 reward), per episode of the config's `max_cycles` (25 for every shipped config):

- random: the uniform random policy (`ippo eval`'s ``+replace.<group>=random``);
- scripted: benchmarks.mpe_scripted, where one is natural; "oracle" when it uses what the
  acting agent does not observe;
- ours: `ippo train env=<name> seed=<s>` at the config's own budget (benchmarks.learning's
  runs: final evaluation of 20 episodes, env steps, wall time). simple_spread,
  simple_reference and speaker_listener are read from their own benchmarks
  (simple_spread.json, simple_reference.json, learning.json),
  the competitive scenarios from benchmarks/competitive.py (competitive.json: each side
  with its co-trained opponent) when it has been run;
- published: IPPO figures found in a citable source, with their reward convention.

Writes benchmarks/results/mpe_suite.{json,png} (``--quick``: a tiny run into a temporary
directory) and prints the table. `make bench ARGS=mpe_suite` runs it.

    python -m benchmarks.mpe_suite [--scenarios simple,simple_line] [--train a,b]
        [--seeds 0 1 2] [--jobs 2] [--episodes 100] [--reuse] [--quick] [-- overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from benchmarks.competitive import SIDES
from benchmarks.learning import train
from benchmarks.mpe_scripted import SCRIPTED, Random, Scripted
from benchmarks.mpe_speed import CONF, scenarios
from ippo_cli.envs.factory import build_env
from ippo_cli.episodes import run_episodes
from ippo_cli.files import write_json
from ippo_cli.plots import figure, label
from ippo_cli.trainer import EVAL_SEED_OFFSET

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE_SEED = EVAL_SEED_OFFSET  # the starts seed 0's evaluations play
QUICK_STEPS, QUICK_EPISODES = 2048, 2
# scenario -> (results file, dotted path to its per-seed runs): tuned runs read, not repeated
STORED = {
    "simple_spread": ("simple_spread.json", "seeds"),
    "simple_reference": ("simple_reference.json", "seeds"),
    "speaker_listener": ("learning.json", "configs.speaker_listener"),
}
# Published IPPO figures on these scenarios: none found (docs and pages corpora searched
# for JaxMARL, BenchMARL, EPyMARL / Papoudakis et al. 2021 and MAPPO / Yu et al. 2022;
# the excerpts held no IPPO return). An entry: {"value", "source", "convention", "quote"}.
PUBLISHED: dict[str, dict] = {}
SEARCHED = [
    "JaxMARL (docs, paper)",
    "BenchMARL (docs)",
    "EPyMARL / Papoudakis et al. 2021, Benchmarking multi-agent deep RL algorithms in "
    "cooperative tasks",
    "MAPPO / Yu et al. 2022, The surprising effectiveness of PPO in cooperative multi-agent games",
]


def env_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=False)


def references(name: str, episodes: int) -> dict:
    """The random and (where there is one) scripted returns on mpe2, summed over agents."""
    cfg = env_config(name)
    env = build_env(cfg["factory"], dict(cfg["kwargs"]))
    try:
        players = {"random": Random(env, REFERENCE_SEED)}
        if name in SCRIPTED:
            players["scripted"] = Scripted(env, SCRIPTED[name][0])
        out = {}
        for kind, player in players.items():
            summed = run_episodes(player, env, episodes, seed=REFERENCE_SEED).summed
            out[kind] = {"mean": float(np.mean(summed)), "std": float(np.std(summed))}
        if name in SCRIPTED:
            rule, oracle = SCRIPTED[name]
            out["scripted"].update(oracle=oracle, rule=rule.__doc__.split(": ", 1)[1].strip())
        out["agents"] = len(env.possible_agents)
    finally:
        env.close()
    out["max_cycles"] = cfg["kwargs"]["max_cycles"]
    out["actions"] = "continuous" if cfg["kwargs"].get("continuous_actions") else "discrete"
    return out


def stored(name: str) -> dict | None:
    """Ours from the scenario's own benchmark (None before it has run)."""
    file, path = STORED[name]
    if not (RESULTS / file).is_file():
        return None
    runs = json.loads((RESULTS / file).read_text())
    for part in path.split("."):
        runs = runs[part]
    return {"source": f"read from {file} ({path})", "seeds": runs}


def competitive(name: str) -> dict | None:
    """Each side's return with its co-trained opponent, from competitive.json if it exists."""
    path = RESULTS / "competitive.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if name not in result["scenarios"]:
        return None
    sides = result["scenarios"][name]["summary"]["trained vs trained"]
    return {
        "source": "benchmarks/results/competitive.json (trained vs trained, mean over seeds)",
        "sides": {side: row["mean"] for side, row in sides.items()},
        "total": sum(row["mean"] for row in sides.values()),
    }


def ours(runs: dict) -> dict:
    """The fields of the table from benchmarks.learning's per-seed runs."""
    seeds = {
        seed: {
            "final": run["final"],
            "env_steps": run.get("env_steps", run["curve"][-1][0]),
            "wall_time_s": run["wall_time_s"],
            "command": run["command"],
        }
        for seed, run in runs["seeds"].items()
    }
    finals = [s["final"] for s in seeds.values()]
    return {"source": runs["source"], "seeds": seeds, "mean": float(np.mean(finals))}


def finished(runs_dir: Path, name: str, seed: int) -> bool:
    """Whether benchmarks.learning's run of ``name`` and ``seed`` finished in ``runs_dir``."""
    return (runs_dir / f"{name}_seed{seed}" / "summary.json").is_file()


def cell(value: dict | None, key: str = "mean") -> str:
    return "-" if value is None else f"{value[key]:.2f}"


def table(rows: dict) -> str:
    lines = [
        "| scenario | agents | random | scripted | ours: final per seed (env steps, wall time) "
        "| ours: mean | published IPPO |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for name, row in rows.items():
        scripted = row.get("scripted")
        tag = f"{cell(scripted)}{' (oracle)' if scripted and scripted['oracle'] else ''}"
        if "ours" in row:
            per_seed = ", ".join(
                f"{s['final']:.2f} ({s['env_steps'] / 1e6:.2f}M, {s['wall_time_s']:.0f} s)"
                for s in row["ours"]["seeds"].values()
            )
            mean = cell(row["ours"])
            if "missing" in row:
                per_seed += f"; {row['missing']}"
            if row["ours"]["source"].startswith("read from"):
                per_seed += f"; {row['ours']['source']}"
        elif "cotrained" in row:
            sides = ", ".join(f"{k} {v:.2f}" for k, v in row["cotrained"]["sides"].items())
            # Each side's mean over seeds against its co-trained opponent; no one total.
            per_seed, mean = f"co-trained, mean over seeds: {sides}", "-"
        else:
            per_seed, mean = row["missing"], "-"
        published = row["published"]
        shown = (
            "none found" if published is None else f"{published['value']} ({published['source']})"
        )
        lines.append(
            f"| {name} | {row['agents']} | {cell(row['random'])} | {tag} | {per_seed} | {mean} "
            f"| {shown} |"
        )
    return "\n".join(lines)


def plot(rows: dict, out: Path) -> None:
    names = list(rows)
    x = np.arange(len(names))
    series = {
        "random": [rows[n]["random"]["mean"] for n in names],
        "scripted": [
            rows[n]["scripted"]["mean"] if "scripted" in rows[n] else np.nan for n in names
        ],
        "ours (mean over seeds)": [
            rows[n]["ours"]["mean"] if "ours" in rows[n] else np.nan for n in names
        ],
    }
    with figure(out, size=(11, 4.5)) as ax:
        for i, (text, values) in enumerate(series.items()):
            ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=text)
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=10)  # collect_treasure's returns are positive, large
        label(ax, "", "eval return (sum over agents; symlog)", "mpe2 scenarios: ours vs references")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = list(scenarios())
    cooperative = [n for n in known if n not in SIDES]
    parser.add_argument("--scenarios", default=",".join(known), help="comma-separated")
    parser.add_argument(
        "--train",
        default=",".join(n for n in cooperative if n not in STORED),
        help="comma-separated scenarios to train (the others: stored results or none)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once")
    parser.add_argument("--episodes", type=int, default=100, help="reference episodes")
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bench/mpe_suite"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="summarise the runs finished in --runs-dir, train nothing (unfinished: missing)",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run into a temp dir")
    parser.add_argument("extra", nargs="*", help="extra `ippo train` overrides")
    args = parser.parse_args()
    chosen = [n for n in args.scenarios.split(",") if n]
    to_train = [n for n in args.train.split(",") if n]
    for n in chosen + to_train:
        if n not in known:
            sys.exit(f"mpe_suite: unknown scenario {n!r}; known: {', '.join(known)}")
    to_train = [n for n in to_train if n in chosen]
    steps, out_dir = None, RESULTS
    if args.quick:
        steps, args.episodes, args.seeds = QUICK_STEPS, QUICK_EPISODES, args.seeds[:1]
        out_dir = Path(tempfile.mkdtemp(prefix="mpe_suite_"))
        args.runs_dir = out_dir / "runs"
        args.extra = ["algorithm.learn_step=512", *args.extra]

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        jobs = {
            (n, s): pool.submit(train, n, s, args.runs_dir, steps, args.extra, args.reuse)
            for n in to_train
            for s in args.seeds
            if not args.reuse or finished(args.runs_dir, n, s)
        }
        rows = {}
        for name in chosen:
            rows[name] = references(name, args.episodes)
            print(
                name,
                {k: v for k, v in rows[name].items() if k in ("random", "scripted")},
                flush=True,
            )
        trained = {job: f.result() for job, f in jobs.items()}
    for name, row in rows.items():
        row["published"] = PUBLISHED.get(name)
        if name in to_train:
            runs = {str(s): trained[(name, s)] for s in args.seeds if (name, s) in trained}
            if runs:
                row["ours"] = ours({"source": f"trained here ({args.runs_dir})", "seeds": runs})
            missing = [s for s in args.seeds if str(s) not in runs]
            if missing:
                row["missing"] = f"seeds {', '.join(map(str, missing))} not run"
        elif name in STORED:
            found = stored(name)
            if found is None:
                row["missing"] = f"{STORED[name][0]} not written yet (its benchmark has not run)"
            else:
                row["ours"] = ours(found)
        elif name in SIDES:
            row["cotrained"] = competitive(name)
            if row["cotrained"] is None:
                del row["cotrained"]
                row["missing"] = "competitive: see benchmarks/competitive.py (not run yet)"
        else:
            row["missing"] = "not trained (not in --train)"
    markdown = table(rows)
    print(markdown)
    result = {
        "benchmark": "MPE suite: random, scripted, ours and published IPPO per mpe2 scenario",
        "command": "python -m benchmarks.mpe_suite " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "return": "deterministic evaluation on mpe2, summed over all agents of each agent's own "
        "mpe2 reward, per episode of the config's max_cycles (25 steps for every config); "
        "a team reward mpe2 gives every agent (all of simple_line's and simple_formation's, "
        "the shared part of simple_spread's and simple_reference's, collect_treasure's "
        "pickups and deliveries) is thus counted once per agent; published figures that "
        "divide by the number of agents or report one agent's copy are not comparable as is",
        "references": {"episodes": args.episodes, "seed": REFERENCE_SEED, "deterministic": True},
        "ours": {
            "train_steps": steps or "each config's algorithm.total_steps",
            "eval": "final evaluation, 20 episodes, seed + 1,000,000 (benchmarks.learning)",
        },
        "published_searched": SEARCHED,
        "scenarios": rows,
        "table": markdown,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "mpe_suite.json", result)
    plot(rows, out_dir / "mpe_suite.png")
    print(f"wrote {out_dir / 'mpe_suite.json'}")


if __name__ == "__main__":
    main()
