"""``simple_world_comm_v3``: simple_tag with food, forests and a speaking leader. Adversaries
(led by ``leadadversary_0``, who alone speaks and sees everyone) chase good agents, who gain by
touching food; an agent inside a forest is seen only by the leader and by agents in the same
forest, and one outside is unseen from inside."""

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
    others,
    positions,
)
from ippo_cli.envs.mpe.draws import Uniform, draw_rows

FOOD_SIZE, FOREST_SIZE = 0.03, 0.3


class BatchedSimpleWorldComm(BatchedMPE):
    mpe2_name = "simple_world_comm_v3"

    def __init__(
        self,
        num_envs: int,
        num_good: int = 2,
        num_adversaries: int = 4,
        num_obstacles: int = 1,
        num_food: int = 2,
        max_cycles: int = 25,
        num_forests: int = 2,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        self.num_good = count("env.kwargs.num_good", num_good, 1)
        self.num_adv = count("env.kwargs.num_adversaries", num_adversaries, 1)
        self.num_obstacles = count("env.kwargs.num_obstacles", num_obstacles, 0)
        self.num_food = count("env.kwargs.num_food", num_food, 1)
        self.num_forests = count("env.kwargs.num_forests", num_forests, 0)
        n = self.num_adv + self.num_good
        self._others = others(n)
        self._adversary = np.arange(n) < self.num_adv
        bodies = (
            [Body("leadadversary_0", size=0.075, accel=3.0, max_speed=1.0)]
            + [
                Body(f"adversary_{i}", silent=True, size=0.075, accel=3.0, max_speed=1.0)
                for i in range(self.num_adv - 1)
            ]
            + [
                Body(f"agent_{i}", silent=True, size=0.045, accel=4.0, max_speed=1.3)
                for i in range(self.num_good)
            ]
        )
        self._sizes = np.array([b.size for b in bodies])
        food = self.num_obstacles + np.arange(self.num_food)
        self._food, self._forests = food, food[-1] + 1 + np.arange(self.num_forests)
        super().__init__(
            num_envs,
            bodies,
            [Mark(collide=True, size=0.2)] * self.num_obstacles
            + [Mark(collide=False, size=FOOD_SIZE)] * self.num_food
            + [Mark(collide=False, size=FOREST_SIZE)] * self.num_forests,
            dim_c=4,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
        )

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        # mpe2 places every landmark, then the food and the forests once more.
        n, marks = len(self.possible_agents), self.landmarks.shape[1]
        place = Uniform(-0.9, 0.9, 2)
        program = [Uniform(-1, 1, 2)] * n + [place] * (marks + self.num_food + self.num_forests)
        at = positions(draw_rows(rng, len(rows), program))
        self.pos[rows] = at[:, :n]
        landmarks = at[:, n : n + marks]
        again = at[:, n + marks :]
        landmarks[:, self._food] = again[:, : self.num_food]
        landmarks[:, self._forests] = again[:, self.num_food :]
        self.landmarks[rows] = landmarks

    def _observations(self) -> Batch:
        n, envs = len(self.possible_agents), self.num_envs
        forests = self.landmarks[:, self._forests]
        inside = distance(self.pos[:, :, None], forests[:, None]) < (
            self._sizes[:, None] + FOREST_SIZE
        )  # [e, agent, forest]
        hidden = inside.any(axis=2)
        rows = np.arange(n)[:, None]
        # [e, i, j]: agent i and its j-th other share a forest
        same_forest = (inside[:, :, None, :] & inside[:, self._others]).any(axis=-1)
        both_out = ~hidden[:, :, None] & ~hidden[:, self._others]
        visible = same_forest | both_out
        visible[:, 0] = True  # the leader sees everyone
        to_others = (self.pos[:, None] - self.pos[:, :, None])[:, rows, self._others]
        other_pos = np.where(visible[..., None], to_others, 0.0)
        good_other = ~self._adversary[self._others]
        other_vel = np.where(visible[..., None], self.vel[:, self._others], 0.0)
        in_forest = np.where(inside, 1.0, -1.0)
        to_landmarks = (self.landmarks[:, None] - self.pos[:, :, None]).reshape(envs, n, -1)
        obs = {}
        for i, a in enumerate(self.possible_agents):
            seen_vel = other_vel[:, i, good_other[i]].reshape(envs, -1)
            head = [
                self.vel[:, i],
                self.pos[:, i],
                to_landmarks[:, i],
                other_pos[:, i].reshape(envs, -1),
            ]
            if self._adversary[i]:
                tail = [seen_vel, in_forest[:, i], self.comm[:, 0]]
            else:
                tail = [in_forest[:, i], seen_vel]
            obs[a] = np.concatenate(head + tail, axis=1).astype(np.float32)
        return obs

    def _rewards(self) -> np.ndarray:
        na = self.num_adv
        adv, good = self.pos[:, :na], self.pos[:, na:]
        sizes = self._sizes
        caught = distance(adv[:, :, None], good[:, None]) < sizes[:na, None] + sizes[None, na:]
        food = self.landmarks[:, self._food]
        to_food = distance(good[:, :, None], food[:, None])  # [e, good, food]
        eating = (to_food < sizes[na:, None] + FOOD_SIZE).sum(axis=2)
        good_rew = (
            -5.0 * caught.sum(axis=1)
            - 2 * bound_penalty(good)
            + 2.0 * eating
            - 0.05 * to_food.min(axis=2)
        )
        nearest_prey = distance(adv[:, :, None], good[:, None]).min(axis=2)
        adv_rew = -0.1 * nearest_prey + 5.0 * caught.sum(axis=(1, 2))[:, None]
        return np.concatenate([adv_rew, good_rew], axis=1)
