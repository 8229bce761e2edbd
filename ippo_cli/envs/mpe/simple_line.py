"""``simple_line_v1``: N agents line up evenly between two landmarks 1.25 apart. Each sees
its velocity, position and both landmarks relative to it; all share minus the mean distance
(clipped to 2) between agents and line slots under the best matching."""

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
    matched_distances,
    positions,
    positive_int,
)
from ippo_cli.envs.mpe.draws import Uniform, draw_rows

LENGTH = 1.25  # the line's length
DONE = 0.05  # terminate_on_success: every agent this close to its slot


class BatchedSimpleLine(BatchedMPE):
    mpe2_name = "simple_line_v1"

    def __init__(
        self,
        num_envs: int,
        N: int = 4,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        terminate_on_success: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        self.n = positive_int("env.kwargs.N", N)
        self.terminate_on_success = flag("env.kwargs.terminate_on_success", terminate_on_success)
        super().__init__(
            num_envs,
            [Body(f"agent_{i}", silent=True, size=0.03) for i in range(self.n)],
            [Mark(collide=False, size=0.02)] * 2,
            dim_c=0,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
            extra_arrays={"slots": ((self.n, 2), np.float64)},
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        program = [Uniform(-1, 1, 2)] * self.n + [Uniform(-0.25, 0.25, 2), Uniform(0, 2 * np.pi)]
        *at, theta = draw_rows(rng, len(rows), program)
        agents, start = positions(at[: self.n]), at[self.n]
        # mpe2 turns the line by 5 degrees until its far end is inside the arena.
        theta = theta.copy()
        direction = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        end = start + LENGTH * direction
        outside = ~((np.abs(end[:, 0]) < 1.0) & (np.abs(end[:, 1]) < 1.0))
        while outside.any():
            theta[outside] += np.radians(5)
            direction[outside] = np.stack([np.cos(theta), np.sin(theta)], axis=1)[outside]
            end[outside] = start[outside] + LENGTH * direction[outside]
            outside = ~((np.abs(end[:, 0]) < 1.0) & (np.abs(end[:, 1]) < 1.0))
        self.pos[rows] = agents
        self.landmarks[rows] = np.stack([start, end], axis=1)
        gap = LENGTH / (self.n - 1) if self.n > 1 else 0.0
        steps = np.arange(self.n)[:, None] * gap  # mpe2: start + i * gap * direction
        self.slots[rows] = start[:, None] + steps[None] * direction[:, None]

    def _observations(self) -> Batch:
        to_landmarks = (self.landmarks[:, None] - self.pos[:, :, None]).reshape(
            self.num_envs, self.n, -1
        )
        obs = np.concatenate([self.vel, self.pos, to_landmarks], axis=2).astype(np.float32)
        return {a: obs[:, i] for i, a in enumerate(self.possible_agents)}

    def _matched(self) -> np.ndarray:
        return matched_distances(distance(self.pos[:, :, None], self.slots[:, None]))

    def _rewards(self) -> np.ndarray:
        shared = -np.mean(np.clip(self._matched(), 0, 2), axis=1)
        return np.repeat(shared[:, None], self.n, axis=1)

    def _terminal(self) -> np.ndarray:
        if not self.terminate_on_success:
            return super()._terminal()
        return (self._matched() < DONE).all(axis=1)
