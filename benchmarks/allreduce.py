"""What a multi-node (data-parallel) run sends per update: the gradient all-reduce of
each network for every minibatch, measured on gloo between two processes over loopback,
and extrapolated to a 10 Gb/s network. Results in benchmarks/results/allreduce.json.

Every minibatch, each network (actor and critic of an agent, or of a group sharing one)
all-reduces its gradients as one flat float32 buffer, and a one-number all-reduce of the
approximate KL keeps the ranks' early stop together (ippo_cli.ippo, ippo_cli.distributed).

    python -m benchmarks.allreduce [--env speaker_listener] [--repeats 200]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ippo_cli.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"
LINK_BITS_PER_SECOND = 10e9  # the network extrapolated to
BYTES_PER_PARAM = 4  # float32 gradients


def network_sizes(env: str) -> tuple[dict[str, int], int, dict[str, int]]:
    """Parameters per network (actor + critic) of ``env=<env>``'s default agent, all-reduces
    per network per update, and the settings that decide it."""
    from ippo_cli.cli import compose_config
    from ippo_cli.config import register_configs
    from ippo_cli.envs.factory import env_fn
    from ippo_cli.trainer import build_agent

    register_configs()
    cfg = compose_config("train", [f"env={env}", "logger=none", "hardware.torch_compile=null"])
    built = env_fn(cfg.env)()
    agents = list(built.possible_agents)
    spaces = [built.observation_space(a) for a in agents], [built.action_space(a) for a in agents]
    built.close()
    agent = build_agent(cfg, *spaces, agents, "cpu")
    sizes = {
        net: sum(
            p.numel() for p in [*agent.actors[net].parameters(), *agent.critics[net].parameters()]
        )
        for net in agent.actors
    }
    num_envs = cfg.env.num_envs
    rows = -(-cfg.algorithm.learn_step // num_envs) * num_envs  # rollout rows per update
    minibatches = math.ceil(rows / cfg.algorithm.batch_size) * cfg.algorithm.update_epochs
    settings = {
        "num_envs": num_envs,
        "rollout_rows": rows,
        "batch_size": cfg.algorithm.batch_size,
        "update_epochs": cfg.algorithm.update_epochs,
    }
    return sizes, minibatches, settings


def _rank(rank: int, port: int, sizes: list[int], repeats: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    times = []
    for n in sizes:
        flat = torch.randn(n)
        for _ in range(10):  # warm up the connection
            dist.all_reduce(flat)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            samples.append(time.perf_counter() - t0)
        times.append(statistics.median(samples))
    dist.destroy_process_group()
    if rank == 0:
        out.put(times)


def measure(sizes: list[int], repeats: int) -> list[float]:
    """Median seconds of one all-reduce of ``n`` float32 numbers between two gloo
    processes on loopback, for each ``n``."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, sizes, repeats, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    times = out.get(timeout=600)
    for p in procs:
        p.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="speaker_listener")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    sizes, per_update, settings = network_sizes(args.env)
    seconds = measure([*sizes.values(), 1], args.repeats)
    link = LINK_BITS_PER_SECOND / 8  # bytes per second
    networks = []
    for (net, n), s in zip(sizes.items(), seconds, strict=False):
        size = n * BYTES_PER_PARAM
        # Ring all-reduce, 2 nodes: each sends (and receives) the buffer once.
        networks.append(
            {
                "network": net,
                "params": n,
                "mb": size / 1e6,
                "loopback_ms": s * 1e3,
                "at_10gbps_ms": size / link * 1e3,
                "per_update": per_update,
            }
        )
    total_bytes = sum(n["params"] for n in networks) * BYTES_PER_PARAM * per_update
    kl_ms = seconds[-1] * 1e3
    result = {
        "env": args.env,
        "settings": settings,
        "networks": networks,
        "allreduces_per_update": per_update * len(networks) * 2,  # gradients + approx KL
        "mb_per_update": total_bytes / 1e6,
        "loopback_ms_per_update": sum(n["loopback_ms"] * per_update for n in networks)
        + kl_ms * per_update * len(networks),
        "at_10gbps_ms_per_update": total_bytes / link * 1e3,
        "scalar_allreduce_loopback_ms": kl_ms,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "allreduce.json", result)
    print(f"env={args.env}: {settings}")
    header = ("network", "params", "MB", "loopback ms", "10 Gb/s ms", "per update")
    print(
        f"{header[0]:<12}{header[1]:>10}{header[2]:>8}{header[3]:>13}{header[4]:>12}{header[5]:>12}"
    )
    for n in networks:
        print(
            f"{n['network']:<12}{n['params']:>10,}{n['mb']:>8.3f}{n['loopback_ms']:>13.3f}"
            f"{n['at_10gbps_ms']:>12.3f}{n['per_update']:>12}"
        )
    print(
        f"per update: {result['allreduces_per_update']} all-reduces, "
        f"{result['mb_per_update']:.1f} MB of gradients; "
        f"{result['loopback_ms_per_update']:.1f} ms on loopback here, "
        f"{result['at_10gbps_ms_per_update']:.1f} ms of transfer at 10 Gb/s; "
        f"a one-number all-reduce (approx KL) {kl_ms:.3f} ms on loopback"
    )


if __name__ == "__main__":
    main()
