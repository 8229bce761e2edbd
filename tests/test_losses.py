"""The clipped PPO losses against hand-worked numbers, and target_kl early stopping."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli.ippo import IPPO
from ippo_cli.losses import clipped_losses, normalize


def test_clipped_policy_loss_matches_hand_computation():
    ratio = torch.tensor([1.5, 0.5, 1.5])
    adv = torch.tensor([1.0, 1.0, -1.0])
    value = torch.zeros(3)
    # terms: max(-1.5, -1.2) = -1.2; max(-0.5, -0.8) = -0.5; max(1.5, 1.2) = 1.5
    policy_loss, _ = clipped_losses(ratio, adv, value, value, value, clip_coef=0.2)
    assert policy_loss.item() == pytest.approx((-1.2 - 0.5 + 1.5) / 3, abs=1e-6)


def test_clipped_value_loss_matches_hand_computation():
    value = torch.tensor([1.0, 0.0])
    old = torch.tensor([0.0, 0.0])
    returns = torch.tensor([2.0, 0.5])
    # sample 0: unclipped (1-2)^2 = 1, clipped V = 0.2 -> (0.2-2)^2 = 3.24 -> 3.24
    # sample 1: both (0-0.5)^2 = 0.25
    _, value_loss = clipped_losses(torch.ones(2), torch.zeros(2), value, old, returns, 0.2)
    assert value_loss.item() == pytest.approx(0.5 * (3.24 + 0.25) / 2, abs=1e-6)


def test_normalize_uses_batch_statistics():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert normalize(x).tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert normalize(torch.tensor([5.0])).tolist() == [5.0]


def test_weighted_normalize_counts_only_the_weighted_samples():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0, -50.0])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    assert torch.allclose(normalize(x, weight)[:3], normalize(x[:3]), atol=1e-6)
    assert torch.allclose(normalize(x, torch.ones(5)), normalize(x), atol=1e-6)
    one = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    assert torch.equal(normalize(x, one), x)  # fewer than two samples: left as is


def _experiences(agent, steps=64, envs=2):
    rng = np.random.default_rng(0)
    ids = agent.agent_ids
    states = {a: [rng.normal(size=(envs, 4)).astype(np.float32) for _ in range(steps)] for a in ids}
    actions = {a: [rng.integers(0, 3, size=envs) for _ in range(steps)] for a in ids}
    log_probs = {a: [np.full(envs, -math.log(3)) for _ in range(steps)] for a in ids}
    rewards = {a: [rng.normal(size=envs) for _ in range(steps)] for a in ids}
    dones = {a: [np.zeros(envs) for _ in range(steps)] for a in ids}
    values = {a: [np.zeros(envs) for _ in range(steps)] for a in ids}
    next_states = {a: rng.normal(size=(envs, 4)).astype(np.float32) for a in ids}
    next_dones = {a: np.zeros(envs) for a in ids}
    return states, actions, log_probs, rewards, dones, values, next_states, next_dones


def _agent(**kwargs):
    obs, act = spaces.Box(-5, 5, (4,)), spaces.Discrete(3)
    return IPPO([obs, obs], [act, act], ["a_0", "a_1"], batch_size=16, **kwargs)


def test_target_kl_stops_the_update_at_the_first_minibatch_that_exceeds_it():
    torch.manual_seed(0)
    full = _agent(lr=1e-2)
    full.learn(_experiences(full))
    # 64 steps x 2 envs = 128 rows; minibatches of 16 rows x 2 agents -> 8 x 4 epochs
    assert full.last_metrics["a"]["updates"] == 32
    torch.manual_seed(0)
    stopped = _agent(lr=1e-2, target_kl=1e-4)
    stopped.learn(_experiences(stopped))
    assert 1 <= stopped.last_metrics["a"]["updates"] < 8


def test_learn_changes_actor_and_critic_weights_and_returns_a_loss_per_group():
    agent = _agent()
    before = [p.clone() for p in agent.actors["a"].parameters()]
    before_v = [p.clone() for p in agent.critics["a"].parameters()]
    loss = agent.learn(_experiences(agent))
    assert set(loss) == {"a"} and math.isfinite(loss["a"])
    assert any(
        not torch.equal(b, p) for b, p in zip(before, agent.actors["a"].parameters(), strict=True)
    )
    assert any(
        not torch.equal(b, p)
        for b, p in zip(before_v, agent.critics["a"].parameters(), strict=True)
    )
