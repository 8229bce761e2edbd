"""Learning on probe environments: each isolates one thing that must work."""

import json

import numpy as np
import pytest
import torch

from ippo_cli.compiled import compiled as compile_once
from tests.conftest import FAST, probe_overrides, run_training


def _policy(agent, net_id, obs):
    x = torch.as_tensor(np.asarray(obs, np.float32))[None]
    return agent.actors[net_id].distribution(x)


def test_discrete_policy_learns_the_rewarded_action(tmp_path):
    trainer = run_training(
        tmp_path,
        probe_overrides("ActionRewardEnv", action_space="discrete")
        + FAST
        + ["algorithm.total_steps=3072"],
    )
    dist = _policy(trainer.agent, "agent_0", [1.0, 1.0])
    assert dist.log_p.exp()[0, 1].item() > 0.9


def test_box_policy_learns_the_rewarded_action(tmp_path):
    trainer = run_training(
        tmp_path,
        probe_overrides("ActionRewardEnv", action_space="box")
        + FAST
        + ["algorithm.total_steps=8192", "algorithm.action_std_init=-1.0"],
    )
    dist = _policy(trainer.agent, "agent_0", [1.0, 1.0])
    assert dist.mean[0, 0].item() == pytest.approx(0.5, abs=0.15)


def test_box_policy_with_one_dimensional_squashed_actions_learns(tmp_path):
    trainer = run_training(
        tmp_path,
        probe_overrides("ActionRewardEnv", action_space="box")
        + FAST
        + ["algorithm.total_steps=8192", "network.squash_output=true"],
    )
    actor = trainer.agent.actors["agent_0"]
    mode = actor.distribution(torch.ones(1, 2)).mode()
    # bounds are [-1, 1], so the scaled action equals the squashed one
    assert actor.scale_action(mode)[0, 0].item() == pytest.approx(0.5, abs=0.15)


def test_value_learns_a_constant_reward(tmp_path):
    trainer = run_training(
        tmp_path,
        probe_overrides("ConstantRewardEnv", episode_len=1) + FAST + ["algorithm.total_steps=4096"],
    )
    value = trainer.agent.critics["agent_0"](torch.ones(1, 1)).item()
    assert value == pytest.approx(1.0, abs=0.1)


def test_truncation_bootstraps_from_the_final_observation(tmp_path):
    # Constant obs and reward 1 forever, cut every 3 steps by a time limit: with the
    # final observation bootstrapped the value is 1 / (1 - gamma) = 2; treating the cut
    # as termination would give the mean of 1.75, 1.5 and 1 (about 1.42).
    trainer = run_training(
        tmp_path,
        probe_overrides("TruncationEnv", max_steps=3)
        + FAST
        + ["algorithm.total_steps=8192", "algorithm.gamma=0.5"],
    )
    value = trainer.agent.critics["agent_0"](torch.ones(1, 1)).item()
    assert value == pytest.approx(2.0, abs=0.15)


def test_grouped_agents_with_opposite_rewards_learn_opposite_actions(tmp_path):
    # bob_0 is paid for action 0 and bob_1 for action 1 through one shared network: only a
    # learner that keeps each agent's observations, actions and advantages aligned gets
    # both right. (Once solved, PPO's normalised near-zero advantages can drift the policy
    # again, so the test reads the best update rather than the last one.)
    trainer = run_training(
        tmp_path,
        probe_overrides("OppositeRewardEnv")
        + FAST
        + ["algorithm.total_steps=4096", "algorithm.lr=0.001"],
    )
    assert list(trainer.agent.actors) == ["bob"]  # one shared network
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    best = max(r["return/bob"] for r in rows if r.get("return/bob") is not None)
    assert best >= 0.99  # both agents right in at least 99% of an update's episodes


def test_policy_learns_from_its_own_observation(tmp_path):
    trainer = run_training(
        tmp_path, probe_overrides("ObsRewardEnv") + FAST + ["algorithm.total_steps=4096"]
    )
    agent = trainer.agent
    assert _policy(agent, "agent_0", [1.0, 0.0]).log_p.exp()[0, 1].item() > 0.9
    assert _policy(agent, "agent_0", [-1.0, 0.0]).log_p.exp()[0, 0].item() > 0.9


def test_a_compiled_learner_trains_a_probe(tmp_path):
    # hardware.torch_compile compiles each minibatch's forward pass and losses (inductor
    # on CPU here)
    compile_once.cache_clear()
    trainer = run_training(
        tmp_path,
        probe_overrides("ActionRewardEnv", action_space="discrete")
        + FAST
        + ["algorithm.total_steps=3072", "hardware.torch_compile=default"],
    )
    assert trainer.agent.torch_compiler == "default"
    assert compile_once.cache_info().currsize == 1  # the learner's minibatch terms
    dist = _policy(trainer.agent, "agent_0", [1.0, 1.0])
    assert dist.log_p.exp()[0, 1].item() > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_and_loading_on_cpu(tmp_path):
    from ippo_cli.ippo import IPPO

    trainer = run_training(
        tmp_path,
        probe_overrides("ActionRewardEnv", action_space="discrete")
        + FAST
        + ["algorithm.total_steps=3072", "hardware.device=cuda"],
    )
    assert next(trainer.agent.actors.parameters()).is_cuda
    agent = IPPO.load(str(tmp_path / "checkpoints" / "last.pt"), device="cpu")
    assert not next(agent.actors.parameters()).is_cuda
