"""``simple_v3``: one agent, one landmark; the agent sees its velocity and the landmark
relative to it and is rewarded with minus its squared distance to the landmark."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import Batch, BatchedMPE, Body, Mark, positions
from ippo_cli.envs.mpe.draws import Uniform, draw_rows


class BatchedSimple(BatchedMPE):
    mpe2_name = "simple_v3"

    def __init__(
        self,
        num_envs: int,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        super().__init__(
            num_envs,
            [Body("agent_0", silent=True, collide=False)],
            [Mark(collide=False)],
            dim_c=0,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        at = positions(draw_rows(rng, len(rows), [Uniform(-1, 1, 2)] * 2))
        self.pos[rows], self.landmarks[rows] = at[:, :1], at[:, 1:]

    def _observations(self) -> Batch:
        obs = np.concatenate([self.vel[:, 0], self.landmarks[:, 0] - self.pos[:, 0]], axis=1)
        return {"agent_0": obs.astype(np.float32)}

    def _rewards(self) -> np.ndarray:
        return -np.sum(np.square(self.pos - self.landmarks), axis=2)
