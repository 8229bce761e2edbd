"""``simple_spread_v3``: N agents cover N landmarks. Each agent sees its velocity and position,
the landmarks and the other agents relative to it (the nearest ``num_*_neighbors`` of them,
zero-padded, when set) and the others' (silent) messages; its reward mixes the shared coverage
reward (minus the sum over landmarks of the nearest agent's distance) and its own collision
penalty by ``local_ratio``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import (
    Batch,
    BatchedMPE,
    Body,
    Mark,
    distance,
    flag,
    nearest_first,
    optional_positive_int,
    others,
    pick,
    positive_int,
    ratio,
)
from ippo_cli.envs.mpe.draws import Uniform, draw_rows

CAPTURE_RADIUS = 0.1  # a landmark is covered by an agent this close (terminate_on_success)


class BatchedSimpleSpread(BatchedMPE):
    mpe2_name = "simple_spread_v3"
    SIZE = 0.15  # agent radius; landmarks do not collide

    def __init__(
        self,
        num_envs: int,
        N: int = 3,
        local_ratio: float = 0.5,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        curriculum: bool = False,
        terminate_on_success: bool = False,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
        **mpe2_kwargs: Any,
    ) -> None:
        self.n = positive_int("env.kwargs.N", N)
        self.local_ratio = ratio("env.kwargs.local_ratio", local_ratio)
        # curriculum starts (and, as nothing advances it in training, stays) at the stage
        # without collision penalty.
        self.collision_penalty = not flag("env.kwargs.curriculum", curriculum)
        self.terminate_on_success = flag("env.kwargs.terminate_on_success", terminate_on_success)
        self.agent_neighbors = optional_positive_int(
            "env.kwargs.num_agent_neighbors", num_agent_neighbors
        )
        self.landmark_neighbors = optional_positive_int(
            "env.kwargs.num_landmark_neighbors", num_landmark_neighbors
        )
        self._others = others(self.n)
        super().__init__(
            num_envs,
            [Body(f"agent_{i}", silent=True, size=self.SIZE) for i in range(self.n)],
            [Mark(collide=False)] * self.n,
            dim_c=2,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        at = draw_rows(rng, len(rows), [Uniform(-1, 1, 2)] * (2 * self.n))
        self.pos[rows] = np.stack(at[: self.n], axis=1)
        self.landmarks[rows] = np.stack(at[self.n :], axis=1)

    def _observations(self) -> Batch:
        to_landmarks = self.landmarks[:, None] - self.pos[:, :, None]
        to_agents = self.pos[:, None] - self.pos[:, :, None]  # [e, i, j] = pos_j - pos_i
        rows = np.arange(self.n)[:, None]
        to_others = to_agents[:, rows, self._others]
        comm_others = self.comm[:, self._others]
        near_landmarks = nearest_first(to_landmarks, self.landmark_neighbors)
        near_others = nearest_first(to_others, self.agent_neighbors)
        obs = np.concatenate(
            [
                self.vel,
                self.pos,
                pick(to_landmarks, near_landmarks, self.landmark_neighbors),
                pick(to_others, near_others, self.agent_neighbors),
                pick(comm_others, near_others, self.agent_neighbors),
            ],
            axis=2,
        ).astype(np.float32)
        return {a: obs[:, i] for i, a in enumerate(self.possible_agents)}

    def _nearest_agent(self) -> np.ndarray:
        """``[e, landmark]``: the distance of the agent nearest to each landmark."""
        return distance(self.pos[:, :, None], self.landmarks[:, None]).min(axis=1)

    def _rewards(self) -> np.ndarray:
        coverage = -self._nearest_agent().sum(axis=1)
        own = np.zeros((self.num_envs, self.n))
        if self.collision_penalty:
            touching = distance(self.pos[:, :, None], self.pos[:, None]) < 2 * self.SIZE
            own = -(touching.sum(axis=2) - 1.0)  # every agent touches itself
        return coverage[:, None] * (1 - self.local_ratio) + own * self.local_ratio

    def _terminal(self) -> np.ndarray:
        if not self.terminate_on_success:
            return super()._terminal()
        return (self._nearest_agent() < CAPTURE_RADIUS).all(axis=1)
