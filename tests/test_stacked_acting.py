"""Actors sampled as one stack act as each would on its own."""

import numpy as np
import torch
from gymnasium import spaces

from ippo_cli import IPPO
from ippo_cli.stacked_acting import StackedSampler

OBS = [spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (11,), np.float32)]
IDS = ["speaker_0", "listener_0"]


def _sample(sampler, obs, masks):
    """One agent's sampled actions, drawn from torch's global RNG."""
    return sampler.sample([obs], [masks], [None])[0]


def _obs(rows=64):
    g = torch.Generator().manual_seed(0)
    return {
        "speaker_0": torch.randn(rows, 3, generator=g),
        "listener_0": torch.randn(rows, 11, generator=g),
    }


def test_stacked_box_actions_follow_each_actors_own_distribution():
    act = [spaces.Box(0, 1, (3,), np.float32), spaces.Box(-2, 2, (5,), np.float32)]
    agent = IPPO(OBS, act, IDS, action_std_init=-30.0)  # std ~ 0: a sample is the mean
    for actor in agent.actors.values():  # a mean that depends on the observation
        torch.nn.init.normal_(actor.head[-1].weight)
    sampler = StackedSampler(agent)
    assert sampler.sets == [[(0, net_id) for net_id in IDS]]
    obs = _obs()
    actions = _sample(sampler, obs, dict.fromkeys(IDS))
    for net_id in IDS:
        with torch.no_grad():
            mean = agent.actors[net_id].distribution(obs[net_id]).mode()
        assert actions[net_id].shape == mean.shape
        assert torch.allclose(actions[net_id], mean, atol=1e-5)


def test_stacked_discrete_actions_respect_masks_and_each_actors_own_choices():
    agent = IPPO(OBS, [spaces.Discrete(3), spaces.Discrete(5)], IDS)
    sampler = StackedSampler(agent)
    obs = _obs(rows=2000)
    free = _sample(sampler, obs, dict.fromkeys(IDS))
    assert set(free["speaker_0"].tolist()) == {0, 1, 2}  # never a listener-only action
    assert set(free["listener_0"].tolist()) == {0, 1, 2, 3, 4}
    only = torch.zeros(2000, 5, dtype=torch.bool)
    only[torch.arange(2000), torch.arange(2000) % 5] = True
    masked = _sample(sampler, obs, {"speaker_0": None, "listener_0": only})
    assert torch.equal(masked["listener_0"], torch.arange(2000) % 5)
    assert masked["speaker_0"].max() <= 2


def test_actors_stack_only_with_their_like():
    one = IPPO(OBS[:1], [spaces.Discrete(3)], ["speaker_0"])
    assert StackedSampler(one).sets == []  # a lone actor gains nothing
    mixed = IPPO(OBS, [spaces.Discrete(3), spaces.Box(0, 1, (5,), np.float32)], IDS)
    assert StackedSampler(mixed).sets == []
    grouped = IPPO(OBS + OBS[1:], [spaces.Discrete(3)] * 3, IDS + ["listener_1"])
    assert StackedSampler(grouped).sets == []  # 1 agent beside 2: rows differ
    actions = _sample(
        StackedSampler(grouped),
        {"speaker": torch.zeros(4, 3), "listener": torch.zeros(8, 11)},
        {"speaker": None, "listener": None},
    )
    assert actions["speaker"].shape == (4,) and actions["listener"].shape == (8,)
