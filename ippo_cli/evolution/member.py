"""One member's turn in a generation: train it for ``hpo.evo_steps`` env steps on the
training envs, then measure its fitness on a separate evaluation env.

A turn starts from its own seed (torch, numpy, python and the envs' resets), so a
member trains the same whether the population takes turns in one process or in a pool
of worker processes (``hpo.parallel``).
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ippo_cli.envs.factory import env_fn
from ippo_cli.evaluate import run_episodes
from ippo_cli.ippo import IPPO
from ippo_cli.launchers import run_cores
from ippo_cli.trainer import EVAL_SEED_OFFSET, Progress, Trainer, seed_everything


@dataclass
class Turn:
    """What a member's turn produced: one metrics row per update, its fitness, steps."""

    rows: list[dict[str, Any]]
    fitness: float
    steps: int


def turn_seed(seed: int, generation: int, slot: int) -> int:
    """The seed of the turn of the member in place ``slot`` of ``generation``."""
    return int(np.random.SeedSequence([seed, generation, slot]).generate_state(1)[0])


class MemberTrainer:
    """The training envs (through a :class:`Trainer`) and an evaluation env, shared by
    every member that takes a turn here."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.trainer = Trainer(cfg, Path(os.devnull))
        self.eval_env = env_fn(cfg.env)()

    def turn(self, agent: IPPO, steps: int, seed: int, stop: Any = None) -> Turn | None:
        """Train ``agent`` in place for at least ``steps`` env steps (whole rollouts) and
        evaluate it; None when ``stop`` was requested mid-turn."""
        seed_everything(seed)
        t = self.trainer
        t.use_agent(agent)
        first = agent.steps[-1]
        t.progress = Progress(env_steps=first)
        obs, infos = t.env.reset(seed=seed)
        rows = []
        start = time.perf_counter()
        while t.progress.env_steps - first < steps:
            t0 = time.perf_counter()
            obs, infos = t.collect(obs, infos, stop)
            if stop is not None and stop.requested:
                return None
            metrics = t.learn()
            t._check_finite_metrics(metrics)
            t.progress.updates += 1
            row = t._row(metrics, time.perf_counter() - start, t0)
            row["member_steps"] = row.pop("env_steps")
            del row["update"]
            rows.append(row)
        result = run_episodes(
            agent,
            self.eval_env,
            self.cfg.hpo.eval_loop,
            deterministic=True,
            seed=self.cfg.seed + EVAL_SEED_OFFSET,
        )
        return Turn(rows, float(result.summed.mean()), t.progress.env_steps - first)

    def close(self) -> None:
        self.trainer.close()
        self.eval_env.close()


def member_pool(cfg: DictConfig) -> ProcessPoolExecutor:
    """Worker processes, one per core up to the population size, each with its own
    envs (synchronous: the parallelism is across members)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["hardware"] = {
        **plain["hardware"],
        "vec_env": "sync",
        "num_workers": None,
        "learn_threads": plain["hardware"].get("learn_threads") or 1,
    }
    workers = min(cfg.hpo.population_size, run_cores(cfg.hardware))
    return ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(plain,)
    )


_WORKER: MemberTrainer | None = None


def _start_worker(plain_cfg: dict[str, Any]) -> None:
    # Ctrl-C is the parent's to handle: it cancels the generation.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER
    _WORKER = MemberTrainer(OmegaConf.create(plain_cfg))


def remote_turn(agent_data: dict[str, Any], steps: int, seed: int) -> tuple[dict, Turn]:
    """A turn in a worker process: the trained agent comes back as plain data."""
    agent = IPPO.from_dict(agent_data, _WORKER.trainer.device)
    turn = _WORKER.turn(agent, steps, seed)
    return agent.to_dict(), turn
