"""Many runs in one process (`launcher=stacked`, `hpo.stacked`) against the same runs one
by one, each pair measured side by side in this one sitting (ratios, not absolute times:
this machine's speed changes from day to day). Results in benchmarks/results/stacked.json
and stacked.png.

- seeds: 8 seeds of `ippo train env=speaker_listener` (its tuned defaults) as one stack
  against one seed alone: wall time ratio, and every seed's final evaluation.
- sweep: README's worked sweep (lr x ent_coef x 3 seeds, 100k steps per job) with
  `launcher=stacked` against `launcher=basic`: wall time ratio and both summary tables.
- evolution: `hpo=evolution hpo.population_size=8` as one stack against member by member
  (`hpo.stacked=false`): env steps per second.
- scaling: env steps/s (summed over members) for 1, 2, 4, 8, 16 members of one stack, and
  each run's peak memory (resident set of the largest process).
- floor: per member and rollout, collect and update time alone and in a stack of 8, and
  the update's network floor (benchmarks/stacked_floor.py): why a stack of tuned
  speaker_listener runs saves little.

    python -m benchmarks.stacked [--quick] [--only seeds,sweep,evolution,scaling,floor]
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

from benchmarks.stacked_floor import floor
from ippo_cli.files import write_json
from ippo_cli.plots import figure, label

RESULTS = Path(__file__).resolve().parent / "results"
QUIET = ["logger=none", "progress=false"]
SWEEP = [
    "env=speaker_listener",
    "algorithm.lr=3e-4,1e-3",
    "algorithm.ent_coef=0,0.01",
    "seed=0,1,2",
    "eval_every=25000",
]
# Runs its command and prints the peak resident set (KB) of its largest descendant.
_PEAK = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def ippo(args: list[str], cwd: Path) -> dict:
    """`ippo <args>` in ``cwd``: wall seconds and peak memory (MB)."""
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", _PEAK, sys.executable, "-m", "ippo_cli", *args]
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmarks.stacked: `ippo {' '.join(args)}` failed:\n{done.stderr}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    print(f"  {wall:7.1f} s  {peak_kb / 1024:6.0f} MB  ippo {' '.join(args)}", flush=True)
    return {
        "command": "ippo " + " ".join(args),
        "wall_time_s": round(wall, 1),
        "peak_memory_mb": round(peak_kb / 1024),
    }


def sweep_rows(sweep_dir: Path) -> list[dict]:
    summary = json.loads((sweep_dir / "summary.json").read_text())
    return summary["jobs"]


def final_evals(sweep_dir: Path) -> list[float | None]:
    return [job.get("final_eval") for job in sweep_rows(sweep_dir)]


def seeds(runs: Path, steps: int, n: int = 8) -> dict:
    budget = [f"algorithm.total_steps={steps}", f"eval_every={steps}"]
    one = ippo(
        [
            "train",
            "env=speaker_listener",
            "seed=0",
            *budget,
            *QUIET,
            f"hydra.run.dir={runs / 'one'}",
        ],
        runs,
    )
    many = ippo(
        [
            "train",
            "-m",
            "launcher=stacked",
            "env=speaker_listener",
            "seed=" + ",".join(map(str, range(n))),
            *budget,
            *QUIET,
            f"hydra.sweep.dir={runs / 'stack'}",
        ],
        runs,
    )
    one["final_eval"] = json.loads((runs / "one" / "summary.json").read_text())["final_eval"]
    many["final_evals"] = final_evals(runs / "stack")
    return {
        "steps_per_seed": steps,
        "seeds": n,
        "one_seed": one,
        "stack": many,
        "wall_time_ratio": round(many["wall_time_s"] / one["wall_time_s"], 2),
    }


def sweep(runs: Path, steps: int) -> dict:
    out = {}
    for launcher in ("basic", "stacked"):
        out[launcher] = ippo(
            [
                "train",
                "-m",
                f"launcher={launcher}",
                *SWEEP,
                f"algorithm.total_steps={steps}",
                *QUIET,
                f"hydra.sweep.dir={runs / launcher}",
            ],
            runs,
        )
        summary = json.loads((runs / launcher / "summary.json").read_text())
        out[launcher]["groups"] = summary.get("groups")
    out["speedup"] = round(out["basic"]["wall_time_s"] / out["stacked"]["wall_time_s"], 2)
    out["steps_per_job"] = steps
    return out


def evolution(runs: Path, steps: int) -> dict:
    out = {}
    for stacked in (True, False):
        name = "stack" if stacked else "member_by_member"
        run = ippo(
            [
                "train",
                "hpo=evolution",
                "hpo.population_size=8",
                "hpo.evo_steps=16384",
                f"hpo.stacked={str(stacked).lower()}",
                f"algorithm.total_steps={steps}",
                *QUIET,
                f"hydra.run.dir={runs / name}",
            ],
            runs,
        )
        done = json.loads((runs / name / "summary.json").read_text())
        run["env_steps"] = done["env_steps"]
        run["env_steps_per_s"] = round(done["env_steps"] / run["wall_time_s"])
        out[name] = run
    out["speedup"] = round(
        out["stack"]["env_steps_per_s"] / out["member_by_member"]["env_steps_per_s"], 2
    )
    return out


def scaling(runs: Path, steps: int, counts=(1, 2, 4, 8, 16), algorithm: str = "") -> dict:
    """``algorithm``: an algorithm option (e.g. ``ippo``, the reference's defaults) instead
    of speaker_listener's tuned one."""
    out = []
    extra = [f"algorithm={algorithm}"] if algorithm else []
    for n in counts:
        seeds_ = ",".join(map(str, range(n)))
        run = ippo(
            [
                "train",
                "-m",
                "launcher=stacked",
                "env=speaker_listener",
                *extra,
                f"seed={seeds_}",
                f"algorithm.total_steps={steps}",
                "eval_every=0",
                "eval_episodes=1",
                *QUIET,
                f"hydra.sweep.dir={runs / f'members_{n}'}",
            ],
            runs,
        )
        rows = sweep_rows(runs / f"members_{n}")
        train_wall = max(r.get("wall_time") or 0 for r in rows)
        run.update(
            members=n,
            env_steps_per_s=round(n * steps / train_wall),
            train_wall_time_s=round(train_wall, 1),
        )
        out.append(run)
    return {"steps_per_member": steps, "algorithm": algorithm or "speaker_listener", "runs": out}


def plot(result: dict, out: Path) -> None:
    """Env steps/s against members, with the tuned defaults and (when measured) the
    reference's, each against its run alone."""
    series = [("tuned", result.get("scaling")), ("algorithm=ippo", result.get("scaling_ippo"))]
    with figure(out, size=(6, 4)) as ax:
        for name, scale in series:
            if not scale:
                continue
            members = [r["members"] for r in scale["runs"]]
            rate = [r["env_steps_per_s"] for r in scale["runs"]]
            (line,) = ax.plot(members, rate, marker="o", label=f"{name}: one stack")
            ax.plot(
                members,
                [rate[0]] * len(members),
                ls="--",
                color=line.get_color(),
                label=f"{name}: one run alone",
            )
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        label(
            ax,
            "members in the stack",
            "env steps/s, summed over members",
            "speaker_listener, launcher=stacked",
        )


PARTS = {"seeds": seeds, "sweep": sweep, "evolution": evolution, "scaling": scaling, "floor": floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budgets (minutes)")
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bench/stacked"))
    parser.add_argument(
        "--algorithm", default="", help="scaling with this algorithm option (e.g. ippo)"
    )
    args = parser.parse_args()
    # Absolute: each command runs in its runs directory, and names its run directory.
    args.runs_dir = args.runs_dir.resolve()
    chosen = args.only.split(",")
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        parser.error(f"--only {','.join(unknown)}: no such part; parts: {','.join(PARTS)}")
    budget = {
        "seeds": 200_000 if args.quick else 2_000_000,
        "sweep": 20_000 if args.quick else 100_000,
        "evolution": 262_144 if args.quick else 1_048_576,
        "scaling": 65_536 if args.quick else 262_144,
        "floor": 4 if args.quick else 12,  # timed rollouts
    }
    path = RESULTS / "stacked.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    for name in chosen:
        print(f"stacked: {name}", flush=True)
        kwargs = {"algorithm": args.algorithm} if name == "scaling" and args.algorithm else {}
        key = f"scaling_{args.algorithm}" if kwargs else name
        part = PARTS[name](args.runs_dir / key, budget[name], **kwargs)
        result[key] = {**part, "date": time.strftime("%Y-%m-%d"), "quick": args.quick}
    result["machine"] = {"cores": os.cpu_count(), "python": platform.python_version()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    if "scaling" in result or "scaling_ippo" in result:
        plot(result, RESULTS / "stacked.png")


if __name__ == "__main__":
    main()
