"""``simple_tag_v3``: slower adversaries chase faster good agents among obstacles. Each agent
sees its velocity and position, the obstacles and the other agents relative to it (the
nearest ``num_*_neighbors``, zero-padded, when set) and the good agents' velocities; a good
agent loses 10 per adversary touching it and a penalty for leaving the arena, and every
adversary wins 10 per touching pair."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import (
    Batch,
    BatchedMPE,
    Body,
    Mark,
    bound_penalty,
    count,
    distance,
    flag,
    nearest_first,
    optional_positive_int,
    others,
    pick,
    positions,
)
from ippo_cli.envs.mpe.draws import Uniform, draw_rows

PREY_SPEED_AT_FIRST_STAGE = 0.5  # curriculum=True: good agents' max_speed and accel factor


class BatchedSimpleTag(BatchedMPE):
    mpe2_name = "simple_tag_v3"

    def __init__(
        self,
        num_envs: int,
        num_good: int = 1,
        num_adversaries: int = 3,
        num_obstacles: int = 2,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        curriculum: bool = False,
        terminate_on_success: bool = False,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
        **mpe2_kwargs: Any,
    ) -> None:
        self.num_good = count("env.kwargs.num_good", num_good, 1)
        self.num_adv = count("env.kwargs.num_adversaries", num_adversaries, 1)
        self.num_obstacles = count("env.kwargs.num_obstacles", num_obstacles, 0)
        # curriculum starts (and, as nothing advances it in training, stays) at slow prey.
        prey = PREY_SPEED_AT_FIRST_STAGE if flag("env.kwargs.curriculum", curriculum) else 1.0
        self.terminate_on_success = flag("env.kwargs.terminate_on_success", terminate_on_success)
        self.agent_neighbors = optional_positive_int(
            "env.kwargs.num_agent_neighbors", num_agent_neighbors
        )
        self.landmark_neighbors = optional_positive_int(
            "env.kwargs.num_landmark_neighbors", num_landmark_neighbors
        )
        n = self.num_adv + self.num_good
        self._others = others(n)
        self._adversary = np.arange(n) < self.num_adv
        bodies = [
            Body(f"adversary_{i}", silent=True, size=0.075, accel=3.0, max_speed=1.0)
            for i in range(self.num_adv)
        ] + [
            Body(f"agent_{i}", silent=True, size=0.05, accel=4.0 * prey, max_speed=1.3 * prey)
            for i in range(self.num_good)
        ]
        self._sizes = np.array([b.size for b in bodies])
        super().__init__(
            num_envs,
            bodies,
            [Mark(collide=True, size=0.2)] * self.num_obstacles,
            dim_c=2,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        n = len(self.possible_agents)
        program = [Uniform(-1, 1, 2)] * n + [Uniform(-0.9, 0.9, 2)] * self.num_obstacles
        at = positions(draw_rows(rng, len(rows), program))
        self.pos[rows], self.landmarks[rows] = at[:, :n], at[:, n:]

    def _observations(self) -> Batch:
        n = len(self.possible_agents)
        to_landmarks = self.landmarks[:, None] - self.pos[:, :, None]
        to_agents = self.pos[:, None] - self.pos[:, :, None]  # [e, i, j] = pos_j - pos_i
        to_others = to_agents[:, np.arange(n)[:, None], self._others]
        good_other = ~self._adversary[self._others]  # [i, j]: i's j-th other is good
        near = nearest_first(to_others, self.agent_neighbors)
        common = np.concatenate(
            [
                self.vel,
                self.pos,
                pick(
                    to_landmarks,
                    nearest_first(to_landmarks, self.landmark_neighbors),
                    self.landmark_neighbors,
                ),
                pick(to_others, near, self.agent_neighbors),
            ],
            axis=2,
        )
        vel_others = self.vel[:, self._others]
        obs = {}
        for i, a in enumerate(self.possible_agents):
            if self.agent_neighbors is None:
                seen_vel = vel_others[:, i, good_other[i]].reshape(self.num_envs, -1)
            else:
                good_vel = vel_others[:, i] * good_other[i, :, None]
                seen_vel = pick(good_vel, near[:, i], self.agent_neighbors)
            obs[a] = np.concatenate([common[:, i], seen_vel], axis=1).astype(np.float32)
        return obs

    def _caught(self) -> np.ndarray:
        """``[e, adversary, good agent]``: touching."""
        adv, good = self.pos[:, : self.num_adv], self.pos[:, self.num_adv :]
        reach = self._sizes[: self.num_adv, None] + self._sizes[None, self.num_adv :]
        return distance(adv[:, :, None], good[:, None]) < reach

    def _rewards(self) -> np.ndarray:
        caught = self._caught()
        good = -10.0 * caught.sum(axis=1) - bound_penalty(self.pos[:, self.num_adv :])
        adversary = 10.0 * caught.sum(axis=(1, 2))
        return np.concatenate([np.repeat(adversary[:, None], self.num_adv, 1), good], axis=1)

    def _terminal(self) -> np.ndarray:
        if not self.terminate_on_success:
            return super()._terminal()
        return self._caught().any(axis=1).all(axis=1)
