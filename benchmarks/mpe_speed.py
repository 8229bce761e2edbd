"""Random-action env steps per second of every shipped mpe2 scenario (issue 22).

For each `conf/env/<scenario>.yaml` with an mpe2 factory, with its kwargs: the batched backend
at 1, 64, 1,024 and 8,192 envs, beside the pettingzoo backend (mpe2 in a SyncVecEnv, one
process) at 1 and 64 envs (beyond that it only grows linearly slower). Env steps are summed
over envs; actions are drawn beforehand; the process is pinned to one core (numpy's
element-wise operations use one thread). `make bench ARGS=mpe_speed` runs it.

Writes benchmarks/results/mpe_speed.json and prints a Markdown table.

    python -m benchmarks.mpe_speed [--seconds 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.batched_mpe import steps_per_second
from ippo_cli.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"
CONF = Path(__file__).resolve().parent.parent / "conf" / "env"
BATCHED_ENVS = (1, 64, 1024, 8192)
PETTINGZOO_ENVS = (1, 64)


def scenarios() -> dict[str, tuple[str, dict]]:
    """Scenario name -> (mpe2 factory, kwargs) from the shipped env configs."""
    out = {}
    for path in sorted(CONF.glob("*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if str(cfg.get("factory", "")).startswith("mpe2."):
            out[path.stem] = (cfg["factory"], dict(cfg.get("kwargs") or {}))
    return out


def measure(factory: str, kwargs: dict, seconds: float) -> dict:
    from ippo_cli.envs.factory import build_env
    from ippo_cli.envs.mpe import batched_support, make_batched_env
    from ippo_cli.envs.vector import SyncVecEnv

    row: dict = {"batched": None}
    if batched_support(factory, kwargs, []) is None:
        row["batched"] = {
            n: steps_per_second(make_batched_env(factory, kwargs, [], n), seconds)
            for n in BATCHED_ENVS
        }
    row["pettingzoo_sync"] = {}
    for n in PETTINGZOO_ENVS:
        with SyncVecEnv([lambda: build_env(factory, kwargs)] * n) as env:
            row["pettingzoo_sync"][n] = steps_per_second(env, seconds)
    return row


def table(rows: dict) -> str:
    head = [f"batched {n:,}" for n in BATCHED_ENVS] + [f"mpe2 {n}" for n in PETTINGZOO_ENVS]
    lines = ["| scenario | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, row in rows.items():
        batched = row["batched"] or {}
        cells = [f"{batched[n]:,.0f}" if n in batched else "-" for n in BATCHED_ENVS]
        cells += [f"{row['pettingzoo_sync'][n]:,.0f}" for n in PETTINGZOO_ENVS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="0.3 s per measurement")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else args.seconds
    load_before = os.getloadavg()
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    rows = {}
    try:
        for name, (factory, kwargs) in scenarios().items():
            rows[name] = measure(factory, kwargs, seconds)
            print(name, rows[name], flush=True)
    finally:
        os.sched_setaffinity(0, cores)
    markdown = table(rows)
    print(markdown)
    result = {
        "benchmark": "random-action env steps/s (summed over envs) per mpe2 scenario",
        "command": "python -m benchmarks.mpe_speed " + " ".join(sys.argv[1:]),
        "seconds_per_measurement": seconds,
        "note": "one core, actions drawn beforehand; kwargs from conf/env/<scenario>.yaml",
        "steps_per_second": rows,
        "table": markdown,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "mpe_speed.json", result)


if __name__ == "__main__":
    main()
