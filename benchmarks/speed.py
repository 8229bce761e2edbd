"""Speed benchmark: how close `ippo train` gets to the speed of its own vector env.

All figures come from one run on one machine, so they can be compared as ratios:

- ceiling: random-action env steps/s of the async and sync vector envs at the training
  config's num_envs and workers (actions pre-sampled, so only env stepping is timed);
- training: env steps/s of the trainer at the reference's example config (speaker_listener,
  continuous actions, 8 envs, learn_step 2048, batch_size 128, 4 epochs), and its ratio
  to the ceiling of the vector env it uses; each ceiling is measured right before its
  training run, in PAIRS alternated pairs per vector env, and the table gives the
  medians (this machine's speed drifts by up to 1.5x within minutes, so a ratio is only
  fair between measurements taken together); and (sync) the same with the learner
  training one network pair at a time instead of as one stack, and eager. Training
  compiles the learner as `hardware.torch_compile=auto` does for the config's own
  total_steps (the reference config's 500,000 steps: compiled);
- breakdown: share of the training loop's wall time in env stepping, action selection,
  learning and logging;
- scaling: training and ceiling steps/s for num_envs 1, 8, 32, 128, sync and with 1 and 2
  async workers;
- agents: the learner's own time per env step (action selection plus learning, env
  stepping excluded) on simple_spread with 2, 8 and 32 homogeneous agents, the fastest
  of three interleaved runs each; with the arithmetic its networks do per env step and
  the rate that gives, next to this machine's float32 matmul rate, to tell time spent
  computing from time spent dispatching;
- memory: peak RSS of an `ippo train` process at the reference config.

    python -m benchmarks.speed [--quick]

Writes benchmarks/results/speed.json and prints the tables.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from ippo_cli.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 3  # runs per agent count in the simple_spread table (the fastest is kept)
PAIRS = 3  # (ceiling, training) pairs per vector env at the reference config
REFERENCE = [
    "env=speaker_listener",
    "algorithm=ippo",  # the reference's defaults, not speaker_listener's tuned ones
    "env.backend=pettingzoo",
    "env.num_envs=8",
    "algorithm.learn_step=2048",
    "algorithm.batch_size=128",
    "algorithm.update_epochs=4",
]
QUIET = ["logger=none", "progress=false", "eval_every=0", "checkpoint.every=0"]


def config(overrides: list[str]):
    from ippo_cli.cli import compose_config
    from ippo_cli.config import register_configs

    register_configs()
    return compose_config("train", QUIET + overrides)


def ceiling(overrides: list[str], seconds: float = 3.0) -> float:
    """Random-action env steps/s of the training config's vector env."""
    from ippo_cli.envs.factory import make_train_env
    from tests.conftest import sample_batch

    cfg = config(overrides)
    env = make_train_env(cfg.env, cfg.env.num_envs, cfg.hardware.vec_env, cfg.hardware.num_workers)
    try:
        n = cfg.env.num_envs
        pool = [
            {a: sample_batch(env.single_action_space(a), n, seed=i) for a in env.possible_agents}
            for i in range(16)
        ]
        env.reset(seed=0)
        for i in range(20):  # warm up
            env.step(pool[i % 16])
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(pool[steps % 16])
            steps += 1
        return steps * n / (time.perf_counter() - start)
    finally:
        env.close()


def training(overrides: list[str], rollouts: int = 4) -> dict:
    """Trainer steps/s over ``rollouts`` rollouts after one warm-up rollout (which also
    compiles), with the loop's time split into its parts. The learner is compiled as
    ``hardware.torch_compile=auto`` would for a run of the config's own total_steps,
    unless ``overrides`` choose."""
    from ippo_cli.trainer import Trainer, compile_mode_of

    cfg = config(overrides)
    if not any(o.startswith("hardware.torch_compile=") for o in overrides):
        mode = compile_mode_of(cfg, torch.device("cpu"))
        overrides = overrides + [f"hardware.torch_compile={mode or 'null'}"]
        cfg = config(overrides)
    steps_per_rollout = cfg.algorithm.learn_step
    warm = config(overrides + [f"algorithm.total_steps={steps_per_rollout}"])
    with TemporaryDirectory() as tmp:
        Trainer(warm, Path(tmp)).run()  # imports, allocator, worker start-up
    cfg = config(overrides + [f"algorithm.total_steps={rollouts * steps_per_rollout}"])
    with TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        trainer.run()
    t = trainer.timings
    loop = t["env"] + t["act"] + t["learn"] + t["log"]
    steps = trainer.progress.env_steps
    return {
        "steps_per_second": steps / loop,
        "torch_compile": cfg.hardware.torch_compile,
        "env_steps": steps,
        "share": {k: t[k] / loop for k in ("env", "act", "learn", "log")},
        "learner_seconds_per_env_step": (t["act"] + t["learn"]) / steps,
        "network_flops_per_env_step": network_flops_per_env_step(trainer.agent),
    }


