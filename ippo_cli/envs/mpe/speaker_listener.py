"""``simple_speaker_listener_v4``: the speaker (immovable) sees the goal landmark's colour and
says a 3-vector; the listener (silent) sees its velocity, the landmarks relative to it and the
message; both are rewarded with minus the listener's squared distance to the goal."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import Batch, BatchedMPE, Body, Mark
from ippo_cli.envs.mpe.draws import Integers, Uniform, draw_rows


class BatchedSpeakerListener(BatchedMPE):
    mpe2_name = "simple_speaker_listener_v4"
    LANDMARK_COLORS = np.array([[0.65, 0.15, 0.15], [0.15, 0.65, 0.15], [0.15, 0.15, 0.65]])

    def __init__(
        self,
        num_envs: int,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        super().__init__(
            num_envs,
            [
                Body("speaker_0", movable=False, collide=False, size=0.075),
                Body("listener_0", silent=True, collide=False, size=0.075),
            ],
            [Mark(collide=False, size=0.04)] * 3,
            dim_c=3,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
            extra_arrays={"goal": ((), np.int64)},
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        goal, *at = draw_rows(rng, len(rows), [Integers(3)] + [Uniform(-1, 1, 2)] * 5)
        self.goal[rows] = goal
        self.pos[rows] = np.stack(at[:2], axis=1)
        self.landmarks[rows] = np.stack(at[2:], axis=1)

    def _observations(self) -> Batch:
        relative = self.landmarks - self.pos[:, 1:2]
        listener = np.concatenate(
            [self.vel[:, 1], relative.reshape(self.num_envs, -1), self.comm[:, 0]], axis=1
        )
        return {
            "speaker_0": self.LANDMARK_COLORS[self.goal].astype(np.float32),
            "listener_0": listener.astype(np.float32),
        }

    def _rewards(self) -> np.ndarray:
        goal = self.landmarks[np.arange(self.num_envs), self.goal]
        reward = -np.sum(np.square(self.pos[:, 1] - goal), axis=1)
        return np.stack([reward, reward], axis=1)
