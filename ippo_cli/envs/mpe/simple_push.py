"""``simple_push_v3``: a good agent knows which of two landmarks is the goal and is rewarded
for being near it; the adversary does not know it and is rewarded for keeping the good agent
away while being near the goal itself. They collide."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import Batch, BatchedMPE, Body, Mark, distance, positions
from ippo_cli.envs.mpe.draws import Integers, Uniform, draw_rows

LANDMARK_COLORS = np.array([[0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
AGENT_COLORS = np.array([[0.25, 0.75, 0.25], [0.25, 0.25, 0.75]])  # by goal


class BatchedSimplePush(BatchedMPE):
    mpe2_name = "simple_push_v3"

    def __init__(
        self,
        num_envs: int,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        super().__init__(
            num_envs,
            [Body("adversary_0", silent=True), Body("agent_0", silent=True)],
            [Mark(collide=False)] * 2,
            dim_c=2,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
            extra_arrays={"goal": ((), np.int64)},
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        goal, *at = draw_rows(rng, len(rows), [Integers(2)] + [Uniform(-1, 1, 2)] * 4)
        self.goal[rows] = goal
        at = positions(at)
        self.pos[rows], self.landmarks[rows] = at[:, :2], at[:, 2:]

    def _goal_pos(self) -> np.ndarray:
        return self.landmarks[np.arange(self.num_envs), self.goal]

    def _observations(self) -> Batch:
        n = self.num_envs
        adv, good = self.pos[:, 0], self.pos[:, 1]
        colors = np.broadcast_to(LANDMARK_COLORS.reshape(1, -1), (n, 6))
        agent = np.concatenate(
            [
                self.vel[:, 1],
                self._goal_pos() - good,
                AGENT_COLORS[self.goal],
                (self.landmarks - good[:, None]).reshape(n, -1),
                colors,
                adv - good,
            ],
            axis=1,
        )
        adversary = np.concatenate(
            [self.vel[:, 0], (self.landmarks - adv[:, None]).reshape(n, -1), good - adv], axis=1
        )
        return {"adversary_0": adversary.astype(np.float32), "agent_0": agent.astype(np.float32)}

    def _rewards(self) -> np.ndarray:
        goal = self._goal_pos()
        good = -distance(self.pos[:, 1], goal)
        adversary = -good - distance(goal, self.pos[:, 0])
        return np.stack([adversary, good], axis=1)
