"""Typed config schemas, registered in Hydra's ConfigStore.

Each config group (env, network, algorithm, hardware, logger) has a dataclass schema,
so Hydra rejects an unknown key or a wrongly typed value and names the key. Range
checks that a type cannot express live in :func:`validate_train`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ippo_cli import compiled


@dataclass
class WrapperConfig:
    """A wrapper applied to each env: ``factory(env, **kwargs)``."""

    factory: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EnvConfig:
    name: str = MISSING  # the env's name in logs and summaries
    # Dotted path to a callable returning a PettingZoo ParallelEnv, e.g.
    # mpe2.simple_spread_v3.parallel_env
    factory: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)  # the factory's keyword arguments
    wrappers: list[WrapperConfig] = field(default_factory=list)  # {factory, kwargs}, in order
    num_envs: int = 8  # envs stepped side by side
    # pettingzoo | batched (numpy arrays over all envs; mpe2 scenarios, ippo_cli/envs/mpe/)
    backend: str = "pettingzoo"


@dataclass
class HeadConfig:
    hidden_size: list[int] = field(default_factory=lambda: [64])
    activation: str = "ReLU"
    layer_norm: bool = True


@dataclass
class NetworkConfig:
    """The reference's net_config.

    ``encoder_config`` keys depend on the observation space (MLP: hidden_size, activation,
    layer_norm; CNN: channel_size, kernel_size, stride_size, activation; Dict/Tuple:
    latent_dim, cnn_config, mlp_config, vector_space_mlp); they are checked against it
    when the networks are built. ``groups`` maps a group id to overrides of this config
    for that group's networks.
    """

    encoder_config: dict[str, Any] = field(default_factory=dict)
    head_config: HeadConfig = field(default_factory=HeadConfig)
    latent_dim: int = 64
    squash_output: bool = False
    groups: dict[str, Any] = field(default_factory=dict)


@dataclass
class AlgorithmConfig:
    """Every hyperparameter of the reference's IPPO, with its defaults, plus total_steps."""

    batch_size: int = 64
    lr: float = 1e-4
    learn_step: int = 2048
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    action_std_init: float = 0.0
    clip_coef: float = 0.2
    ent_coef: float = 0.01  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient norm clip (actor and critic separately)
    target_kl: float | None = None
    normalize_images: bool = True  # scale image observations by their bounds
    update_epochs: int = 4  # PPO epochs per rollout
    action_batch_size: int | None = None  # act on at most this many observations per pass
    total_steps: int = 500_000
    # Not in the reference: lr falls linearly over total_steps, from lr at the first update
    # to lr / updates at the last (ippo_cli.trainer.Trainer.set_learning_rate).
    anneal_lr: bool = False
    # Communication biases (ippo_cli/biases.py), opt-in per group id: signalling maps a
    # speaker group to its weight (or {weight, about, symbols}), listening a listener
    # group to {weight, message}.
    signalling: dict[str, Any] = field(default_factory=dict)
    listening: dict[str, Any] = field(default_factory=dict)


@dataclass
class HardwareConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 1  # torch threads; 0 = torch's default
    learn_threads: int | None = None  # threads for scoring and learning; null = auto (trainer.py)
    torch_compile: str | None = "auto"  # auto | default | reduce-overhead | max-autotune
    vec_env: str = "async"  # async | sync | auto (factory.vec_env_kind)
    num_workers: int | None = None  # async workers; null = min(cores, num_envs)
    cores: int | None = None  # cores the run may use; null = all it may run on (sweeps set it)
    distributed: bool = False  # data-parallel ranks started by torchrun / accelerate launch


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "ippo"  # wandb project
    entity: str | None = None  # wandb entity (team or user)
    group: str | None = None  # wandb group
    tags: list[str] = field(default_factory=list)  # wandb tags


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | none (metrics.jsonl is always written)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointConfig:
    every: int = 100_000  # env steps between checkpoints/step_N.pt (0 = only last.pt)
    keep_last: int = 0  # keep only the newest K step_N.pt files (0 = keep all)


def _default_ranges() -> dict[str, dict[str, float]]:
    # The reference's default ranges for the default hyperparameters, and ent_coef's.
    # Plain dicts (keys min, max, shrink_factor, grow_factor; checked by validate_train),
    # so that `+hpo.hp_config.gamma.min=...` can add a hyperparameter.
    return {
        "lr": {"min": 1e-5, "max": 1e-3},
        "batch_size": {"min": 16, "max": 256, "shrink_factor": 0.75, "grow_factor": 1.5},
        "learn_step": {"min": 512, "max": 8192, "shrink_factor": 0.75, "grow_factor": 1.5},
        "ent_coef": {"min": 1e-3, "max": 0.1},
    }


@dataclass
class EvolutionConfig:
    """`hpo=evolution`: a population trained side by side, selected and mutated."""

    population_size: int = 4  # members
    evo_steps: int = 10_240  # env steps each member trains between evolutions
    eval_loop: int = 5  # evaluation episodes whose mean return is a member's fitness
    tournament_size: int = 2  # members drawn (with replacement) per tournament
    elitism: bool = True  # the best member survives unmutated
    target_score: float | None = None  # stop once every member's recent fitness reaches it
    no_mut: float = 0.4  # relative probabilities of each kind of mutation
    arch_mut: float = 0.2
    new_layer: float = 0.2  # of architecture mutations, the share that adds/removes a layer
    params_mut: float = 0.2
    act_mut: float = 0.0
    rl_hp_mut: float = 0.2
    mutation_sd: float = 0.1  # parameter noise, relative to each weight's magnitude
    # true: members whose rollouts agree in length train as one stack in this process
    # (ippo_cli.stacked_update); false: one after another (the same population, slower).
    stacked: bool = True
    parallel: bool = False  # gone (a warning says so): stacking replaced member processes
    hp_config: dict[str, Any] = field(default_factory=_default_ranges)


