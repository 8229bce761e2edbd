"""``collect_treasure_v1``: collectors pick up treasures of ``num_deposits`` kinds and carry
each to the deposit (a heavier agent, also moving) of its kind; a picked treasure respawns at
the next step. Every agent sees its position and velocity (a collector also what it holds),
the other agents nearest first, and the treasures nearest first; all share +5 per pickup and
delivery, besides their own distance shaping and the collectors' collision penalty.

mpe2 draws respawns from a copy of an env's Generator taken as its episode starts; each row
keeps that copy as six numbers (PCG64's state) in ``respawn_rng``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ippo_cli.envs.mpe.core import Batch, BatchedMPE, Body, Mark, count, distance, others
from ippo_cli.envs.mpe.draws import Integers, Uniform, draw_rows_from_each_state

MAX_KINDS = 6  # mpe2's palette of deposit colours
TREASURE_SIZE = 0.025
BOUND = 0.95  # treasures start and respawn within [-BOUND, BOUND]
GONE = -999.0  # where mpe2 keeps a picked treasure
_MASK64 = (1 << 64) - 1


def _pack(state: dict) -> list[int]:
    s, inc = state["state"]["state"], state["state"]["inc"]
    return [s >> 64, s & _MASK64, inc >> 64, inc & _MASK64, state["has_uint32"], state["uinteger"]]


def _unpack(row: np.ndarray) -> np.random.Generator:
    s_hi, s_lo, inc_hi, inc_lo, has, kept = (int(x) for x in row)
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (s_hi << 64) | s_lo, "inc": (inc_hi << 64) | inc_lo},
        "has_uint32": has,
        "uinteger": kept,
    }
    return rng


class BatchedCollectTreasure(BatchedMPE):
    mpe2_name = "collect_treasure_v1"

    def __init__(
        self,
        num_envs: int,
        num_collectors: int = 6,
        num_deposits: int = 2,
        num_treasures: int = 6,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        **mpe2_kwargs: Any,
    ) -> None:
        self.nc = count("env.kwargs.num_collectors", num_collectors, 1)
        self.kinds = count("env.kwargs.num_deposits", num_deposits, 1)
        if self.kinds > MAX_KINDS:
            raise ValueError(f"env.kwargs.num_deposits={num_deposits} must be <= {MAX_KINDS}")
        self.nt = count("env.kwargs.num_treasures", num_treasures, 1)
        n = self.nc + self.kinds
        self._others = others(n)
        self._sizes = np.array([0.05] * self.nc + [0.075] * self.kinds)
        bodies = [
            Body(f"collector_{i}", silent=True, collide=False, size=0.05, accel=1.5, max_speed=1.0)
            for i in range(self.nc)
        ] + [
            Body(
                f"deposit_{i}",
                silent=True,
                collide=False,
                size=0.075,
                accel=1.5,
                max_speed=1.0,
                mass=2.25,
            )
            for i in range(self.kinds)
        ]
        super().__init__(
            num_envs,
            bodies,
            [Mark(collide=False, size=TREASURE_SIZE)] * self.nt,
            dim_c=2,
            max_cycles=max_cycles,
            continuous_actions=continuous_actions,
            extra_kwargs=mpe2_kwargs,
            extra_arrays={
                "holding": ((self.nc,), np.int64),  # a treasure kind, -1: nothing
                "kind": ((self.nt,), np.int64),
                "alive": ((self.nt,), bool),
                "respawn_rng": ((6,), np.uint64),
            },
        )
        self.holding[:] = -1
        self.alive[:] = True
        self._shared = np.zeros(self.num_envs)  # this step's pickups and deliveries

    def _draw_starts(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        n = len(self.possible_agents)
        program = [Uniform(-1, 1, 2)] * n + [
            Integers(self.kinds),
            Uniform(-BOUND, BOUND, 2),
        ] * self.nt
        values, states = draw_rows_from_each_state(rng, len(rows), program)
        self.respawn_rng[rows] = np.array([_pack(s) for s in states], dtype=np.uint64)
        self.pos[rows] = np.stack(values[:n], axis=1)
        self.kind[rows] = np.stack(values[n::2], axis=1)
        self.landmarks[rows] = np.stack(values[n + 1 :: 2], axis=1)
        self.holding[rows] = -1
        self.alive[rows] = True

    def _post_step(self) -> None:
        """Scenario.post_step: pickups and respawns treasure by treasure, then deliveries."""
        collectors = self.pos[:, : self.nc]
        shared = np.zeros(self.num_envs)
        for t in range(self.nt):
            alive = self.alive[:, t].copy()
            near = distance(collectors, self.landmarks[:, t, None]) < 0.05 + TREASURE_SIZE
            can = alive[:, None] & (self.holding < 0) & near
            rows = np.flatnonzero(can.any(axis=1))
            first = can[rows].argmax(axis=1)
            self.holding[rows, first] = self.kind[rows, t]
            self.alive[rows, t] = False
            self.landmarks[rows, t] = GONE
            shared[rows] += 5.0
            for row in np.flatnonzero(~alive):
                self._respawn(row, t)
        carried = self.holding >= 0
        deposit = self.pos[:, self.nc :][
            np.arange(self.num_envs)[:, None], np.maximum(self.holding, 0)
        ]
        delivered = carried & (distance(collectors, deposit) < 0.05 + 0.075)
        shared += 5.0 * delivered.sum(axis=1)
        self.holding[delivered] = -1
        self._shared = shared

    def _respawn(self, row: int, t: int) -> None:
        rng = _unpack(self.respawn_rng[row])
        if rng.uniform() <= 1.0:  # mpe2's respawn_prob
            self.landmarks[row, t] = rng.uniform(-BOUND, BOUND, 2)
            self.kind[row, t] = int(rng.integers(0, self.kinds))
            self.alive[row, t] = True
        self.respawn_rng[row] = np.array(_pack(rng.bit_generator.state), dtype=np.uint64)

    def _encodings(self) -> np.ndarray:
        """``[e, agent]``: what the others see of it: [its deposit kind | what it holds]."""
        eye = np.vstack([np.eye(self.kinds), np.zeros((1, self.kinds))])  # row -1: nothing
        enc = np.zeros((self.num_envs, len(self.possible_agents), 2 * self.kinds))
        enc[:, : self.nc, self.kinds :] = eye[self.holding]
        enc[:, self.nc :, : self.kinds] = np.eye(self.kinds)
        return enc

    def _observations(self) -> Batch:
        n, envs, k = len(self.possible_agents), self.num_envs, self.kinds
        rows = np.arange(n)[:, None]
        to_others = (self.pos[:, None] - self.pos[:, :, None])[:, rows, self._others]
        order = np.argsort(np.sqrt(np.sum(np.square(to_others), -1)), axis=-1, kind="stable")
        seen = np.concatenate(
            [to_others, self.vel[:, self._others], self._encodings()[:, self._others]], axis=-1
        )
        seen = np.take_along_axis(seen, order[..., None], axis=2).reshape(envs, n, -1)
        to_treasure = self.landmarks[:, None] - self.pos[:, :, None]  # [e, agent, treasure]
        alive = self.alive[:, None, :]
        key = np.where(alive, np.sqrt(np.sum(np.square(to_treasure), -1)), 1e6)
        torder = np.argsort(key, axis=-1, kind="stable")
        kind = np.broadcast_to(np.eye(k)[self.kind][:, None], (*to_treasure.shape[:3], k))
        treasure = np.where(alive[..., None], np.concatenate([to_treasure, kind], -1), 0.0)
        treasure = np.take_along_axis(treasure, torder[..., None], axis=2).reshape(envs, n, -1)
        holding = np.vstack([np.eye(k), np.zeros((1, k))])[self.holding]
        obs = {}
        for i, a in enumerate(self.possible_agents):
            own = [self.pos[:, i], self.vel[:, i]] + ([holding[:, i]] if i < self.nc else [])
            parts = own + [seen[:, i], treasure[:, i]]
            obs[a] = np.concatenate(parts, axis=1).astype(np.float32)
        return obs

    def _rewards(self) -> np.ndarray:
        nc = self.nc
        collectors, deposits = self.pos[:, :nc], self.pos[:, nc:]
        bumped = distance(collectors[:, :, None], collectors[:, None]) < 0.1
        bumps = bumped.sum(axis=2) - 1  # every collector touches itself
        to_treasure = distance(collectors[:, :, None], self.landmarks[:, None])
        nearest = np.where(self.alive[:, None], to_treasure, np.inf).min(axis=2)
        seeking = np.where(np.isfinite(nearest), -0.1 * nearest, 0.0)
        goal = deposits[np.arange(self.num_envs)[:, None], np.maximum(self.holding, 0)]
        carrying = -0.1 * distance(collectors, goal)
        collector = -5.0 * bumps + np.where(self.holding < 0, seeking, carrying)
        to_collectors = distance(deposits[:, :, None], collectors[:, None])  # [e, deposit, c]
        for_me = self.holding[:, None] == np.arange(self.kinds)[None, :, None]
        waiting = np.where(for_me, to_collectors, np.inf).min(axis=2)
        centroid = np.mean(collectors, axis=1)
        idle = -0.1 * distance(centroid[:, None], deposits)
        deposit = np.where(np.isfinite(waiting), -0.1 * waiting, idle)
        return np.concatenate([collector, deposit], axis=1) + self._shared[:, None]
