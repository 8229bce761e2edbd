"""Edge cases of the Python API: ``test(swap_channels=...)``, env-defined actions in every
action format, ``learn`` given the step's masks and env-defined actions, the Discrete
``start`` in training mode, truncations without a final observation."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ippo_cli.ippo import IPPO

CHW = spaces.Box(0, 255, (3, 8, 10), np.uint8)


class ChannelsLastEnv(ParallelEnv):
    """One agent, one-step episodes, images given channels-last ``(8, 10, 3)``: channel c
    is filled with ``40 * c + 1``."""

    metadata = {"name": "channels_last_v0"}
    possible_agents = ["agent_0"]

    def __init__(self) -> None:
        self.agents: list[str] = []

    def observation_space(self, agent):
        return spaces.Box(0, 255, (8, 10, 3), np.uint8)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self):
        return {"agent_0": np.stack([np.full((8, 10), 40 * c + 1, np.uint8) for c in range(3)], -1)}

    def reset(self, seed=None, options=None):
        self.agents = ["agent_0"]
        return self._obs(), {"agent_0": {}}

    def step(self, actions):
        self.agents = []
        done = {"agent_0": True}
        return self._obs(), {"agent_0": 1.0}, done, {"agent_0": False}, {"agent_0": {}}


def test_swap_channels_moves_image_channels_last_to_first(monkeypatch):
    agent = IPPO([CHW], [spaces.Discrete(2)], agent_ids=["agent_0"])
    seen = []
    real = agent.get_action

    def spy(obs, *args, **kwargs):
        seen.append(obs["agent_0"])
        return real(obs, *args, **kwargs)

    monkeypatch.setattr(agent, "get_action", spy)
    assert agent.test(ChannelsLastEnv(), swap_channels=True, loop=2) == 1.0
    assert len(seen) == 2
    for obs in seen:
        assert obs.shape == (3, 8, 10)
        assert [int(obs[c].max()) for c in range(3)] == [1, 41, 81]
    # Positionally, as the reference's order has it: (env, swap_channels, max_steps, loop).
    assert agent.test(ChannelsLastEnv(), True, None, 1) == 1.0


def test_without_swap_channels_a_channels_last_image_does_not_fit_a_chw_agent():
    agent = IPPO([CHW], [spaces.Discrete(2)], agent_ids=["agent_0"])
    with pytest.raises(ValueError, match="shape"):
        agent.test(ChannelsLastEnv(), loop=1)


def test_population_takes_the_reference_keywords():
    members = IPPO.population(
        size=2,
        observation_space=[spaces.Box(-1, 1, (3,))],
        action_space=[spaces.Discrete(2)],
        agent_ids=["a_0"],
    )
    assert [m.index for m in members] == [0, 1]
    assert members[1].action_spaces["a_0"] == spaces.Discrete(2)