def summarise_pairs(pairs: list[tuple[float, dict]]) -> dict:
    """Medians of (ceiling, training run) pairs measured back to back: ceiling, training
    steps/s, their ratio (the median of each pair's own ratio) and the loop's shares (of
    the median training run)."""
    ceilings = [c for c, _ in pairs]
    speeds = [run["steps_per_second"] for _, run in pairs]
    middle = sorted((run for _, run in pairs), key=lambda r: r["steps_per_second"])[len(pairs) // 2]
    return {
        "ceiling_steps_per_second": statistics.median(ceilings),
        "training_steps_per_second": statistics.median(speeds),
        "ratio_to_ceiling": statistics.median(s / c for c, s in zip(ceilings, speeds, strict=True)),
        "share": middle["share"],
        "pairs": [{"ceiling": c, "training": s} for c, s in zip(ceilings, speeds, strict=True)],
    }


def variant(extra: list[str], seconds: float, rollouts: int) -> dict:
    """A sync training run at the reference config with ``extra`` overrides, right after
    its own ceiling."""
    overrides = REFERENCE + ["hardware.vec_env=sync"]
    top = ceiling(overrides, seconds)
    run = training(overrides + extra, rollouts)
    return {
        "ceiling_steps_per_second": top,
        "training_steps_per_second": run["steps_per_second"],
        "ratio_to_ceiling": run["steps_per_second"] / top,
        "share": run["share"],
    }


def variant_line(label: str, v: dict) -> str:
    return (
        f"sync, {label}: {v['training_steps_per_second']:,.0f} steps/s "
        f"({v['ratio_to_ceiling']:.0%} of a ceiling of "
        f"{v['ceiling_steps_per_second']:,.0f} measured just before), "
        f"learning {v['share']['learn']:.0%} of the loop\n"
    )


def network_flops_per_env_step(agent) -> float:
    """Floating-point operations of the networks' Linear layers per env step: each agent
    row goes once through its actor while acting, once through actor and critic when the
    rollout is scored, and update_epochs times forward and backward (about 3x a forward
    pass) through both while learning."""
    from torch import nn

    def macs(net) -> int:  # multiply-adds per row
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        return sum(m.in_features * m.out_features for m in linears)

    total = 0
    for net_id, members in agent.members.items():
        actor, critic = macs(agent.actors[net_id]), macs(agent.critics[net_id])
        per_row = actor + (actor + critic) + agent.update_epochs * 3 * (actor + critic)
        total += 2 * len(members) * per_row
    return float(total)


def matmul_gflops(threads: int, seconds: float = 1.0) -> float:
    """This machine's float32 matmul rate at ``threads`` torch threads: a (4096, 256) x
    (256, 256) product, the size of a large minibatch through a hidden layer."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(4096, 256), torch.randn(256, 256)
        for _ in range(5):
            a @ b
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            n += 1
        return n * 2 * 4096 * 256 * 256 / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(before)


def peak_rss_mb(overrides: list[str], steps: int) -> float:
    """Peak resident memory of an `ippo train` process (its env workers not included)."""
    with TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ippo_cli", "train", *QUIET, *overrides]
        cmd += [f"algorithm.total_steps={steps}", f"hydra.run.dir={tmp}/run"]
        code = (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
        out.check_returncode()
        return int(out.stdout.split()[-1]) / 1024  # Linux reports KiB


def table(title: str, header: list[str], rows: list[list]) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*[f"{v:,.0f}" if isinstance(v, float) and v >= 100 else str(v) for v in r])
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(t)
    return console.export_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seconds, rollouts = (1.5, 2) if args.quick else (4.0, 4)
    result: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "command": "python -m benchmarks.speed" + (" --quick" if args.quick else ""),
    }

    # Ceiling and training at the reference's example config, each training run right
    # after its own ceiling, the two vector envs alternated.
    pairs: dict[str, list[tuple[float, dict]]] = {"async": [], "sync": []}
    for _ in range(1 if args.quick else PAIRS):
        for kind, measured in pairs.items():
            overrides = REFERENCE + [f"hardware.vec_env={kind}"]
            measured.append((ceiling(overrides, seconds), training(overrides, rollouts)))
    result["reference_config"] = {kind: summarise_pairs(p) for kind, p in pairs.items()}
    text = table(
        "speaker_listener, reference example config (8 envs, learn_step 2048, batch 128)",
        ["vec env", "ceiling steps/s", "training steps/s", "training/ceiling"],
        [
            [
                k,
                v["ceiling_steps_per_second"],
                v["training_steps_per_second"],
                f"{v['ratio_to_ceiling']:.0%}",
            ]
            for k, v in result["reference_config"].items()
        ],
    )
    for kind, v in result["reference_config"].items():
        text += (
            f"{kind}, each pair (ceiling / training steps/s): "
            + ", ".join(
                f"{p['ceiling']:,.0f} / {p['training']:,.0f} ({p['training'] / p['ceiling']:.0%})"
                for p in v["pairs"]
            )
            + "\n"
        )
    # The same sync run with the learner training one network pair at a time (acting
    # still stacked), for the stacked learner's share of the speed-up.
    from ippo_cli.ippo import IPPO

    IPPO.stack_updates = False
    try:
        result["sync_learner_one_pair_at_a_time"] = variant([], seconds, rollouts)
    finally:
        IPPO.stack_updates = True
    text += variant_line(
        "learner one network pair at a time (IPPO.stack_updates=False)",
        result["sync_learner_one_pair_at_a_time"],
    )
    # The same sync run eager, for compiling's share (a run this short is eager under
    # hardware.torch_compile=auto; the rows above are compiled as a full run is).
    result["sync_eager"] = variant(["hardware.torch_compile=null"], seconds, rollouts)
    text += variant_line("eager (hardware.torch_compile=null)", result["sync_eager"])
    text += table(
        "breakdown of the training loop's wall time",
        ["vec env", "env stepping", "action selection", "learning", "logging"],
        [
            [k, *(f"{v['share'][p]:.0%}" for p in ("env", "act", "learn", "log"))]
            for k, v in result["reference_config"].items()
        ],
    )

    # Scaling over num_envs and workers (learn_step keeps >= 16 steps per env); workers 0
    # is the sync vector env (every env in the trainer's process).
    scaling = []
    for num_envs in (1, 8, 32, 128):
        for workers in (0, 1, 2):
            over = [
                "env=speaker_listener",
                "algorithm=ippo",
                "env.backend=pettingzoo",  # the mpe2 env in our vector envs
                f"env.num_envs={num_envs}",
                f"algorithm.learn_step={max(2048, 16 * num_envs)}",
                "algorithm.batch_size=128",
            ]
            if workers:
                over += ["hardware.vec_env=async", f"hardware.num_workers={min(workers, num_envs)}"]
            else:
                over += ["hardware.vec_env=sync"]
            scaling.append(
                {
                    "num_envs": num_envs,
                    "workers": workers,
                    "ceiling": ceiling(over, seconds / 2),
                    "training": training(over, max(1, rollouts // 2))["steps_per_second"],
                }
            )
    result["scaling"] = scaling
    text += table(
        "scaling (workers 0: sync vector env; 1, 2: async)",
        ["num_envs", "workers", "ceiling steps/s", "training steps/s", "training/ceiling"],
        [
            [
                s["num_envs"],
                s["workers"],
                s["ceiling"],
                s["training"],
                f"{s['training'] / s['ceiling']:.0%}",
            ]
            for s in scaling
        ],
    )

    # Homogeneous agents share one network: the learner's cost per env step should grow
    # far slower than the number of agents.
    # A few hundred ms of learner time per run: each count is measured in REPEATS
    # interleaved runs and the fastest is kept, so one noisy moment does not decide it.
    counts = (2, 8, 32)
    times: dict[int, list[float]] = {n: [] for n in counts}
    flops: dict[int, float] = {}
    for _ in range(REPEATS):
        for n in counts:
            over = [
                "env=simple_spread",
                f"env.kwargs.N={n}",
                "env.num_envs=8",
                "algorithm.learn_step=1024",
                "algorithm.batch_size=128",
                "hardware.vec_env=sync",
            ]
            run = training(over, rollouts)
            times[n].append(1000 * run["learner_seconds_per_env_step"])
            flops[n] = run["network_flops_per_env_step"]
    agents = [
        {
            "agents": n,
            "learner_ms_per_env_step": min(times[n]),
            "runs_ms": times[n],
            "network_mflop_per_env_step": flops[n] / 1e6,
            "learner_gflops": flops[n] / min(times[n]) / 1e6,
        }
        for n in counts
    ]
    base = agents[0]["learner_ms_per_env_step"]
    for a in agents:
        a["ratio_to_2_agents"] = a["learner_ms_per_env_step"] / base
    result["agents"] = agents
    rates = {threads: matmul_gflops(threads) for threads in sorted({1, os.cpu_count() or 1})}
    result["matmul_gflops_by_threads"] = rates
    text += table(
        "simple_spread: learner time per env step (act + learn, env excluded)",
        ["agents", "learner ms / env step", "ratio to 2 agents", "MFLOP / env step", "GFLOP/s"],
        [
            [
                a["agents"],
                f"{a['learner_ms_per_env_step']:.3f}",
                f"{a['ratio_to_2_agents']:.2f}",
                f"{a['network_mflop_per_env_step']:.2f}",
                f"{a['learner_gflops']:.1f}",
            ]
            for a in agents
        ],
    )
    text += (
        "MFLOP / env step: the networks' Linear layers (acting, scoring, each epoch forward and "
        "backward); GFLOP/s: that over the learner's time. This machine's float32 matmul "
        "rate, (4096, 256) x (256, 256): "
        + ", ".join(f"{r:.0f} GFLOP/s at {t} thread{'s' * (t > 1)}" for t, r in rates.items())
        + "\n"
    )

    # A run this short is eager under auto: the compiled run's memory is what a full run uses.
    result["peak_rss_mb"] = peak_rss_mb(
        REFERENCE + ["hardware.torch_compile=default"], 4096 if args.quick else 8192
    )
    text += f"peak RSS of `ippo train` at the reference config: {result['peak_rss_mb']:.0f} MB\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "speed.json", result)
    (RESULTS / "speed.txt").write_text(text)


if __name__ == "__main__":
    main()
