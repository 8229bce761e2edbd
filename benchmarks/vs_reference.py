"""Side by side with the reference library (AgileRL 2.58): its own example training loop and
`ippo train`, at the same config and step count, alternated in one sitting.

Config: speaker_listener continuous, 8 envs, learn_step 2048, batch_size 128, 4 epochs.
The reference runs in its own virtual environment, created on first use under
~/.cache/ippo/agilerl-<version> (outside the repo) with the pinned torch. Each run is one
process tree, timed for wall time and for CPU time (user + sys of the tree, from
RUSAGE_CHILDREN taken around the run): the reference's async env workers use a second core.

    python -m benchmarks.vs_reference [--quick] [--steps N] [--rounds R]

Writes benchmarks/results/vs_reference.json and prints the runs and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from ippo_cli.files import write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REFERENCE_VERSION = "2.58.0"
TORCH = "torch==2.13.0"  # the torch pinned in requirements.lock
VENV = Path.home() / ".cache" / "ippo" / f"agilerl-{REFERENCE_VERSION}"
STEPS_PER_ROLLOUT = 2048  # learn_step: both sides run whole rollouts
OURS = [
    "env=speaker_listener",
    "algorithm=ippo",
    "env.backend=pettingzoo",
    "env.num_envs=8",
    "algorithm.batch_size=128",
    # the reference loop neither logs, evaluates nor checkpoints along the way
    "logger=none",
    "progress=false",
    "eval_every=0",
    "checkpoint.every=0",
]
# Runs of one round, in order: (side, environment added). The reference as shipped uses
# torch's default intra-op threads (one per core), which on a loaded machine contend with its
# env workers; the one-thread variant shows how much of the gap that is (ours sets its own
# threads: hardware.threads).
VARIANTS = {
    "reference": ("reference", {}),
    "reference_one_thread": ("reference", {"OMP_NUM_THREADS": "1"}),
    "ours": ("ours", {}),
}


def reference_python() -> Path:
    """The reference's interpreter, its virtual environment made on first use."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists():
        print(f"installing agilerl=={REFERENCE_VERSION} into {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, TORCH, f"agilerl=={REFERENCE_VERSION}", "peft"], check=True)
        stamp.touch()
    return python


def timed(cmd: list[str], steps: int, env: dict[str, str]) -> tuple[dict, str]:
    """Run ``cmd`` to the end with ``env`` added to the environment; its wall time, CPU time
    of its process tree and speed, and its standard output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"vs_reference: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "env_steps": steps,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "env_steps_per_second": steps / wall,
        "cores_busy": cpu / wall,
    }, out.stdout


def summary(runs: list[dict]) -> dict:
    return {
        key: statistics.median(run[key] for run in runs)
        for key in ("wall_seconds", "cpu_seconds", "env_steps_per_second", "cores_busy")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10 rollouts (20,480 env steps) per run"
    )
    parser.add_argument(
        "--steps", type=int, help="env steps per run (rounded up to whole rollouts)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternated")
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit(f"vs_reference: --rounds {args.rounds} must be >= 1")
    if args.steps is not None and args.steps < 1:
        sys.exit(f"vs_reference: --steps {args.steps} must be >= 1")
    steps = args.steps or (10 if args.quick else 49) * STEPS_PER_ROLLOUT
    steps = -(-steps // STEPS_PER_ROLLOUT) * STEPS_PER_ROLLOUT

    reference_cmd = [str(reference_python()), str(HERE / "reference_loop.py"), str(steps)]
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()
    with TemporaryDirectory() as tmp:
        ours_cmd = [sys.executable, "-m", "ippo_cli", "train", *OURS]
        ours_cmd += [f"algorithm.total_steps={steps}", f"hydra.run.dir={tmp}/run"]
        for i in range(args.rounds):
            for name, (side, env) in VARIANTS.items():
                cmd = reference_cmd if side == "reference" else ours_cmd
                run, stdout = timed(cmd, steps, env)
                if side == "reference":
                    done = json.loads(stdout.splitlines()[-1])["env_steps"]
                    if done != steps:
                        sys.exit(
                            f"vs_reference: the reference loop ran {done} env steps, not {steps}"
                        )
                runs[name].append(run)
                print(
                    f"round {i + 1} {name}: {run['wall_seconds']:.1f} s wall, "
                    f"{run['cpu_seconds']:.1f} s CPU, "
                    f"{run['env_steps_per_second']:,.0f} env steps/s",
                    flush=True,
                )
    load_after = os.getloadavg()
    medians = {name: summary(r) for name, r in runs.items()}
    ours = medians["ours"]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.vs_reference"
        + (" --quick" if args.quick else "")
        + (f" --steps {args.steps}" if args.steps else "")
        + (f" --rounds {args.rounds}" if args.rounds != 2 else ""),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1_5_15_before": list(load_before),
            "load_average_1_5_15_after": list(load_after),
        },
        "reference_version": REFERENCE_VERSION,
        "rounds": args.rounds,
        "config": "speaker_listener continuous, 8 envs, learn_step 2048, batch_size 128, 4 epochs",
        "env_steps_per_run": steps,
        "commands": {
            "reference": f"<venv agilerl=={REFERENCE_VERSION} peft {TORCH}>/bin/python "
            f"benchmarks/reference_loop.py {steps}",
            "ours": "ippo train " + " ".join(OURS) + f" algorithm.total_steps={steps}",
        },
        "environment_added": {name: env for name, (_, env) in VARIANTS.items()},
        "runs": runs,
        "median": medians,
        # reference variant / ours, from the medians
        "wall_time_ratio": {
            name: m["wall_seconds"] / ours["wall_seconds"]
            for name, m in medians.items()
            if name != "ours"
        },
        "cpu_time_ratio": {
            name: m["cpu_seconds"] / ours["cpu_seconds"]
            for name, m in medians.items()
            if name != "ours"
        },
    }
    write_json(RESULTS / "vs_reference.json", result)
    for name in result["wall_time_ratio"]:
        print(
            f"{name} / ours, medians of {args.rounds}: "
            f"wall time {result['wall_time_ratio'][name]:.2f}x, "
            f"CPU time {result['cpu_time_ratio'][name]:.2f}x"
        )


if __name__ == "__main__":
    main()
