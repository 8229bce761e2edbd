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


def test_returns_are_the_advantages_plus_the_values():
    # The critic's target: with one-step episodes the return is the step's own reward,
    # whatever the value was; across steps it is A + V.
    roll = GroupRollout.allocate(3, 2, 1, (1,), (), torch.int64)
    roll.valid[:] = True
    roll.rewards[:] = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])[..., None]
    roll.values[:] = torch.tensor([[0.5, -1.0], [2.0, 0.25], [-3.0, 1.5]])[..., None]
    roll.ends[:] = 1.0
    adv, returns = roll.advantages_and_returns(GAMMA, LAM)
    assert torch.equal(returns, roll.rewards)
    assert torch.equal(adv, roll.rewards - roll.values)
    roll.ends[:] = 0.0
    roll.last_values[:] = 2.0
    batch = roll.flat_batch(GAMMA, LAM)
    assert torch.allclose(batch["returns"], batch["advantages"] + batch["values"])
    # env 0: rewards 1, 3, 5, values 0.5, 2, -3, last value 2; delta2 = 5 + 1.8 + 3 = 9.8;
    # delta1 = 3 - 2.7 - 2 = -1.7; delta0 = 1 + 1.8 - 0.5 = 2.3;
    # A1 = -1.7 + .72 * 9.8 = 5.356; A0 = 2.3 + .72 * 5.356
    expected_adv = [2.3 + 0.72 * 5.356, 5.356, 9.8]
    returns = roll.advantages_and_returns(GAMMA, LAM)[1][:, 0, 0]
    assert returns.tolist() == pytest.approx(
        [a + v for a, v in zip(expected_adv, [0.5, 2.0, -3.0], strict=True)], abs=1e-5
    )


def test_an_absent_step_gives_no_row_and_breaks_the_advantage_chain():
    # Agent 1 of a group of two is absent at step 2 of 4 (dead, then back); agent 0 is
    # present throughout. Whatever is stored at the absent step must not matter.
    T, E, A = 4, 1, 2
    roll = GroupRollout.allocate(T, E, A, (1,), (), torch.int64)
    roll.valid[:] = True
    roll.valid[2, 0, 1] = False
    roll.rewards[:] = torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None]
    roll.values[:] = torch.tensor([0.5, 1.0, 1.5, 0.25])[:, None, None]
    roll.last_values[:] = 2.0
    for t in range(T):
        roll.obs[t, 0, :, 0] = torch.tensor([10.0 * t, 10.0 * t + 1])
    garbage = roll.flat_batch(GAMMA, LAM)
    roll.rewards[2, 0, 1] = 1e6
    roll.values[2, 0, 1] = -1e6
    roll.ends[2, 0, 1] = 0.0
    batch = roll.flat_batch(GAMMA, LAM)
    assert batch["obs"][:, 0].tolist() == [0, 1, 10, 11, 20, 30, 31]  # (t, agent) order
    for key in ("advantages", "returns", "values"):
        assert torch.equal(batch[key], garbage[key]), key
    adv, _ = roll.advantages_and_returns(GAMMA, LAM)
    # agent 0 runs on: A3 = 4 + .9 * 2 - .25 = 5.55; A2 = 3 + .9 * .25 - 1.5 + .72 * A3
    a3 = 5.55
    a2 = 1.725 + 0.72 * a3
    a1 = 2 + 0.9 * 1.5 - 1 + 0.72 * a2
    assert adv[:, 0, 0].tolist() == pytest.approx([1.4 + 0.72 * a1, a1, a2, a3], abs=1e-5)
    # agent 1: nothing flows back from step 3 past step 2; step 1 sees no next value.
    assert adv[3, 0, 1].item() == pytest.approx(a3, abs=1e-5)
    assert adv[1, 0, 1].item() == pytest.approx(2 - 1.0, abs=1e-5)
    assert adv[0, 0, 1].item() == pytest.approx(1 + 0.9 * 1.0 - 0.5 + 0.72 * 1.0, abs=1e-5)


def test_storage_keeps_each_quantity_in_its_own_dtype():
    # Image observations as bytes (4x smaller), discrete actions as integers (they index
    # the log-probs), masks as booleans; everything else float32.
    roll = GroupRollout.allocate(
        2, 3, 1, (4, 4, 3), (2,), torch.int64, mask_dim=5, obs_dtype=torch.uint8
    )
    assert roll.obs.dtype == torch.uint8 and roll.obs.shape == (2, 3, 1, 4, 4, 3)
    assert roll.actions.dtype == torch.int64 and roll.actions.shape == (2, 3, 1, 2)
    assert roll.action_masks.dtype == torch.bool and roll.action_masks.shape == (2, 3, 1, 5)
    assert roll.valid.dtype == roll.chosen.dtype == torch.bool
    assert roll.rewards.dtype == roll.last_values.dtype == torch.float32
    assert roll.last_values.shape == (3, 1)
