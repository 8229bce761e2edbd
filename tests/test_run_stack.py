"""Runs trained as the members of one stack (ippo_cli.run_stack, launcher=stacked): a
member learns exactly what it learns alone, with its own hyperparameters, and a failing
member stops alone."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ippo_cli import run_stack as run_stack_module
from ippo_cli import trainer as trainer_module
from ippo_cli.run_stack import RunStack
from ippo_cli.stacked_update import update_agents
from ippo_cli.stacking import Job, plan_stacks, run_stack
from ippo_cli.trainer import Trainer
from tests.conftest import job_trainer, probe_overrides, train_config
from tests.probe_envs import _box, _ProbeEnv

ONE_UPDATE = [
    "algorithm.learn_step=64",
    "algorithm.batch_size=16",
    "algorithm.update_epochs=2",
    "algorithm.total_steps=64",
    "env.num_envs=4",
    "eval_every=0",
    "eval_episodes=1",
    "checkpoint.every=0",
]
SPEAKER_LISTENER = ["env=speaker_listener", *ONE_UPDATE]
PROBE = [*probe_overrides("ObsRewardEnv", n_agents=2, episode_len=3), *ONE_UPDATE]


class NanObsEnv(_ProbeEnv):
    """Observations of ones until env step ``nan_at`` of an episode, then NaN."""

    def __init__(self, nan_at: int = 3) -> None:
        super().__init__(("agent_0",), _box(2), spaces.Discrete(2), episode_len=50)
        self.nan_at = nan_at

    def _obs(self, agent: str) -> np.ndarray:
        value = np.nan if self.t >= self.nan_at else 1.0
        return np.full(2, value, np.float32)


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    agent = trainer.agent
    out = {}
    for kind, nets in (("actor", agent.actors), ("critic", agent.critics)):
        for net_id, net in nets.items():
            for name, p in net.state_dict().items():
                out[f"{kind}/{net_id}/{name}"] = p.detach().clone()
    return out


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(
    ("env", "device"),
    [
        (PROBE, "cpu"),
        (SPEAKER_LISTENER, "cpu"),
        pytest.param(SPEAKER_LISTENER, "cuda", marks=GPU),  # the same code fills a GPU
    ],
    ids=["probe", "speaker_listener", "speaker_listener-cuda"],
)
def test_a_member_of_a_stack_learns_what_it_learns_alone(tmp_path, env, device):
    env = [*env, f"hardware.device={device}"]
    seeds = [0, 1]
    solo = []
    for seed in seeds:
        trainer = job_trainer(tmp_path, f"solo{seed}", [*env, f"seed={seed}"])
        trainer.run()
        solo.append(trainer)
    members = [job_trainer(tmp_path, f"member{seed}", [*env, f"seed={seed}"]) for seed in seeds]
    before = [_params(m) for m in members]
    summaries = RunStack(members).run()
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    for member, alone, start in zip(members, solo, before, strict=True):
        after = _params(member)
        assert any(not torch.equal(after[k], start[k]) for k in after)  # it learned
        _assert_close(after, _params(alone))
        # The same rollout: the same logged metrics, timing apart.
        rows = [_rows(t.run_dir) for t in (member, alone)]
        assert rows[0] == rows[1]


def _rows(run_dir) -> list[dict[str, Any]]:
    timing = ("wall_time", "steps_per_second")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]


def test_members_learning_rates_really_differ(tmp_path):
    still = job_trainer(tmp_path, "still", [*PROBE, "algorithm.lr=1e-12"])
    moving = job_trainer(tmp_path, "moving", [*PROBE, "algorithm.lr=1e-3"])
    before = [_params(m) for m in (still, moving)]
    RunStack([still, moving]).run()
    moved = [
        max((after[k] - start[k]).abs().max().item() for k in start)
        for after, start in zip([_params(still), _params(moving)], before, strict=True)
    ]
    assert moved[0] < 1e-8 < 1e-4 < moved[1]


def test_a_member_stopping_early_for_kl_does_not_hold_the_others_back(tmp_path):
    # A tiny target_kl: a member stops at its first minibatch whose KL is above zero; its
    # partner without a limit takes every minibatch step.
    tight = job_trainer(tmp_path, "tight", [*PROBE, "algorithm.target_kl=1e-9"])
    free = job_trainer(tmp_path, "free", PROBE)
    RunStack([tight, free]).run()
    updates = [t.agent.last_metrics["agent"]["updates"] for t in (tight, free)]
    assert updates[0] < updates[1] == 2 * (64 // 16)


def test_a_stack_starved_of_cpu_learns_on_one_thread_for_every_member(tmp_path, monkeypatch):
    # Other processes on the cores make a stack's two learning threads spin against them:
    # the stack's updates are judged as a lone run's, and every member falls back.
    monkeypatch.setattr(trainer_module, "learn_threads_auto", lambda *args: 2)
    monkeypatch.setattr(trainer_module, "STARVED_MIN_SECONDS", 0.0)
    monkeypatch.setattr(trainer_module, "STARVED_CPU_SHARE", 1e9)  # every update starved
    seen = []

    def update(*args):
        seen.append(torch.get_num_threads())
        return update_agents(*args)

    monkeypatch.setattr(run_stack_module, "update_agents", update)
    three = [*PROBE, "algorithm.total_steps=192"]
    members = [job_trainer(tmp_path, f"m{seed}", [*three, f"seed={seed}"]) for seed in (0, 1)]
    RunStack(members).run()
    assert seen == [2, 2, 1]  # the first update warms up, unjudged; the second starves
    assert [m.learn_threads for m in members] == [1, 1]
    for m in members:
        assert "goes on with hardware.learn_threads=1" in (m.run_dir / "train.log").read_text()


def test_a_failing_member_stops_alone_and_the_others_train_on(tmp_path):
    nan_env = [
        "env=pettingzoo",
        f"env.factory={__name__}.NanObsEnv",
        "env.name=nan",
        "+env.kwargs.nan_at=3",
        *ONE_UPDATE,
        "algorithm.total_steps=128",
    ]
    good_env = [*probe_overrides("ObsRewardEnv", n_agents=1, episode_len=3), *ONE_UPDATE]
    good = job_trainer(tmp_path, "good", [*good_env, "algorithm.total_steps=128"])
    bad = job_trainer(tmp_path, "bad", nan_env)
    summaries = RunStack([bad, good]).run()
    assert summaries[0]["status"] == "failed"
    assert "non-finite observation" in summaries[0]["error"]
    assert "\n" not in summaries[0]["error"]
    assert summaries[1]["status"] == "completed"
    assert summaries[1]["env_steps"] == 128
    assert (tmp_path / "good" / "checkpoints" / "last.pt").exists()
    log = (tmp_path / "bad" / "train.log").read_text()
    assert "member failed: non-finite observation" in log
    assert "member failed" not in (tmp_path / "good" / "train.log").read_text()


def _job(num: int, overrides: list[str], tmp_path) -> Job:
    return Job(num, overrides, train_config(overrides), tmp_path / str(num))


def broken_env(**kwargs: Any) -> None:
    raise FileNotFoundError("no scenario files here")


def test_what_a_member_logs_while_it_is_built_goes_to_its_own_train_log(tmp_path, caplog):
    # The compile choice of a member that starts, the reason of one that cannot: each in
    # its job's train.log, as a solo run writes them (at INFO, as the CLI logs).
    caplog.set_level(logging.INFO)
    broken = [
        "env=pettingzoo",
        f"env.factory={__name__}.broken_env",
        "env.name=broken",
        *ONE_UPDATE,
    ]
    jobs = [
        _job(0, [*PROBE, "hardware.torch_compile=auto"], tmp_path),
        _job(1, [*broken, "hardware.torch_compile=auto"], tmp_path),
    ]
    summaries = run_stack(jobs)
    assert [s["status"] for s in summaries] == ["completed", "failed"]
    good, bad = ((job.run_dir / "train.log").read_text() for job in jobs)
    assert good.count("hardware.torch_compile=auto: ") == 1
    assert "job failed to start: env.factory=" in bad and "no scenario files here" in bad
    assert "torch_compile" not in bad and "job failed" not in good


def test_jobs_are_grouped_by_what_they_share_and_capped_by_max_members(tmp_path):
    jobs = [
        _job(i, [*PROBE, f"seed={i}", f"algorithm.lr={lr}"], tmp_path)
        for i, lr in enumerate([1e-3, 3e-4, 1e-3])
    ]
    jobs.append(_job(3, [*PROBE, "algorithm.batch_size=32"], tmp_path))
    jobs.append(_job(4, [*PROBE, "resume=somewhere.pt"], tmp_path))
    stacks, notes = plan_stacks(jobs, max_members=2)
    assert [[job.num for job in stack] for stack in stacks] == [[0, 1], [2], [3], [4]]
    assert any("jobs 0, 1, 2 train as one stack, split in 2 stacks" in n for n in notes)
    assert any("differs" in n and "algorithm.batch_size" in n for n in notes)
    assert any(n.startswith("job 4 runs alone: resume=") for n in notes)


def _api_agent(**kwargs):
    from ippo_cli import IPPO

    torch.manual_seed(1)
    obs, act = spaces.Box(-5, 5, (4,)), spaces.Discrete(3)
    return IPPO([obs, obs], [act, act], ["a_0", "a_1"], batch_size=16, **kwargs)


def _experiences(agent, seed: int, steps: int = 32, envs: int = 2):
    rng = np.random.default_rng(seed)
    ids = agent.agent_ids

    def per_step(draw):
        return {a: [draw() for _ in range(steps)] for a in ids}

    return (
        per_step(lambda: rng.normal(size=(envs, 4)).astype(np.float32)),
        per_step(lambda: rng.integers(0, 3, size=envs)),
        per_step(lambda: np.full(envs, -np.log(3.0))),
        per_step(lambda: rng.normal(size=envs)),
        per_step(lambda: (rng.random(envs) < 0.1).astype(np.float64)),
        per_step(lambda: rng.normal(size=envs)),
        {a: rng.normal(size=(envs, 4)).astype(np.float32) for a in ids},
        {a: np.zeros(envs) for a in ids},
    )


@pytest.mark.parametrize("compiler", [None, "default"], ids=["eager", "compiled"])
def test_learn_together_leaves_each_agent_as_its_own_learn_does(compiler):
    # Two learning rates and a KL limit: the stack steps Adam row by row (_RowAdam),
    # compiled with the minibatch terms when the agents compile.
    from ippo_cli import learn_together
    from ippo_cli.compiled import compiled as compile_once

    settings = [{"lr": 1e-2}, {"lr": 3e-3, "target_kl": 2e-3, "ent_coef": 0.05}]
    alone = [_api_agent(**s) for s in settings]
    together = [_api_agent(**s, torch_compiler=compiler) for s in settings]
    compile_once.cache_clear()
    data = [_experiences(a, seed) for seed, a in enumerate(alone)]
    torch.manual_seed(7)  # the shuffles: each agent's drawn in turn, as learn() draws them
    expected = [agent.learn(d) for agent, d in zip(alone, data, strict=True)]
    torch.manual_seed(7)
    got = learn_together(together, data)
    # The minibatch terms and the row-wise Adam step, or nothing eager.
    assert compile_once.cache_info().currsize == (0 if compiler is None else 2)
    # A compiled forward pass rounds differently from the eager one.
    rtol, atol = (1e-5, 1e-6) if compiler is None else (1e-4, 1e-5)
    metric_tol = {"rel": 1e-4} if compiler is None else {"rel": 1e-4, "abs": atol}
    for solo, member, want, have in zip(alone, together, expected, got, strict=True):
        assert have.keys() == want.keys()
        for key in want:
            assert have[key] == pytest.approx(want[key], **metric_tol)
        assert solo.last_metrics["a"]["updates"] == member.last_metrics["a"]["updates"]
        for name, p in solo.actors["a"].state_dict().items():
            torch.testing.assert_close(
                member.actors["a"].state_dict()[name], p, rtol=rtol, atol=atol
            )
    # The KL limit stopped the second agent early; the first took every step.
    assert together[1].last_metrics["a"]["updates"] < together[0].last_metrics["a"]["updates"]
