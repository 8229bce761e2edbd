"""``simple_formation_v1``: N agents form a regular polygon of radius 0.5 around a landmark,
its first corner at the smallest of their angles around it. Each sees its velocity, position
and the landmark relative to it; all share minus the mean distance (clipped to 2) between
agents and corners under the best matching."""

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

RADIUS = 0.5
DONE = 0.05  # terminate_on_success: every agent this close to its corner


class BatchedSimpleFormation(BatchedMPE):
    mpe2_name = "simple_formation_v1"

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
            [Body(f"agent_{i}", silent=True, size=0.05) for i in range(self.n)],
            [Mark(collide=False, size=0.03)],
            dim_c=0,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        program = [Uniform(-1, 1, 2)] * self.n + [Uniform(-0.5, 0.5, 2)]
        at = positions(draw_rows(rng, len(rows), program))
        self.pos[rows], self.landmarks[rows] = at[:, : self.n], at[:, self.n :]

    def _observations(self) -> Batch:
        to_landmark = self.landmarks - self.pos
        obs = np.concatenate([self.vel, self.pos, to_landmark], axis=2).astype(np.float32)
        return {a: obs[:, i] for i, a in enumerate(self.possible_agents)}

    def _matched(self) -> np.ndarray:
        centre = self.landmarks[:, 0]
        relative = self.pos - centre[:, None]
        angle = np.arctan2(relative[..., 1], relative[..., 0])
        angle = np.where(angle < 0, angle + 2 * np.pi, angle)
        corner = angle.min(axis=1)[:, None] + np.arange(self.n) * ((2 * np.pi) / self.n)
        offsets = RADIUS * np.stack([np.cos(corner), np.sin(corner)], axis=2)
        corners = centre[:, None] + offsets
        return matched_distances(distance(self.pos[:, :, None], corners[:, None]))

    def _rewards(self) -> np.ndarray:
        shared = -np.mean(np.clip(self._matched(), 0, 2), axis=1)
        return np.repeat(shared[:, None], self.n, axis=1)

    def _terminal(self) -> np.ndarray:
        if not self.terminate_on_success:
            return super()._terminal()
        return (self._matched() < DONE).all(axis=1)
