"""Every shipped env config trains from the CLI, and bad spaces/networks fail in one line.

speaker_listener (the default env) is covered by tests/test_cli.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from omegaconf import OmegaConf
from pettingzoo import ParallelEnv

from ippo_cli.paths import CONF_DIR
from tests.conftest import probe_overrides, run_cli, train_config

QUIET = ["logger=none", "progress=false", "eval_episodes=1"]

# env config -> (overrides keeping the run short, networks the agent must have)
SHORT = ["algorithm.learn_step=128", "algorithm.total_steps=256"]
ENVS = {
    # One network per name prefix; when no two agents share one, per agent id.
    "simple": (SHORT, ["agent_0"]),
    "simple_spread": (SHORT, ["agent"]),
    "simple_adversary": (SHORT, ["adversary", "agent"]),
    "simple_push": (SHORT, ["adversary_0", "agent_0"]),
    "simple_reference": (SHORT, ["agent"]),
    "simple_crypto": (SHORT, ["alice_0", "bob_0", "eve_0"]),
    "simple_tag": (SHORT, ["adversary", "agent"]),
    "simple_world_comm": (SHORT, ["adversary", "agent", "leadadversary"]),
    "simple_line": (SHORT, ["agent"]),
    "simple_formation": (SHORT, ["agent"]),
    "collect_treasure": (SHORT, ["collector", "deposit"]),
    # 20 pistons with 32x32x3 images through network=auto's CNN sized to them: keep tiny.
    "pistonball": (
        [
            "env.num_envs=1",
            "env.kwargs.max_cycles=20",
            "algorithm.learn_step=32",
            "algorithm.total_steps=64",
            "algorithm.batch_size=64",
            "algorithm.update_epochs=2",
        ],
        ["piston"],
    ),
    "knights_archers_zombies": (
        ["env.kwargs.max_cycles=50", "algorithm.learn_step=128", "algorithm.total_steps=256"],
        ["archer", "knight"],
    ),
}


@pytest.mark.parametrize("env_name", list(ENVS))
def test_shipped_env_config_trains_from_the_cli(tmp_path, env_name):
    overrides, networks = ENVS[env_name]
    run_dir = tmp_path / "run"
    args = ["train", f"env={env_name}", *QUIET, *overrides, f"hydra.run.dir={run_dir}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr

    learn_step = int(next(o for o in overrides if "learn_step" in o).split("=")[1])
    total = int(next(o for o in overrides if "total_steps" in o).split("=")[1])
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    updates = [r for r in rows if "update" in r and "eval/return" not in r]
    assert [r["env_steps"] for r in updates] == list(range(learn_step, total + 1, learn_step))
    for row in updates:
        for net in networks:
            for key in ("policy_loss", "value_loss", "entropy"):
                value = row[f"{net}/{key}"]
                assert value is not None and math.isfinite(value), (net, key, row)
    evals = [r for r in rows if r.get("eval/return") is not None]
    assert evals and math.isfinite(evals[-1]["eval/return"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == total and not summary["interrupted"]

    from ippo_cli.ippo import IPPO

    agent = IPPO.load(str(run_dir / "checkpoints" / "last.pt"))
    assert sorted(agent.actors.keys()) == networks
    assert sorted(agent.critics.keys()) == networks
    assert sorted(agent.shared_agent_ids) == sorted({a.rsplit("_", 1)[0] for a in agent.agent_ids})
    if env_name == "pistonball":
        assert len(agent.agent_ids) == 20
        assert agent.observation_spaces["piston_0"].shape == (32, 32, 3)
        # network=auto sized the CNN to the 32x32 images (the reference's kernel 3,
        # stride 1 default would keep a 28x28 feature map and 1.6M parameters).
        encoder = agent.actors["piston"].encoder
        features = encoder.convs(torch.zeros(1, *encoder.image_shape)).shape
        assert features[2] * features[3] <= 25
        assert sum(p.numel() for p in agent.actors["piston"].parameters()) < 100_000


# ------------------------------------------------------------------ bad input
class GraphObsEnv(ParallelEnv):
    """Two agents observing a space IPPO cannot encode (``Graph``, or ``Text``)."""

    metadata = {"name": "graph_obs_v0"}

    def __init__(self, space: str = "graph") -> None:
        self.possible_agents = ["node_0", "node_1"]
        self.agents: list[str] = []
        if space == "graph":
            self._obs_space: spaces.Space = spaces.Graph(
                node_space=spaces.Box(-1.0, 1.0, (3,), np.float32), edge_space=None
            )
        else:
            self._obs_space = spaces.Text(max_length=8)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(2)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.agents = list(self.possible_agents)
        return {a: self._obs_space.sample() for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        obs = {a: self._obs_space.sample() for a in self.agents}
        zeros = {a: 0.0 for a in self.agents}
        false = {a: False for a in self.agents}
        return obs, zeros, false, dict(false), {a: {} for a in self.agents}


BAD = {
    "misspelled_net_config_key": (
        ["network.encoder_config.hiden_size=[8]"],
        ["network.encoder_config.hiden_size"],
    ),
    "image_too_small_for_the_cnn": (
        [
            "env=pistonball",
            "network=cnn",
            "network.encoder_config.channel_size=[8,8,8]",
            "network.encoder_config.kernel_size=[8,8,8]",
            "network.encoder_config.stride_size=[4,4,4]",
        ],
        ["32x32", "too small", "kernel"],
    ),
    "graph_observation_space": (
        ["env=pettingzoo", "env.factory=tests.test_env_configs.GraphObsEnv"],
        ["Graph", "observation"],
    ),
    "text_observation_space": (
        [
            "env=pettingzoo",
            "env.factory=tests.test_env_configs.GraphObsEnv",
            "+env.kwargs.space=text",
        ],
        ["Text", "observation"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_space_or_network_fails_in_one_line_before_any_run(tmp_path, case):
    overrides, words = BAD[case]
    run_dir = tmp_path / "run"
    result = run_cli(["train", "logger=none", *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ippo: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.stderr
    assert not run_dir.exists() and not (tmp_path / "outputs").exists()


# ------------------------------------------------------------------ network=auto on images
def _conv_layers(overrides: list[str]) -> list[tuple[int, int]]:
    from ippo_cli.trainer import build_agent

    cfg = train_config([*probe_overrides("ObsKeyRewardEnv", kind="image"), *overrides])
    image = spaces.Box(0, 255, (12, 12, 3), np.uint8)
    agent = build_agent(cfg, [image], [spaces.Discrete(2)], ["agent_0"], "cpu")
    convs = [m for m in agent.actors["agent_0"].encoder.convs if isinstance(m, torch.nn.Conv2d)]
    return [(c.kernel_size[0], c.stride[0]) for c in convs]


def test_network_auto_sizes_the_cnn_to_the_image_and_explicit_kernels_stay():
    assert _conv_layers([]) == [(3, 1), (4, 2)]  # 12x12 -> 10x10 -> 4x4
    reference = ["+network.encoder_config.kernel_size=3", "+network.encoder_config.stride_size=1"]
    assert _conv_layers(reference) == [(3, 1), (3, 1)]
    per_group = ["+network.groups.agent.encoder_config.channel_size=[8,8,8]"]
    assert len(_conv_layers(per_group)) == 3


def test_simple_spread_composes_its_tuned_settings_and_they_can_be_overridden():
    tuned = train_config(["env=simple_spread"])
    assert (tuned.env.backend, tuned.env.num_envs) == ("batched", 32)
    assert (tuned.algorithm.lr, tuned.algorithm.batch_size, tuned.algorithm.gamma) == (
        7e-4,
        512,
        0.9,
    )
    assert train_config(["env=simple_spread", "algorithm.gamma=0.99"]).algorithm.gamma == 0.99
    reference = train_config(["env=simple_spread", "algorithm=ippo"]).algorithm
    assert (reference.lr, reference.gamma, reference.update_epochs) == (1e-4, 0.99, 4)


def test_simple_reference_composes_its_tuned_settings_and_they_can_be_overridden():
    tuned = train_config(["env=simple_reference"])
    assert (tuned.env.backend, tuned.env.num_envs) == ("batched", 32)
    shipped = OmegaConf.load(CONF_DIR / "algorithm" / "simple_reference.yaml")
    for key, value in shipped.items():
        if key != "defaults":
            assert tuned.algorithm[key] == value, key
    assert train_config(["env=simple_reference", "algorithm.gamma=0.99"]).algorithm.gamma == 0.99
    reference = train_config(["env=simple_reference", "algorithm=ippo"]).algorithm
    assert (reference.lr, reference.gamma, dict(reference.signalling)) == (1e-4, 0.99, {})
