"""What learning is given: the trainer's stored rollout (masks, env-defined actions,
truncation bootstraps, absent agents) and the API's ``learn`` 8-tuple, checked directly
rather than through whether a probe learns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli.ippo import IPPO
from ippo_cli.rollout import GroupRollout
from ippo_cli.stacked_update import stack_sets
from tests.conftest import FAST, probe_overrides, train_config
from tests.probe_envs import EnvDefinedActionEnv

# 16 steps of 4 envs.
SHORT = ["algorithm.learn_step=64"]
# ... learned from in one minibatch: the metrics of the only update are those of the
# policy that acted.
ONE_MINIBATCH = SHORT + ["algorithm.batch_size=64", "algorithm.update_epochs=1"]


@pytest.fixture
def collected(tmp_path):
    """A trainer for these overrides after collecting one rollout (closed afterwards)."""
    from ippo_cli.trainer import Trainer

    made = []

    def collect(overrides: list[str]) -> Trainer:
        trainer = Trainer(train_config(FAST + overrides), tmp_path)
        made.append(trainer)
        trainer.collect(*trainer.env.reset(seed=0))
        return trainer

    yield collect
    for trainer in made:
        trainer.close()


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ action masks


@pytest.mark.parametrize(
    ("space", "stack"), [("discrete", False), ("discrete", True), ("multidiscrete", False)]
)
def test_learning_recomputes_the_log_probs_of_the_masked_policy_that_acted(collected, space, stack):
    trainer = collected(probe_overrides("MaskedActionEnv", action_space=space) + ONE_MINIBATCH)
    agent, roll = trainer.agent, trainer.rollouts["agent_0"]
    agent.stack_updates = stack
    batches = {"agent_0": roll.flat_batch(agent.gamma, agent.gae_lambda)}
    assert not stack or stack_sets([agent], [batches])  # the stacked update's path is taken
    # The env shows its mask in the observation ([1, *allowed]): the stored behaviour
    # log-probs must be those of the policy restricted to it.
    obs = roll.obs.flatten(0, 2)
    with torch.no_grad():
        dist = agent.actors["agent_0"].distribution(obs, obs[:, 1:] > 0.5)
        masked = dist.log_prob(roll.actions.flatten(0, 2))
    assert torch.allclose(roll.log_probs.flatten(), masked, atol=1e-5)
    unmasked = agent.clone()
    unmasked.stack_updates = stack
    metrics = agent.update(trainer.rollouts)["agent_0"]
    assert metrics["updates"] == 1
    # Learning saw the same distribution: every ratio is 1.
    assert metrics["approx_kl"] < 1e-6 and metrics["clip_fraction"] == 0.0
    # Without the masks, learning would see another distribution than the one that acted.
    roll.action_masks = None
    dropped = unmasked.update(trainer.rollouts)["agent_0"]
    assert dropped["approx_kl"] > 1e-2 and dropped["clip_fraction"] > 0.1


# ----------------------------------------------------------- env-defined actions


@pytest.mark.parametrize("space", ["discrete", "box"])
def test_env_defined_actions_train_the_critic_and_not_the_policy(collected, space):
    trainer = collected(probe_overrides("EnvDefinedActionEnv", action_space=space) + SHORT)
    roll = trainer.rollouts["agent_0"]
    # The env imposes on every odd step (its counter starts at 0 with no imposed action).
    odd = (torch.arange(roll.num_steps) % 2 == 1)[:, None, None]
    assert roll.valid.all()
    assert torch.equal(roll.chosen, ~odd.expand_as(roll.chosen))
    imposed = torch.as_tensor(EnvDefinedActionEnv.IMPOSED[space], dtype=roll.actions.dtype)
    assert (roll.actions[~roll.chosen] == imposed).all()
    # Whatever the imposed steps' actions and rewards, the policy learns the same; the
    # critic, which learns from every step, does not.
    changed = dataclasses.replace(roll, actions=roll.actions.clone(), rewards=roll.rewards.clone())
    changed.actions[~roll.chosen] = 2 if space == "discrete" else 0.5
    changed.rewards[~roll.chosen] += 5.0
    one, other = trainer.agent.clone(), trainer.agent.clone()
    torch.manual_seed(0)
    one.update({"agent_0": roll})
    torch.manual_seed(0)
    other.update({"agent_0": changed})
    assert _same(_params(one.actors["agent_0"]), _params(other.actors["agent_0"]))
    assert not _same(_params(one.critics["agent_0"]), _params(other.critics["agent_0"]))


# ------------------------------------------------------------------- truncation


def test_truncation_bootstraps_each_env_and_agent_from_its_own_final_observation(collected):
    trainer = collected(probe_overrides("ClockTruncationEnv") + SHORT)
    agent = trainer.agent
    # Critics whose value of a zero observation (what a vector env has in place of a final
    # observation where there is none) is not 0 either, as it is at initialisation.
    with torch.no_grad():
        for critic in agent.critics.values():
            for p in critic.parameters():
                p.add_(0.1 * torch.randn_like(p))
    trainer.collect(*trainer.env.reset(seed=0))
    group, other = trainer.rollouts["agent"], trainer.rollouts["other"]
    # Envs draw their episode lengths and other_0 is cut a step before the group: cuts
    # fall at different steps in different envs and groups.
    assert not torch.equal(group.ends[:, 0], group.ends[:, 1])
    assert not torch.equal(group.ends[:, :, 0], other.ends[:, :, 0])
    for net_id, roll in trainer.rollouts.items():
        assert (roll.rewards[roll.valid] == 1).all() and (roll.rewards[~roll.valid] == 0).all()
        assert (roll.ends[~roll.valid] == 1).all()  # an absence ends the advantage chain
        cut = roll.ends.bool() & roll.valid  # nobody terminates: every end is a truncation
        assert cut.any()
        # obs = [t / 10, agent]: the final observation of the step from t is
        # [(t + 1) / 10, agent]; the next episode's first is [0, agent].
        t, who = torch.round(roll.obs[..., 0] * 10), roll.obs[..., 1]
        if net_id == "agent":
            assert torch.equal(cut[:-1], t[1:] == 0)
        with torch.no_grad():
            critic = agent.critics[net_id]
            final = critic(torch.stack([(t + 1) / 10, who], -1).flatten(0, 2)).view_as(t)
            reset = critic(torch.stack([torch.zeros_like(t), who], -1).flatten(0, 2)).view_as(t)
        assert (final[cut] - reset[cut]).abs().min() > 1e-4  # the test can tell them apart
        assert torch.allclose(roll.bootstrap[cut], final[cut], atol=1e-6)
        assert (roll.bootstrap[~cut] == 0).all()
        # A cut step's advantage: its reward, plus gamma times that value, less its value.
        adv, _ = roll.advantages_and_returns(agent.gamma, agent.gae_lambda)
        expected = roll.rewards[cut] + agent.gamma * final[cut] - roll.values[cut]
        assert torch.allclose(adv[cut], expected, atol=1e-5)


# --------------------------------------------------------------- absent agents


def test_an_agent_absent_after_dying_gives_no_rows_until_its_next_episode(collected):
    # DyingAgentEnv: agent_1 terminates after 2 steps of 6; obs = [t / 6, agent index].
    trainer = collected(probe_overrides("DyingAgentEnv") + SHORT)
    roll = trainer.rollouts["agent"]
    t = torch.round(roll.obs[:, :, 0, 0] * 6)  # agent_0 is always there: the episode's step
    assert roll.valid[:, :, 0].all()
    assert torch.equal(roll.valid[:, :, 1], t < 2)
    assert torch.equal(roll.ends[:, :, 1][t < 2].bool(), (t == 1)[t < 2])
    assert torch.equal(roll.ends[:, :, 0].bool(), t == 5)
    assert (roll.ends[:, :, 1][t >= 2] == 1).all()  # an absence ends the advantage chain
    assert (roll.rewards[roll.valid] == 1).all() and (roll.rewards[~roll.valid] == 0).all()
    batch = roll.flat_batch(trainer.agent.gamma, trainer.agent.gae_lambda)
    assert batch["obs"].shape[0] == int(roll.valid.sum())
    agent_1 = batch["obs"][:, 1] == 1
    assert agent_1.any() and (torch.round(batch["obs"][agent_1, 0] * 6) < 2).all()


def _experiences(steps: int = 6, envs: int = 2):
    """The reference loop's 8-tuple for agents a_0 and a_1 (one group): a_1 is absent
    (NaN observation, reward and done) in env 1 at steps 2 and 3; env 0's episode ends
    after step 2 (dones[3] = 1), a_0's in env 1 after the last step (next_dones)."""
    rng = np.random.default_rng(0)
    ids = ("a_0", "a_1")
    states = {a: rng.normal(size=(steps, envs, 3)).astype(np.float32) for a in ids}
    actions = {a: rng.integers(0, 3, size=(steps, envs)) for a in ids}
    log_probs = {a: rng.uniform(-2.0, -0.5, size=(steps, envs)) for a in ids}
    rewards = {a: rng.normal(size=(steps, envs)) for a in ids}
    values = {a: rng.normal(size=(steps, envs)) for a in ids}
    dones = {a: np.zeros((steps, envs)) for a in ids}
    for a in ids:
        dones[a][3, 0] = 1.0
    for table in (states, rewards, dones):
        table["a_1"][2:4, 1] = np.nan
    next_states = {a: rng.normal(size=(envs, 3)).astype(np.float32) for a in ids}
    next_dones = {"a_0": np.array([0.0, 1.0]), "a_1": np.zeros(envs)}
    return states, actions, log_probs, rewards, dones, values, next_states, next_dones


