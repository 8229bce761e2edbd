"""A user's own env, as a user meets ippo with it: a module in the working directory
(no PYTHONPATH), an env that cannot render, an env that raises when built, AEC envs,
and PettingZoo families whose extras are missing."""

import importlib.util
import json
import math
import shutil

import pytest

from tests.conftest import run_cli, run_training

# What a user writes: a ParallelEnv and a factory that takes its own kwargs (no render_mode).
USER_MODULE = """
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class TwoAgents(ParallelEnv):
    metadata = {"name": "two_agents_v0"}

    def __init__(self, length=4):
        self.possible_agents = ["a_0", "a_1"]
        self.agents = []
        self.length = length
        self._obs_space = spaces.Box(-1, 1, (2,), np.float32)
        self._act_space = spaces.Discrete(2)

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: np.ones(2, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        done = self.t >= self.length
        out = (
            {a: np.ones(2, np.float32) for a in self.agents},
            {a: float(actions[a]) for a in self.agents},
            {a: done for a in self.agents},
            {a: False for a in self.agents},
            {a: {} for a in self.agents},
        )
        if done:
            self.agents = []
        return out


def make(**kwargs):
    return TwoAgents(**kwargs)
"""

TINY = [
    "logger=none",
    "progress=false",
    "env.num_envs=2",
    "algorithm.learn_step=64",
    "algorithm.total_steps=64",
    "eval_episodes=2",
    "hardware.vec_env=sync",
    "hardware.torch_compile=null",
]
USER_ENV = ["env=pettingzoo", "env.factory=my_env.make", "+env.kwargs.length=4"]


def _one_line(result, message: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A user's directory holding my_env.py, and one short run trained there."""
    cwd = tmp_path_factory.mktemp("user")
    (cwd / "my_env.py").write_text(USER_MODULE)
    result = run_cli(["train", *USER_ENV, *TINY], cwd, timeout=180, script=True)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "outputs" / "train").glob("*/*")
    return cwd, run_dir


def test_a_module_in_the_working_directory_trains_and_evaluates(user_run):
    cwd, run_dir = user_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 64 and summary["final_eval"] is not None
    result = run_cli(["eval", f"ckpt={run_dir}", "episodes=2"], cwd, timeout=180, script=True)
    assert result.returncode == 0, result.stderr
    report = json.loads((run_dir / "checkpoints" / "eval.json").read_text())
    assert report["episodes"] == 2 and report["episode_length"]["mean"] == 4


def test_a_module_in_the_working_directory_sweeps_in_launcher_processes(tmp_path):
    # The joblib launcher runs each job in a fresh process (loky), as submitit does.
    (tmp_path / "my_env.py").write_text(USER_MODULE)
    args = ["train", "-m", *USER_ENV, *TINY, "seed=0", "launcher=joblib"]
    result = run_cli(args, tmp_path, timeout=240, script=True)
    assert result.returncode == 0, result.stderr
    (summary_path,) = (tmp_path / "outputs" / "multirun").glob("*/*/summary.json")
    jobs = json.loads(summary_path.read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["completed"], jobs


def test_eval_render_on_an_env_that_cannot_render_is_refused_in_one_line(user_run):
    cwd, run_dir = user_run
    result = run_cli(["eval", f"ckpt={run_dir}", "render=true"], cwd, timeout=180)
    assert result.returncode == 2
    _one_line(result, "render=true: env.factory='my_env.make' takes no render_mode argument")
    assert not (run_dir / "checkpoints" / "eval.gif").exists()


def test_an_env_that_raises_when_built_for_eval_is_one_line(user_run, tmp_path):
    _, run_dir = user_run
    shutil.copy(run_dir / "checkpoints" / "last.pt", tmp_path / "last.pt")
    (tmp_path / "my_env.py").write_text("def make(**kwargs):\n    raise RuntimeError('no map')\n")
    result = run_cli(["eval", "ckpt=last.pt"], tmp_path, timeout=180, script=True)
    assert result.returncode == 2
    _one_line(
        result, "env.factory='my_env.make' with kwargs {'length': 4} raised RuntimeError: no map"
    )


def test_an_aec_env_whose_agents_act_together_is_converted_and_trains(tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "env=pettingzoo",
        "env.factory=tests.probe_envs.SimultaneousAEC",
        "env.name=probe",
        *TINY,
        f"hydra.run.dir={run}",
    ]
    result = run_cli(args, tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    assert (
        "converted to a ParallelEnv with pettingzoo's aec_to_parallel"
        in (run / "train.log").read_text()
    )
    assert json.loads((run / "summary.json").read_text())["env_steps"] == 64


def test_a_turn_based_aec_env_is_refused_in_one_line(tmp_path):
    args = ["train", "env=pettingzoo", "env.factory=tests.probe_envs.TurnBasedAEC", *TINY]
    result = run_cli(args, tmp_path, timeout=120)
    assert result.returncode == 2
    line = _one_line(result, "returned an AECEnv whose agents take turns")
    assert "IPPO here needs a ParallelEnv" in line
    assert not (tmp_path / "outputs").exists()


def test_a_pettingzoo_family_without_its_extra_names_the_install():
    from ippo_cli.envs.factory import missing_extra

    box2d = ModuleNotFoundError("No module named 'Box2D'", name="Box2D")
    hint = missing_extra("pettingzoo.sisl.multiwalker_v9.parallel_env", box2d)
    assert hint.endswith("pip install 'pettingzoo[sisl]'")
    # An env that re-raises the missing module with its own words (hanabi does).
    reraised = ImportError("Hanabi depends on OpenSpiel via Shimmy")
    reraised.__cause__ = ModuleNotFoundError("No module named 'shimmy'", name="shimmy")
    hint = missing_extra("pettingzoo.classic.hanabi_v5.env", reraised)
    assert hint.endswith("pip install 'pettingzoo[classic]'")
    # Not a family's extra: a user's module, or a PettingZoo env module that does not exist.
    assert missing_extra("my_env.make", box2d) == ""
    gone = ModuleNotFoundError("No module 'pettingzoo.sisl.nope'", name="pettingzoo.sisl.nope")
    assert missing_extra("pettingzoo.sisl.nope.env", gone) == ""


@pytest.mark.skipif(
    importlib.util.find_spec("multi_agent_ale_py") is not None,
    reason="PettingZoo's atari extra is installed",
)
def test_an_atari_env_without_its_extra_is_refused_naming_the_install(tmp_path):
    args = ["train", "env=pettingzoo", "env.factory=pettingzoo.atari.pong_v3.parallel_env"]
    result = run_cli(args, tmp_path, timeout=120)
    assert result.returncode == 2
    _one_line(result, "No module named 'multi_agent_ale_py'")
    assert "pip install 'pettingzoo[atari]'" in result.stderr


def test_multiwalker_from_the_sisl_extra_trains(tmp_path):
    # pettingzoo[sisl] (our `sisl` extra, part of `dev`) brings Box2D: three walkers,
    # Box observations and actions.
    overrides = [
        "env=pettingzoo",
        "env.factory=pettingzoo.sisl.multiwalker_v9.parallel_env",
        "env.name=multiwalker",
        "+env.kwargs.max_cycles=40",
        "env.num_envs=2",
        "algorithm.learn_step=80",
        "algorithm.total_steps=80",
        "eval_episodes=1",
    ]
    trainer = run_training(tmp_path, overrides)
    assert trainer.agent.agent_ids == ["walker_0", "walker_1", "walker_2"]
    assert trainer.summary["env_steps"] == 80
    assert math.isfinite(trainer.summary["final_eval"])
