"""GAE and rollout layout against numbers worked out by hand."""

import pytest
import torch

from ippo_cli.rollout import GroupRollout, gae

GAMMA, LAM = 0.9, 0.8


def _gae(rewards, values, ends, bootstrap, last):
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return gae(t(rewards), t(values), t(ends), t(bootstrap), t(last), GAMMA, LAM)


def test_gae_without_episode_end_matches_hand_computation():
    # delta2 = 3 + .9*2 - 1.5 = 3.3; delta1 = 2 + .9*1.5 - 1 = 2.35; delta0 = 1 + .9*1 - .5 = 1.4
    # A2 = 3.3; A1 = 2.35 + .72*3.3 = 4.726; A0 = 1.4 + .72*4.726 = 4.80272
    adv = _gae([1, 2, 3], [0.5, 1.0, 1.5], [0, 0, 0], [0, 0, 0], 2.0)
    assert adv.tolist() == pytest.approx([4.80272, 4.726, 3.3], abs=1e-5)


def test_gae_does_not_bootstrap_across_termination():
    # step 1 terminates: delta1 = 2 - 1 = 1, A1 = 1; A0 = 1.4 + .72*1 = 2.12
    adv = _gae([1, 2, 3], [0.5, 1.0, 1.5], [0, 1, 0], [0, 0, 0], 2.0)
    assert adv.tolist() == pytest.approx([2.12, 1.0, 3.3], abs=1e-5)


def test_gae_bootstraps_truncation_from_final_observation_value():
    # step 1 truncated with V(final obs) = 4: delta1 = 2 + .9*4 - 1 = 4.6; A0 = 1.4 + .72*4.6
    adv = _gae([1, 2, 3], [0.5, 1.0, 1.5], [0, 1, 0], [0, 4.0, 0], 2.0)
    assert adv.tolist() == pytest.approx([4.712, 4.6, 3.3], abs=1e-5)


def test_an_episode_ending_in_one_env_leaves_the_others_alone():
    # (T=3, E=2): env 0 ends at step 1, env 1 runs on; env 1 must match the lone-env result.
    rewards = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    values = torch.tensor([[0.5, 0.5], [1.0, 1.0], [1.5, 1.5]])
    ends = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    adv = gae(rewards, values, ends, torch.zeros(3, 2), torch.tensor([2.0, 2.0]), GAMMA, LAM)
    assert adv[:, 0].tolist() == pytest.approx([2.12, 1.0, 3.3], abs=1e-5)
    assert adv[:, 1].tolist() == pytest.approx([4.80272, 4.726, 3.3], abs=1e-5)


def test_flat_batch_keeps_every_quantity_of_a_grouped_agent_aligned():
    # Two agents in one group, with distinct reward streams and observations that name
    # (step, env, agent): after flattening, row i of every field must describe one step.
    T, E, A = 4, 3, 2
    roll = GroupRollout.allocate(T, E, A, (3,), (), torch.int64)
    for t in range(T):
        for e in range(E):
            for a in range(A):
                roll.obs[t, e, a] = torch.tensor([t, e, a], dtype=torch.float32)
                roll.actions[t, e, a] = 100 * t + 10 * e + a
                roll.log_probs[t, e, a] = -(100 * t + 10 * e + a)
                roll.rewards[t, e, a] = 1.0 if a == 0 else -1.0
    roll.valid[:] = True
    roll.ends[:] = 1.0  # one-step episodes: advantage = reward - value = reward
    batch = roll.flat_batch(gamma=0.99, gae_lambda=0.95)
    t, e, a = batch["obs"].long().unbind(-1)
    assert torch.equal(batch["actions"], 100 * t + 10 * e + a)
    assert torch.equal(batch["log_probs"], -(100 * t + 10 * e + a).float())
    assert torch.equal(batch["advantages"], torch.where(a == 0, 1.0, -1.0))


def test_invalid_steps_are_left_out_of_the_batch():
    roll = GroupRollout.allocate(2, 1, 2, (1,), (), torch.int64)
    roll.valid[:] = torch.tensor([[[True, False]], [[True, True]]])
    roll.rewards[:] = 1.0
    batch = roll.flat_batch(0.99, 0.95)
    assert batch["obs"].shape[0] == 3
    assert torch.isfinite(batch["advantages"]).all()
