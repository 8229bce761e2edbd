"""The PPO loss assembly (ppo_terms, in one network's (B,) and a stack's (G, B) form) and
its metrics against hand-worked numbers, and target_kl early stopping."""

import math
import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli.ippo import IPPO
from ippo_cli.losses import (
    clipped_losses,
    explained_variance,
    masked_mean,
    normalize,
    ppo_terms,
)


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
    # moving down as far: V = -1 clipped to -0.2, return -2: (-0.2 + 2)^2 = 3.24 beats 1
    _, value_loss = clipped_losses(
        torch.ones(1), torch.zeros(1), -value[:1], old[:1], -returns[:1], 0.2
    )
    assert value_loss.item() == pytest.approx(0.5 * 3.24, abs=1e-6)


def test_normalize_uses_batch_statistics():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert normalize(x).tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert normalize(torch.tensor([5.0])).tolist() == [5.0]


def test_normalize_works_per_row_of_a_stack_from_two_samples_on():
    x = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]])
    # row 1: mean 20, deviations (-10, -10, 20), unbiased std sqrt(300)
    expected = [[-1.0, 0.0, 1.0], [-10 / 300**0.5, -10 / 300**0.5, 20 / 300**0.5]]
    assert normalize(x).tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    # two samples are enough: mean 2, std sqrt(2)
    assert normalize(torch.tensor([1.0, 3.0])).tolist() == pytest.approx([-(0.5**0.5), 0.5**0.5])


def test_normalize_adds_its_guard_to_the_std():
    # Advantages 2e-8 apart: std 1.414e-8, so (x - mean) / (std + 1e-8) = -+1e-8 / 2.414e-8.
    x = torch.tensor([0.0, 2e-8])
    assert normalize(x).tolist() == pytest.approx([-0.4142, 0.4142], abs=1e-3)
    assert normalize(x, torch.ones(2)).tolist() == pytest.approx([-0.4142, 0.4142], abs=1e-3)


def test_weighted_normalize_counts_only_the_weighted_samples():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0, -50.0])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    assert torch.allclose(normalize(x, weight)[:3], normalize(x[:3]), atol=1e-6)
    assert torch.allclose(normalize(x, torch.ones(5)), normalize(x), atol=1e-6)
    one = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    assert torch.equal(normalize(x, one), x)  # fewer than two samples: left as is


def test_masked_mean_weighs_each_row_by_its_weight():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, -8.0, 0.5, 6.0]])
    w = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    # row 0: (1 + 2 + 3) / 3 = 2; row 1: (-8 + 6) / 2 = -1
    assert masked_mean(x, w).tolist() == pytest.approx([2.0, -1.0])
    assert masked_mean(x).tolist() == pytest.approx([26.5, 0.625])
    # one weighted row: its value; none: 0, not NaN
    one = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert masked_mean(x, one).tolist() == [2.0, 0.0]


# One minibatch of four rows: the new policy makes row 0's action 1.1 times as likely as
# the behaviour policy did, row 1's half as likely, rows 2 and 3 equally likely.
NEW_LOG_PROB = torch.log(torch.tensor([1.1, 0.5, 1.0, 1.0])) - 1.0
MB = {
    "log_probs": torch.full((4,), -1.0),
    "advantages": torch.tensor([3.0, -1.0, 1.0, 1.0]),
    "values": torch.tensor([0.5, 0.0, -1.0, 2.0]),
    "returns": torch.tensor([1.5, 0.0, 1.0, 2.0]),
}
ENTROPY = torch.tensor([0.1, 0.2, 0.3, 0.4])
VALUE = torch.tensor([1.0, 0.0, -1.0, 2.5])


def test_ppo_terms_match_hand_computation():
    policy, value, entropy, kl, clip_frac = ppo_terms(
        NEW_LOG_PROB, ENTROPY, VALUE, MB, clip_coef=0.2, chosen=None
    )
    # Advantages normalised over the minibatch: mean 1, deviations (2, -2, 0, 0), unbiased
    # std sqrt(8 / 3); a = 2 / sqrt(8 / 3) = 1.2247.
    a = 2 / math.sqrt(8 / 3)
    # row 0: r = 1.1 inside the clip range: -a * 1.1; row 1: r = 0.5, advantage -a: the
    # pessimistic term max(0.5 a, 0.8 a) = 0.8 a; rows 2 and 3: advantage 0.
    assert policy.item() == pytest.approx((-1.1 * a + 0.8 * a) / 4, abs=1e-6)
    # value: row 0 moved 0.5 from its old value: clipped to 0.7, (0.7 - 1.5)^2 = 0.64
    # beats (1 - 1.5)^2; row 3: (2.5 - 2)^2 = 0.25 beats clipped (2.2 - 2)^2
    assert value.item() == pytest.approx(0.5 * (0.64 + 0 + 4.0 + 0.25) / 4, abs=1e-6)
    assert entropy.item() == pytest.approx(0.25)
    # KL estimate mean((r - 1) - log r) and the share of rows with |r - 1| > 0.2
    assert kl.item() == pytest.approx(((0.1 - math.log(1.1)) + (-0.5 - math.log(0.5))) / 4)
    assert clip_frac.item() == pytest.approx(0.25)
    assert not kl.requires_grad and not clip_frac.requires_grad


