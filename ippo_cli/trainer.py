"""The training loop of `ippo train`: collect a rollout, learn, log, evaluate, checkpoint."""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ippo_cli import checkpoint
from ippo_cli.envs.factory import env_fn, make_train_env
from ippo_cli.evaluate import EvalResult, run_episodes
from ippo_cli.ippo import IPPO
from ippo_cli.loggers import RunLogger, plot_learning_curve
from ippo_cli.rollout import GroupRollout

log = logging.getLogger("ippo")

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never share seeds with training envs


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available; an explicit cuda without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"hardware.device={device} but no CUDA GPU is available; "
            "use hardware.device=cpu or auto"
        )
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_agent(cfg: DictConfig, observation_spaces, action_spaces, agent_ids, device) -> IPPO:
    hyper = OmegaConf.to_container(cfg.algorithm, resolve=True)
    hyper.pop("total_steps")
    return IPPO(
        observation_spaces=observation_spaces,
        action_spaces=action_spaces,
        agent_ids=agent_ids,
        net_config=OmegaConf.to_container(cfg.network, resolve=True),
        device=device,
        **hyper,
    )


@dataclass
class Progress:
    """Counters that a checkpoint carries."""

    env_steps: int = 0
    updates: int = 0
    best_eval: float = -math.inf
    last_eval: float | None = None
    last_eval_step: int = 0
    last_checkpoint_step: int = 0


