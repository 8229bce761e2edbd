"""hardware.torch_compile: what `auto` chooses, and that evaluation never compiles."""

import logging

import pytest
import torch

from ippo_cli import compiled
from ippo_cli.compiled import AUTO_MIN_UPDATES, resolve_mode

CPU = torch.device("cpu")


def test_auto_compiles_long_cpu_runs_only(caplog, monkeypatch):
    monkeypatch.setattr(compiled, "cpp_compiler", lambda: "/usr/bin/g++")
    with caplog.at_level(logging.INFO, logger="ippo"):
        assert resolve_mode("auto", CPU, AUTO_MIN_UPDATES) == "default"
        assert resolve_mode("auto", CPU, AUTO_MIN_UPDATES - 1) is None
        assert resolve_mode("auto", torch.device("cuda"), 10 * AUTO_MIN_UPDATES) is None
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"hardware.torch_compile=auto: {AUTO_MIN_UPDATES} updates on CPU -> default",
        f"hardware.torch_compile=auto: {AUTO_MIN_UPDATES - 1} updates are too few to repay "
        "compiling -> eager",
        "hardware.torch_compile=auto: not on cuda (measured on CPU only) -> eager",
    ]
    monkeypatch.setattr(compiled, "cpp_compiler", lambda: None)
    with caplog.at_level(logging.INFO, logger="ippo"):
        assert resolve_mode("auto", CPU, 10 * AUTO_MIN_UPDATES) is None
    assert "no C++ compiler" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("setting", [None, "default", "max-autotune"])
def test_a_chosen_mode_is_kept(setting):
    assert resolve_mode(setting, torch.device("cuda"), 1) == setting


def test_the_trainer_resolves_auto_for_its_run(tmp_path, monkeypatch, caplog):
    from ippo_cli.trainer import Trainer
    from tests.conftest import FAST, probe_overrides, train_config

    monkeypatch.setattr(compiled, "cpp_compiler", lambda: None)  # no compiling here
    overrides = probe_overrides("ConstantRewardEnv") + FAST + ["hardware.torch_compile=auto"]
    steps = AUTO_MIN_UPDATES * 256  # FAST's learn_step
    for total, expected in ((steps - 256, "too few"), (steps, "no C++ compiler")):
        cfg = train_config(overrides + [f"algorithm.total_steps={total}"])
        with caplog.at_level(logging.INFO, logger="ippo"):
            trainer = Trainer(cfg, tmp_path)
        trainer.close()
        assert trainer.agent.torch_compiler is None
        assert expected in [r for r in caplog.messages if "torch_compile" in r][-1]
    monkeypatch.setattr(compiled, "cpp_compiler", lambda: "/usr/bin/g++")
    trainer = Trainer(train_config(overrides + [f"algorithm.total_steps={steps}"]), tmp_path)
    trainer.close()
    assert trainer.agent.torch_compiler == "default"


def test_auto_counts_an_evolutions_updates_per_member(monkeypatch, caplog):
    # An evolution's total_steps is its population's budget: each member's networks train
    # for a population_size-th of its updates, too few to repay compiling here.
    from ippo_cli.trainer import compile_mode_of
    from tests.conftest import train_config

    monkeypatch.setattr(compiled, "cpp_compiler", lambda: "/usr/bin/g++")
    learn_step, members = 256, 4
    population = AUTO_MIN_UPDATES * learn_step  # enough updates for one run, not each member
    overrides = [
        "hardware.torch_compile=auto",
        f"algorithm.learn_step={learn_step}",
        f"algorithm.total_steps={population}",
    ]
    assert compile_mode_of(train_config(overrides), CPU) == "default"
    evolution = [*overrides, "hpo=evolution", f"hpo.population_size={members}"]
    with caplog.at_level(logging.INFO, logger="ippo"):
        assert compile_mode_of(train_config(evolution), CPU) is None
    assert caplog.messages[-1] == (
        f"hardware.torch_compile=auto: {AUTO_MIN_UPDATES // members} updates per member are "
        "too few to repay compiling -> eager"
    )
    longer = [*evolution, f"algorithm.total_steps={members * population}"]
    assert compile_mode_of(train_config(longer), CPU) == "default"


def test_auto_counts_the_updates_of_every_run_of_a_stack(tmp_path, monkeypatch, caplog):
    # One compiled update trains every member of a stack of runs (launcher=stacked): runs
    # each too short to repay compiling repay it together.
    from ippo_cli import run_stack, stacking
    from ippo_cli.trainer import compile_mode_of
    from tests.conftest import FAST, probe_overrides, train_config

    monkeypatch.setattr(compiled, "cpp_compiler", lambda: "/usr/bin/g++")
    runs, learn_step = 4, 256  # FAST's learn_step
    each = AUTO_MIN_UPDATES // runs
    overrides = probe_overrides("ConstantRewardEnv") + FAST
    overrides += ["hardware.torch_compile=auto", f"algorithm.total_steps={each * learn_step}"]
    cfg = train_config(overrides)
    assert compile_mode_of(cfg, CPU) is None
    with caplog.at_level(logging.INFO, logger="ippo"):
        assert compile_mode_of(cfg, CPU, runs) == "default"
    assert caplog.messages[-1] == (
        f"hardware.torch_compile=auto: {each * runs} updates ({runs} stacked runs of {each}) "
        "on CPU -> default"
    )
    seen = []

    class Stack:  # what the stack's members would learn with, not training them
        def __init__(self, members, notes):
            seen.extend(m.agent.torch_compiler for m in members)
            for m in members:
                m.close()

        def run(self):
            return [{} for _ in seen]

    monkeypatch.setattr(run_stack, "RunStack", Stack)
    jobs = [
        stacking.Job(i, [], train_config([*overrides, f"seed={i}"]), tmp_path / str(i))
        for i in range(runs)
    ]
    stacking.run_stack(jobs)
    assert seen == ["default"] * runs
