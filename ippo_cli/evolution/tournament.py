"""Tournament selection with elitism (the reference's ``TournamentSelection``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class TournamentSelection:
    """Keep the fittest agents of a population.

    An agent's fitness is the mean of its latest ``eval_loop`` entries of ``fitness``.
    With ``elitism`` the fittest agent (the elite) is kept as it is, first, with its
    index; every other place goes to the winner of a tournament among
    ``tournament_size`` agents drawn with replacement, cloned with a fresh index
    (one above the largest index so far). After :meth:`select`, ``parents`` holds the
    index each member of the new population was cloned from.
    """

    def __init__(
        self,
        tournament_size: int,
        elitism: bool,
        population_size: int,
        eval_loop: int = 1,
        rand_seed: int | None = None,
    ) -> None:
        if not 1 <= tournament_size <= population_size:
            raise ValueError(
                f"tournament_size={tournament_size} must be in [1, population_size="
                f"{population_size}]"
            )
        self.tournament_size = tournament_size
        self.elitism = elitism
        self.population_size = population_size
        self.eval_loop = eval_loop
        self.rng = np.random.default_rng(rand_seed)
        self.parents: list[int] = []

    def fitness(self, agent: Any) -> float:
        if not agent.fitness:
            raise ValueError(f"agent {agent.index} has no fitness yet; evaluate it first")
        return float(np.mean(agent.fitness[-self.eval_loop :]))

    def _tournament(self, fitness: np.ndarray) -> int:
        entrants = self.rng.integers(len(fitness), size=self.tournament_size)
        return int(entrants[np.argmax(fitness[entrants])])

    def select(self, population: Sequence[Any]) -> tuple[Any, list[Any]]:
        """(the elite, the next population of ``population_size`` agents)."""
        fitness = np.array([self.fitness(a) for a in population])
        elite = population[int(np.argmax(fitness))]
        next_index = max(a.index for a in population) + 1
        new_population = [elite.clone()] if self.elitism else []
        self.parents = [elite.index] if self.elitism else []
        while len(new_population) < self.population_size:
            winner = population[self._tournament(fitness)]
            new_population.append(winner.clone(index=next_index))
            self.parents.append(winner.index)
            next_index += 1
        return elite, new_population