class Trainer:
    """Owns the training env, the agent, its rollout storage and the run directory."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.device = resolve_device(cfg.hardware.device)
        if cfg.hardware.torch_threads > 0:
            torch.set_num_threads(cfg.hardware.torch_threads)
        seed_everything(cfg.seed)
        self.num_envs = cfg.env.num_envs
        self.env = make_train_env(
            cfg.env, self.num_envs, cfg.hardware.vec_env, cfg.hardware.num_workers
        )
        try:
            agents = list(self.env.possible_agents)
            self.agent = build_agent(
                cfg,
                [self.env.single_observation_space(a) for a in agents],
                [self.env.single_action_space(a) for a in agents],
                agents,
                self.device,
            )
        except BaseException:
            self.env.close()
            raise
        self.num_steps = -(-cfg.algorithm.learn_step // self.num_envs)  # ceil
        self.rollouts = self.agent.allocate_rollouts(self.num_steps, self.num_envs)
        self.progress = Progress()
        self.eval_env = None
        self.logger: RunLogger | None = None
        # Per env and agent: running episode return; finished episodes since the last row.
        self.agent_ids = agents
        self._ep_return = np.zeros((self.num_envs, len(agents)))
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._finished: list[tuple[np.ndarray, int]] = []

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Train for ``algorithm.total_steps`` env steps; returns the run summary."""
        cfg = self.cfg
        self.logger = RunLogger(self.run_dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True))
        self.eval_env = env_fn(cfg.env)()
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        start = time.perf_counter()
        interrupted = False
        try:
            obs, infos = self.env.reset(seed=cfg.seed)
            with _progress_bar(cfg.progress, cfg.algorithm.total_steps) as bar:
                while self.progress.env_steps < cfg.algorithm.total_steps:
                    t0 = time.perf_counter()
                    obs, infos = self.collect(obs, infos)
                    metrics = self.agent.update(self.rollouts)
                    self.progress.updates += 1
                    row = self._row(metrics, time.perf_counter() - start, t0)
                    self._maybe_evaluate(row)
                    self.logger.log(row)
                    self._maybe_checkpoint()
                    bar.update(self.progress.env_steps, row)
            if self.progress.last_eval_step != self.progress.env_steps:
                row = {"env_steps": self.progress.env_steps, "update": self.progress.updates}
                self._evaluate_into(row)
                self.logger.log(row)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
            self.save("last.pt")
            self.close()
        wall = time.perf_counter() - start
        plot_learning_curve(
            self.run_dir / "metrics.jsonl",
            self.run_dir / "learning_curve.png",
            title=f"{cfg.env.name}, seed {cfg.seed}",
        )
        return {
            "env_steps": self.progress.env_steps,
            "wall_time": wall,
            "final_eval": self.progress.last_eval,
            "best_eval": self.progress.best_eval if self.progress.best_eval > -math.inf else None,
            "run_dir": str(self.run_dir),
            "interrupted": interrupted,
        }

    def close(self) -> None:
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()
            self.eval_env = None
        if self.logger is not None:
            self.logger.close()

    # -------------------------------------------------------------- collect
    def collect(self, obs: dict[str, np.ndarray], infos: dict[str, Any]):
        """Fill the rollout storage with ``num_steps`` vector steps; returns the last obs."""
        agent, env = self.agent, self.env
        members = agent.members
        for t in range(self.num_steps):
            actions: dict[str, np.ndarray] = {}
            for net_id, agents in members.items():
                roll = self.rollouts[net_id]
                x = torch.from_numpy(np.stack([obs[a] for a in agents], axis=1))
                roll.obs[t] = x
                roll.valid[t] = torch.from_numpy(
                    np.stack([infos[a]["active"] for a in agents], axis=1)
                )
                flat = roll.obs[t].reshape(-1, *roll.obs.shape[3:])
                action, log_prob, _, value = agent.act_group(net_id, flat)
                shape = (self.num_envs, len(agents))
                roll.actions[t] = action.reshape(*shape, *roll.actions.shape[3:])
                roll.log_probs[t] = log_prob.reshape(shape)
                roll.values[t] = value.reshape(shape)
                env_action = agent.actors[net_id].env_action(action).cpu().numpy()
                env_action = env_action.reshape(*shape, *env_action.shape[1:])
                for i, a in enumerate(agents):
                    actions[a] = env_action[:, i]
            obs, rewards, terms, truncs, infos = env.step(actions)
            self._store_outcome(t, rewards, terms, truncs, infos)
        for net_id, agents in members.items():
            roll = self.rollouts[net_id]
            x = torch.from_numpy(np.stack([obs[a] for a in agents], axis=1)).to(self.device)
            value = agent.value_group(net_id, x.reshape(-1, *roll.obs.shape[3:]).float())
            roll.last_values.copy_(value.reshape(roll.last_values.shape))
        self.progress.env_steps += self.num_steps * self.num_envs
        return obs, infos

    def _store_outcome(self, t, rewards, terms, truncs, infos) -> None:
        agent = self.agent
        for net_id, agents in agent.members.items():
            roll: GroupRollout = self.rollouts[net_id]
            reward = np.stack([rewards[a] for a in agents], axis=1)
            term = np.stack([terms[a] for a in agents], axis=1)
            trunc = np.stack([truncs[a] for a in agents], axis=1)
            roll.rewards[t] = torch.from_numpy(np.nan_to_num(reward))
            # An absent agent (NaN) ends its chain; its step is masked out anyway.
            ends = np.nan_to_num(np.maximum(term, trunc), nan=1.0)
            roll.ends[t] = torch.from_numpy(ends)
            # Truncation is not termination: bootstrap from the final observation's value.
            cut = (np.nan_to_num(trunc) > 0) & (np.nan_to_num(term) == 0)
            roll.bootstrap[t] = 0.0
            if cut.any():
                final = np.stack([infos[a]["final_obs"] for a in agents], axis=1)[cut]
                final_t = torch.from_numpy(final).to(self.device, torch.float32)
                values = agent.value_group(net_id, final_t)
                roll.bootstrap[t][torch.from_numpy(cut).to(self.device)] = values
        self._track_episodes(rewards, terms, truncs)

    def _track_episodes(self, rewards, terms, truncs) -> None:
        ids = self.agent_ids
        reward = np.stack([rewards[a] for a in ids], axis=1)
        done = np.stack([np.maximum(terms[a], truncs[a]) for a in ids], axis=1)
        self._ep_return += np.nan_to_num(reward)
        self._ep_length += 1
        # The vector env resets an env once every agent present is done (or absent).
        present = ~np.isnan(done)
        ended = (np.where(present, done, 1.0) > 0).all(axis=1) & present.any(axis=1)
        for e in np.flatnonzero(ended):
            self._finished.append((self._ep_return[e].copy(), int(self._ep_length[e])))
            self._ep_return[e] = 0.0
            self._ep_length[e] = 0

    # ------------------------------------------------------------- logging
    def _row(self, metrics: dict[str, dict[str, float]], wall: float, t0: float) -> dict:
        p = self.progress
        row: dict[str, Any] = {
            "update": p.updates,
            "env_steps": p.env_steps,
            "wall_time": wall,
            "steps_per_second": self.num_steps * self.num_envs / (time.perf_counter() - t0),
            "episodes": len(self._finished),
        }
        if self._finished:
            returns = np.stack([r for r, _ in self._finished])
            row["return"] = float(returns.sum(axis=1).mean())
            row["episode_length"] = float(np.mean([n for _, n in self._finished]))
            index = {a: i for i, a in enumerate(self.agent_ids)}
            for group, agents in self.agent.grouped_agents.items():
                cols = [index[a] for a in agents]
                row[f"return/{group}"] = float(returns[:, cols].mean())
            self._finished.clear()
        else:
            row["return"] = None
        for net_id, m in metrics.items():
            for name, value in m.items():
                row[f"{net_id}/{name}"] = value
        return row

    # ---------------------------------------------------- evaluate & save
    def evaluate(self, episodes: int | None = None) -> EvalResult:
        """Deterministic episodes on the evaluation env (never the training env)."""
        return run_episodes(
            self.agent,
            self.eval_env,
            episodes or self.cfg.eval_episodes,
            deterministic=True,
            seed=self.cfg.seed + EVAL_SEED_OFFSET,
        )

    def _maybe_evaluate(self, row: dict[str, Any]) -> None:
        every = self.cfg.eval_every
        p = self.progress
        if every > 0 and p.env_steps - p.last_eval_step >= every:
            self._evaluate_into(row)

    def _evaluate_into(self, row: dict[str, Any]) -> None:
        result = self.evaluate()
        summary = result.summary()
        score = summary["return"]["mean"]
        row["eval/return"] = score
        row["eval/return_std"] = summary["return"]["std"]
        row["eval/episode_length"] = summary["episode_length"]["mean"]
        for group, stats in summary["groups"].items():
            row[f"eval/return/{group}"] = stats["mean"]
        p = self.progress
        p.last_eval, p.last_eval_step = score, p.env_steps
        if score > p.best_eval:
            p.best_eval = score
            self.save("best.pt")

    def _maybe_checkpoint(self) -> None:
        every = self.cfg.checkpoint_every
        p = self.progress
        if every > 0 and p.env_steps - p.last_checkpoint_step >= every:
            p.last_checkpoint_step = p.env_steps
            self.save(f"step_{p.env_steps}.pt")
            self.save("last.pt")

    def checkpoint_payload(self) -> dict[str, Any]:
        p = self.progress
        return {
            "kind": "run",
            "agent": self.agent.to_dict(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "trainer": {
                "env_steps": p.env_steps,
                "updates": p.updates,
                "best_eval": p.best_eval if p.best_eval > -math.inf else None,
                "last_eval": p.last_eval,
                "torch_rng": torch.get_rng_state(),
            },
        }

    def save(self, name: str) -> Path:
        path = checkpoint.save(self.ckpt_dir / name, self.checkpoint_payload())
        log.info("saved %s at %d env steps", path, self.progress.env_steps)
        return path


def _raise_interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C
    raise KeyboardInterrupt


class _progress_bar:
    """A rich progress bar (steps, steps/s, latest return, ETA), or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self.latest: float | None = None

    def __enter__(self) -> _progress_bar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[sps]:>6.0f} steps/s"),
                TextColumn("return {task.fields[ret]}"),
                TimeRemainingColumn(),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.total, sps=0.0, ret="-")
        return self

    def update(self, steps: int, row: dict[str, Any]) -> None:
        if row.get("return") is not None:
            self.latest = row["return"]
        if self.enabled:
            ret = "-" if self.latest is None else f"{self.latest:.2f}"
            self.bar.update(
                self.task, completed=min(steps, self.total), sps=row["steps_per_second"], ret=ret
            )

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
