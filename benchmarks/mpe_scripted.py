"""Reference policies for the mpe2 scenarios (issue 22): scripted agents that read mpe2's
world, and the uniform random policy, each playing whole episodes as an `ippo eval` agent
would (ippo_cli.episodes.Player).

A scripted agent picks a target point per agent and steers there: each step it takes the
action whose coasting stop (where the agent would halt with no further force, under mpe2's
damping) lands nearest the target; with continuous actions the force that puts it there.
``SCRIPTED[scenario]`` gives the target rule and whether it is an *oracle*: it uses what
the acting agent's observation does not hold (another agent's goal, every agent's place).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ippo_cli.crossplay import RandomPolicy
from ippo_cli.groups import group_id_of

# agent name -> (target position or None to stand still, message index or None)
Plan = dict[str, tuple[np.ndarray | None, int | None]]
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=float)  # mpe2's order


def assign(sources: list[np.ndarray], targets: list[np.ndarray]) -> list[int]:
    """Each source's target under the one-to-one assignment of least total distance."""
    dist = np.linalg.norm(np.array(sources)[:, None] - np.array(targets)[None], axis=-1)
    rows, cols = linear_sum_assignment(dist)
    out = [0] * len(sources)
    for r, c in zip(rows, cols, strict=True):
        out[r] = int(c)
    return out


def to_landmark(world: Any, scenario: Any) -> Plan:
    """simple: the agent drives to the landmark."""
    return {a.name: (world.landmarks[0].state.p_pos, None) for a in world.agents}


def spread(world: Any, scenario: Any) -> Plan:
    """simple_spread: the one-to-one agent-landmark assignment of least total distance."""
    pos = [a.state.p_pos for a in world.agents]
    marks = [lm.state.p_pos for lm in world.landmarks]
    return {a.name: (marks[j], None) for a, j in zip(world.agents, assign(pos, marks), strict=True)}


def line(world: Any, scenario: Any) -> Plan:
    """simple_line: the scenario's evenly spaced line positions, optimally assigned."""
    goals = list(scenario._expected_positions)
    pos = [a.state.p_pos for a in world.agents]
    return {a.name: (goals[j], None) for a, j in zip(world.agents, assign(pos, goals), strict=True)}


def formation(world: Any, scenario: Any) -> Plan:
    """simple_formation: the polygon around the landmark that mpe2 scores against (it turns
    with the agents: its first corner is at the smallest agent angle), optimally assigned."""
    centre = world.landmarks[0].state.p_pos
    n = len(world.agents)
    rel = [a.state.p_pos - centre for a in world.agents]
    start = min(np.arctan2(r[1], r[0]) % (2 * np.pi) for r in rel)
    angles = start + 2 * np.pi * np.arange(n) / n
    goals = [centre + scenario.TARGET_RADIUS * np.array([np.cos(t), np.sin(t)]) for t in angles]
    pos = [a.state.p_pos for a in world.agents]
    return {a.name: (goals[j], None) for a, j in zip(world.agents, assign(pos, goals), strict=True)}


def reference(world: Any, scenario: Any) -> Plan:
    """simple_reference: each agent goes to the landmark the other wants it at, and names
    the landmark it wants the other at."""
    plan = {}
    for agent in world.agents:
        other = next(a for a in world.agents if a is not agent)
        goal = other.goal_b.state.p_pos if other.goal_a is agent else None
        plan[agent.name] = (goal, world.landmarks.index(agent.goal_b))
    return plan


def speaker_listener(world: Any, scenario: Any) -> Plan:
    """speaker_listener: the listener goes to the goal landmark; the speaker names it."""
    speaker, listener = world.agents
    goal = speaker.goal_b
    return {
        speaker.name: (None, world.landmarks.index(goal)),
        listener.name: (goal.state.p_pos, None),
    }


