"""Speed and fidelity of `env.backend=batched` (issue 8), against the pettingzoo backend.

1. Random-action env steps/s of the batched speaker_listener and simple_spread at 1, 64, 1,024
   and 8,192 envs, pinned to one core (actions drawn beforehand), beside
   the pettingzoo SyncVecEnv over mpe2 at 1 and 64 envs.
2. `ippo train` steps/s on the batched backend, and where a training run's time goes (env
   steps, the rest of the rollout collection, learning), for the default learner settings
   and for the large-batch settings FAST.
3. Wall-clock seconds until speaker_listener's deterministic evaluation (20 episodes on mpe2)
   first reaches the target -33: batched with FAST and with MID against pettingzoo with the
   defaults, per seed. Each run is stopped (Ctrl-C, which saves last.pt) once it is there.
4. Each batched FAST run's policy evaluated on mpe2 and on the batched env (deterministic, the
   same number of episodes from independent starts): the two means must agree within noise;
   and from the same starts (the batched env's, loaded into mpe2): equal returns.

Writes benchmarks/results/batched_mpe.json.

    python -m benchmarks.batched_mpe [--seeds 0 1 2] [--episodes 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ippo_cli.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = -33.0  # the spine's speaker_listener learning target
EVAL = ["eval_every=25000", "eval_episodes=20"]
FAST = [
    "env.num_envs=256",
    "algorithm.learn_step=16384",
    "algorithm.batch_size=2048",
    "algorithm.lr=3e-4",
]
# Half the envs, rollout and minibatch: twice the updates per env step, fewer steps/s.
MID = [
    "env.num_envs=128",
    "algorithm.learn_step=8192",
    "algorithm.batch_size=1024",
    "algorithm.lr=3e-4",
]
CONFIGS = {
    "batched_fast": ["env.backend=batched", *FAST],
    "batched_mid": ["env.backend=batched", *MID],
    "pettingzoo_defaults": ["env.backend=pettingzoo", "env.num_envs=8"],
}
NUM_ENVS = (1, 64, 1024, 8192)
SPEAKER_LISTENER = ("mpe2.simple_speaker_listener_v4.parallel_env", {"continuous_actions": True})
SIMPLE_SPREAD = ("mpe2.simple_spread_v3.parallel_env", {"N": 3})


def _actions(env, rng: np.random.Generator, pool: int = 16) -> list[dict[str, np.ndarray]]:
    """``pool`` batches of uniformly random actions for every agent."""
    out = []
    for _ in range(pool):
        batch = {}
        for a in env.possible_agents:
            space = env.single_action_space(a)
            if hasattr(space, "n"):
                batch[a] = rng.integers(space.n, size=env.num_envs)
            else:
                batch[a] = rng.random((env.num_envs, *space.shape), dtype=np.float32)
        out.append(batch)
    return out


def steps_per_second(env, seconds: float) -> float:
    """Random-action env steps (summed over envs) per second, over about ``seconds``."""
    env.reset(seed=0)
    actions = _actions(env, np.random.default_rng(0))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in actions:
            env.step(batch)
        steps += len(actions)
    return steps * env.num_envs / (time.perf_counter() - start)


def env_speed(seconds: float) -> dict:
    from ippo_cli.envs.factory import build_env
    from ippo_cli.envs.mpe import make_batched_env
    from ippo_cli.envs.vector import SyncVecEnv

    table = {}
    for name, (factory, kwargs) in (
        ("speaker_listener", SPEAKER_LISTENER),
        ("simple_spread", SIMPLE_SPREAD),
    ):
        batched = {
            n: steps_per_second(make_batched_env(factory, kwargs, [], n), seconds) for n in NUM_ENVS
        }
        pettingzoo = {}
        for n in (1, 64):
            with SyncVecEnv([lambda f=factory, k=kwargs: build_env(f, k)] * n) as env:
                pettingzoo[n] = steps_per_second(env, seconds)
        table[name] = {"batched": batched, "pettingzoo_sync": pettingzoo}
        print(
            name,
            {n: f"{v:,.0f}" for n, v in batched.items()},
            "pettingzoo:",
            {n: f"{v:,.0f}" for n, v in pettingzoo.items()},
            flush=True,
        )
    return table


def training_breakdown(overrides: list[str], steps: int) -> dict:
    """One in-process `ippo train` run on the batched backend, timing env.step, the rest of
    the rollout collection (acting, storage) and learning."""
    import tempfile

    from ippo_cli.cli import compose_config
    from ippo_cli.config import register_configs
    from ippo_cli.trainer import Trainer

    register_configs()
    cfg = compose_config(
        "train",
        [
            "env=speaker_listener",
            "algorithm=ippo",  # the reference's defaults, not speaker_listener's tuned ones
            "env.backend=batched",
            "logger=none",
            "progress=false",
            f"algorithm.total_steps={steps}",
            "eval_every=0",
            "eval_episodes=1",
            "checkpoint.every=0",
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        spent = {"env_step": 0.0, "collect": 0.0, "learn": 0.0}

        def timed(key, fn):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    spent[key] += time.perf_counter() - start

            return wrapper

        trainer.env.step = timed("env_step", trainer.env.step)
        trainer.collect = timed("collect", trainer.collect)
        trainer.agent.update = timed("learn", trainer.agent.update)
        start = time.perf_counter()
        summary = trainer.run()
        wall = time.perf_counter() - start
    loop = spent["collect"] + spent["learn"]
    return {
        "overrides": overrides,
        "env_steps": summary["env_steps"],
        "steps_per_second": round(summary["env_steps"] / loop, 1),
        "seconds": {
            "env_step": round(spent["env_step"], 2),
            "collect_without_env_step": round(spent["collect"] - spent["env_step"], 2),
            "learn": round(spent["learn"], 2),
            "other (setup, final eval on mpe2)": round(wall - loop, 2),
        },
    }


def train_to_target(backend: list[str], seed: int, max_steps: int, run_dir: Path) -> dict:
    """`ippo train` until the evaluation first reaches TARGET (then Ctrl-C) or max_steps."""
    cmd = [
        sys.executable,
        "-m",
        "ippo_cli",
        "train",
        "env=speaker_listener",
        "algorithm=ippo",  # the reference's defaults, not speaker_listener's tuned ones
        "logger=none",
        "progress=false",
        f"seed={seed}",
        f"algorithm.total_steps={max_steps}",
        *EVAL,
        "checkpoint.every=0",
        f"hydra.run.dir={run_dir}",
        *backend,
    ]
    shutil.rmtree(run_dir, ignore_errors=True)  # a reused run directory appends metrics
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics, hit = run_dir / "metrics.jsonl", None
    try:
        while proc.poll() is None and hit is None:
            time.sleep(0.5)
            hit = _first_at_target(metrics)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode not in (0, 130):
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.strip().splitlines()[-1:]}")
    rows = _rows(metrics)
    hit = hit or _first_at_target(metrics)
    updates = [r["steps_per_second"] for r in rows if "steps_per_second" in r]
    return {
        "command": " ".join(cmd[2:]),
        "reached": hit is not None,
        "steps_to_target": None if hit is None else hit["env_steps"],
        "seconds_to_target": None if hit is None else round(hit["wall_time"], 1),
        "eval_at_target": None if hit is None else round(hit["eval/return"], 2),
        "train_steps_per_second_median": round(float(np.median(updates)), 1),
        "curve": [[r["env_steps"], round(r["eval/return"], 2)] for r in rows if "eval/return" in r],
    }


def _rows(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    lines = metrics.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def _first_at_target(metrics: Path) -> dict | None:
    return next((r for r in _rows(metrics) if r.get("eval/return", -np.inf) >= TARGET), None)


def eval_parity(ckpt: Path, episodes: int, seed: int, paired: int = 100) -> dict:
    """Deterministic returns of a checkpoint's policy on mpe2 and on the batched env: over
    ``episodes`` independent starts on each (means within noise), and over ``paired`` starts
    drawn by the batched env and loaded into mpe2 (equal returns, episode by episode)."""
    from ippo_cli import checkpoint
    from ippo_cli.envs.factory import env_fn
    from ippo_cli.envs.mpe import make_batched_env
    from ippo_cli.episodes import run_episodes
    from ippo_cli.ippo import IPPO

    data = checkpoint.load(ckpt)
    agent = IPPO.from_dict(data["agent"])
    env_cfg = data["config"]["env"]
    starts = 1_000_000 * (seed + 1)  # no two policies see the same starts
    mpe2 = env_fn(env_cfg)()
    on_mpe2 = run_episodes(agent, mpe2, episodes, deterministic=True, seed=starts).summed
    batched = make_batched_env(env_cfg["factory"], env_cfg["kwargs"], [], episodes)
    agent.set_training_mode(False)
    obs, infos = batched.reset(seed=starts)
    first = batched.get_state()["arrays"]
    on_batched = np.zeros(episodes)
    for _ in range(batched.max_cycles):  # every env plays exactly one episode
        actions, *_ = agent.get_action(obs, infos, deterministic=True)
        obs, rewards, _, _, infos = batched.step(actions)
        on_batched += sum(rewards.values())
    same_start = np.array([_play_mpe2_from(agent, mpe2, first, e) for e in range(paired)])
    mpe2.close()
    stderr = float(np.sqrt(on_mpe2.var() / episodes + on_batched.var() / episodes))
    diff = float(on_batched.mean() - on_mpe2.mean())
    return {
        "episodes": episodes,
        "mpe2": {"mean": round(float(on_mpe2.mean()), 3), "std": round(float(on_mpe2.std()), 3)},
        "batched": {
            "mean": round(float(on_batched.mean()), 3),
            "std": round(float(on_batched.std()), 3),
        },
        "difference": round(diff, 3),
        "difference_in_standard_errors": round(diff / stderr, 2),
        "paired_episodes": paired,
        "paired_max_abs_return_difference": float(np.abs(same_start - on_batched[:paired]).max()),
    }


def _play_mpe2_from(agent, env, arrays: dict, e: int) -> float:
    """One deterministic speaker_listener episode on mpe2 from row ``e`` of a batched state."""
    env.reset(seed=e)
    world = env.unwrapped.world
    for i, entity in enumerate(world.agents):
        entity.state.p_pos = np.array(arrays["pos"][e][i])
        entity.state.p_vel = np.array(arrays["vel"][e][i])
        entity.state.c = np.array(arrays["comm"][e][i])
    for j, landmark in enumerate(world.landmarks):
        landmark.state.p_pos = np.array(arrays["landmarks"][e][j])
    world.agents[0].goal_b = world.landmarks[arrays["goal"][e]]
    obs = {a: env.unwrapped.observe(a) for a in env.agents}
    total = 0.0
    while env.agents:
        actions, *_ = agent.get_action(obs, deterministic=True)
        obs, rewards, _, _, _ = env.step(actions)
        total += sum(rewards.values())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=1000, help="per policy and env (part 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per env speed measurement")
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bench/batched_mpe"))
    args = parser.parse_args()
    load_before = os.getloadavg()

    # Part 1 on one core (numpy's element-wise operations use one thread); everything
    # launched later may use both cores again.
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    speed = env_speed(args.seconds)
    os.sched_setaffinity(0, cores)

    training = [training_breakdown([], 98_304), training_breakdown(FAST, 491_520)]
    for run in training:
        print("train", run["overrides"], run["steps_per_second"], run["seconds"], flush=True)

    seeds = {}
    for seed in args.seeds:
        runs = {}
        for name, backend in CONFIGS.items():
            run_dir = args.runs_dir / f"{name}_seed{seed}"
            runs[name] = train_to_target(backend, seed, args.max_steps, run_dir)
            print(seed, name, {k: v for k, v in runs[name].items() if k != "curve"}, flush=True)
        ckpt = args.runs_dir / f"batched_fast_seed{seed}" / "checkpoints" / "last.pt"
        runs["eval_parity"] = eval_parity(ckpt, args.episodes, seed)
        print(seed, "eval parity", runs["eval_parity"], flush=True)
        seeds[str(seed)] = runs

    result = {
        "benchmark": "env.backend=batched: env speed, training speed, time to target, eval parity",
        "random_action_steps_per_second": speed,
        "random_action_note": "one core, actions drawn beforehand",
        "training": training,
        "configs": CONFIGS,
        "target": TARGET,
        "eval": EVAL,
        "seeds": seeds,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared with other jobs: speeds are depressed by their load",
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "batched_mpe.json", result)


if __name__ == "__main__":
    main()