def _rollout(agent: IPPO, experiences, ends: bool = True, absent: bool = True) -> GroupRollout:
    """The rollout the 8-tuple stands for, written out by hand: (T, env, agent) storage,
    ``ends[t]`` = ``dones[t + 1]`` (``next_dones`` last), absent steps left out.
    ``ends``/``absent`` False ignore the dones / the absences (for contrast)."""
    states, actions, log_probs, rewards, dones, values, next_states, next_dones = experiences
    ids = ("a_0", "a_1")

    def table(x):
        return torch.as_tensor(np.stack([x[a] for a in ids], axis=2), dtype=torch.float32)

    reward = table(rewards)
    roll = agent.allocate_rollouts(6, 2, ["a"])["a"]
    roll.obs.copy_(table(states).nan_to_num())
    roll.actions.copy_(table(actions).long())
    roll.log_probs.copy_(table(log_probs))
    roll.values.copy_(table(values))
    roll.rewards.copy_(reward.nan_to_num())
    if ends:
        nxt = torch.as_tensor(np.stack([next_dones[a] for a in ids], axis=1), dtype=torch.float32)
        roll.ends.copy_(torch.cat([table(dones)[1:], nxt[None]]).nan_to_num(1.0))
    roll.valid.copy_(~reward.isnan() if absent else torch.ones_like(roll.valid))
    roll.chosen.copy_(roll.valid)
    roll.action_masks.fill_(True)
    with torch.no_grad():
        last = torch.as_tensor(np.stack([next_states[a] for a in ids], axis=1))
        roll.last_values.copy_(agent.critics["a"](last.flatten(0, 1)).view(2, 2))
    return roll


def test_learn_takes_dones_and_absent_agents_as_the_reference_loop_gives_them():
    obs, act = spaces.Box(-5, 5, (3,)), spaces.Discrete(3)
    agent = IPPO([obs, obs], [act, act], ["a_0", "a_1"], batch_size=4, update_epochs=2)
    experiences = _experiences()
    results = {}
    for name, kwargs in {"hand": {}, "no ends": {"ends": False}, "all": {"absent": False}}.items():
        clone = agent.clone()
        torch.manual_seed(1)
        clone.update({"a": _rollout(clone, experiences, **kwargs)})
        results[name] = _params(clone.actors["a"]) + _params(clone.critics["a"])
    torch.manual_seed(1)
    loss = agent.learn(experiences)
    assert np.isfinite(loss["a"])
    learned = _params(agent.actors["a"]) + _params(agent.critics["a"])
    assert _same(learned, results["hand"])
    # ... which the dones and the absences both change.
    assert not _same(learned, results["no ends"]) and not _same(learned, results["all"])
