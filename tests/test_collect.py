"""The trainer's rollout collection: per-step sampling, outcomes stored in each group's
columns, behaviour log-probs and values scored once per rollout, and learning threads."""

from __future__ import annotations

import logging

import pytest
import torch

from ippo_cli.distributed import Context
from ippo_cli.trainer import THREADED_MINIBATCH_ROWS, Trainer, learn_threads_auto
from tests.conftest import FAST, probe_overrides, train_config


def _collected(tmp_path, overrides: list[str]) -> Trainer:
    trainer = Trainer(train_config(FAST + overrides), tmp_path)
    obs, infos = trainer.env.reset(seed=0)
    trainer.collect(obs, infos)
    return trainer


def test_outcomes_land_in_their_groups_columns_when_groups_interleave(tmp_path):
    # 12 steps of 4 envs; truncation after steps 3, 6, 9 and 12 of each episode.
    overrides = probe_overrides("InterleavedGroupsEnv") + ["algorithm.learn_step=48"]
    trainer = _collected(tmp_path, overrides)
    try:
        a, b = trainer.rollouts["a"], trainer.rollouts["b"]  # a: a_0, a_1; b: b_0
        assert (a.rewards == torch.tensor([1.0, 3.0])).all()
        assert (b.rewards == 2.0).all()
        truncated = (torch.arange(12) % 3 == 2)[:, None, None]
        for roll in (a, b):
            assert torch.equal(roll.ends.bool(), truncated.expand_as(roll.ends))
            # The final observation's value is bootstrapped exactly where an episode was cut.
            assert torch.equal(roll.bootstrap != 0, truncated.expand_as(roll.bootstrap))
            assert roll.valid.all() and roll.chosen.all()
    finally:
        trainer.close()


@pytest.mark.parametrize("env", ["InterleavedGroupsEnv", "EnvDefinedActionEnv"])
def test_rollout_scored_at_once_equals_scoring_each_step(tmp_path, env):
    trainer = _collected(tmp_path, probe_overrides(env))
    try:
        for net_id, roll in trainer.rollouts.items():
            actor, critic = trainer.agent.actors[net_id], trainer.agent.critics[net_id]
            with torch.no_grad():
                for t in range(roll.num_steps):
                    obs = roll.obs[t].flatten(0, 1)
                    log_p = actor.distribution(obs).log_prob(roll.actions[t].flatten(0, 1))
                    chosen = roll.chosen[t].flatten()
                    # Env-defined actions were not the policy's: stored as 0, unused.
                    expected = torch.where(chosen, log_p, torch.zeros_like(log_p))
                    assert torch.allclose(roll.log_probs[t].flatten(), expected, atol=1e-5)
                    assert torch.allclose(roll.values[t].flatten(), critic(obs), atol=1e-5)
            assert (roll.log_probs[roll.chosen] < 0).all()
        if env == "EnvDefinedActionEnv":
            assert not trainer.rollouts["agent_0"].chosen.all()
    finally:
        trainer.close()


class _Agent:
    def __init__(self, batch_size: int, group_sizes: list[int]) -> None:
        self.batch_size = batch_size
        self.members = {f"g{i}": [f"g{i}_{j}" for j in range(n)] for i, n in enumerate(group_sizes)}


def test_learning_uses_more_threads_only_for_large_minibatches():
    assert learn_threads_auto(_Agent(128, [1, 1]), Context(), 6) == 1  # the reference's
    assert learn_threads_auto(_Agent(32, [2, 8]), Context(), 6) == 1
    assert learn_threads_auto(_Agent(THREADED_MINIBATCH_ROWS - 1, [1, 1]), Context(), 6) == 1
    assert learn_threads_auto(_Agent(512, [1, 1]), Context(), 6) == 6  # the tuned speaker_listener
    rows = THREADED_MINIBATCH_ROWS // 32
    assert learn_threads_auto(_Agent(rows - 1, [32]), Context(), 6) == 1
    assert learn_threads_auto(_Agent(rows, [32]), Context(), 6) == 6


