"""`ippo train hpo=evolution`: a population of IPPO agents trained in turns, evaluated,
selected by tournament and mutated, until ``algorithm.total_steps`` env steps (summed
over the population) are used or ``hpo.target_score`` is reached.

Metrics go to ``metrics.jsonl``: each update of each member (``generation``,
``member`` and the usual training metrics), each member at each evolution (index,
lineage, last mutation, hyperparameters, architecture, fitness), and one row per
evolution (``eval/return`` is the best fitness) which also goes to wandb with every
member's fitness and hyperparameters by place in the population. ``checkpoints/last.pt``
holds the whole population after each evolution (``resume=`` continues from it, and
``ippo eval`` evaluates its elite); ``checkpoints/elite.pt`` holds the elite alone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ippo_cli import checkpoint, distributed
from ippo_cli.envs.factory import env_fn
from ippo_cli.evolution.member import MemberTrainer, Turn, turn_seed
from ippo_cli.evolution.report import member_row, plot_population, print_population
from ippo_cli.evolution.settings import hp_config_of, mutations_of, tournament_of
from ippo_cli.files import write_text_atomic
from ippo_cli.ippo import IPPO
from ippo_cli.loggers import RunLogger
from ippo_cli.run_control import StopRequest
from ippo_cli.trainer import (
    build_agent,
    compile_mode_of,
    resolve_device,
    seed_everything,
)

log = logging.getLogger("ippo")

PARALLEL_GONE = (
    "hpo.parallel is gone and ignored: the population trains in this process, as one stack "
    "(hpo.stacked=true, the default) or member by member; remove hpo.parallel"
)
RECENT_FITNESS = 10  # evaluations per member that hpo.target_score is compared with


@dataclass
class EvolutionState:
    """Counters and records a population checkpoint carries (plain data)."""

    generation: int = 0
    env_steps: int = 0
    wall_time: float = 0.0
    best_fitness: float | None = None
    lineage: dict[str, list[int]] = field(default_factory=dict)  # index -> founder..index
    history: list[dict[str, Any]] = field(default_factory=list)  # member rows, all evolutions
    tournament_rng: dict[str, Any] = field(default_factory=dict)
    mutation_rng: dict[str, Any] = field(default_factory=dict)


class PopulationTrainer:
    """Owns the population, the selection and mutation, and the run directory."""

    def __init__(
        self, cfg: DictConfig, run_dir: Path, resume: dict[str, Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.resume = resume
        self.device = resolve_device(cfg.hardware.device)
        self.dist = distributed.Context()  # one process writes everything (not data-parallel)
        self.hp_config = hp_config_of(cfg.hpo)
        self.tournament = tournament_of(cfg.hpo, cfg.seed)
        self.mutations = mutations_of(cfg.hpo, cfg.seed)
        self.state = EvolutionState()
        self.population: list[IPPO] = []
        self.elite: IPPO | None = None
        self.logger: RunLogger | None = None
        self.member: MemberTrainer | None = None

    # ------------------------------------------------------------ population
    def _founders(self) -> list[IPPO]:
        """``population_size`` agents from the config, then a pre-training mutation
        (the first member keeps the configured hyperparameters when elitism is on)."""
        env = env_fn(self.cfg.env)()
        try:
            agents = list(env.possible_agents)
            spaces = (
                [env.observation_space(a) for a in agents],
                [env.action_space(a) for a in agents],
            )
        finally:
            env.close()
        seed_everything(self.cfg.seed)
        population = []
        mode = compile_mode_of(self.cfg, self.device)
        for i in range(self.cfg.hpo.population_size):
            agent = build_agent(self.cfg, *spaces, agents, self.device, mode)
            agent.index, agent.hp_config = i, self.hp_config
            population.append(agent)
            self.state.lineage[str(i)] = [i]
        return self.mutations.mutation(population, pre_training_mut=True)

    def _restore(self, data: dict[str, Any]) -> None:
        self.population = [IPPO.from_dict(m, self.device) for m in data["members"]]
        for agent in self.population:
            agent.hp_config = self.hp_config
        self.elite = IPPO.from_dict(data["agent"], self.device)
        self.state = EvolutionState(**data["evolution"])
        self.tournament.rng.bit_generator.state = self.state.tournament_rng
        self.mutations.rng.bit_generator.state = self.state.mutation_rng
        _drop_rows_after(self.run_dir / "metrics.jsonl", self.state.generation)

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        cfg, hpo = self.cfg, self.cfg.hpo
        stop = StopRequest()
        start = time.perf_counter()
        wall_before = 0.0
        try:
            if hpo.parallel:
                log.warning(PARALLEL_GONE)
                print(f"ippo: warning: {PARALLEL_GONE}")
            slots = hpo.population_size if hpo.stacked else 1
            self.member = MemberTrainer(cfg, slots)
            if self.resume is not None:
                self._restore(self.resume)
            else:
                self.population = self._founders()
                self.elite = self.population[0]
                self.save()
            wall_before = self.state.wall_time
            wandb_id = (self.resume or {}).get("trainer", {}).get("wandb_id")
            config = OmegaConf.to_container(cfg, resolve=True)
            self.logger = RunLogger(self.run_dir, cfg.logger, config, run_id=wandb_id)
            while self.state.env_steps < cfg.algorithm.total_steps:
                turns = self._train_generation(stop)
                if turns is None:
                    break
                self.state.wall_time = wall_before + time.perf_counter() - start
                reached = self._record_generation(turns)
                self.elite, selected = self.tournament.select(self.population)
                self._update_lineage(selected)
                self.population = self.mutations.mutation(selected)
                self.save()
                if reached:
                    log.info("hpo.target_score=%s reached", hpo.target_score)
                    break
        finally:
            stop.restore()
            if self.state.history:
                plot_population(
                    self.state.history,
                    self.run_dir / "population.png",
                    title=f"{cfg.env.name}, seed {cfg.seed}, population {hpo.population_size}",
                )
                if self.logger is not None:
                    self.logger.log_image("population", self.run_dir / "population.png")
            self.close()
        if stop.requested:
            log.warning("stopped by a signal at %d env steps", self.state.env_steps)
        fitness = [r["fitness"] for r in self.state.history]
        return {
            "env_steps": self.state.env_steps,
            "wall_time": time.perf_counter() - start,
            "final_eval": self.elite.fitness[-1] if self.elite and self.elite.fitness else None,
            "best_eval": max(fitness) if fitness else None,
            "generations": self.state.generation,
            "elite": None if self.elite is None else self.elite.index,
            "run_dir": str(self.run_dir),
            "interrupted": stop.requested,
        }

    def close(self) -> None:
        if self.member is not None:
            self.member.close()
            self.member = None
        if self.logger is not None:
            self.logger.close()

    # ------------------------------------------------------------ evolution
    def _train_generation(self, stop: StopRequest) -> list[Turn] | None:
        """Every member's turn; None when a stop was requested (the generation is
        dropped: last.pt holds the population before it)."""
        generation = self.state.generation + 1
        steps = self.cfg.hpo.evo_steps
        seeds = [turn_seed(self.cfg.seed, generation, s) for s in range(len(self.population))]
        return self.member.turns(self.population, steps, seeds, stop, self.cfg.hpo.stacked)

    def _record_generation(self, turns: list[Turn]) -> bool:
        """Log every update and member of this generation, print the table; returns
        whether every member's recent fitness reaches hpo.target_score."""
        state = self.state
        state.generation += 1
        g = state.generation
        for agent, turn in zip(self.population, turns, strict=True):
            first = agent.steps[-1] - turn.steps
            for row in turn.rows:
                env_steps = state.env_steps + row["member_steps"] - first
                self.logger.log(
                    {"generation": g, "member": agent.index, "env_steps": env_steps, **row},
                    to_wandb=False,
                )
            state.env_steps += turn.steps
            agent.fitness.append(turn.fitness)
        rows = []
        for slot, agent in enumerate(self.population):
            row = {
                "generation": g,
                "env_steps": state.env_steps,
                **member_row(agent, slot, state.lineage[str(agent.index)]),
            }
            self.logger.log(row, to_wandb=False)
            rows.append(row)
        state.history.extend(rows)
        best = max(rows, key=lambda r: r["fitness"])
        if state.best_fitness is None or best["fitness"] > state.best_fitness:
            state.best_fitness = best["fitness"]
        summary: dict[str, Any] = {
            "generation": g,
            "env_steps": state.env_steps,
            "wall_time": state.wall_time,
            "eval/return": best["fitness"],
            "best_member": best["member"],
            "fitness/mean": float(np.mean([r["fitness"] for r in rows])),
        }
        for r in rows:
            slot = f"population/{r['slot']}"
            summary[f"{slot}/member"] = r["member"]
            summary[f"{slot}/fitness"] = r["fitness"]
            for key, value in r.items():
                if key.startswith("hp/"):
                    summary[f"{slot}/{key[3:]}"] = value
        self.logger.log(summary)
        print_population(rows, g, state.env_steps)
        target = self.cfg.hpo.target_score
        return target is not None and all(
            np.mean(a.fitness[-RECENT_FITNESS:]) >= target for a in self.population
        )

    def _update_lineage(self, selected: list[IPPO]) -> None:
        for agent, parent in zip(selected, self.tournament.parents, strict=True):
            if agent.index != parent:
                self.state.lineage[str(agent.index)] = [
                    *self.state.lineage[str(parent)],
                    agent.index,
                ]

    # ---------------------------------------------------------- checkpoints
    def payload(self) -> dict[str, Any]:
        """The population, the elite (as ``agent``, for `ippo eval`), config, state."""
        config = OmegaConf.to_container(self.cfg, resolve=True)
        config["resume"] = None
        self.state.tournament_rng = self.tournament.rng.bit_generator.state
        self.state.mutation_rng = self.mutations.rng.bit_generator.state
        return {
            "kind": "population",
            "agent": self.elite.to_dict(),
            "members": [agent.to_dict() for agent in self.population],
            "config": config,
            "evolution": asdict(self.state),
            "trainer": {
                "env_steps": self.state.env_steps,
                "wandb_id": None if self.logger is None else self.logger.wandb_id,
            },
        }

    def save(self) -> None:
        data = self.payload()
        checkpoint.save(self.ckpt_dir / "last.pt", data)
        elite = {k: data[k] for k in ("agent", "config", "trainer")}
        checkpoint.save(self.ckpt_dir / "elite.pt", {"kind": "elite", **elite})
        log.info("saved the population at %d env steps", self.state.env_steps)


def _drop_rows_after(path: Path, generation: int) -> None:
    """Drop metrics rows of generations after ``generation`` (a resumed run redoes them)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [line for line in lines if json.loads(line).get("generation", 0) <= generation]
    if len(keep) != len(lines):
        write_text_atomic(path, "".join(keep))
