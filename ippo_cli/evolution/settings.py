"""`hpo=evolution` settings: range checks, and the selection and mutation objects they
configure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ippo_cli.evolution.hyperparameters import MUTABLE_HYPERPARAMETERS, HyperparameterConfig
from ippo_cli.evolution.mutations import Mutations
from ippo_cli.evolution.tournament import TournamentSelection

RANGE_FIELDS = {"min", "max", "shrink_factor", "grow_factor"}
PROBABILITIES = ("no_mut", "arch_mut", "new_layer", "params_mut", "act_mut", "rl_hp_mut")
# Seeds of the selection and mutation generators, apart from the run's other streams.
TOURNAMENT_SEED_OFFSET = 2_000_000
MUTATION_SEED_OFFSET = 3_000_000


def validate_evolution(h: Any, need: Callable[[bool, str, Any, str], None]) -> None:
    """Refuse bad `hpo.*` values, naming the key (``need(ok, key, value, rule)``)."""
    need(h.population_size >= 1, "hpo.population_size", h.population_size, "must be >= 1")
    need(h.evo_steps >= 1, "hpo.evo_steps", h.evo_steps, "must be >= 1")
    need(h.eval_loop >= 1, "hpo.eval_loop", h.eval_loop, "must be >= 1")
    need(
        1 <= h.tournament_size <= h.population_size,
        "hpo.tournament_size",
        h.tournament_size,
        f"must be in [1, hpo.population_size] = [1, {h.population_size}]",
    )
    for name in PROBABILITIES:
        need(0 <= h[name] <= 1, f"hpo.{name}", h[name], "must be a probability in [0, 1]")
    kinds = ("no_mut", "arch_mut", "params_mut", "act_mut", "rl_hp_mut")
    need(
        sum(h[k] for k in kinds) > 0,
        "hpo." + "+".join(kinds),
        sum(h[k] for k in kinds),
        "the mutation probabilities must not sum to zero",
    )
    need(h.mutation_sd >= 0, "hpo.mutation_sd", h.mutation_sd, "must be >= 0")
    for name, r in h.hp_config.items():
        key = f"hpo.hp_config.{name}"
        need(
            name in MUTABLE_HYPERPARAMETERS,
            key,
            r,
            f"unknown hyperparameter; mutable: {', '.join(MUTABLE_HYPERPARAMETERS)}",
        )
        fields = set(r) if isinstance(r, Mapping | DictConfig) else set()
        need(
            {"min", "max"} <= fields <= RANGE_FIELDS,
            key,
            r,
            "give {min: ..., max: ...} (optional shrink_factor, grow_factor)",
        )
        r = {"shrink_factor": 0.8, "grow_factor": 1.2, **r}
        for field in RANGE_FIELDS:
            value = r[field]
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            need(is_number, f"{key}.{field}", value, "must be a number")
        need(r["min"] <= r["max"], f"{key}.min", r["min"], f"must be <= {key}.max ({r['max']})")
        need(
            r["min"] > 0 or name not in ("lr", "batch_size", "learn_step", "update_epochs"),
            f"{key}.min",
            r["min"],
            "must be > 0",
        )
        need(
            0 < r["shrink_factor"] <= 1,
            f"{key}.shrink_factor",
            r["shrink_factor"],
            "must be in (0, 1]",
        )
        need(r["grow_factor"] >= 1, f"{key}.grow_factor", r["grow_factor"], "must be >= 1")


def hp_config_of(h: Any) -> HyperparameterConfig:
    return HyperparameterConfig.from_ranges(OmegaConf.to_container(h.hp_config, resolve=True))


def tournament_of(h: Any, seed: int) -> TournamentSelection:
    return TournamentSelection(
        h.tournament_size,
        h.elitism,
        h.population_size,
        eval_loop=1,  # each evaluation's fitness already averages hpo.eval_loop episodes
        rand_seed=seed + TOURNAMENT_SEED_OFFSET,
    )


def mutations_of(h: Any, seed: int) -> Mutations:
    return Mutations(
        no_mutation=h.no_mut,
        architecture=h.arch_mut,
        new_layer_prob=h.new_layer,
        parameters=h.params_mut,
        activation=h.act_mut,
        rl_hp=h.rl_hp_mut,
        mutation_sd=h.mutation_sd,
        mutate_elite=not h.elitism,
        rand_seed=seed + MUTATION_SEED_OFFSET,
    )
