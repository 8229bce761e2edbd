"""Where a speaker_listener learner's time goes, alone and as a member of a stack.

For N members (1: a run alone), N tuned speaker_listener trainers are built in this
process, compiled, learning on 2 threads as `ippo train` does; after two warm-up
rollouts, each rollout's collect (`run_stack.collect_together`) and update
(`run_stack.update_together`) are timed. Then the floor: the same actor and critic
networks as one compiled stack, forward and backward passes alone (no loss, no optimizer,
no data handling) on random minibatches of the same shape, as many as one update takes.
A stack can at best cut a member's update to that floor, whatever its overheads.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ippo_cli.cli import compose_config
from ippo_cli.config import register_configs
from ippo_cli.networks.stacked import NetworkStack, layer_chain
from ippo_cli.run_stack import collect_together, update_together
from ippo_cli.trainer import Trainer

WARM_UP = 2
THREADS = 2  # for learning, as `ippo train` takes on this machine
OVERRIDES = [
    "env=speaker_listener",
    "logger=none",
    "progress=false",
    "eval_every=0",
    "hardware.torch_compile=default",
    f"hardware.learn_threads={THREADS}",
]


def floor(runs: Path, rollouts: int, counts: tuple[int, ...] = (1, 8)) -> dict:
    """Per member and rollout (milliseconds): collect, update and the update's network
    floor, for each member count; ``rollouts`` timed after the warm-up."""
    out = []
    for n in counts:
        row = _measure(n, rollouts)
        print(
            f"  {n:2d} members: per member and rollout collect {row['collect_ms']:.0f} ms, "
            f"update {row['update_ms']:.0f} ms, network floor {row['network_floor_ms']:.0f} ms",
            flush=True,
        )
        out.append(row)
    return {
        "rollouts": rollouts,
        "command": "python -m benchmarks.stacked --only floor",
        "runs": out,
        **best_cases(out),
    }


def best_cases(runs: list[dict]) -> dict:
    """Per rollout, the time N members take against one run alone (``runs[0]``): as
    measured, and if the stack's update cost no more than its network floor, with the
    stack's collect as measured and with no collect at all. Start-up and evaluation,
    which a stack pays about once as a run alone does, bring a whole run's ratio down a
    little."""
    alone, stack = runs[0], runs[-1]
    one = alone["collect_ms"] + alone["update_ms"]
    n = stack["members"]
    return {
        "ratio": round(n * (stack["collect_ms"] + stack["update_ms"]) / one, 2),
        "floor_ratio": round(n * (stack["collect_ms"] + stack["network_floor_ms"]) / one, 2),
        "floor_ratio_without_collect": round(n * stack["network_floor_ms"] / one, 2),
        # The most a member can gain over its run alone: N runs' time over the stack's.
        "floor_speedup_without_collect": round(one / stack["network_floor_ms"], 2),
    }


def _measure(n: int, rollouts: int) -> dict:
    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        trainers = []
        for k in range(n):
            run_dir = Path(tmp) / str(k)
            run_dir.mkdir()
            cfg = compose_config("train", [*OVERRIDES, f"seed={k}"])
            trainers.append(Trainer(cfg, run_dir, stacked_runs=n))
        try:
            obs, infos = zip(*(t.begin() for t in trainers), strict=True)
            obs, infos = list(obs), list(infos)
            collect = update = 0.0
            for r in range(WARM_UP + rollouts):
                t0 = time.perf_counter()
                collect_together(trainers, obs, infos)
                t1 = time.perf_counter()
                update_together(trainers)
                t2 = time.perf_counter()
                if r >= WARM_UP:
                    collect += t1 - t0
                    update += t2 - t1
            network = _network_floor(trainers)
        finally:
            for t in trainers:
                t.close()
    per = 1e3 / (n * rollouts)
    return {
        "members": n,
        "collect_ms": round(collect * per, 1),
        "update_ms": round(update * per, 1),
        "network_floor_ms": round(network * 1e3 / n, 1),
    }


def _network_floor(trainers: list[Trainer], repeats: int = 3) -> float:
    """Seconds one update's forward and backward passes take with every trainer's
    actors and critics as one compiled stack (the best of ``repeats``)."""
    agent = trainers[0].agent
    nets = [net for t in trainers for net in (*t.agent.actors.values(), *t.agent.critics.values())]
    stack = NetworkStack([layer_chain(net) for net in nets])
    stack.load()
    width = stack.stacked[0].shape[1]
    steps = agent.update_epochs * (trainers[0].steps_per_rollout // agent.batch_size)
    x = torch.randn(len(nets), agent.batch_size, width)

    def passes() -> None:
        stack.zero_grad()
        stack.forward(x).sum().backward()

    compiled = torch.compile(passes)
    torch.set_num_threads(THREADS)
    for _ in range(3):
        compiled()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            compiled()
        best = min(best, time.perf_counter() - start)
    return best
