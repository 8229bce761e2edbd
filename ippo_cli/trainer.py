"""The training loop of `ippo train`: collect a rollout, learn, log, evaluate, checkpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ippo_cli import checkpoint, distributed
from ippo_cli.compiled import resolve_mode
from ippo_cli.cores import run_cores
from ippo_cli.envs.factory import env_fn, make_train_env
from ippo_cli.envs.vector import EnvOutputError
from ippo_cli.episodes import EvalResult, run_episodes
from ippo_cli.evaluate import write_video
from ippo_cli.files import write_text_atomic
from ippo_cli.ippo import IPPO
from ippo_cli.loggers import RunLogger, plot_learning_curve
from ippo_cli.masks import action_masks, env_defined_actions
from ippo_cli.networks.encoders import sized_encoder_config
from ippo_cli.networks.observations import observation_layout
from ippo_cli.run_control import ProgressBar, StopRequest
from ippo_cli.stacked_acting import StackedSampler

log = logging.getLogger("ippo")

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never share seeds with training envs
RANK_SEED_OFFSET = 10_000  # each data-parallel rank's envs and sampling get their own seeds


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


def sampling_seed(seed: int) -> int:
    """The seed of a run's sampling and shuffling generator: derived from the run's seed
    but not equal to it, so that its draws do not repeat those that initialised the
    networks (torch's global RNG, seeded with ``seed``)."""
    return int(np.random.SeedSequence([seed, 0x5A3]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def net_config_of(network_cfg: Any, group_ids: list[str]) -> dict[str, Any]:
    """The reference's net_config from the `network` group: one config for every group,
    or, when ``network.groups`` has entries, a config keyed by group id."""
    base = OmegaConf.to_container(network_cfg, resolve=True)
    overrides = base.pop("groups") or {}
    unknown = set(overrides) - set(group_ids)
    if unknown:
        raise ValueError(
            f"network.groups has unknown group(s) {sorted(unknown)}; groups: {group_ids}"
        )
    if not overrides:
        return base
    return {
        g: OmegaConf.to_container(OmegaConf.merge(base, overrides.get(g, {}))) for g in group_ids
    }


def with_sized_cnns(net_config: dict[str, Any], group_spaces: dict[str, Any]) -> dict[str, Any]:
    """``net_config`` whose image encoders that set no kernel or stride (``network=auto``)
    are sized to each group's images (:func:`sized_encoder_config`): keyed by group when
    that changed anything. Unsupported spaces are left for the agent to refuse."""
    keyed = set(net_config) <= set(group_spaces)
    per_group = net_config if keyed else {g: net_config for g in group_spaces}
    sized = {}
    for group, cfg in per_group.items():
        try:
            layout = observation_layout(group_spaces[group])
        except TypeError:
            return net_config
        encoder = sized_encoder_config(layout, cfg.get("encoder_config"))
        sized[group] = {**cfg, "encoder_config": encoder}
    return net_config if sized == per_group else sized


# Learning on several threads that gets less than this share of their cores' CPU time
# is competing with other processes (see learn_threads_auto): an automatic choice falls
# back to one thread, a chosen one warns once.
# Measured on 2 cores: a lone run's 2 learning threads use 1.96-2.02 cores; beside a
# run learning on 1 thread, 1.26-1.38.
STARVED_CPU_SHARE = 0.8
STARVED_MIN_SECONDS = 0.05  # shorter updates are not judged
# From this many rows in a group's minibatch, several threads speed learning up.
THREADED_MINIBATCH_ROWS = 512


def learn_threads_auto(agent: IPPO, dist: distributed.Context, cores: int) -> int:
    """Torch threads for learning when hardware.learn_threads is null: one while every
    minibatch is small, where a step is dozens of tiny operations and threads only add
    synchronisation; from ``THREADED_MINIBATCH_ROWS`` rows in a group's minibatch
    (batch_size x its agents), the run's ``cores`` (:func:`~ippo_cli.cores.run_cores`),
    shared among the data-parallel ranks on this machine.

    Measured on 2 cores, 2 threads against 1: no gain at 128 rows (the reference's
    speaker_listener), 5% at 256, 20-35% at 512 (the tuned speaker_listener) and about
    20% at 1,024 (simple_spread N=8). Two such runs at once on those 2 cores trained at
    90 env steps/s each at 512 rows (6,000-6,900 with 1 thread each) and at 2,500-2,700
    at 2,048 (7,800-8,100): OpenMP threads spin while their partner waits for a core.
    So the trainer judges every update and falls back to one thread once other
    processes hold the cores (``Trainer._check_cpu_share``).
    """
    rows = agent.batch_size * max(len(agents) for agents in agent.members.values())
    if rows < THREADED_MINIBATCH_ROWS:
        return 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if dist.parallel else 1
    return max(1, cores // local_ranks)


def build_agent(
    cfg: DictConfig,
    observation_spaces,
    action_spaces,
    agent_ids,
    device,
    compile_mode: str | None = None,
) -> IPPO:
    """The agent of a run's config; ``compile_mode`` (see :func:`compile_mode_of`) is its
    ``torch_compiler``."""
    hyper = OmegaConf.to_container(cfg.algorithm, resolve=True)
    hyper.pop("total_steps")
    hyper.pop("anneal_lr")
    hyper["torch_compiler"] = compile_mode
    first_of_group = {}
    for agent_id, space in zip(agent_ids, observation_spaces, strict=True):
        first_of_group.setdefault(agent_id.rsplit("_", 1)[0], space)
    net_config = net_config_of(cfg.network, list(first_of_group))
    return IPPO(
        observation_spaces=observation_spaces,
        action_spaces=action_spaces,
        agent_ids=agent_ids,
        net_config=with_sized_cnns(net_config, first_of_group),
        device=device,
        **hyper,
    )


def compile_mode_of(cfg: DictConfig, device: torch.device, runs: int = 1) -> str | None:
    """The run's torch_compiler: hardware.torch_compile, with ``auto`` resolved (and
    logged) for the updates one compiled learner serves on ``device``: total_steps /
    learn_step for each of the ``runs`` that learn as one stack (one compiled update
    trains them all); an evolution's members count alone, each with its share of the
    population's total_steps."""
    steps, per = cfg.algorithm.total_steps, ""
    if cfg.get("hpo") is not None:
        steps, per = steps // cfg.hpo.population_size, " per member"
    updates = steps // cfg.algorithm.learn_step
    if runs > 1:
        updates, per = updates * runs, f" ({runs} stacked runs of {updates})"
    return resolve_mode(cfg.hardware.torch_compile, device, updates, per)


@dataclass
class Progress:
    """Counters that a checkpoint carries."""

    env_steps: int = 0
    updates: int = 0
    best_eval: float = -math.inf
    last_eval: float | None = None
    last_eval_step: int = 0
    last_checkpoint_step: int = 0
    wall_time: float = 0.0


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as plain data."""
    np_state = np.random.get_state()
    return {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple | list) else value


def truncate_metrics(path: Path, updates: int) -> None:
    """Drop rows written after update ``updates`` (and its end-of-run evaluation row), so a
    resumed run's metrics continue as if it had never stopped."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = []
    for line in lines:
        row = json.loads(line)
        if row["update"] < updates or (row["update"] == updates and not row.get("final_eval")):
            keep.append(line)
    if len(keep) != len(lines):
        write_text_atomic(path, "".join(keep))


class NonFiniteError(RuntimeError):
    """NaN or inf in an observation, in a reward or done from the env, or in a loss; the
    message says where.

    ``weights_ok`` is False when the networks may already hold non-finite values, so
    the last checkpoint must not be overwritten.
    """

    def __init__(self, message: str, weights_ok: bool) -> None:
        super().__init__(message)
        self.weights_ok = weights_ok


class Trainer:
    """Owns the training env, the agent, its rollout storage and the run directory."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        resume: dict[str, Any] | None = None,
        stacked_runs: int = 1,
    ) -> None:
        """``resume`` is a checkpoint's data: training continues exactly where it was saved.
        ``stacked_runs``: the runs this one learns with as one stack (itself included),
        which share its compiled learner (see :func:`compile_mode_of`)."""
        self.cfg = cfg
        self.resume = resume
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.device = resolve_device(cfg.hardware.device)
        self.dist = distributed.Context()
        if cfg.hardware.distributed:
            self.dist = distributed.initialize(self.device)
            self.device = distributed.rank_device(self.device, self.dist)
        # Rank r's envs and action sampling are seeded apart; rank 0 is the plain seed.
        self.seed = cfg.seed + RANK_SEED_OFFSET * self.dist.rank
        if cfg.hardware.threads > 0:
            torch.set_num_threads(cfg.hardware.threads)
        self.act_threads = torch.get_num_threads()
        self._warned_cpu_share = False
        self._warmed_up = False  # the first update compiles and warms up: not judged
        self.learn_threads = cfg.hardware.learn_threads
        seed_everything(cfg.seed)
        # Action sampling and minibatch shuffles: the run's own stream, so that it draws
        # the same alone and as a member of a stack of runs (ippo_cli.run_stack).
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(sampling_seed(self.seed))
        self._start = time.perf_counter()
        self._wall_before = 0.0
        self.num_envs = cfg.env.num_envs
        # Unset, the workers are one per core the run may use (a checkpoint's config from
        # before hardware.cores has no such key).
        workers = cfg.hardware.num_workers or cfg.hardware.get("cores")
        self.env = make_train_env(cfg.env, self.num_envs, cfg.hardware.vec_env, workers)
        try:
            agents = list(self.env.possible_agents)
            self.agent = build_agent(
                cfg,
                [self.env.single_observation_space(a) for a in agents],
                [self.env.single_action_space(a) for a in agents],
                agents,
                self.device,
                compile_mode_of(cfg, self.device, stacked_runs),
            )
        except BaseException:
            self.env.close()
            raise
        if self.dist.parallel:
            self.agent.enable_data_parallel()
            seed_everything(self.seed)
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
        self._allocate_step_buffers()
        self._snapshot: dict[str, Any] | None = None
        self.env_time = 0.0  # seconds in env.step during the current rollout
        # Wall seconds spent in each part of the loop (benchmarks/speed.py reports them).
        self.timings = dict.fromkeys(("env", "act", "learn", "log", "eval", "checkpoint"), 0.0)

    @property
    def steps_per_rollout(self) -> int:
        """Env steps of one rollout, summed over data-parallel ranks."""
        return self.num_steps * self.num_envs * self.dist.world_size

    def use_agent(self, agent: IPPO) -> None:
        """Train ``agent`` from now on (evolution takes turns with its population): the
        rollout storage follows its learn_step; episode trackers start afresh."""
        self.agent = agent
        self.num_steps = -(-agent.learn_step // self.num_envs)  # ceil
        self.rollouts = agent.allocate_rollouts(self.num_steps, self.num_envs)
        self._allocate_step_buffers()
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._finished.clear()

    # ------------------------------------------------------------ snapshots
    def _boundary_state(self) -> dict[str, Any]:
        """Everything besides the agent that a resumed run needs, as plain data, taken
        between updates (a stop request mid-rollout falls back to the last one)."""
        p = self.progress
        return {
            "progress": {
                "env_steps": p.env_steps,
                "updates": p.updates,
                "best_eval": p.best_eval if p.best_eval > -math.inf else None,
                "last_eval": p.last_eval,
                "last_eval_step": p.last_eval_step,
                "last_checkpoint_step": p.last_checkpoint_step,
                "wall_time": p.wall_time,
            },
            "rng": {**rng_state(), "sampling": self.generator.get_state()},
            "env": self.env.get_state(),
            "episode_return": self._ep_return.tolist(),
            "episode_length": self._ep_length.tolist(),
        }

    def _restore(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Agent, counters, RNGs, envs and episode trackers as saved; returns obs, infos."""
        self.agent.load_state(data["agent"])
        state = data["trainer"]
        saved = state["progress"]
        self.progress = Progress(**{**saved, "best_eval": saved["best_eval"] or -math.inf})
        if not self.dist.main:
            # The checkpoint holds rank 0's envs and RNGs; other ranks start fresh episodes
            # from seeds that depend on the update count.
            seed_everything(self.seed + self.progress.updates)
            self.generator.manual_seed(sampling_seed(self.seed + self.progress.updates))
            return self.env.reset(seed=self.seed + self.progress.updates)
        self._ep_return[:] = np.asarray(state["episode_return"])
        self._ep_length[:] = np.asarray(state["episode_length"])
        self.env.reset(seed=self.cfg.seed)
        obs, infos = self.env.set_state(state["env"])
        set_rng_state(state["rng"])
        if "sampling" in state["rng"]:
            self.generator.set_state(state["rng"]["sampling"])
        truncate_metrics(self.run_dir / "metrics.jsonl", self.progress.updates)
        return obs, infos

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Train for ``algorithm.total_steps`` env steps; returns the run summary.

        A stack of runs (:class:`~ippo_cli.run_stack.RunStack`) drives the same steps
        (:meth:`begin`, :meth:`observe`, :meth:`act`, :meth:`finish_rollout`,
        :meth:`after_update`, :meth:`final_evaluation`, :meth:`finish`) for all its
        members at once."""
        stop = StopRequest()
        try:
            obs, infos = self.begin()
            with ProgressBar(self.cfg.progress and self.dist.main, self.total_steps) as bar:
                while not self.done:
                    t0 = time.perf_counter()
                    # Ranks decide to stop together, between rollouts, so none is left
                    # waiting in an all-reduce.
                    obs, infos = self.collect(obs, infos, None if self.dist.parallel else stop)
                    t1 = time.perf_counter()
                    # Data-parallel ranks stop on the collective decision alone: a signal
                    # landing just after it waits for the next one, or this rank would
                    # leave its peers in the update's all-reduces.
                    if self.dist.parallel:
                        stop_now = distributed.any_rank(stop.requested, self.device)
                    else:
                        stop_now = stop.requested
                    if stop_now:
                        stop.requested = True
                        break
                    row = self.after_update(self.learn(), t0, t1)
                    bar.update(self.progress.env_steps, row)
            self.final_evaluation(stop.requested)
        finally:
            stop.restore()
            self.finish(sys.exc_info()[1])
        return self.summary(stop.requested)

    @property
    def total_steps(self) -> int:
        return self.cfg.algorithm.total_steps

    @property
    def done(self) -> bool:
        return self.progress.env_steps >= self.total_steps

    def begin(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset (or restore) the envs, open the logger and the evaluation env; returns
        the first observations and infos."""
        cfg = self.cfg
        self._start = time.perf_counter()
        if self.resume is not None:
            obs, infos = self._restore(self.resume)
        else:
            obs, infos = self.env.reset(seed=self.seed)
        wandb_id = (self.resume or {}).get("trainer", {}).get("wandb_id")
        config = OmegaConf.to_container(cfg, resolve=True)
        self.logger = RunLogger(self.run_dir, cfg.logger, config, run_id=wandb_id)
        if self.dist.main:
            self.eval_env = env_fn(cfg.env, "rgb_array" if cfg.eval_gif else None)()
        self._snapshot = self._boundary_state()
        self._wall_before = self.progress.wall_time
        return obs, infos

    def after_update(
        self, metrics: dict[str, dict[str, float]], t0: float, t1: float
    ) -> dict[str, Any]:
        """Count the update learned from the rollout collected from ``t0`` to ``t1``,
        then log, evaluate and checkpoint as the schedule says; returns the logged row."""
        self._check_finite_metrics(metrics)
        main = self.dist.main
        t2 = time.perf_counter()
        self.progress.updates += 1
        self.progress.wall_time = self._wall_before + t2 - self._start
        row = self._row(metrics, self.progress.wall_time, t0)
        if main:
            self._maybe_evaluate(row)
        t3 = time.perf_counter()
        self.logger.log(row)
        self._snapshot = self._boundary_state()
        t4 = time.perf_counter()
        if main:
            self._maybe_checkpoint()
        self._time(learn=t2 - t1, eval=t3 - t2, log=t4 - t3)
        self._time(checkpoint=time.perf_counter() - t4)
        return row

    def final_evaluation(self, interrupted: bool) -> None:
        """The end-of-run evaluation, unless the schedule already evaluated this step."""
        final = not interrupted and self.progress.last_eval_step != self.progress.env_steps
        if self.dist.main and final:
            # Marked so that a resumed run can drop it: an uninterrupted run has no
            # evaluation here unless eval_every falls on this step.
            row = {
                "env_steps": self.progress.env_steps,
                "update": self.progress.updates,
                "final_eval": True,
            }
            self._evaluate_into(row)
            self.logger.log(row)

    def finish(self, failure: BaseException | None) -> None:
        """Save ``last.pt`` (unless ``failure`` may have spoiled the weights), plot the
        learning curve and close everything."""
        weights_ok = not isinstance(failure, NonFiniteError) or failure.weights_ok
        if self._snapshot is not None and weights_ok and self.dist.main:
            self.save("last.pt")
        curve = self.run_dir / "learning_curve.png"
        if (self.run_dir / "metrics.jsonl").exists() and self.dist.main:
            plot_learning_curve(
                self.run_dir / "metrics.jsonl",
                curve,
                title=f"{self.cfg.env.name}, seed {self.cfg.seed}",
            )
            if self.logger is not None:
                self.logger.log_image("learning_curve", curve)
        self.close()

    def summary(self, interrupted: bool) -> dict[str, Any]:
        """What `ippo train` prints and writes to summary.json."""
        if interrupted:
            log.warning("stopped by a signal at %d env steps", self.progress.env_steps)
        p = self.progress
        return {
            "env_steps": p.env_steps,
            "wall_time": time.perf_counter() - self._start,
            "final_eval": p.last_eval,
            "best_eval": p.best_eval if p.best_eval > -math.inf else None,
            "run_dir": str(self.run_dir),
            "interrupted": interrupted,
        }

    def _time(self, **seconds: float) -> None:
        for part, s in seconds.items():
            self.timings[part] += s

    def close(self) -> None:
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()
            self.eval_env = None
        if self.logger is not None:
            self.logger.close()
        if self.dist.parallel:
            distributed.shutdown()

    def set_learning_rate(self) -> None:
        """With ``algorithm.anneal_lr``, the learning rate of the coming update: the agent's
        ``lr`` times the share of ``total_steps`` not yet learned from (CleanRL's linear
        schedule: ``lr`` at the first update, ``lr / updates`` at the last), set in the
        optimizers, which every update path (one network, a stack) reads. Under
        hpo=evolution a member's lr is its own mutated hyperparameter, kept as it is."""
        if not self.cfg.algorithm.anneal_lr or self.cfg.get("hpo") is not None:
            return
        learned = self.progress.env_steps - self.steps_per_rollout
        lr = self.agent.lr * max(0.0, 1.0 - learned / self.total_steps)
        agent = self.agent
        for opt in (*agent.actor_optimizers.values(), *agent.critic_optimizers.values()):
            for group in opt.param_groups:
                group["lr"] = lr  # a float: the agent builds its Adams with lr=float

    def learn(self) -> dict[str, dict[str, float]]:
        """One update from the collected rollout."""
        self.set_learning_rate()
        with self.judged_learning():
            return self.agent.update(self.rollouts, generator=self.generator)

    @contextmanager
    def judged_learning(self) -> Iterator[int]:
        """:meth:`learning_threads` around one update (this run's, or a stack's whose
        threads this run sets), whose CPU share is then judged (:meth:`_check_cpu_share`;
        not the first update's, which compiles and warms up)."""
        cpu, wall = time.process_time(), time.perf_counter()
        with self.learning_threads() as threads:
            yield threads
        if self._warmed_up:
            self._check_cpu_share(threads, time.process_time() - cpu, time.perf_counter() - wall)
        self._warmed_up = True

    @contextmanager
    def learning_threads(self) -> Iterator[int]:
        """``hardware.learn_threads`` torch threads (yielded) for work done while the envs
        wait (scoring a rollout, learning from it): their cores are free for matrix
        products."""
        # The same count from the first update on: a lone run whose first (compiling)
        # update ran on one thread used only 1.3 of 2 cores' worth on two threads after.
        threads = self.learn_threads or learn_threads_auto(
            self.agent, self.dist, run_cores(self.cfg.hardware)
        )
        if threads == self.act_threads:
            yield threads
            return
        torch.set_num_threads(threads)
        try:
            yield threads
        finally:
            torch.set_num_threads(self.act_threads)

    def _check_cpu_share(self, threads: int, cpu: float, wall: float) -> None:
        """Act on an update on several CPU threads that got less CPU time than they
        should (other processes want the same cores): an automatic thread count falls
        back to one thread for the rest of the run, a chosen one warns once."""
        if threads < 2 or self.device.type != "cpu" or wall < STARVED_MIN_SECONDS:
            return
        cores = cpu / wall
        if cores >= STARVED_CPU_SHARE * threads or self._warned_cpu_share:
            return
        starved = (
            f"learning on {threads} threads got {cores:.1f} cores' worth of CPU time: other "
            "processes are using these cores, which can slow multi-threaded learning many "
            "times over"
        )
        if self.learn_threads is None:
            self.learn_threads = 1
            log.warning("%s; learning goes on with hardware.learn_threads=1", starved)
            return
        self._warned_cpu_share = True
        log.warning(
            "%s; set hardware.learn_threads=1, or give each run its own cores (taskset)",
            starved,
        )

    # -------------------------------------------------------------- collect
    def _allocate_step_buffers(self) -> None:
        """Per-step outcomes of every agent, (T, env, agent) in ``agent_ids`` order, kept
        in numpy during a rollout and copied into each group's storage once at its end."""
        shape = (self.num_steps, self.num_envs, len(self.agent_ids))
        self._rewards = np.zeros(shape, dtype=np.float32)
        self._ends = np.zeros(shape, dtype=np.float32)
        self._bootstrap = np.zeros(shape, dtype=np.float32)
        self._valid = np.zeros(shape, dtype=bool)
        self._chosen = np.zeros(shape, dtype=bool)
        self._outcome = np.zeros((3, self.num_envs, len(self.agent_ids)))
        self._warned_final_obs = False
        index = {a: i for i, a in enumerate(self.agent_ids)}
        self._columns = {
            net_id: _columns([index[a] for a in agents])
            for net_id, agents in self.agent.members.items()
        }

    def collect(self, obs: dict[str, np.ndarray], infos: dict[str, Any], stop=None):
        """Fill the rollout storage with ``num_steps`` vector steps; returns the last obs.

        Each step samples one batched action per group, or per stack of groups
        (:class:`~ippo_cli.stacked_acting.StackedSampler`); log-probs and values are
        computed for the whole rollout at its end (:meth:`finish_rollout`).
        A stop request abandons the partial rollout: the agent and counters stay as they
        were after the last update, which is what gets saved.
        """
        start = time.perf_counter()
        self.env_time = 0.0
        sampler = StackedSampler(self.agent)  # the actors as they are for this rollout
        for t in range(self.num_steps):
            if stop is not None and stop.requested:
                return obs, infos
            group_obs, group_masks = self.observe(t, obs, infos)
            sampled = sampler.sample([group_obs], [group_masks], [self.generator])[0]
            obs, infos = self.act(t, sampled, infos)
        self.finish_rollout(obs)
        self._time(env=self.env_time, act=time.perf_counter() - start - self.env_time)
        return obs, infos

    def observe(
        self, t: int, obs: dict[str, np.ndarray], infos: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
        """Store step ``t``'s observations, validity and action masks; returns each
        network's ``(B, ...)`` observations and masks (None: all legal) to sample from."""
        agent = self.agent
        for i, a in enumerate(self.agent_ids):
            self._valid[t, :, i] = infos[a]["active"]
        self._chosen[t] = self._valid[t]
        group_obs, group_masks = {}, {}
        for net_id, agents in agent.members.items():
            roll, cols = self.rollouts[net_id], self._columns[net_id]
            x = agent.group_observations(net_id, obs, agents)[0]
            self._check_finite_obs(x, agents, t)
            roll.obs[t] = torch.from_numpy(x)
            group_obs[net_id], group_masks[net_id] = roll.obs[t].flatten(0, 1), None
            if roll.action_masks is not None:
                space = agent.action_spaces[agents[0]]
                active = self._valid[t][:, cols]
                masks = action_masks(infos, agents, space, self.num_envs, active)
                roll.action_masks[t] = True if masks is None else torch.from_numpy(masks)
                if masks is not None:
                    group_masks[net_id] = roll.action_masks[t].flatten(0, 1)
        return group_obs, group_masks

    def act(
        self, t: int, sampled: dict[str, torch.Tensor], infos: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Store step ``t``'s sampled actions (env-defined ones imposed), step the envs
        and store the outcome; returns the next observations and infos."""
        agent = self.agent
        actions: dict[str, np.ndarray] = {}
        for net_id, agents in agent.members.items():
            roll, cols = self.rollouts[net_id], self._columns[net_id]
            space = agent.action_spaces[agents[0]]
            action = sampled[net_id]
            action = action.reshape(self.num_envs, len(agents), *action.shape[1:])
            env_action = agent.actors[net_id].env_action(action).cpu().numpy()
            imposed = env_defined_actions(infos, agents, space, self.num_envs)
            if imposed is not None:
                # The env acts for these agents: it gets their action, the rollout
                # stores it as the policy's own format, the policy loss leaves it out
                # (the policy did not choose it).
                forced, where = imposed
                env_action[where] = forced[where]
                own = agent.actors[net_id].policy_action(torch.from_numpy(forced[where]))
                action = action.clone()
                action[torch.from_numpy(where)] = own.to(action.device, action.dtype)
                self._chosen[t][:, cols] &= ~where
            roll.actions[t] = action
            for i, a in enumerate(agents):
                actions[a] = env_action[:, i]
        t0 = time.perf_counter()
        try:
            obs, rewards, terms, truncs, infos = self.env.step(actions)
        except EnvOutputError as exc:
            step = self.progress.env_steps + (t + 1) * self.num_envs
            raise NonFiniteError(
                f"{exc}, near env step {step}; checkpoints/last.pt holds the last update",
                weights_ok=True,
            ) from None
        self.env_time += time.perf_counter() - t0
        self._store_outcome(t, rewards, terms, truncs, infos)
        return obs, infos

    def finish_rollout(self, obs: dict[str, np.ndarray]) -> None:
        """Copy the rollout's per-step outcomes into each group's storage, score it
        (behaviour log-probs and values) and count its env steps."""
        agent = self.agent
        with self.learning_threads():  # forward passes over the whole rollout
            for net_id, agents in agent.members.items():
                roll, cols = self.rollouts[net_id], self._columns[net_id]
                for field in ("rewards", "ends", "bootstrap", "valid", "chosen"):
                    steps = getattr(self, f"_{field}")[:, :, cols]
                    getattr(roll, field).copy_(torch.from_numpy(steps))
                agent.score_rollout(net_id, roll)
                x = torch.from_numpy(agent.group_observations(net_id, obs, agents)[0])
                value = agent.value_group(net_id, x.to(self.device).flatten(0, 1))
                roll.last_values.copy_(value.reshape(roll.last_values.shape))
        self.progress.env_steps += self.steps_per_rollout
        agent.steps[-1] = self.progress.env_steps

    def _check_finite_obs(self, x: np.ndarray, agents: list[str], t: int) -> None:
        if x.dtype.kind != "f" or np.isfinite(x).all():
            return
        env, i = np.argwhere(~np.isfinite(x.reshape(*x.shape[:2], -1)).all(-1))[0][:2]
        step = self.progress.env_steps + t * self.num_envs
        raise NonFiniteError(
            f"non-finite observation (NaN or inf) from agent '{agents[i]}' in env {env} "
            f"near env step {step}; checkpoints/last.pt holds the last update",
            weights_ok=True,
        )

    def _check_finite_metrics(self, metrics: dict[str, dict[str, float]]) -> None:
        for net_id, m in metrics.items():
            for name in ("policy_loss", "value_loss", "entropy"):
                if not math.isfinite(m[name]):
                    raise NonFiniteError(
                        f"non-finite {name} ({m[name]}) for network '{net_id}' at update "
                        f"{self.progress.updates + 1}; the last good checkpoint is kept",
                        weights_ok=False,
                    )

    def _store_outcome(self, t, rewards, terms, truncs, infos) -> None:
        # A reward beyond float32's range arrives as inf (no overflow warnings); the loss
        # check then names it.
        with np.errstate(over="ignore"):
            self._store_step(t, rewards, terms, truncs, infos)

    def _store_step(self, t, rewards, terms, truncs, infos) -> None:
        """Record step t's rewards and episode ends of every agent at once."""
        out = self._outcome
        for i, a in enumerate(self.agent_ids):
            out[0, :, i] = rewards[a]
            out[1, :, i] = terms[a]
            out[2, :, i] = truncs[a]
        # An absent agent (NaN) ends its chain; its step is masked out anyway.
        absent = np.isnan(out[1]) | np.isnan(out[2])
        reward, term, trunc = np.nan_to_num(out)
        ends = np.where(absent, 1.0, np.maximum(term, trunc))
        self._rewards[t] = reward
        self._ends[t] = ends
        self._bootstrap[t] = 0.0
        # Truncation is not termination: bootstrap from the final observation's value.
        cut = (trunc > 0) & (term == 0)
        if cut.any():
            cut = self._cut_with_final_obs(cut, infos)
            for net_id, agents in self.agent.members.items():
                group_cut = cut[:, self._columns[net_id]]
                if not group_cut.any():
                    continue
                finals = {a: infos[a]["final_obs"] for a in agents}
                final = self.agent.group_observations(net_id, finals, agents)[0][group_cut]
                x = torch.from_numpy(final).to(self.device)
                values = self.agent.value_group(net_id, x).cpu().numpy()
                envs, members = np.nonzero(group_cut)
                columns = np.arange(len(self.agent_ids))[self._columns[net_id]]
                self._bootstrap[t, envs, columns[members]] = values
        self._track_episodes(reward, ends)

    def _cut_with_final_obs(self, cut: np.ndarray, infos: dict[str, Any]) -> np.ndarray:
        """The truncations whose final observation the env gave. The others end without a
        bootstrap, as a termination would (their value is unknown, and that of the zeros
        standing in for the observation is no estimate of it); a warning says so once."""
        given = np.stack([infos[a]["_final_obs"] for a in self.agent_ids], axis=1)
        missing = cut & ~given
        if missing.any() and not self._warned_final_obs:
            self._warned_final_obs = True
            env, i = np.argwhere(missing)[0]
            log.warning(
                "agent '%s' was truncated in env %d without a final observation (the env "
                "left it out of the step's observations): such truncations are not "
                "bootstrapped, as if the agent had terminated",
                self.agent_ids[i],
                env,
            )
        return cut & given

    def _track_episodes(self, reward: np.ndarray, ends: np.ndarray) -> None:
        """Running returns; an env whose agents are all done has ended its episode."""
        self._ep_return += reward
        self._ep_length += 1
        for e in np.flatnonzero((ends > 0).all(axis=1)):
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
            "steps_per_second": self.steps_per_rollout / (time.perf_counter() - t0),
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
            render=self.cfg.eval_gif,
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
        if self.cfg.eval_gif:
            gif = write_video(result.frames, self.run_dir / "media" / f"eval_{p.env_steps}.gif", 10)
            self.logger.log_video("eval/episode", gif, p.env_steps)
        p.last_eval, p.last_eval_step = score, p.env_steps
        if score > p.best_eval:
            p.best_eval = score
            self.save("best.pt")

    def _maybe_checkpoint(self) -> None:
        every = self.cfg.checkpoint.every
        p = self.progress
        if every > 0 and p.env_steps - p.last_checkpoint_step >= every:
            p.last_checkpoint_step = p.env_steps
            self._snapshot["progress"]["last_checkpoint_step"] = p.env_steps
            self.save(f"step_{p.env_steps}.pt")
            self.save("last.pt")
            self._drop_old_checkpoints()

    def _drop_old_checkpoints(self) -> None:
        """Keep the newest ``checkpoint.keep_last`` step_N.pt files (last/best stay)."""
        keep = self.cfg.checkpoint.keep_last
        if keep <= 0:
            return
        steps = sorted(self.ckpt_dir.glob("step_*.pt"), key=lambda f: int(f.stem[5:]))
        for old in steps[:-keep]:
            old.unlink(missing_ok=True)

    def checkpoint_payload(self) -> dict[str, Any]:
        """The agent, the run's config and the last between-updates snapshot."""
        config = OmegaConf.to_container(self.cfg, resolve=True)
        config["resume"] = None
        snapshot = dict(self._snapshot)
        snapshot["progress"] = {
            **snapshot["progress"],
            "best_eval": (self.progress.best_eval if self.progress.best_eval > -math.inf else None),
        }
        return {
            "kind": "run",
            "agent": self.agent.to_dict(),
            "config": config,
            "trainer": {
                **snapshot,
                "env_steps": snapshot["progress"]["env_steps"],
                "wandb_id": None if self.logger is None else self.logger.wandb_id,
            },
        }

    def save(self, name: str) -> Path:
        path = checkpoint.save(self.ckpt_dir / name, self.checkpoint_payload())
        log.info("saved %s at %d env steps", path, self.progress.env_steps)
        return path


def _columns(indices: list[int]) -> slice | np.ndarray:
    """A group's agent columns: a slice (a view, no copy) when they are contiguous."""
    if indices == list(range(indices[0], indices[-1] + 1)):
        return slice(indices[0], indices[-1] + 1)
    return np.asarray(indices)