@dataclass
class TrainConfig:
    env: EnvConfig = MISSING
    network: NetworkConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = 0  # seeds the networks, the envs and every sampler
    eval_every: int = 50_000  # env steps between evaluations (0 = only at the end)
    eval_episodes: int = 10  # deterministic episodes per evaluation
    eval_gif: bool = False  # render one evaluation episode to media/ (and wandb) each time
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    progress: bool = True  # rich progress bar
    resume: str | None = None  # a checkpoint or run directory to continue
    hpo: EvolutionConfig | None = None  # set by hpo=evolution


@dataclass
class EvalConfig:
    ckpt: str = MISSING
    episodes: int = 10  # episodes to run
    deterministic: bool = True  # the mode of each action distribution, not a sample
    render: bool = False  # write an animation of the first episode beside the checkpoint
    video_format: str = "gif"  # gif | mp4 (mp4 needs imageio-ffmpeg)
    seed: int = 0  # seeds the episodes
    device: str = "cpu"  # cpu | cuda | cuda:N
    fps: int = 10  # frames per second of the animation
    # group -> who plays it instead of the checkpoint's policy: random, or a checkpoint
    # (or run directory) whose policy for that group takes over (+replace.adversary=random)
    replace: dict[str, str] = field(default_factory=dict)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    register_stacked_launcher()


def register_stacked_launcher() -> None:
    """`launcher=stacked`'s Hydra launcher. Hydra finds launchers by scanning the
    ``hydra_plugins`` package, which an editable install hides from it: register it."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ippo_stacked_launcher.stacked_launcher import (
        StackedLauncher,
        StackedLauncherConf,
    )

    ConfigStore.instance().store(
        group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="ippo"
    )
    Plugins.instance().register(StackedLauncher)


class ConfigError(ValueError):
    """A config value out of range; the message names the key, the value and the rule."""


def validate_train(cfg: Any) -> None:
    """Range checks that run before any env starts."""

    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={value} is invalid: {rule}")

    a, e, h = cfg.algorithm, cfg.env, cfg.hardware
    need(a.lr > 0, "algorithm.lr", a.lr, "must be > 0")
    need(a.batch_size >= 1, "algorithm.batch_size", a.batch_size, "must be >= 1")
    need(a.learn_step >= 1, "algorithm.learn_step", a.learn_step, "must be >= 1")
    need(a.update_epochs >= 1, "algorithm.update_epochs", a.update_epochs, "must be >= 1")
    need(0 <= a.gamma <= 1, "algorithm.gamma", a.gamma, "must be in [0, 1]")
    need(0 <= a.gae_lambda <= 1, "algorithm.gae_lambda", a.gae_lambda, "must be in [0, 1]")
    for name in ("clip_coef", "ent_coef", "vf_coef", "max_grad_norm"):
        need(a[name] >= 0, f"algorithm.{name}", a[name], "must be >= 0")
    need(a.total_steps >= 1, "algorithm.total_steps", a.total_steps, "must be >= 1")
    need(e.num_envs >= 1, "env.num_envs", e.num_envs, "must be >= 1")
    backends = ("pettingzoo", "batched")
    need(e.backend in backends, "env.backend", e.backend, "use pettingzoo or batched")
    if e.backend == "batched":
        from ippo_cli.envs.mpe import batched_support

        problem = batched_support(e.factory, e.kwargs, e.wrappers)
        if problem is not None:
            raise ConfigError(f"env.backend=batched: {problem}")
    need(
        h.vec_env in ("async", "sync", "auto"),
        "hardware.vec_env",
        h.vec_env,
        "use async, sync or auto",
    )
    need(
        h.num_workers is None or h.num_workers >= 1,
        "hardware.num_workers",
        h.num_workers,
        "must be null or >= 1",
    )
    need(h.threads >= 0, "hardware.threads", h.threads, "must be >= 0")
    need(h.cores is None or h.cores >= 1, "hardware.cores", h.cores, "must be null or >= 1")
    need(
        h.learn_threads is None or h.learn_threads >= 1,
        "hardware.learn_threads",
        h.learn_threads,
        "must be null or >= 1",
    )
    need(
        h.torch_compile in (None, "auto", *compiled.MODES),
        "hardware.torch_compile",
        h.torch_compile,
        "use null, auto, default, reduce-overhead or max-autotune",
    )
    need(cfg.logger.kind in ("wandb", "none"), "logger.kind", cfg.logger.kind, "use wandb or none")
    need(
        cfg.logger.wandb.mode in ("offline", "online", "disabled"),
        "logger.wandb.mode",
        cfg.logger.wandb.mode,
        "use offline, online or disabled",
    )
    need(cfg.eval_every >= 0, "eval_every", cfg.eval_every, "must be >= 0")
    need(cfg.eval_episodes >= 1, "eval_episodes", cfg.eval_episodes, "must be >= 1")
    need(cfg.checkpoint.every >= 0, "checkpoint.every", cfg.checkpoint.every, "must be >= 0")
    need(
        cfg.checkpoint.keep_last >= 0,
        "checkpoint.keep_last",
        cfg.checkpoint.keep_last,
        "must be >= 0 (0 keeps all)",
    )
    if cfg.get("hpo") is not None:
        from ippo_cli.evolution.settings import validate_evolution

        validate_evolution(cfg.hpo, need)
