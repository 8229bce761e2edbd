"""What a run writes: strict JSON files (every parser reads them), and evaluations that
refuse an env's non-finite reward instead of summing it."""

import json
import math
import re

import numpy as np
import pytest
from gymnasium import spaces
from omegaconf import OmegaConf

from ippo_cli import IPPO
from ippo_cli.envs.vector import EnvOutputError
from ippo_cli.episodes import run_episodes
from ippo_cli.files import strict_json, write_json
from ippo_cli.loggers import RunLogger
from tests.probe_envs import NonFiniteEnv


def _strict_load(text: str):
    """json.loads that rejects NaN and Infinity, as strict parsers (JavaScript, jq) do."""

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    data = {
        "final_eval": math.nan,
        "best_eval": np.float64("inf"),
        "jobs": [{"return": {"mean": -math.inf, "std": 0.5}}, (1, math.nan)],
        "name": "nan",
    }
    path = tmp_path / "summary.json"
    write_json(path, data)
    assert _strict_load(path.read_text()) == {
        "final_eval": None,
        "best_eval": None,
        "jobs": [{"return": {"mean": None, "std": 0.5}}, [1, None]],
        "name": "nan",
    }
    assert _strict_load(strict_json([math.nan, 2.0])) == [None, 2.0]


def test_metrics_rows_are_strict_json(tmp_path):
    logger_cfg = OmegaConf.create({"kind": "none"})
    logger = RunLogger(tmp_path, logger_cfg, {})
    logger.log({"env_steps": 8, "return": math.nan, "net/approx_kl": math.inf, "loss": 0.25})
    logger.close()
    (row,) = [_strict_load(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row == {"env_steps": 8, "return": None, "net/approx_kl": None, "loss": 0.25}


def test_evaluation_refuses_a_non_finite_reward_naming_agent_and_step():
    agent = IPPO([spaces.Box(-1, 1, (1,))], [spaces.Discrete(2)], ["agent_0"])
    env = NonFiniteEnv("reward", after=7, episode_len=5)
    # Step 7 of the env's life is the 2nd step of its 2nd 5-step episode.
    message = "non-finite reward (nan) from agent 'agent_0' in the evaluation env at step 2 of "
    with pytest.raises(EnvOutputError, match=re.escape(message + "episode 2")):
        run_episodes(agent, env, episodes=3, seed=0)
    assert agent.training  # restored
