"""One member's turn in a generation: train it for ``hpo.evo_steps`` env steps on the
training envs, then measure its fitness on a separate evaluation env.

A turn starts from its own seed (the envs' resets and the member's sampling and
shuffling generator), so a member trains the same whether the population trains as one
stack (``hpo.stacked``, the default) or member by member.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ippo_cli.envs.factory import env_fn
from ippo_cli.episodes import run_episodes
from ippo_cli.ippo import IPPO
from ippo_cli.run_stack import collect_together, update_together
from ippo_cli.trainer import (
    EVAL_SEED_OFFSET,
    Progress,
    Trainer,
    sampling_seed,
    seed_everything,
)


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
    """Training envs (one :class:`Trainer` per place in the population) and an evaluation
    env, shared by every member that takes a turn here."""

    def __init__(self, cfg: DictConfig, slots: int = 1) -> None:
        from ippo_cli.stacking import member_config

        self.cfg = cfg
        self.trainers: list[Trainer] = []
        try:
            for _ in range(slots):
                member_cfg = member_config(cfg.copy(), slots)
                self.trainers.append(Trainer(member_cfg, Path(os.devnull)))
            self.eval_env = env_fn(cfg.env)()
        except BaseException:
            for trainer in self.trainers:
                trainer.close()
            raise

    def turns(
        self, agents: list[IPPO], steps: int, seeds: list[int], stop: Any = None, stacked=True
    ) -> list[Turn] | None:
        """Train each of ``agents`` in place for at least ``steps`` env steps (whole
        rollouts), then evaluate it; None when ``stop`` was requested mid-turn.

        ``stacked``: agents with the same rollout length train side by side as one stack
        (their actors act as one, their networks learn as one where their architectures
        and minibatches agree, see :func:`~ippo_cli.stacked_update.update_agents`);
        otherwise one after another. Each agent learns the same either way: its turn's
        seed seeds its envs and its own sampling and shuffling generator."""
        together: dict[Any, list[int]] = {}
        for i, agent in enumerate(agents):
            together.setdefault(agent.learn_step if stacked else i, []).append(i)
        turns: list[Turn | None] = [None] * len(agents)
        for places in together.values():
            done = self._train([agents[i] for i in places], [seeds[i] for i in places], steps, stop)
            if done is None:
                return None
            for i, turn in zip(places, done, strict=True):
                turns[i] = turn
        return turns

    def _train(
        self, agents: list[IPPO], seeds: list[int], steps: int, stop: Any
    ) -> list[Turn] | None:
        seed_everything(seeds[0])
        trainers = self.trainers[: len(agents)]
        obs, infos, firsts = [], [], []
        for t, agent, seed in zip(trainers, agents, seeds, strict=True):
            t.use_agent(agent)
            t.generator.manual_seed(sampling_seed(seed))
            firsts.append(agent.steps[-1])
            t.progress = Progress(env_steps=agent.steps[-1])
            o, i = t.env.reset(seed=seed)
            obs.append(o)
            infos.append(i)
        rows: list[list[dict[str, Any]]] = [[] for _ in agents]
        start = time.perf_counter()
        while trainers[0].progress.env_steps - firsts[0] < steps:
            t0 = time.perf_counter()
            if collect_together(trainers, obs, infos, stop) is None:
                return None
            metrics = update_together(trainers, self.trainers[len(trainers) :])
            for t, m, out in zip(trainers, metrics, rows, strict=True):
                t._check_finite_metrics(m)
                t.progress.updates += 1
                row = t._row(m, time.perf_counter() - start, t0)
                row["member_steps"] = row.pop("env_steps")
                del row["update"]
                out.append(row)
        turns = []
        for t, agent, first, out in zip(trainers, agents, firsts, rows, strict=True):
            result = run_episodes(
                agent,
                self.eval_env,
                self.cfg.hpo.eval_loop,
                deterministic=True,
                seed=self.cfg.seed + EVAL_SEED_OFFSET,
            )
            turns.append(Turn(out, float(result.summed.mean()), t.progress.env_steps - first))
        return turns

    def close(self) -> None:
        for trainer in self.trainers:
            trainer.close()
        self.eval_env.close()
