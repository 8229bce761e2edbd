"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2`: each rank trains
and saves what it ended with, so the test can compare the ranks.

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed_worker.py MODE OUT

MODE ``trainer``: the `ippo train` Trainer with hardware.distributed=true on a probe env.
MODE ``accelerator``: the Python API, IPPO(..., accelerator=accelerate.Accelerator()),
learning from rank-specific random experiences.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def weights(agent) -> dict[str, torch.Tensor]:
    return {
        f"{table}/{net}/{k}": v.detach().cpu().clone()
        for table, nets in (("actors", agent.actors), ("critics", agent.critics))
        for net, module in nets.items()
        for k, v in module.state_dict().items()
    }


def run_trainer(out: Path) -> None:
    from ippo_cli.trainer import Trainer
    from tests.conftest import probe_overrides, train_config

    cfg = train_config(
        probe_overrides("ObsRewardEnv", n_agents=2)
        + [
            "hardware=distributed",
            "env.num_envs=2",
            "algorithm.learn_step=64",
            "algorithm.batch_size=32",
            "algorithm.total_steps=512",
            "algorithm.lr=0.003",
            "eval_every=0",
            "eval_episodes=2",
            "checkpoint.every=0",
            "logger=none",
            "progress=false",
        ]
    )
    rank = int(os.environ["RANK"])
    run_dir = out / f"run{rank}"
    run_dir.mkdir()
    trainer = Trainer(cfg, run_dir)
    summary = trainer.run()
    torch.save(
        {
            "weights": weights(trainer.agent),
            "obs": trainer.rollouts["agent"].obs.clone(),
            "env_steps": summary["env_steps"],
            "data_parallel": trainer.agent.data_parallel,
        },
        out / f"rank{rank}.pt",
    )


def run_accelerator(out: Path) -> None:
    from accelerate import Accelerator
    from gymnasium import spaces

    from ippo_cli import IPPO

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    torch.manual_seed(rank)  # different initial weights: the broadcast must align them
    agent_ids = ["agent_0", "agent_1"]
    obs_space, act_space = spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2)
    agent = IPPO([obs_space] * 2, [act_space] * 2, agent_ids, batch_size=8, accelerator=accelerator)
    rng = np.random.default_rng(rank)  # each rank learns from different data
    steps, envs = 16, 2
    obs = {a: rng.uniform(-1, 1, (steps, envs, 3)).astype(np.float32) for a in agent_ids}
    actions, log_probs, values = {}, {}, {}
    for a in agent_ids:
        act, logp, _, val = agent.get_action({a: obs[a].reshape(-1, 3)})
        actions[a] = act[a].reshape(steps, envs)
        log_probs[a] = logp[a].reshape(steps, envs)
        values[a] = val[a].reshape(steps, envs)
    rewards = {a: rng.normal(size=(steps, envs)).astype(np.float32) for a in agent_ids}
    dones = {a: np.zeros((steps, envs), np.float32) for a in agent_ids}
    next_obs = {a: obs[a][-1] for a in agent_ids}
    next_done = {a: np.zeros(envs, np.float32) for a in agent_ids}
    agent.learn((obs, actions, log_probs, rewards, dones, values, next_obs, next_done))
    torch.save(
        {"weights": weights(agent), "data_parallel": agent.data_parallel}, out / f"rank{rank}.pt"
    )


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    {"trainer": run_trainer, "accelerator": run_accelerator}[mode](out)