def test_learning_threads_apply_to_scoring_and_the_update_only(tmp_path):
    overrides = probe_overrides("ConstantRewardEnv") + ["hardware.learn_threads=2"]
    trainer = Trainer(train_config(FAST + overrides), tmp_path)
    seen = []
    agent = trainer.agent
    sample, score, update = agent.sample_group, agent.score_rollout, agent.update
    agent.sample_group = lambda *a: seen.append(("act", torch.get_num_threads())) or sample(*a)
    agent.score_rollout = lambda *a: seen.append(("score", torch.get_num_threads())) or score(*a)
    agent.update = lambda *a, **kw: (
        seen.append(("learn", torch.get_num_threads())) or update(*a, **kw)
    )
    try:
        trainer.collect(*trainer.env.reset(seed=0))
        trainer.learn()
        assert set(seen) == {("act", 1), ("score", 2), ("learn", 2)}
        assert torch.get_num_threads() == 1  # hardware.threads, for acting
    finally:
        trainer.close()


def test_learning_starved_of_cpu_warns_once(tmp_path, caplog):
    # Threads that get far less CPU time than their cores' worth are competing with other
    # processes: a run that chose its thread count says so (once), and how to avoid it.
    overrides = probe_overrides("ConstantRewardEnv") + ["hardware.learn_threads=2"]
    trainer = Trainer(train_config(FAST + overrides), tmp_path)
    judged = []
    trainer._check_cpu_share = lambda *args: judged.append(args)
    try:
        obs, infos = trainer.collect(*trainer.env.reset(seed=0))
        trainer.learn()
        assert judged == []  # the first update compiles and warms up
        trainer.collect(obs, infos)
        trainer.learn()
        [(threads, cpu, wall)] = judged  # each later update's own CPU and wall time
        assert threads == 2 and cpu > 0 and wall > 0
        del trainer._check_cpu_share
        with caplog.at_level(logging.WARNING, logger="ippo"):
            trainer._check_cpu_share(2, 1.9, 1.0)  # both cores busy: fine
            trainer._check_cpu_share(1, 0.5, 1.0)  # one thread: not judged
            trainer._check_cpu_share(2, 0.01, 0.02)  # too short to judge
            assert caplog.records == []
            trainer._check_cpu_share(2, 1.0, 1.0)
            trainer._check_cpu_share(2, 1.0, 1.0)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1
        assert "learning on 2 threads got 1.0 cores' worth" in warnings[0]
        assert "hardware.learn_threads=1" in warnings[0]
    finally:
        trainer.close()


def test_automatic_learning_threads_fall_back_to_one_when_starved(tmp_path, caplog):
    # Two runs sharing the cores, each learning on all of them, spin against each other:
    # an automatic thread count drops to one thread after the first starved update.
    trainer = Trainer(train_config(FAST + probe_overrides("ConstantRewardEnv")), tmp_path)
    try:
        assert trainer.learn_threads is None  # hardware.learn_threads=null: automatic
        with caplog.at_level(logging.WARNING, logger="ippo"):
            trainer._check_cpu_share(2, 1.9, 1.0)  # both cores busy: fine
            assert trainer.learn_threads is None and caplog.records == []
            trainer._check_cpu_share(2, 1.0, 1.0)
        [warning] = [r.getMessage() for r in caplog.records]
        assert "learning on 2 threads got 1.0 cores' worth" in warning
        assert "goes on with hardware.learn_threads=1" in warning
        assert trainer.learn_threads == 1
        seen = []
        update = trainer.agent.update
        trainer.agent.update = lambda *a, **kw: (
            seen.append(torch.get_num_threads()) or update(*a, **kw)
        )
        trainer.collect(*trainer.env.reset(seed=0))
        trainer.learn()
        assert seen == [1]
    finally:
        trainer.close()