def test_ppo_terms_policy_loss_pushes_the_ratio_along_the_advantage():
    # Raising the log-prob of a positive-advantage action must lower the loss, and of a
    # negative-advantage action raise it: the ratio is new / old, not old / new.
    mb = {**MB, "advantages": torch.tensor([1.0, -1.0, 1.0, -1.0])}
    log_prob = torch.full((4,), -1.0, requires_grad=True)
    policy, *_ = ppo_terms(log_prob, ENTROPY, VALUE, mb, clip_coef=0.2, chosen=None)
    policy.backward()
    a = 1 / math.sqrt(4 / 3)  # the normalised advantages are +-a
    assert log_prob.grad.tolist() == pytest.approx([-a / 4, a / 4, -a / 4, a / 4], abs=1e-6)


def test_ppo_terms_leave_rows_the_policy_did_not_choose_out_of_the_policy_terms():
    # Row 3's action was the env's: it must change nothing but the value loss, which the
    # critic learns from every row. Its advantage, far from the others, would shift the
    # normalisation if it were counted.
    chosen = torch.tensor([1.0, 1.0, 1.0, 0.0])
    mb = {**MB, "advantages": torch.tensor([3.0, -1.0, 1.0, 50.0])}
    log_prob = NEW_LOG_PROB.clone()
    log_prob[3] = 5.0  # a ratio of e^6 if the row took part
    entropy = ENTROPY.clone()
    entropy[3] = 100.0
    weighted = ppo_terms(log_prob, entropy, VALUE, mb, 0.2, chosen)
    three = {k: v[:3] for k, v in mb.items()}
    alone = ppo_terms(log_prob[:3], entropy[:3], VALUE[:3], three, 0.2, None)
    for name, mine, theirs in zip(
        ["policy", "entropy", "kl", "clip"],
        (weighted[0], *weighted[2:]),
        (alone[0], *alone[2:]),
        strict=True,
    ):
        assert mine.item() == pytest.approx(theirs.item(), abs=1e-6), name
    every_row = ppo_terms(log_prob, entropy, VALUE, mb, 0.2, None)
    assert weighted[1].item() == pytest.approx(every_row[1].item())


def test_ppo_terms_stay_finite_when_a_row_not_chosen_would_overflow_the_ratio():
    # An env-defined row's stored log-prob is not the policy's: the gap can be anything. A
    # ratio of e^1000 is inf, and inf times a weight of 0 is NaN: the row's log-ratio must
    # be dropped before exp, not only weighted out afterwards.
    chosen = torch.tensor([1.0, 1.0, 1.0, 0.0])
    log_prob = NEW_LOG_PROB.clone()
    log_prob[3] = 1000.0
    log_prob.requires_grad_(True)
    terms = ppo_terms(log_prob, ENTROPY, VALUE, MB, 0.2, chosen)
    assert all(torch.isfinite(t).item() for t in terms)
    terms[0].backward()
    assert torch.isfinite(log_prob.grad).all() and log_prob.grad[3].item() == 0.0


def test_ppo_terms_of_a_stack_are_each_networks_own():
    # (G, B) inputs give one value per network, each what that network's (B,) rows give.
    g = torch.Generator().manual_seed(0)
    rows = lambda: torch.randn(3, 8, generator=g)  # noqa: E731
    mb = {"log_probs": rows(), "advantages": rows(), "values": rows(), "returns": rows()}
    log_prob, entropy, value = rows(), rows().abs(), rows()
    chosen = (torch.rand(3, 8, generator=g) < 0.7).float()
    stacked = ppo_terms(log_prob, entropy, value, mb, 0.2, chosen)
    for i in range(3):
        one = ppo_terms(
            log_prob[i], entropy[i], value[i], {k: v[i] for k, v in mb.items()}, 0.2, chosen[i]
        )
        for mine, theirs in zip(stacked, one, strict=True):
            assert mine[i].item() == pytest.approx(theirs.item(), abs=1e-6)


def test_explained_variance_matches_hand_computation():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])  # variance 1.25
    assert explained_variance(returns, returns) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4), returns) == pytest.approx(0.0)
    # residuals (1, 0, 0, -1): variance 0.5, so 1 - 0.5 / 1.25
    assert explained_variance(torch.tensor([0.0, 2.0, 3.0, 5.0]), returns) == pytest.approx(0.6)
    # values 3 away from every return: residual variance 0, whatever their offset
    assert explained_variance(returns - 3.0, returns) == pytest.approx(1.0)
    assert math.isnan(explained_variance(torch.zeros(3), torch.full((3,), 2.0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rows: NaN, without torch's degrees-of-freedom warning
        assert math.isnan(explained_variance(torch.zeros(0), torch.zeros(0)))
    # returns (0, 2): variance exactly 1; residuals (-1, 1), variance 1
    assert explained_variance(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0])) == 0.0


def test_a_ratio_of_one_is_never_counted_as_clipped():
    # |r - 1| > c, strictly: with c = 0 an unchanged policy still clips nothing.
    *_, clip_frac = ppo_terms(MB["log_probs"], ENTROPY, VALUE, MB, clip_coef=0.0, chosen=None)
    assert clip_frac.item() == 0.0


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
