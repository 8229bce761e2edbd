"""``simple_adversary_v3``: N good agents know which of N landmarks is the goal, the
adversary does not; the good agents are rewarded for the nearest of them being close to the
goal and the adversary far from it, the adversary for being close to it. With
``num_*_neighbors`` each agent sees only that many nearest landmarks / agents (zero-padded)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import (
    Batch,
    BatchedMPE,
    Body,
    Mark,
    distance,
    nearest_first,
    optional_positive_int,
    others,
    pick,
    positions,
    positive_int,
)
from ippo_cli.envs.mpe.draws import Integers, Uniform, draw_rows


class BatchedSimpleAdversary(BatchedMPE):
    mpe2_name = "simple_adversary_v3"

    def __init__(
        self,
        num_envs: int,
        N: int = 2,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
        **mpe2_kwargs: Any,
    ) -> None:
        self.n = positive_int("env.kwargs.N", N)
        self.agent_neighbors = optional_positive_int(
            "env.kwargs.num_agent_neighbors", num_agent_neighbors
        )
        self.landmark_neighbors = optional_positive_int(
            "env.kwargs.num_landmark_neighbors", num_landmark_neighbors
        )
        self._others = others(self.n + 1)
        super().__init__(
            num_envs,
            [Body("adversary_0", silent=True, collide=False, size=0.15)]
            + [Body(f"agent_{i}", silent=True, collide=False, size=0.15) for i in range(self.n)],
            [Mark(collide=False, size=0.08)] * self.n,
            dim_c=2,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
            extra_arrays={"goal": ((), np.int64)},
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        program = [Integers(self.n)] + [Uniform(-1, 1, 2)] * (2 * self.n + 1)
        goal, *at = draw_rows(rng, len(rows), program)
        self.goal[rows] = goal
        at = positions(at)
        self.pos[rows], self.landmarks[rows] = at[:, : self.n + 1], at[:, self.n + 1 :]

    def _goal_pos(self) -> np.ndarray:
        return self.landmarks[np.arange(self.num_envs), self.goal]

    def _observations(self) -> Batch:
        to_landmarks = self.landmarks[:, None] - self.pos[:, :, None]
        to_agents = self.pos[:, None] - self.pos[:, :, None]  # [e, i, j] = pos_j - pos_i
        to_others = to_agents[:, np.arange(self.n + 1)[:, None], self._others]
        seen = np.concatenate(
            [
                pick(
                    to_landmarks,
                    nearest_first(to_landmarks, self.landmark_neighbors),
                    self.landmark_neighbors,
                ),
                pick(
                    to_others, nearest_first(to_others, self.agent_neighbors), self.agent_neighbors
                ),
            ],
            axis=2,
        )
        to_goal = self._goal_pos()[:, None] - self.pos
        obs = {"adversary_0": seen[:, 0].astype(np.float32)}
        for i, a in enumerate(self.possible_agents[1:], start=1):
            obs[a] = np.concatenate([to_goal[:, i], seen[:, i]], axis=1).astype(np.float32)
        return obs

    def _rewards(self) -> np.ndarray:
        to_goal = distance(self.pos, self._goal_pos()[:, None])
        adversary = -to_goal[:, 0]
        good = -to_goal[:, 1:].min(axis=1) + to_goal[:, 0]
        return np.concatenate([adversary[:, None], np.repeat(good[:, None], self.n, 1)], axis=1)
