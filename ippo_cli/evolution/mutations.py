"""Mutations of a population of agents (the reference's ``Mutations``).

Each call of :meth:`Mutations.mutation` draws one kind of mutation per agent, with the
given relative probabilities: none, architecture (see
:mod:`ippo_cli.evolution.architecture`), parameter noise, activation, or one RL
hyperparameter of the agent's ``hp_config``. The kind is recorded in ``agent.mut``.
After any mutation every optimizer of the agent (actors and critics) is rebuilt over
the current parameters with the agent's current ``lr``, ``recompile`` is called (as in
the reference; a compiled learner follows new shapes by itself) and its mutation hooks
run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ippo_cli.evolution import architecture

NO_MUTATION = "None"


class Mutations:
    """Draw and apply one mutation per agent.

    ``no_mutation``, ``architecture``, ``parameters``, ``activation`` and ``rl_hp`` are
    relative probabilities (normalised to sum to 1); ``new_layer_prob`` is the share of
    architecture mutations that add or remove a layer rather than units. Parameter noise
    changes 10% of the entries of one weight tensor of each actor by
    ``N(0, mutation_sd * |w|)``. With ``mutate_elite=False`` the first agent of the
    population (the elite, after :class:`TournamentSelection`) is never mutated.
    """

    def __init__(
        self,
        no_mutation: float,
        architecture: float,
        new_layer_prob: float,
        parameters: float,
        activation: float,
        rl_hp: float,
        mutation_sd: float = 0.1,
        activation_selection: Sequence[str] = ("ReLU", "ELU", "GELU"),
        mutate_elite: bool = True,
        rand_seed: int | None = None,
    ) -> None:
        weights = np.array([no_mutation, architecture, parameters, activation, rl_hp], float)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"mutation probabilities {weights.tolist()} must be >= 0 and not all zero"
            )
        if not 0 <= new_layer_prob <= 1:
            raise ValueError(f"new_layer_prob={new_layer_prob} must be in [0, 1]")
        self.weights = weights
        self.new_layer_prob = new_layer_prob
        self.mutation_sd = mutation_sd
        self.activation_selection = list(activation_selection)
        self.mutate_elite = mutate_elite
        self.rng = np.random.default_rng(rand_seed)

    def mutation(self, population: list[Any], pre_training_mut: bool = False) -> list[Any]:
        """Mutate the agents in place (returns the population). ``pre_training_mut``
        leaves out "no mutation", to spread out a freshly built population."""
        kinds = (
            self.no_mutation,
            self.architecture_mutate,
            self.parameter_mutation,
            self.activation_mutation,
            self.rl_hyperparam_mutation,
        )
        weights = self.weights.copy()
        if pre_training_mut and weights[1:].sum() > 0:
            weights[0] = 0.0
        for i, agent in enumerate(population):
            if i == 0 and not self.mutate_elite:
                agent.mut = NO_MUTATION
                continue
            kind = kinds[int(self.rng.choice(len(kinds), p=weights / weights.sum()))]
            kind(agent)
            if agent.mut != NO_MUTATION:
                agent.reinit_optimizers()
                agent.recompile()
                for hook in agent.mutation_hooks:
                    hook()
        return population

    def no_mutation(self, agent: Any) -> None:
        agent.mut = NO_MUTATION

    def architecture_mutate(self, agent: Any) -> None:
        """One architecture change, applied to every actor and critic it fits."""
        layer, node = architecture.methods(next(iter(agent.actors.values())))
        choices = layer if layer and self.rng.random() < self.new_layer_prob else node
        method = choices[int(self.rng.integers(len(choices)))]
        u, v = self.rng.random(), self.rng.random()
        gen = self._torch_generator()
        changed = False
        for net in (*agent.actors.values(), *agent.critics.values()):
            if method in sum(architecture.methods(net), []):
                changed |= architecture.mutate(net, method, u, v, gen)
        agent.mut = f"arch.{method}" if changed else NO_MUTATION

    def parameter_mutation(self, agent: Any) -> None:
        gen = self._torch_generator()
        with torch.no_grad():
            for actor in agent.actors.values():
                weights = [p for p in actor.parameters() if p.dim() >= 2]
                flat = weights[int(self.rng.integers(len(weights)))].data.view(-1)
                idx = torch.randperm(flat.numel(), generator=gen)[: math.ceil(0.1 * flat.numel())]
                noise = torch.randn(len(idx), generator=gen).to(flat)
                flat[idx.to(flat.device)] += (
                    noise * self.mutation_sd * flat[idx.to(flat.device)].abs()
                )
        agent.mut = "params"

    def activation_mutation(self, agent: Any) -> None:
        current = next(iter(agent.actors.values())).init_config["net_config"]
        current = (current.get("head_config") or {}).get("activation", "ReLU")
        options = [a for a in self.activation_selection if a != current]
        if not options:
            agent.mut = NO_MUTATION
            return
        name = options[int(self.rng.integers(len(options)))]
        for net in (*agent.actors.values(), *agent.critics.values()):
            architecture.change_activation(net, name)
        agent.mut = f"act.{name}"

    def rl_hyperparam_mutation(self, agent: Any) -> None:
        """Grow or shrink one hyperparameter of ``agent.hp_config`` within its range
        (none without an hp_config: algorithm mutations are then disabled)."""
        if not agent.hp_config:
            agent.mut = NO_MUTATION
            return
        name = agent.hp_config.sample(self.rng)
        setattr(agent, name, agent.hp_config[name].mutate(getattr(agent, name), self.rng))
        agent.mut = f"rl_hp.{name}"

    def _torch_generator(self) -> torch.Generator:
        """New weights and noise come from the mutation seed, not torch's global RNG."""
        return torch.Generator().manual_seed(int(self.rng.integers(2**62)))
