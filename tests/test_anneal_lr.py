"""`algorithm.anneal_lr`: the learning rate each update uses falls linearly over
total_steps, alone and in a stack (each member from its own lr), and stays put without it
or under hpo=evolution."""

from __future__ import annotations

import pytest

from ippo_cli import run_stack as run_stack_module
from ippo_cli.run_stack import RunStack
from ippo_cli.trainer import Trainer
from tests.conftest import job_trainer, probe_overrides

FOUR_UPDATES = [
    *probe_overrides("ObsRewardEnv", n_agents=2, episode_len=3),
    "algorithm.learn_step=64",
    "algorithm.batch_size=32",
    "algorithm.update_epochs=1",
    "algorithm.total_steps=256",
    "env.num_envs=4",
    "eval_every=0",
    "eval_episodes=1",
    "checkpoint.every=0",
]


def _trainer(tmp_path, name: str, overrides: list[str]) -> Trainer:
    return job_trainer(tmp_path, name, [*FOUR_UPDATES, *overrides])


def _optimizer_lrs(agent) -> set[float]:
    opts = [*agent.actor_optimizers.values(), *agent.critic_optimizers.values()]
    return {float(group["lr"]) for opt in opts for group in opt.param_groups}


def _record_update_lrs(trainer: Trainer) -> list[float]:
    """The one learning rate every optimizer of ``trainer``'s agent holds at each update."""
    seen, update = [], trainer.agent.update

    def recording(*args, **kwargs):
        (lr,) = _optimizer_lrs(trainer.agent)
        seen.append(lr)
        return update(*args, **kwargs)

    trainer.agent.update = recording
    return seen


@pytest.mark.parametrize("anneal", [True, False])
def test_a_run_anneals_its_learning_rate_linearly_over_total_steps(tmp_path, anneal):
    trainer = _trainer(tmp_path, "run", ["algorithm.lr=0.004", f"algorithm.anneal_lr={anneal}"])
    seen = _record_update_lrs(trainer)
    trainer.run()
    expected = [0.004, 0.003, 0.002, 0.001] if anneal else [0.004] * 4
    assert seen == pytest.approx(expected, rel=1e-12)
    assert trainer.agent.lr == 0.004  # the hyperparameter itself is left as it was


def test_each_member_of_a_stack_anneals_from_its_own_learning_rate(tmp_path, monkeypatch):
    members = [
        _trainer(tmp_path, f"m{i}", [f"algorithm.lr={lr}", "algorithm.anneal_lr=true"])
        for i, lr in enumerate((0.004, 0.008))
    ]
    seen: list[list[float]] = []
    update_agents = run_stack_module.update_agents

    def recording(agents, *args, **kwargs):
        seen.append([next(iter(_optimizer_lrs(a))) for a in agents])
        assert all(len(_optimizer_lrs(a)) == 1 for a in agents)
        return update_agents(agents, *args, **kwargs)

    monkeypatch.setattr(run_stack_module, "update_agents", recording)
    summaries = RunStack(members).run()
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    fractions = [1.0, 0.75, 0.5, 0.25]
    assert seen == [pytest.approx([0.004 * f, 0.008 * f], rel=1e-12) for f in fractions]


def test_evolution_keeps_each_members_mutated_learning_rate(tmp_path):
    trainer = _trainer(tmp_path, "member", ["hpo=evolution", "algorithm.anneal_lr=true"])
    trainer.progress.env_steps = 192  # three quarters through: annealing would cut lr
    trainer.set_learning_rate()
    assert _optimizer_lrs(trainer.agent) == {trainer.agent.lr}
