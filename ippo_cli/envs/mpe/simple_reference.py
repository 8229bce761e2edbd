"""``simple_reference_v3``: two agents, each wanting the other at a landmark only it knows;
both move and speak. Each sees its velocity, the landmarks relative to it, the colour of the
landmark it wants its partner at and its partner's message; its reward mixes minus its
partner's distance to that landmark with the pair's mean by ``local_ratio``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import Batch, BatchedMPE, Body, Mark, distance, positions, ratio
from ippo_cli.envs.mpe.draws import Integers, Uniform, draw_rows

LANDMARK_COLORS = np.array([[0.75, 0.25, 0.25], [0.25, 0.75, 0.25], [0.25, 0.25, 0.75]])


class BatchedSimpleReference(BatchedMPE):
    mpe2_name = "simple_reference_v3"

    def __init__(
        self,
        num_envs: int,
        local_ratio: float = 0.5,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        self.local_ratio = ratio("env.kwargs.local_ratio", local_ratio)
        super().__init__(
            num_envs,
            [Body(f"agent_{i}", collide=False) for i in range(2)],
            [Mark(collide=False)] * 3,
            dim_c=10,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
            extra_arrays={"goal": ((2,), np.int64)},  # goal[:, i]: where i wants its partner
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        program = [Integers(3), Integers(3)] + [Uniform(-1, 1, 2)] * 5
        first, second, *at = draw_rows(rng, len(rows), program)
        self.goal[rows] = np.stack([first, second], axis=1)
        at = positions(at)
        self.pos[rows], self.landmarks[rows] = at[:, :2], at[:, 2:]

    def _observations(self) -> Batch:
        n = self.num_envs
        obs = {}
        for i, a in enumerate(self.possible_agents):
            parts = [
                self.vel[:, i],
                (self.landmarks - self.pos[:, i, None]).reshape(n, -1),
                LANDMARK_COLORS[self.goal[:, i]],
                self.comm[:, 1 - i],
            ]
            obs[a] = np.concatenate(parts, axis=1).astype(np.float32)
        return obs

    def _rewards(self) -> np.ndarray:
        wanted = np.take_along_axis(self.landmarks, self.goal[..., None], axis=1)
        partner = self.pos[:, ::-1]
        own = -distance(partner, wanted)
        mean = own.sum(axis=1) / 2
        return mean[:, None] * (1 - self.local_ratio) + own * self.local_ratio
