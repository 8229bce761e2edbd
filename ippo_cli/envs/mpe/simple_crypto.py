"""``simple_crypto_v3``: Alice sees a goal and a key and speaks; Bob sees the key and hears
her; Eve only hears her. None moves. Bob and Alice are rewarded for Bob's message matching
the goal and Eve's not, Eve for hers matching it (a silent, all-zero message scores 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import Batch, BatchedMPE, Body, Mark
from ippo_cli.envs.mpe.draws import Integers, Uniform, draw_rows

EVE, BOB, ALICE = 0, 1, 2


class BatchedSimpleCrypto(BatchedMPE):
    mpe2_name = "simple_crypto_v3"

    def __init__(
        self,
        num_envs: int,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        super().__init__(
            num_envs,
            [Body(name, movable=False, collide=False) for name in ("eve_0", "bob_0", "alice_0")],
            [Mark(collide=False)] * 2,
            dim_c=4,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
            extra_arrays={"goal": ((), np.int64), "key": ((), np.int64)},
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        # Positions are drawn (and kept) as mpe2 does, though nothing observes them.
        program = [Integers(2), Integers(2)] + [Uniform(-1, 1, 2)] * 5
        goal, key, *at = draw_rows(rng, len(rows), program)
        self.goal[rows], self.key[rows] = goal, key
        at = np.stack(at, axis=1)
        self.pos[rows], self.landmarks[rows] = at[:, :3], at[:, 3:]

    def _observations(self) -> Batch:
        onehot = np.eye(self.dim_c)
        key, said = onehot[self.key], self.comm[:, ALICE]
        return {
            "eve_0": said.astype(np.float32),
            "bob_0": np.concatenate([key, said], axis=1).astype(np.float32),
            "alice_0": np.concatenate([onehot[self.goal], key], axis=1).astype(np.float32),
        }

    def _rewards(self) -> np.ndarray:
        goal = np.eye(self.dim_c)[self.goal]
        spoke = np.any(self.comm != 0, axis=2)
        error = np.where(spoke, np.sum(np.square(self.comm - goal[:, None]), axis=2), 0.0)
        good = error[:, EVE] - error[:, BOB]
        return np.stack([-error[:, EVE], good, good], axis=1)