def collect(world: Any, scenario: Any) -> Plan:
    """collect_treasure: a free collector heads for the nearest treasure no other collector
    has claimed (collectors claim in turn), a loaded one for the nearest deposit of its
    treasure's kind; a deposit goes to the nearest collector carrying its kind, else to the
    collectors' centre."""
    collectors = [a for a in world.agents if a.collector]
    deposits = [a for a in world.agents if not a.collector]
    alive = [lm for lm in world.landmarks if lm.alive]
    plan: Plan = {}
    claimed: set[int] = set()
    for c in collectors:
        p = c.state.p_pos
        if c.holding is None:
            free = [i for i in range(len(alive)) if i not in claimed]
            if not free:
                plan[c.name] = (None, None)
                continue
            best = min(free, key=lambda i: np.linalg.norm(alive[i].state.p_pos - p))
            claimed.add(best)
            plan[c.name] = (alive[best].state.p_pos, None)
        else:
            kind = [d for d in deposits if d.d_i == c.holding]
            plan[c.name] = (
                min(kind, key=lambda d: np.linalg.norm(d.state.p_pos - p)).state.p_pos,
                None,
            )
    centre = np.mean([c.state.p_pos for c in collectors], axis=0)
    for d in deposits:
        carriers = [c for c in collectors if c.holding == d.d_i]
        goal = (
            min(carriers, key=lambda c: np.linalg.norm(c.state.p_pos - d.state.p_pos)).state.p_pos
            if carriers
            else centre
        )
        plan[d.name] = (goal, None)
    return plan


# scenario (config name) -> (target rule, oracle?)
SCRIPTED: dict[str, tuple[Callable[[Any, Any], Plan], bool]] = {
    "simple": (to_landmark, False),
    "simple_spread": (spread, False),
    "simple_line": (line, True),
    "simple_formation": (formation, True),
    "simple_reference": (reference, True),
    "speaker_listener": (speaker_listener, True),
    "collect_treasure": (collect, False),
}


def steer(world: Any, agent: Any, target: np.ndarray | None, continuous: bool) -> np.ndarray:
    """The movement action (index, or 5 floats) bringing ``agent`` to rest nearest ``target``.

    mpe2 moves an agent by its current velocity, then damps the velocity and adds
    force/mass*dt; coasting from there it stops at p + v*dt + v'*dt/damping."""
    if target is None:
        return np.zeros(5, np.float32) if continuous else np.int64(0)
    gain = (agent.accel if agent.accel is not None else 5.0) / agent.mass * world.dt
    damped = agent.state.p_vel * (1 - world.damping)
    here = agent.state.p_pos + agent.state.p_vel * world.dt
    reach = world.dt / world.damping

    def velocity(u: np.ndarray) -> np.ndarray:
        v = damped + gain * u
        speed = np.linalg.norm(v)
        if agent.max_speed is not None and speed > agent.max_speed:
            v = v / speed * agent.max_speed
        return v

    if continuous:
        u = np.clip(((target - here) / reach - damped) / gain, -1, 1)
        return np.array([0, max(-u[0], 0), max(u[0], 0), max(-u[1], 0), max(u[1], 0)], np.float32)
    miss = [np.linalg.norm(here + reach * velocity(u) - target) for u in MOVES]
    return np.int64(np.argmin(miss))


def encode(world: Any, agent: Any, move: Any, message: int | None, continuous: bool) -> Any:
    """One agent's mpe2 action from its movement and message (index into world.dim_c)."""
    if agent.silent:
        return move
    if continuous:
        said = np.zeros(world.dim_c, np.float32)
        said[message or 0] = 1.0
        return np.concatenate([move, said]) if agent.movable else said
    return np.int64(move + 5 * (message or 0)) if agent.movable else np.int64(message or 0)


class Scripted:
    """Plays every agent of one mpe2 env by a target rule of ``SCRIPTED`` (a Player)."""

    def __init__(self, env: Any, rule: Callable[[Any, Any], Plan]) -> None:
        self.raw = env.unwrapped
        self.rule = rule
        self.agent_ids = list(env.possible_agents)
        self.grouped_agents = groups(self.agent_ids)
        self.training = False

    def set_training_mode(self, training: bool) -> None:
        self.training = training

    def get_action(self, obs: Mapping[str, Any], infos: Any = None, *, deterministic: bool):
        world = self.raw.world
        continuous = self.raw.continuous_actions
        plan = self.rule(world, self.raw.scenario)
        actions = {}
        for agent in world.agents:
            if agent.name in obs:
                target, message = plan[agent.name]
                move = steer(world, agent, target, continuous) if agent.movable else None
                actions[agent.name] = encode(world, agent, move, message, continuous)
        return (actions,)


class Random(RandomPolicy):
    """`ippo eval`'s uniform random policy for every agent of ``env`` (a Player)."""

    def __init__(self, env: Any, seed: int) -> None:
        super().__init__({a: env.action_space(a) for a in env.possible_agents}, seed)
        self.agent_ids = list(env.possible_agents)
        self.grouped_agents = groups(self.agent_ids)
        self.training = False

    def set_training_mode(self, training: bool) -> None:
        self.training = training


def groups(agent_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in agent_ids:
        out.setdefault(group_id_of(a), []).append(a)
    return out
