"""Action distributions: numerically equal to torch.distributions, masks honoured."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import distributions as D

from ippo_cli.networks.distributions import (
    Bernoulli,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    make_distribution,
)

N_SAMPLES = 10_000


@pytest.fixture
def gen():
    torch.manual_seed(0)


def test_categorical_matches_torch(gen):
    logits = torch.randn(5, 4)
    dist, ref = Categorical(logits), D.Categorical(logits=logits)
    actions = torch.tensor([0, 1, 2, 3, 1])
    torch.testing.assert_close(dist.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    assert torch.equal(dist.mode(), logits.argmax(-1))


def test_categorical_mask_removes_illegal_actions(gen):
    logits = torch.randn(3, 4)
    logits[:, 2] = 10.0  # the most likely action is illegal
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)
    dist = make_distribution(spaces.Discrete(4), logits, None, mask)
    ref = D.Categorical(logits=logits.masked_fill(~mask, float("-inf")))
    legal = torch.tensor([1, 3, 0])
    torch.testing.assert_close(dist.log_prob(legal), ref.log_prob(legal))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    samples = torch.stack([dist.sample() for _ in range(200)])  # (200, 3)
    many = Categorical(logits.expand(N_SAMPLES // 3, 3, 4), mask).sample()
    for s in (samples, many):
        assert mask.gather(1, s.reshape(-1, 3).T).all()
    assert torch.equal(dist.mode(), ref.probs.argmax(-1))
    assert mask[torch.arange(3), dist.mode()].all()


def test_multicategorical_matches_independent_torch_categoricals(gen):
    nvec = [2, 3, 4]
    logits = torch.randn(6, sum(nvec))
    dist = make_distribution(spaces.MultiDiscrete(nvec), logits, None)
    assert isinstance(dist, MultiCategorical)
    refs = [D.Categorical(logits=x) for x in torch.split(logits, nvec, dim=-1)]
    action = dist.sample()
    assert action.shape == (6, 3) and action.dtype == torch.int64
    expected = sum(r.log_prob(action[:, i]) for i, r in enumerate(refs))
    torch.testing.assert_close(dist.log_prob(action), expected)
    torch.testing.assert_close(dist.entropy(), sum(r.entropy() for r in refs))
    mode = torch.stack([x.argmax(-1) for x in torch.split(logits, nvec, dim=-1)], dim=-1)
    assert torch.equal(dist.mode(), mode)


def test_multicategorical_mask_is_split_by_nvec(gen):
    nvec = [3, 2]
    logits = torch.zeros(1, 5)
    logits[0, 0] = 10.0  # illegal best choice of sub-action 0
    logits[0, 4] = 10.0  # illegal best choice of sub-action 1
    mask = torch.tensor([[False, True, True, True, False]])
    dist = make_distribution(spaces.MultiDiscrete(nvec), logits.expand(N_SAMPLES, 5), None, mask)
    samples = dist.sample()
    assert set(samples[:, 0].tolist()) == {1, 2}  # both legal choices show up, 0 never
    assert set(samples[:, 1].tolist()) == {0}
    assert dist.mode()[0].tolist() == [1, 0]
    ref = D.Categorical(logits=torch.tensor([[float("-inf"), 0.0, 0.0]]))
    # sub-action 1 has a single legal choice: log-prob 0, entropy 0
    torch.testing.assert_close(
        dist.log_prob(torch.tensor([[2, 0]]))[:1], ref.log_prob(torch.tensor([2]))
    )
    torch.testing.assert_close(dist.entropy()[:1], ref.entropy())


def test_bernoulli_matches_torch(gen):
    logits = torch.randn(7, 5) * 3
    dist = make_distribution(spaces.MultiBinary(5), logits, None)
    assert isinstance(dist, Bernoulli)
    ref = D.Bernoulli(logits=logits)
    action = dist.sample()
    assert action.dtype == torch.float32 and set(action.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action).sum(-1))
    torch.testing.assert_close(dist.entropy(), ref.entropy().sum(-1))
    assert torch.equal(dist.mode(), (logits > 0).float())


def test_bernoulli_sample_frequencies_follow_sigmoid(gen):
    logits = torch.tensor([[-1.0, 0.0, 2.0]])
    dist = Bernoulli(logits.expand(N_SAMPLES, 3))
    freq = dist.sample().mean(0)
    torch.testing.assert_close(freq, torch.sigmoid(logits[0]), atol=0.02, rtol=0)


def test_bernoulli_masked_bit_is_always_zero_and_costs_nothing(gen):
    logits = torch.full((N_SAMPLES, 3), 5.0)  # every bit wants to be 1
    mask = torch.tensor([True, False, True]).expand(N_SAMPLES, 3)
    dist = make_distribution(spaces.MultiBinary(3), logits, None, mask)
    samples = dist.sample()
    assert (samples[:, 1] == 0).all()
    assert samples[:, 0].mean() > 0.9
    assert (dist.mode()[:, 1] == 0).all() and (dist.mode()[:, [0, 2]] == 1).all()
    ref = D.Bernoulli(logits=logits[:1, [0, 2]])
    action = torch.tensor([[1.0, 0.0, 0.0]])
    d1 = Bernoulli(logits[:1], mask[:1])
    torch.testing.assert_close(d1.log_prob(action), ref.log_prob(action[:, [0, 2]]).sum(-1))
    torch.testing.assert_close(d1.entropy(), ref.entropy().sum(-1))


def test_diag_gaussian_matches_torch_normal(gen):
    mean, log_std = torch.randn(4, 3), torch.randn(3) * 0.3
    dist = make_distribution(spaces.Box(-1, 1, (3,)), mean, log_std)
    ref = D.Independent(D.Normal(mean, log_std.exp().expand_as(mean)), 1)
    action = dist.sample()
    torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action))
    torch.testing.assert_close(dist.entropy(), ref.entropy())


def test_squashed_gaussian_matches_tanh_transformed_normal(gen):
    mean, log_std = torch.randn(4, 2), torch.zeros(2) - 0.5
    dist = DiagGaussian(mean, log_std, squash=True)
    base = D.Normal(mean, log_std.exp().expand_as(mean))
    ref = D.TransformedDistribution(base, [D.TanhTransform()])
    action = dist.sample()
    assert action.abs().max() < 1
    torch.testing.assert_close(
        dist.log_prob(action), ref.log_prob(action).sum(-1), atol=1e-4, rtol=0
    )


def test_box_action_mask_is_rejected():
    with pytest.raises(ValueError, match="action masks are not supported for Box action space"):
        make_distribution(
            spaces.Box(-1, 1, (2,)), torch.zeros(1, 2), torch.zeros(2), torch.ones(1, 2)
        )


@pytest.mark.parametrize(
    "space, width",
    [(spaces.Discrete(3), 3), (spaces.MultiDiscrete([2, 3]), 5), (spaces.MultiBinary(4), 4)],
)
def test_mask_of_the_wrong_width_is_rejected(space, width):
    with pytest.raises(ValueError, match=f"expected \\(batch, {width}\\)"):
        make_distribution(space, torch.zeros(2, width), None, torch.ones(2, width + 1))


def test_numeric_masks_are_accepted():
    dist = make_distribution(spaces.Discrete(3), torch.zeros(1, 3), None, np.array([[0, 1, 0]]))
    assert dist.mode().item() == 1


@pytest.mark.parametrize(
    "space",
    [
        spaces.Discrete(4),
        spaces.MultiDiscrete([2, 3]),
        spaces.MultiBinary(3),
        spaces.Box(-1, 1, (2,)),
    ],
)
def test_gradients_flow_to_the_logits(space, gen):
    from ippo_cli.spaces import action_dim

    logits = torch.randn(5, action_dim(space), requires_grad=True)
    log_std = torch.zeros(action_dim(space), requires_grad=True)
    dist = make_distribution(space, logits, log_std if isinstance(space, spaces.Box) else None)
    action = dist.sample().detach()  # as stored in a rollout
    (dist.log_prob(action).sum() + dist.entropy().sum()).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert torch.isfinite(logits.grad).all()
