"""Play whole episodes of a PettingZoo ParallelEnv with an agent and keep the returns:
the evaluation behind ``IPPO.test``, the periodic evaluation of `ippo train` and `ippo eval`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ippo_cli.envs.vector import EnvOutputError, non_finite_outcome


class Player(Protocol):
    """What plays an episode: an ``IPPO`` agent, or ``ippo eval``'s line-up of policies
    (ippo_cli.crossplay). ``get_action``'s first output holds the actions."""

    agent_ids: list[str]
    grouped_agents: dict[str, list[str]]
    training: bool

    def set_training_mode(self, training: bool) -> None: ...

    def get_action(
        self, obs: Mapping[str, Any], infos: Mapping[str, Any] | None = None, *, deterministic: bool
    ) -> tuple[dict[str, Any], ...]: ...


@dataclass
class EvalResult:
    """Per-episode returns of each agent, episode lengths, and frames if rendered."""

    agent_ids: list[str]
    groups: dict[str, list[str]]
    returns: np.ndarray  # (episodes, agents)
    lengths: np.ndarray  # (episodes,)
    frames: list[np.ndarray] = field(default_factory=list)

    @property
    def summed(self) -> np.ndarray:
        """Each episode's return summed over all agents."""
        return self.returns.sum(axis=1)

    def group_returns(self) -> dict[str, np.ndarray]:
        """Each episode's return averaged over the agents of each group."""
        return {g: r.mean(axis=1) for g, r in self._by_group().items()}

    def group_sums(self) -> dict[str, np.ndarray]:
        """Each episode's return summed over the agents of each group."""
        return {g: r.sum(axis=1) for g, r in self._by_group().items()}

    def _by_group(self) -> dict[str, np.ndarray]:
        """Each group's columns of ``returns``: (episodes, agents of the group)."""
        index = {a: i for i, a in enumerate(self.agent_ids)}
        return {g: self.returns[:, [index[a] for a in ag]] for g, ag in self.groups.items()}

    def summary(self) -> dict[str, Any]:
        """Means and standard deviations as plain data (for eval.json and metrics)."""
        return {
            "episodes": int(len(self.lengths)),
            "return": stats(self.summed),
            "groups": {g: stats(r) for g, r in self.group_returns().items()},
            "agents": {a: stats(self.returns[:, i]) for i, a in enumerate(self.agent_ids)},
            "episode_length": stats(self.lengths),
        }


def stats(x: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation as plain data."""
    return {"mean": float(np.mean(x)), "std": float(np.std(x))}


def run_episodes(
    agent: Player,
    env: Any,
    episodes: int,
    deterministic: bool = True,
    seed: int | None = None,
    render: bool = False,
    max_steps: int | None = None,
) -> EvalResult:
    """Play ``episodes`` episodes of a PettingZoo ParallelEnv with ``agent``.

    Episode ``i`` is reset with ``seed + i`` (when a seed is given), so repeated
    evaluations see the same starts. With ``render`` the frames of the first episode
    are kept. The agent's training mode is restored afterwards.
    """
    was_training = agent.training
    agent.set_training_mode(False)
    returns = np.zeros((episodes, len(agent.agent_ids)))
    lengths = np.zeros(episodes, dtype=np.int64)
    index = {a: i for i, a in enumerate(agent.agent_ids)}
    frames: list[np.ndarray] = []
    try:
        for ep in range(episodes):
            obs, infos = env.reset(seed=None if seed is None else seed + ep)
            keep_frames = render and ep == 0
            if keep_frames:
                frames.append(_frame(env))
            while env.agents and (max_steps is None or lengths[ep] < max_steps):
                live = [a for a in env.agents if a in obs]
                action, *_ = agent.get_action(
                    {a: obs[a] for a in live}, infos, deterministic=deterministic
                )
                obs, rewards, terms, truncs, infos = env.step({a: action[a] for a in live})
                for a, r in rewards.items():
                    bad = non_finite_outcome(r, terms.get(a, False), truncs.get(a, False))
                    if bad is not None:
                        raise EnvOutputError(
                            f"non-finite {bad} from agent '{a}' in the evaluation env at "
                            f"step {lengths[ep] + 1} of episode {ep + 1}"
                        )
                    returns[ep, index[a]] += float(r)
                lengths[ep] += 1
                if keep_frames:
                    frames.append(_frame(env))
    finally:
        agent.set_training_mode(was_training)
    return EvalResult(list(agent.agent_ids), dict(agent.grouped_agents), returns, lengths, frames)


def _frame(env: Any) -> Any:
    """``env.render()``, with a failure told in one line."""
    try:
        return env.render()
    except Exception as exc:
        message = " ".join(str(exc).split())
        raise ValueError(
            f"the env cannot render: render() raised {type(exc).__name__}: {message}"
        ) from exc
