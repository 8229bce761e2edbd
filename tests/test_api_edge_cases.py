"""Edge cases of the Python API: ``test(swap_channels=...)``, env-defined actions in every
action format, ``learn`` given the step's masks and env-defined actions, the Discrete
``start`` in training mode, truncations without a final observation."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ippo_cli.ippo import IPPO
from ippo_cli.losses import ppo_terms
from ippo_cli.trainer import Trainer
from tests.conftest import FAST, probe_overrides, train_config

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


# ------------------------------------------------- env-defined actions in every format
IMPOSED_SPACES = {
    "discrete_start": (spaces.Discrete(3, start=5), np.array([6]), np.array(1)),
    "multidiscrete_start": (
        spaces.MultiDiscrete([3, 4], start=[2, -1]),
        np.array([4, 2]),
        np.array([2, 3]),
    ),
    "box_2d": (
        spaces.Box(-1.0, 1.0, (2, 3), np.float32),
        np.full((2, 3), 0.25, np.float32),
        np.full(6, 0.25),
    ),
    "multibinary_2d": (
        spaces.MultiBinary([2, 2]),
        np.array([[1, 0], [0, 1]], np.int8),
        np.array([1.0, 0.0, 0.0, 1.0]),
    ),
}


class ImposedActionEnv(ParallelEnv):
    """One agent ``agent_0`` acting in ``IMPOSED_SPACES[kind]``; one-step episodes. Every
    other step (counted over the env's life) the env imposes the kind's action through
    ``info["env_defined_actions"]``; any action outside the space, or other than the imposed
    one on such a step, raises ValueError."""

    metadata = {"name": "imposed_action_v0"}
    possible_agents = ["agent_0"]

    def __init__(self, kind: str = "discrete_start") -> None:
        self.space, self.imposed, _ = IMPOSED_SPACES[kind]
        self.agents: list[str] = []
        self.steps = 0

    def observation_space(self, agent):
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return self.space

    def _info(self):
        imposing = self.steps % 2 == 1
        return {"agent_0": {"env_defined_actions": self.imposed.copy() if imposing else None}}

    def reset(self, seed=None, options=None):
        self.agents = ["agent_0"]
        return {"agent_0": np.ones(2, np.float32)}, self._info()

    def step(self, actions):
        action = np.asarray(actions["agent_0"])
        if not self.space.contains(action.astype(self.space.dtype)):
            raise ValueError(f"action {action!r} is not in {self.space}")
        if self.steps % 2 == 1 and not np.array_equal(action.ravel(), self.imposed.ravel()):
            raise ValueError(f"imposed {self.imposed!r}, got {action!r}")
        self.steps += 1
        self.agents = []
        one = {"agent_0": True}
        obs = {"agent_0": np.ones(2, np.float32)}
        return obs, {"agent_0": 1.0}, one, {"agent_0": False}, self._info()


@pytest.mark.parametrize("kind", list(IMPOSED_SPACES))
def test_the_trainer_stores_env_defined_actions_as_the_policys_own(tmp_path, kind):
    overrides = probe_overrides("ImposedActionEnv", kind=kind)
    overrides[1] = "env.factory=tests.test_api_edge_cases.ImposedActionEnv"
    trainer = Trainer(train_config([*FAST, *overrides, "algorithm.learn_step=32"]), tmp_path)
    try:
        obs, infos = trainer.env.reset(seed=0)
        trainer.collect(obs, infos)
        roll = trainer.rollouts["agent_0"]
        imposed = ~roll.chosen
        assert imposed.any() and roll.chosen.any()
        own = IMPOSED_SPACES[kind][2]
        stored = roll.actions[imposed].double()
        assert torch.equal(stored, torch.as_tensor(own, dtype=torch.float64).expand_as(stored))
        assert torch.isfinite(roll.log_probs).all()
        metrics = trainer.agent.update(trainer.rollouts)["agent_0"]
        assert math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["value_loss"])
    finally:
        trainer.close()


def _collated(value, flags):
    """An info entry as the vector env collates it: (num_envs, ...) values and flags."""
    return np.stack([value] * len(flags)), np.asarray(flags, bool)


@pytest.mark.parametrize("kind", list(IMPOSED_SPACES))
@pytest.mark.parametrize("training", [True, False])
def test_get_action_returns_env_defined_actions_in_the_envs_format(kind, training):
    space, imposed, _ = IMPOSED_SPACES[kind]
    agent = IPPO([spaces.Box(-1, 1, (2,))], [space], agent_ids=["agent_0"])
    agent.set_training_mode(training)
    value, flags = _collated(imposed, [True, False, True])
    infos = {"agent_0": {"env_defined_actions": value, "_env_defined_actions": flags}}
    action, log_prob, _, _ = agent.get_action({"agent_0": np.ones((3, 2), np.float32)}, infos)
    got = action["agent_0"]
    assert got.shape == (3, *space.shape)
    for e in (0, 2):  # a Discrete space's one-value array comes back as its value
        assert np.array_equal(np.ravel(got[e]), imposed.ravel())
    clipped = np.clip(got[1], space.low, space.high) if isinstance(space, spaces.Box) else got[1]
    assert space.contains(clipped.astype(space.dtype))
    assert np.isfinite(log_prob["agent_0"]).all()


def test_get_action_adds_the_discrete_start_in_training_mode_too():
    space = spaces.Discrete(3, start=5)
    agent = IPPO([spaces.Box(-1, 1, (2,))], [space], agent_ids=["agent_0"])
    obs = {"agent_0": np.ones((64, 2), np.float32)}
    for training in (True, False):
        agent.set_training_mode(training)
        action = agent.get_action(obs)[0]["agent_0"]
        assert set(np.unique(action)) <= {5, 6, 7}, training


# ------------------------------------------------------------- the masked log-ratio
def test_rows_the_policy_did_not_choose_cannot_make_the_loss_nan():
    # A sharp Gaussian scores an env-defined action far above the stored 0: exp(200) = inf,
    # and inf * weight 0 would be NaN in the weighted mean.
    log_prob = torch.tensor([-1.0, 200.0, -2.0])
    mb = {
        "log_probs": torch.tensor([-1.1, 0.0, -1.9]),
        "advantages": torch.tensor([1.0, -3.0, -1.0]),
        "values": torch.zeros(3),
        "returns": torch.ones(3),
    }
    chosen = torch.tensor([1.0, 0.0, 1.0])
    terms = ppo_terms(log_prob, torch.ones(3), torch.zeros(3), mb, 0.2, chosen)
    assert all(torch.isfinite(t) for t in terms)
    alone = ppo_terms(
        log_prob[[0, 2]],
        torch.ones(2),
        torch.zeros(2),
        {k: v[[0, 2]] for k, v in mb.items()},
        0.2,
        None,
    )
    for with_row, without in zip(terms, alone, strict=True):
        assert with_row.item() == pytest.approx(without.item(), abs=1e-6)


# ------------------------------------------------ learn() given the steps' infos
def _experiences(agent, steps_infos, num_envs=4, seed=0):
    """The reference's 8-tuple for one agent over len(steps_infos) steps, acting with
    ``get_action`` on each step's infos."""
    rng = np.random.default_rng(seed)
    keys = ("states", "actions", "log_probs", "rewards", "dones", "values")
    table = {k: {"agent_0": []} for k in keys}
    for infos in steps_infos:
        obs = {"agent_0": rng.random((num_envs, 5), dtype=np.float32)}
        action, log_prob, _, value = agent.get_action(obs, infos=infos)
        for key, x in zip(keys, (obs, action, log_prob), strict=False):
            table[key]["agent_0"].append(x["agent_0"])
        table["rewards"]["agent_0"].append(rng.random(num_envs))
        table["dones"]["agent_0"].append(np.zeros(num_envs))
        table["values"]["agent_0"].append(value["agent_0"])
    next_obs = {"agent_0": rng.random((num_envs, 5), dtype=np.float32)}
    return (*table.values(), next_obs, {"agent_0": np.zeros(num_envs)})


def _one_minibatch_agent(space):
    # One epoch of one minibatch: its approx_kl compares learn's log-probs with get_action's
    # before any weight changes, so it is 0 exactly when both scored the same distribution.
    return IPPO(
        [spaces.Box(0, 1, (5,))],
        [space],
        agent_ids=["agent_0"],
        batch_size=1024,
        update_epochs=1,
    )


def _masked_infos(steps, rng):
    out = []
    for _ in range(steps):
        mask = np.ones((4, 4), np.int8)
        mask[np.arange(4), rng.integers(4, size=4)] = 0
        out.append({"agent_0": {"action_mask": mask, "_action_mask": np.ones(4, bool)}})
    return out


def test_learn_given_the_steps_infos_scores_with_the_masks_that_acted():
    rng = np.random.default_rng(1)
    infos = _masked_infos(16, rng)
    agent = _one_minibatch_agent(spaces.Discrete(4))
    experiences = _experiences(agent, infos)
    agent.learn(experiences, infos=infos)
    assert agent.last_metrics["agent_0"]["approx_kl"] == pytest.approx(0.0, abs=1e-6)

    # Without them, learn scores every action as allowed: the ratios are off from the start.
    agent = _one_minibatch_agent(spaces.Discrete(4))
    experiences = _experiences(agent, infos)
    with pytest.warns(UserWarning, match="infos"):
        agent.learn(experiences)
    assert agent.last_metrics["agent_0"]["approx_kl"] > 1e-3


def test_learn_warns_once_about_masks_it_was_not_given(recwarn):
    rng = np.random.default_rng(2)
    infos = _masked_infos(4, rng)
    agent = _one_minibatch_agent(spaces.Discrete(4))
    agent.learn(_experiences(agent, infos))
    agent.learn(_experiences(agent, infos))
    assert len([w for w in recwarn if "infos" in str(w.message)]) == 1
    # An agent that never saw a mask has nothing to warn about.
    quiet = _one_minibatch_agent(spaces.Discrete(4))
    quiet.learn(_experiences(quiet, [None] * 4))
    assert len([w for w in recwarn if "infos" in str(w.message)]) == 1


@pytest.mark.parametrize("kind", ["discrete_start", "box_2d"])
def test_learn_given_the_steps_infos_leaves_env_defined_actions_out(kind):
    space, imposed, _ = IMPOSED_SPACES[kind]
    value, flags = _collated(imposed, [True, False, False, True])
    imposing = {"agent_0": {"env_defined_actions": value, "_env_defined_actions": flags}}
    infos = [imposing if t % 2 else None for t in range(16)]
    agent = _one_minibatch_agent(space)
    experiences = _experiences(agent, infos)
    agent.learn(experiences, infos=infos)
    metrics = agent.last_metrics["agent_0"]
    assert metrics["approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(metrics["policy_loss"])


def test_learn_refuses_infos_of_the_wrong_length():
    agent = _one_minibatch_agent(spaces.Discrete(4))
    infos = [None] * 4
    with pytest.raises(ValueError, match="infos has 3 entries for 4 steps"):
        agent.learn(_experiences(agent, infos), infos=infos[:3])


# ------------------------------------------- truncation without a final observation
class TruncatedWithoutFinalObsEnv(ParallelEnv):
    """Agents ``a_0`` and ``a_1``; episodes are truncated after 2 steps, and the truncating
    step's observations leave out ``a_1`` (``a_0``'s is given)."""

    metadata = {"name": "truncated_without_final_obs_v0"}
    possible_agents = ["a_0", "a_1"]

    def __init__(self) -> None:
        self.agents: list[str] = []
        self.t = 0

    def observation_space(self, agent):
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: np.ones(2, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        cut = self.t >= 2
        obs = {a: np.full(2, 0.5, np.float32) for a in self.agents if not (cut and a == "a_1")}
        rewards = {a: 1.0 for a in self.agents}
        terms = {a: False for a in self.agents}
        truncs = {a: cut for a in self.agents}
        infos = {a: {} for a in self.agents}
        if cut:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def test_a_truncated_agent_without_final_observation_is_not_bootstrapped(tmp_path, caplog):
    overrides = probe_overrides("TruncatedWithoutFinalObsEnv")
    overrides[1] = "env.factory=tests.test_api_edge_cases.TruncatedWithoutFinalObsEnv"
    trainer = Trainer(train_config([*FAST, *overrides, "algorithm.learn_step=16"]), tmp_path)
    try:
        with torch.no_grad():  # a critic whose value of a zero observation is not 0
            for p in trainer.agent.critics["a"].parameters():
                p.add_(0.1)
        obs, infos = trainer.env.reset(seed=0)
        with caplog.at_level(logging.WARNING, logger="ippo"):
            trainer.collect(obs, infos)
            trainer.collect(obs, infos)
        roll = trainer.rollouts["a"]  # columns: a_0, a_1
        cut = roll.ends[:, :, 0].bool()
        assert cut.any() and torch.equal(roll.ends[:, :, 1].bool(), cut)
        assert (roll.bootstrap[:, :, 0][cut] != 0).all()  # a_0's final observation
        assert (roll.bootstrap[:, :, 1] == 0).all()  # a_1 had none: not bootstrapped
        warnings = [r.getMessage() for r in caplog.records if "final observation" in r.getMessage()]
        assert len(warnings) == 1 and "'a_1'" in warnings[0]
    finally:
        trainer.close()
