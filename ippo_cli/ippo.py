"""Independent PPO: one actor and one critic per agent group, the reference's Python API.

Agents are grouped by the prefix before the final ``_`` of their id (``bob_0`` and
``bob_1`` share networks). Internally every per-step quantity of a group is laid out
(env, agent-in-group, ...) per step, so a grouped agent's observations, actions,
log-probs, values and advantages stay aligned (see :mod:`ippo_cli.rollout`).
"""

from __future__ import annotations

import copy
import enum
import inspect
import warnings
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch.nn.utils import clip_grad_norm_

from ippo_cli import checkpoint, distributed
from ippo_cli.biases import CommunicationBiases, validate_biases
from ippo_cli.compiled import MODES, maybe_compiled
from ippo_cli.envs.vector import episodes_ended
from ippo_cli.episodes import run_episodes
from ippo_cli.groups import group_id_of
from ippo_cli.losses import METRIC_NAMES, explained_variance, ppo_terms
from ippo_cli.masks import action_masks, env_defined_actions, mask_dim
from ippo_cli.networks import StochasticActor, ValueNetwork
from ippo_cli.networks.encoders import encoder_config_with_defaults, encoder_kind
from ippo_cli.networks.observations import observation_layout
from ippo_cli.rollout import GroupRollout
from ippo_cli.spaces import (
    action_dim,
    action_is_integer,
    action_shape,
    check_action_space,
    space_from_dict,
    space_to_dict,
)
from ippo_cli.stacked_update import update_agents

# Constructor arguments stored in checkpoints and copied by clone(), with their defaults.
HYPERPARAMETERS: dict[str, Any] = {
    "batch_size": 64,
    "lr": 1e-4,
    "learn_step": 2048,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "action_std_init": 0.0,
    "clip_coef": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "target_kl": None,
    "normalize_images": True,
    "update_epochs": 4,
    "action_batch_size": None,
    "torch_compiler": None,
    "signalling": None,
    "listening": None,
}
SCORE_CHUNK = 8192  # rows per forward pass when a whole rollout is scored at once


class MultiAgentSetup(enum.Enum):
    """How alike the agents' observations are (see :meth:`IPPO.get_setup`)."""

    HOMOGENEOUS = "homogeneous"
    MIXED = "mixed"
    HETEROGENEOUS = "heterogeneous"


class IPPO:
    """Independent Proximal Policy Optimization (https://arxiv.org/pdf/2011.09533).

    Arguments and defaults follow the reference library's ``IPPO``; see docs/python-api.md
    for the list. ``action_std_init`` is the initial *log* standard deviation of Box actions.
    """

    # Train the groups that can as one stack of networks (ippo_cli.stacked_update); the
    # same result as one network pair at a time, which False forces (tests, benchmarks).
    stack_updates = True

    def __init__(
        self,
        observation_spaces: Sequence[spaces.Space] | Mapping[str, spaces.Space] | spaces.Dict,
        action_spaces: Sequence[spaces.Space] | Mapping[str, spaces.Space] | spaces.Dict,
        agent_ids: Sequence[str] | None = None,
        index: int = 0,
        hp_config: Any = None,
        net_config: dict[str, Any] | None = None,
        batch_size: int = 64,
        lr: float = 1e-4,
        learn_step: int = 2048,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        mut: str | None = None,
        action_std_init: float = 0.0,
        clip_coef: float = 0.2,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        normalize_images: bool = True,
        update_epochs: int = 4,
        actor_networks: Any = None,
        critic_networks: Any = None,
        action_batch_size: int | None = None,
        device: str | torch.device = "cpu",
        accelerator: Any = None,
        torch_compiler: str | None = None,
        wrap: bool = True,
        signalling: Mapping[str, Any] | None = None,
        listening: Mapping[str, Any] | None = None,
    ) -> None:
        self.observation_spaces, self.action_spaces, self.agent_ids = _agent_spaces(
            observation_spaces, action_spaces, agent_ids
        )
        hyper = dict(
            batch_size=batch_size,
            lr=lr,
            learn_step=learn_step,
            gamma=gamma,
            gae_lambda=gae_lambda,
            action_std_init=action_std_init,
            clip_coef=clip_coef,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            target_kl=target_kl,
            normalize_images=normalize_images,
            update_epochs=update_epochs,
            action_batch_size=action_batch_size,
            torch_compiler=torch_compiler,
            signalling=copy.deepcopy(signalling),
            listening=copy.deepcopy(listening),
        )
        validate_hyperparameters(hyper)
        for name, value in hyper.items():
            setattr(self, name, value)
        # An accelerate.Accelerator places the networks on its device; when its launcher
        # started several processes, training is data-parallel (see ippo_cli.distributed).
        self.accelerator = accelerator
        if accelerator is not None:
            device = accelerator.device
        self.index = index
        self.hp_config = hp_config
        self.mut = mut
        self.device = torch.device(device)
        self.wrap = wrap
        self.training = True
        # get_action in training mode met action masks or env-defined actions, which
        # learn() needs too (its infos); it warns once when not given them.
        self._saw_infos = False
        self._warned_no_infos = False
        self.steps = [0]
        self.scores: list[Any] = []
        self.fitness: list[float] = []

        self.shared_agent_ids: list[str] = []
        self.grouped_agents: dict[str, list[str]] = {}
        for agent in self.agent_ids:
            group = group_id_of(agent)
            if group not in self.grouped_agents:
                self.shared_agent_ids.append(group)
                self.grouped_agents[group] = []
            self.grouped_agents[group].append(agent)
        self._check_group_spaces()
        first_obs = {g: self.observation_spaces[a[0]] for g, a in self.grouped_agents.items()}
        first_act = {g: self.action_spaces[a[0]] for g, a in self.grouped_agents.items()}
        validate_biases(signalling, listening, first_obs, first_act)
        self.biases = CommunicationBiases(signalling, listening, first_act)
        # Networks are keyed by group when any group has several agents, else by agent.
        self.members = _members(self.agent_ids)
        self.network_of = {a: net for net, agents in self.members.items() for a in agents}
        self.possible_observation_spaces = dict(self.observation_spaces)
        self.possible_action_spaces = dict(self.action_spaces)
        self.net_config = copy.deepcopy(net_config) if net_config else None

        if (actor_networks is None) != (critic_networks is None):
            warnings.warn(
                "actor_networks and critic_networks must be given together; using the "
                "default networks",
                UserWarning,
                stacklevel=2,
            )
            actor_networks = critic_networks = None
        custom_actors = self._custom_networks(actor_networks, StochasticActor, "actor")
        custom_critics = self._custom_networks(critic_networks, ValueNetwork, "critic")
        self.actors = torch.nn.ModuleDict()
        self.critics = torch.nn.ModuleDict()
        self.obs_layouts = {}
        for net_id, agents in self.members.items():
            cfg = self._net_config_for(net_id)
            obs_space = self.observation_spaces[agents[0]]
            act_space = self.action_spaces[agents[0]]
            self.obs_layouts[net_id] = observation_layout(obs_space)
            self.actors[net_id] = custom_actors.get(net_id) or StochasticActor(
                obs_space, act_space, cfg, action_std_init, normalize_images
            )
            self.critics[net_id] = custom_critics.get(net_id) or ValueNetwork(
                obs_space, cfg, normalize_images
            )
        self.actors.to(self.device)
        self.critics.to(self.device)
        self.reinit_optimizers()
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.mutation_hooks: list[Any] = []
        self.registry: list[Any] = []
        self.data_parallel = False
        if accelerator is not None and wrap and distributed.active():
            self.enable_data_parallel()

    def _custom_networks(self, networks: Any, cls: type, role: str) -> dict[str, torch.nn.Module]:
        """User-supplied networks keyed by network id (a list follows the network order)."""
        if networks is None:
            return {}
        if isinstance(networks, Mapping | torch.nn.ModuleDict):
            table = dict(networks.items())
            by_net = {}
            for net_id in self.members:
                key = net_id if net_id in table else group_id_of(net_id)
                if key not in table:
                    raise ValueError(f"{role}_networks has no network for '{net_id}'")
                by_net[net_id] = table[key]
        else:
            networks = list(networks)
            if len(networks) != len(self.members):
                raise ValueError(
                    f"{role}_networks has {len(networks)} networks for {len(self.members)} "
                    f"groups {list(self.members)}"
                )
            by_net = dict(zip(self.members, networks, strict=True))
        for net_id, net in by_net.items():
            if not isinstance(net, cls):
                raise TypeError(
                    f"All {role} networks must be instances of {cls.__name__} "
                    f"(got {type(net).__name__} for '{net_id}')"
                )
        return {k: copy.deepcopy(v) for k, v in by_net.items()}

    # ----------------------------------------------------------------- grouping
    def get_group_id(self, agent_id: str) -> str:
        """The group id of ``agent_id`` (prefix before the final ``_``)."""
        return group_id_of(agent_id)

    def has_grouped_agents(self) -> bool:
        """Whether some agents share networks with others."""
        return len(self.shared_agent_ids) < len(self.agent_ids)

    def _check_group_spaces(self) -> None:
        for group, agents in self.grouped_agents.items():
            first = agents[0]
            for other in agents[1:]:
                for kind, table in (
                    ("observation", self.observation_spaces),
                    ("action", self.action_spaces),
                ):
                    if table[other] != table[first]:
                        raise ValueError(
                            f"agents of group '{group}' must share spaces: {first} has "
                            f"{kind} space {table[first]}, {other} has {table[other]}"
                        )

    def _net_config_for(self, net_id: str) -> dict[str, Any] | None:
        cfg = self.net_config
        if not cfg:
            return None
        keys = set(self.members) | set(self.shared_agent_ids)
        if set(cfg) <= keys:  # keyed by group (or agent) id
            group = net_id if net_id in cfg else group_id_of(net_id)
            return copy.deepcopy(cfg.get(group))
        return copy.deepcopy(cfg)

    # --------------------------------------------------------------- optimizers
    def reinit_optimizers(self, optimizer: Any = None) -> None:
        """(Re)build every actor and critic Adam optimizer over the current parameters."""
        self.actor_optimizers = {k: _adam(net, self.lr) for k, net in self.actors.items()}
        self.critic_optimizers = {k: _adam(net, self.lr) for k, net in self.critics.items()}

    def set_training_mode(self, training: bool) -> None:
        """Training mode samples actions; eval mode clips Box actions in get_action."""
        self.training = training
        self.actors.train(training)
        self.critics.train(training)

    # ------------------------------------------------------- reference helpers
    def get_setup(self) -> MultiAgentSetup:
        """HOMOGENEOUS when every agent's observations take the same kind of encoder
        (vector, image or multi-input), HETEROGENEOUS when no two do, MIXED otherwise."""
        kinds = [encoder_kind(self.obs_layouts[self.network_of[a]]) for a in self.agent_ids]
        if len(set(kinds)) == 1:
            return MultiAgentSetup.HOMOGENEOUS
        if len(set(kinds)) == len(kinds):
            return MultiAgentSetup.HETEROGENEOUS
        return MultiAgentSetup.MIXED

    @staticmethod
    def get_action_dim(action_space: spaces.Space | Sequence[spaces.Space]) -> Any:
        """Network outputs needed for ``action_space`` (a list for a list of spaces)."""
        if isinstance(action_space, list | tuple):
            return [action_dim(s) for s in action_space]
        return action_dim(action_space)

    @staticmethod
    def get_state_dim(observation_space: spaces.Space | Sequence[spaces.Space]) -> Any:
        """Shape of one observation as the networks receive it (a list for a list)."""
        if isinstance(observation_space, list | tuple):
            return [observation_layout(s).shape for s in observation_space]
        return observation_layout(observation_space).shape

    def build_net_config(
        self,
        net_config: dict[str, Any] | None = None,
        flatten: bool = True,
        return_encoders: bool = False,
    ) -> Any:
        """Each network's net_config with every default filled in, keyed by network id;
        with ``return_encoders`` also each network's encoder config."""
        saved, self.net_config = self.net_config, net_config or self.net_config
        try:
            configs = {}
            for net_id in self.members:
                cfg = dict(self._net_config_for(net_id) or {})
                cfg["encoder_config"] = encoder_config_with_defaults(
                    self.obs_layouts[net_id], cfg.get("encoder_config")
                )
                cfg.setdefault("latent_dim", 64)
                configs[net_id] = cfg
        finally:
            self.net_config = saved
        if return_encoders:
            return configs, {k: c["encoder_config"] for k, c in configs.items()}
        return configs

    def assemble_grouped_outputs(
        self, agent_outputs: Mapping[str, np.ndarray], vect_dim: int
    ) -> dict[str, np.ndarray]:
        """Per-agent ``(vect_dim, ...)`` outputs -> per-group ``(agents * vect_dim, ...)``,
        agent-major (the inverse of :meth:`disassemble_grouped_outputs`)."""
        out = {}
        for group, agents in self.grouped_agents.items():
            present = [a for a in agents if a in agent_outputs]
            if present:
                out[group] = np.concatenate(
                    [np.asarray(agent_outputs[a]).reshape(vect_dim, -1) for a in present]
                )
        return out

    def disassemble_grouped_outputs(
        self,
        group_outputs: Mapping[str, np.ndarray],
        vect_dim: int,
        grouped_agents: Mapping[str, Sequence[str]],
    ) -> dict[str, np.ndarray]:
        """Per-group ``(agents * vect_dim, ...)`` outputs -> per-agent ``(vect_dim, ...)``."""
        out = {}
        for group, value in group_outputs.items():
            agents = grouped_agents[group]
            parts = np.asarray(value).reshape(len(agents), vect_dim, *np.shape(value)[1:])
            for i, agent in enumerate(agents):
                out[agent] = parts[i]
        return out

    def extract_action_masks(self, infos: Mapping[str, Any] | None) -> dict[str, Any]:
        """``info[agent]["action_mask"]`` of every agent (None where it has none)."""
        out: dict[str, Any] = {}
        for agent in self.agent_ids:
            info = (infos or {}).get(agent)
            out[agent] = info.get("action_mask") if isinstance(info, Mapping) else None
        return out

    def extract_agent_masks(
        self, infos: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(env-defined actions, agent masks) per agent, with an env axis: the mask is True
        where the env acts for the agent; actions are NaN elsewhere."""
        actions, masks = {}, {}
        for agent in self.agent_ids:
            space = self.action_spaces[agent]
            info = (infos or {}).get(agent)
            flags = info.get("_env_defined_actions") if isinstance(info, Mapping) else None
            num_envs = 1 if flags is None else len(flags)
            acts = np.full((num_envs, *action_shape(space)), np.nan)
            mask = np.zeros(num_envs, dtype=bool)
            result = env_defined_actions(infos, [agent], space, num_envs)
            if result is not None:
                mask = result[1][:, 0]
                acts[mask] = result[0][mask, 0]
            actions[agent], masks[agent] = acts, mask
        return actions, masks

    def process_infos(
        self, infos: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(action masks, env-defined actions, agent masks) from ``infos``."""
        return (self.extract_action_masks(infos), *self.extract_agent_masks(infos))

    def sum_shared_rewards(self, rewards: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rewards summed over the agents of each group (NaN, an absent agent, counts 0)."""
        out = {}
        for group, agents in self.grouped_agents.items():
            present = [
                np.nan_to_num(np.asarray(rewards[a], dtype=float)) for a in agents if a in rewards
            ]
            if present:
                out[group] = np.sum(present, axis=0)
        return out

    def get_policy(self) -> torch.nn.ModuleDict:
        """The policy networks (actors), keyed by network id."""
        return self.actors

    def evolvable_attributes(self, networks_only: bool = False) -> dict[str, Any]:
        """The networks and, unless ``networks_only``, their optimizers."""
        attrs: dict[str, Any] = {"actors": self.actors, "critics": self.critics}
        if not networks_only:
            attrs["actor_optimizers"] = self.actor_optimizers
            attrs["critic_optimizers"] = self.critic_optimizers
        return attrs

    @staticmethod
    def inspect_attributes(agent: IPPO, input_args_only: bool = False) -> dict[str, Any]:
        """Attributes other than networks and optimizers (only constructor arguments with
        ``input_args_only``)."""
        skip = set(agent.evolvable_attributes())
        attrs = {
            k: v
            for k, v in vars(agent).items()
            if k not in skip and not k.startswith("_") and not callable(v)
        }
        if input_args_only:
            params = inspect.signature(type(agent).__init__).parameters
            attrs = {k: v for k, v in attrs.items() if k in params}
        return attrs

    @staticmethod
    def copy_attributes(agent: IPPO, clone: IPPO) -> IPPO:
        """Copy ``agent``'s non-network attributes onto ``clone`` (deep copies)."""
        for name, value in IPPO.inspect_attributes(agent).items():
            if name == "accelerator":  # one accelerator per process, shared
                clone.accelerator = value
            elif name not in ("obs_layouts", "members", "network_of"):
                setattr(clone, name, copy.deepcopy(value))
        return clone

    def register_mutation_hook(self, hook: Any) -> None:
        """Call ``hook()`` after every mutation of this agent (used by evolution)."""
        self.mutation_hooks.append(hook)

    def register_network_group(self, group: Any) -> None:
        """Record a network group (the reference's registry of evaluation/shared nets)."""
        self.registry.append(group)

    def recompile(self) -> None:
        """The reference's hook for recompiling after a mutation; nothing to do here.

        With ``torch_compiler`` set, :meth:`learn` compiles its per-minibatch forward pass
        and losses (:mod:`ippo_cli.compiled`), and those follow changed network shapes by
        themselves. The networks' own forward (acting, scoring, evaluation) stays eager:
        compiled, it made acting slower at these batch sizes and recompiled for each
        new one.
        """

    def enable_data_parallel(self) -> None:
        """Train as one replica of a torch.distributed run: rank 0's parameters are
        copied to every rank, and each minibatch's gradients (and the KL used by
        ``target_kl``) are averaged over the ranks, so the replicas stay identical."""
        if not distributed.active():
            raise RuntimeError("data-parallel training needs an initialised process group")
        distributed.broadcast_parameters([*self.actors.values(), *self.critics.values()])
        self.data_parallel = True

    def clean_up(self) -> None:
        """Release the networks and optimizers."""
        del self.actors, self.critics, self.actor_optimizers, self.critic_optimizers

    @classmethod
    def population(
        cls,
        size: int,
        observation_space: Any,
        action_space: Any,
        wrapper_cls: Any = None,
        wrapper_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """``size`` independent agents with indices 0..size-1 (optionally wrapped);
        ``observation_space`` and ``action_space`` are the constructor's
        ``observation_spaces`` and ``action_spaces``."""
        members = [cls(observation_space, action_space, index=i, **kwargs) for i in range(size)]
        if wrapper_cls is not None:
            members = [wrapper_cls(m, **(wrapper_kwargs or {})) for m in members]
        return members

    def test(
        self,
        env: Any,
        swap_channels: bool = False,
        max_steps: int | None = None,
        loop: int = 3,
        sum_scores: bool = True,
        deterministic: bool = True,
    ) -> float | np.ndarray:
        """Mean return over ``loop`` episodes (per env for a vector env), appended to
        ``fitness``. Acts deterministically by default, restores the training mode, and
        treats an absent agent's NaN reward as 0. ``sum_scores=False`` gives the mean
        return per agent of each group instead of the sum over agents.
        ``swap_channels`` moves the channels of image observations from last to first
        (``[H, W, C]`` -> ``[C, H, W]``) before the agent sees them."""
        if swap_channels:
            env = ChannelsFirst(env, [a for a in self.agent_ids if self._sees_images(a)])
        if hasattr(env, "num_envs"):
            returns = _vector_episode_returns(self, env, loop, max_steps, deterministic)
        else:
            result = run_episodes(self, env, loop, deterministic=deterministic, max_steps=max_steps)
            returns = result.returns
        if sum_scores:
            score: float | np.ndarray = float(returns.sum(axis=1).mean())
        else:
            index = {a: i for i, a in enumerate(self.agent_ids)}
            score = np.array(
                [
                    returns[:, [index[a] for a in agents]].mean()
                    for agents in self.grouped_agents.values()
                ]
            )
        self.fitness.append(float(np.mean(score)))
        return score

    def _sees_images(self, agent_id: str) -> bool:
        return self.obs_layouts[self.network_of[agent_id]].is_image

    # ------------------------------------------------------------------ acting
    def act_group(
        self,
        net_id: str,
        obs: torch.Tensor,
        deterministic: bool = False,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Act for a batch of one network's observations: (action, log_prob, entropy, value).

        The fast path of the trainer: one forward per group over all envs and agents.
        ``mask`` (True = legal) restricts discrete actions.
        """
        with torch.inference_mode():
            action, log_prob, entropy = self.actors[net_id](obs, mask, deterministic)
            value = self.critics[net_id](obs)
        return action, log_prob, entropy, value

    def sample_group(
        self,
        net_id: str,
        obs: torch.Tensor,
        mask: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sampled actions for a batch of one network's observations: the trainer's
        per-step work. Log-probs and values come later from :meth:`score_rollout`.
        ``noise`` (:func:`~ippo_cli.networks.distributions.draw_noise`) makes the draw;
        without it, torch's global RNG does."""
        with torch.inference_mode():
            return self.actors[net_id].distribution(obs, mask).sample(noise)

    def score_rollout(self, net_id: str, rollout: GroupRollout) -> None:
        """Fill a collected rollout's behaviour log-probs and values.

        The networks do not change during a rollout, so scoring its stored observations
        and actions in a few large forward passes gives what scoring each step as it was
        taken would, at a fraction of the per-step cost. Log-probs of actions the policy
        did not choose (env-defined ones) are stored as 0; the policy loss ignores them.
        """
        actor, critic = self.actors[net_id], self.critics[net_id]
        obs, actions = rollout.obs.flatten(0, 2), rollout.actions.flatten(0, 2)
        masks = None if rollout.action_masks is None else rollout.action_masks.flatten(0, 2)
        chosen = rollout.chosen.reshape(-1)
        log_probs, values = rollout.log_probs.view(-1), rollout.values.view(-1)
        with torch.inference_mode():
            for i in range(0, obs.shape[0], SCORE_CHUNK):
                rows = slice(i, i + SCORE_CHUNK)
                dist = actor.distribution(obs[rows], None if masks is None else masks[rows])
                log_p = dist.log_prob(actions[rows])
                log_probs[rows] = torch.where(chosen[rows], log_p, torch.zeros_like(log_p))
                values[rows] = critic(obs[rows])

    def _act_in_chunks(
        self, net_id: str, x: torch.Tensor, deterministic: bool, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        """act_group over rows of at most ``action_batch_size`` (all at once when None)."""
        size = self.action_batch_size
        if size is None or x.shape[0] <= size:
            return self.act_group(net_id, x, deterministic, mask)
        parts = [
            self.act_group(
                net_id,
                x[i : i + size],
                deterministic,
                None if mask is None else mask[i : i + size],
            )
            for i in range(0, x.shape[0], size)
        ]
        return tuple(torch.cat(chunks) for chunks in zip(*parts, strict=True))

    def value_group(self, net_id: str, obs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.critics[net_id](obs)

    def group_observations(
        self, net_id: str, obs: Mapping[str, Any], agents: Sequence[str]
    ) -> tuple[np.ndarray, bool]:
        """One network's observations in storage format ``(num_envs, agents, *shape)``,
        and whether they came unbatched (a single env's observation per agent)."""
        layout = self.obs_layouts[net_id]
        batch_ndim = layout.batch_ndim_of(obs[agents[0]])
        stacked = np.stack([layout.to_storage(obs[a], batch_ndim) for a in agents], axis=0)
        stacked = stacked[:, None] if batch_ndim == 0 else stacked
        return np.moveaxis(stacked, 0, 1), batch_ndim == 0

    def preprocess_observation(
        self, observation: Mapping[str, Any], group_ids: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Observations as tensors on the device, in the networks' input format.

        Keyed by agent, or, with ``group_ids``, by group with the group's agents
        concatenated (env-major: row ``e * agents + i``).
        """
        out = {}
        if group_ids is None:
            for agent, obs in observation.items():
                layout = self.obs_layouts[self.network_of[agent]]
                x = layout.to_storage(obs, layout.batch_ndim_of(obs))
                out[agent] = torch.as_tensor(x, device=self.device)
            return out
        for group in group_ids:
            net_ids = [n for n in self.members if n == group or group_id_of(n) == group]
            agents = [a for n in net_ids for a in self.members[n] if a in observation]
            if agents:
                x, _ = self.group_observations(net_ids[0], observation, agents)
                out[group] = torch.as_tensor(x, device=self.device).flatten(0, 1)
        return out

    def get_action(
        self,
        obs: Mapping[str, Any],
        infos: Mapping[str, Any] | None = None,
        *args: Any,
        deterministic: bool = False,
        **kwargs: Any,
    ) -> tuple[dict[str, np.ndarray], ...]:
        """Actions for the agents present in ``obs``: (action, log_prob, entropy, value) dicts.

        ``obs[agent]`` is ``(num_envs, *obs_shape)`` or a single unbatched observation.
        Actions come in the env's layout (a Discrete or MultiDiscrete space's ``start``
        added, Box and MultiBinary actions shaped like the space); Box actions are
        returned unclipped in training mode (the caller clips them, or scales them with
        ``actor.scale_action`` when ``squash_output``), and clipped to the bounds in eval
        mode. An agent's env-defined action (``infos``) replaces its sampled one.
        """
        outputs: tuple[dict[str, np.ndarray], ...] = ({}, {}, {}, {})
        for net_id, members in self.members.items():
            present = [a for a in members if a in obs]
            if not present:
                continue
            act_space = self.action_spaces[present[0]]
            stacked, unbatched = self.group_observations(net_id, obs, present)
            num_envs = stacked.shape[0]
            # NaN marks an absent agent in some envs; it must never reach a network.
            x = torch.as_tensor(np.nan_to_num(stacked), device=self.device).flatten(0, 1)
            masks = action_masks(infos, present, act_space, num_envs)
            mask = None if masks is None else torch.as_tensor(masks, device=self.device)
            if mask is not None:
                mask = mask.reshape(num_envs * len(present), -1)
            action, log_prob, entropy, value = self._act_in_chunks(net_id, x, deterministic, mask)
            action = action.reshape(num_envs, len(present), *action.shape[1:])
            actor = self.actors[net_id]
            imposed = env_defined_actions(infos, present, act_space, num_envs)
            if imposed is not None:  # as the policy's own actions, then like them
                env_actions, where = imposed
                own = actor.policy_action(torch.as_tensor(env_actions[where], device=self.device))
                action = action.clone()  # not an inference tensor: written in place
                action[torch.as_tensor(where, device=self.device)] = own.to(action.dtype)
            if self.training:
                self._saw_infos |= masks is not None or imposed is not None
            convert = actor.env_layout if self.training else actor.env_action
            action = convert(action).cpu().numpy()
            if imposed is not None and not self.training:
                action[where] = env_actions[where].reshape(action[where].shape)
            results = (action, log_prob, entropy, value)
            for out, result in zip(outputs, results, strict=True):
                if isinstance(result, torch.Tensor):
                    result = result.reshape(num_envs, len(present)).cpu().numpy()
                for i, agent in enumerate(present):
                    value_i = result[:, i]
                    out[agent] = value_i[0] if unbatched else value_i
        return outputs

    # ----------------------------------------------------------------- learning
    def allocate_rollouts(
        self, num_steps: int, num_envs: int, net_ids: Sequence[str] | None = None
    ) -> dict[str, GroupRollout]:
        """Preallocated rollout storage for each network (all by default), laid out
        (T, env, agent, ...)."""
        rollouts = {}
        for net_id in net_ids or self.members:
            agents = self.members[net_id]
            layout = self.obs_layouts[net_id]
            act_space = self.action_spaces[agents[0]]
            rollouts[net_id] = GroupRollout.allocate(
                num_steps,
                num_envs,
                len(agents),
                layout.shape,
                action_shape(act_space),
                torch.int64 if action_is_integer(act_space) else torch.float32,
                self.device,
                mask_dim(act_space),
                layout.torch_dtype,
            )
        return rollouts

    def learn(
        self, experiences: Sequence[Any], *, infos: Sequence[Any] | None = None
    ) -> dict[str, float]:
        """Update from the reference's 8-tuple of per-agent experiences.

        ``(states, actions, log_probs, rewards, dones, values, next_states, next_dones)``,
        each a dict keyed by agent id holding a list of per-step arrays (or a stacked
        array) of shape ``(T, num_envs, ...)``; ``dones[t]`` is the done flag that
        preceded ``states[t]``; actions as :meth:`get_action` returned them. NaN rewards
        mark steps where an agent was absent: those steps get no loss.

        ``infos``, one per step, are the infos given to :meth:`get_action` at each step
        (None where there were none). With them, each step's action masks restrict the
        distribution again, as they did when acting, and env-defined actions get no
        policy loss (the policy did not choose them). Without them every action counts as
        allowed and chosen; if :meth:`get_action` met masks or env-defined actions, a
        warning says so (once). Returns the mean loss of each network.
        """
        return self.losses(self.update(self.experience_rollouts(experiences, infos)))

    def experience_rollouts(
        self, experiences: Sequence[Any], infos: Sequence[Any] | None = None
    ) -> dict[str, GroupRollout]:
        """The reference's 8-tuple and each step's infos (see :meth:`learn`) as one
        rollout per network."""
        states = experiences[0]
        if infos is None and self._saw_infos and not self._warned_no_infos:
            self._warned_no_infos = True
            warnings.warn(
                "get_action was given action masks or env-defined actions, but learn() was "
                "not: pass each step's infos, learn(experiences, infos=[...]), so that the "
                "ratios come from the distribution that acted",
                UserWarning,
                stacklevel=3,
            )
        rollouts = {}
        for net_id, agents in self.members.items():
            present = [a for a in agents if a in states and len(states[a]) > 0]
            if present:
                rollouts[net_id] = self._rollout_from_experiences(
                    net_id, present, experiences, infos
                )
        return rollouts

    def losses(self, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """:meth:`learn`'s return value: each network's mean policy + vf_coef * value loss."""
        return {k: m["policy_loss"] + self.vf_coef * m["value_loss"] for k, m in metrics.items()}

    def _rollout_from_experiences(
        self,
        net_id: str,
        agents: list[str],
        experiences: Sequence[Any],
        infos: Sequence[Any] | None,
    ) -> GroupRollout:
        states, actions, log_probs, rewards, dones, values, next_states, next_dones = experiences
        layout = self.obs_layouts[net_id]
        act_space = self.action_spaces[agents[0]]
        num_steps = len(states[agents[0]])
        num_envs = max(1, int(np.prod(np.shape(rewards[agents[0]][0]))))
        if infos is not None and len(infos) != num_steps:
            raise ValueError(f"infos has {len(infos)} entries for {num_steps} steps")

        def storage(x: Any) -> np.ndarray:
            return layout.to_storage(x, layout.batch_ndim_of(x)).reshape(num_envs, *layout.shape)

        def gather(table: Mapping[str, Any], tail: tuple[int, ...]) -> np.ndarray:
            """(T, E, A, *tail) from each agent's (T, [E,] *tail) sequence."""
            per_agent = [
                np.asarray(np.stack(table[a]), np.float32).reshape(num_steps, num_envs, *tail)
                for a in agents
            ]
            return np.stack(per_agent, axis=2)

        obs = np.stack([np.stack([storage(x) for x in states[a]]) for a in agents], axis=2)
        reward = gather(rewards, ())
        done = gather(dones, ())
        next_done = np.stack(
            [np.asarray(next_dones[a], np.float32).reshape(num_envs) for a in agents], axis=1
        )
        # An absent agent shows up as a NaN reward (and NaN observation in the reference's env).
        valid = ~np.isnan(reward)
        if obs.dtype.kind == "f":
            valid &= ~np.isnan(obs.reshape(*valid.shape, -1)).all(-1)
        # ends[t] is the done that follows step t: dones[t + 1], and next_dones at the end.
        ends = np.concatenate([done[1:], next_done[None]], axis=0)

        def tensor(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.nan_to_num(x, nan=0.0), dtype=dtype, device=self.device)

        rollout = self.allocate_rollouts(num_steps, num_envs, [net_id])[net_id]
        rollout.obs.copy_(tensor(obs, rollout.obs.dtype))
        # Actions as get_action returned them (the env's layout) -> the policy's own;
        # an absent agent's (NaN) becomes action 0.
        env_layout = tensor(gather(actions, tuple(act_space.shape)), torch.float64)
        own = self.actors[net_id].policy_action(env_layout, scaled=False)
        valid_rows = torch.as_tensor(valid, device=self.device)
        own[~valid_rows] = 0
        rollout.actions.copy_(own.to(rollout.actions.dtype))
        rollout.log_probs.copy_(tensor(gather(log_probs, ())))
        rollout.values.copy_(tensor(gather(values, ())))
        rollout.rewards.copy_(tensor(reward))
        rollout.ends.copy_(tensor(np.where(np.isnan(ends), 1.0, ends)))
        rollout.valid.copy_(valid_rows)
        rollout.chosen.copy_(valid_rows)
        if rollout.action_masks is not None:
            rollout.action_masks.fill_(True)
        for t, step_infos in enumerate(infos or []):
            masks = action_masks(step_infos, agents, act_space, num_envs, valid[t])
            if masks is not None and rollout.action_masks is not None:
                rollout.action_masks[t] = torch.as_tensor(masks, device=self.device)
            imposed = env_defined_actions(step_infos, agents, act_space, num_envs)
            if imposed is not None:
                rollout.chosen[t] &= ~torch.as_tensor(imposed[1], device=self.device)
        nxt = np.stack([storage(next_states[a]) for a in agents], axis=1)
        last = self.value_group(net_id, tensor(nxt, rollout.obs.dtype).flatten(0, 1))
        last = last.reshape(num_envs, len(agents))
        rollout.last_values.copy_(last)
        return rollout

    def update(
        self,
        rollouts: Mapping[str, GroupRollout],
        generator: torch.Generator | None = None,
    ) -> dict[str, dict[str, float]]:
        """PPO epochs over each network's rollout, minibatches shuffled by ``generator``
        (torch's global RNG when None); returns each network's mean metrics. Several
        agents learn as one stack with :func:`~ippo_cli.stacked_update.update_agents`."""
        return update_agents([self], [rollouts], [generator])[0]

    def _update_network(
        self, net_id: str, batch: dict[str, torch.Tensor], orders: list[torch.Tensor]
    ) -> dict[str, float]:
        actor, critic = self.actors[net_id], self.critics[net_id]
        actor_params, critic_params = list(actor.parameters()), list(critic.parameters())
        actor_opt, critic_opt = self.actor_optimizers[net_id], self.critic_optimizers[net_id]
        n = batch["obs"].shape[0]
        # batch_size counts (time, env) rows: a group of A agents sharing this network
        # learns from batch_size * A of its transitions per minibatch, so adding agents
        # adds data to each gradient step rather than more steps (as MAPPO does).
        size = self.batch_size * len(self.members[net_id])
        totals = torch.zeros(len(METRIC_NAMES) - 1, device=self.device)
        updates = 0
        stop = False
        # Weights only when some rows are not the policy's choice (env-defined actions);
        # otherwise plain means, a few operations fewer per minibatch.
        all_chosen = bool(batch["chosen"].all())
        batch = {**batch, "chosen": batch["chosen"].float()}
        terms = maybe_compiled(_minibatch_terms, self.torch_compiler)
        for order in orders:
            # One shuffle per epoch; its minibatches are then contiguous slices (views).
            # index_select gathers rows several times faster than v[order].
            shuffled = {k: v.index_select(0, order) for k, v in batch.items()}
            for start in range(0, n, size):
                mb = {k: v[start : start + size] for k, v in shuffled.items()}
                masks = mb.get("action_masks")
                chosen = None if all_chosen else mb["chosen"]
                dist, (policy_loss, value_loss, entropy, approx_kl, clip_frac) = terms(
                    actor, critic, mb, chosen, self.clip_coef
                )
                if self.data_parallel:  # every rank must take the same early stop
                    approx_kl = distributed.average(approx_kl)
                if self.target_kl is not None and approx_kl.item() > self.target_kl:
                    stop = True
                    break
                actor_loss = policy_loss - self.ent_coef * entropy
                actor_loss = actor_loss + self.biases.loss(
                    group_id_of(net_id), actor, mb["obs"], dist, masks, chosen
                )

                actor_opt.zero_grad(set_to_none=True)
                critic_opt.zero_grad(set_to_none=True)
                # Actor and critic share no parameters: one backward pass gives each its
                # own gradients; each is clipped and stepped separately, as in the reference.
                loss = actor_loss + self.vf_coef * value_loss
                if self.accelerator is not None:
                    self.accelerator.backward(loss)
                else:
                    loss.backward()
                if self.data_parallel:
                    distributed.average_gradients(actor_params + critic_params)
                clip_grad_norm_(actor_params, self.max_grad_norm, foreach=True)
                clip_grad_norm_(critic_params, self.max_grad_norm, foreach=True)
                actor_opt.step()
                critic_opt.step()

                totals += torch.stack(
                    [
                        policy_loss.detach(),
                        value_loss.detach(),
                        entropy.detach(),
                        approx_kl,
                        clip_frac,
                    ]
                )
                updates += 1
            if stop:
                break
        means = (totals / max(updates, 1)).tolist()
        result = dict(zip(METRIC_NAMES[:-1], means, strict=True))
        result["explained_variance"] = explained_variance(batch["values"], batch["returns"])
        result["updates"] = updates
        return result

    # ---------------------------------------------------------- checkpointing
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this agent, as plain data."""
        return {
            "algorithm": "IPPO",
            "observation_spaces": {a: space_to_dict(s) for a, s in self.observation_spaces.items()},
            "action_spaces": {a: space_to_dict(s) for a, s in self.action_spaces.items()},
            "agent_ids": list(self.agent_ids),
            "index": self.index,
            "mut": self.mut,
            "net_config": self.net_config,
            "hyperparameters": {k: getattr(self, k) for k in HYPERPARAMETERS},
            "actor_configs": {k: net.init_config for k, net in self.actors.items()},
            "critic_configs": {k: net.init_config for k, net in self.critics.items()},
            "actors": {k: net.state_dict() for k, net in self.actors.items()},
            "critics": {k: net.state_dict() for k, net in self.critics.items()},
            "actor_optimizers": {k: o.state_dict() for k, o in self.actor_optimizers.items()},
            "critic_optimizers": {k: o.state_dict() for k, o in self.critic_optimizers.items()},
            "steps": list(self.steps),
            "scores": _plain(self.scores),
            "fitness": [float(f) for f in self.fitness],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], device: str | torch.device = "cpu", accelerator: Any = None
    ) -> IPPO:
        """Rebuild an agent from :meth:`to_dict` output (a checkpoint's ``agent``)."""
        try:
            return cls._from_dict(data, device, accelerator)
        except (KeyError, TypeError) as exc:
            raise checkpoint.CheckpointError(
                f"checkpoint agent data is incomplete or malformed ({type(exc).__name__}: "
                f"{exc}); was it written by a different version of ippo?"
            ) from None

    @classmethod
    def _from_dict(
        cls, data: Mapping[str, Any], device: str | torch.device, accelerator: Any
    ) -> IPPO:
        agent_ids = data["agent_ids"]
        obs_spaces = {a: space_from_dict(data["observation_spaces"][a]) for a in agent_ids}
        act_spaces = {a: space_from_dict(data["action_spaces"][a]) for a in agent_ids}
        members = _members(agent_ids)
        actors = critics = None
        if "actor_configs" in data:  # each network as built (custom networks included)
            actors = {
                k: StochasticActor(
                    obs_spaces[agents[0]], act_spaces[agents[0]], **data["actor_configs"][k]
                )
                for k, agents in members.items()
            }
            critics = {
                k: ValueNetwork(obs_spaces[agents[0]], **data["critic_configs"][k])
                for k, agents in members.items()
            }
        agent = cls(
            observation_spaces=[obs_spaces[a] for a in agent_ids],
            action_spaces=[act_spaces[a] for a in agent_ids],
            agent_ids=agent_ids,
            index=data["index"],
            mut=data["mut"],
            net_config=data["net_config"],
            actor_networks=actors,
            critic_networks=critics,
            device=device,
            accelerator=accelerator,
            **data["hyperparameters"],
        )
        agent.load_state(data)
        return agent

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Load weights, optimizer states and counters from :meth:`to_dict` output."""
        for table, nets in (("actors", self.actors), ("critics", self.critics)):
            if set(data[table]) != set(nets):
                raise checkpoint.CheckpointError(
                    f"checkpoint networks {sorted(data[table])} do not match {sorted(nets)}"
                )
            for k, net in nets.items():
                net.load_state_dict(data[table][k])
        for k, opt in self.actor_optimizers.items():
            opt.load_state_dict(data["actor_optimizers"][k])
        for k, opt in self.critic_optimizers.items():
            opt.load_state_dict(data["critic_optimizers"][k])
        self.steps = list(data["steps"])
        self.scores = list(data["scores"])
        self.fitness = list(data["fitness"])

    def save_checkpoint(self, path: str) -> None:
        """Save this agent (weights, optimizers, hyperparameters, spaces) to ``path``."""
        checkpoint.save(path, {"agent": self.to_dict()})

    def load_checkpoint(self, path: str) -> None:
        """Load weights, optimizer states and counters saved at ``path`` into this agent."""
        self.load_state(_agent_data(checkpoint.load(path, self.device)))

    @classmethod
    def load(cls, path: str, device: str | torch.device = "cpu", accelerator: Any = None) -> IPPO:
        """Load an agent saved by :meth:`save_checkpoint` or a ``ippo train`` checkpoint."""
        if accelerator is not None:
            device = accelerator.device
        return cls.from_dict(_agent_data(checkpoint.load(path, device)), device, accelerator)

    def clone(self, index: int | None = None, wrap: bool = True) -> IPPO:
        """An independent copy (networks, optimizer states, counters); ``index`` if given."""
        clone = type(self).from_dict(
            copy.deepcopy(self.to_dict()), self.device, self.accelerator if wrap else None
        )
        clone.hp_config = copy.deepcopy(self.hp_config)
        if index is not None:
            clone.index = index
        return clone


def learn_together(
    agents: Sequence[IPPO],
    experiences: Sequence[Sequence[Any]],
    infos: Sequence[Sequence[Any] | None] | None = None,
) -> list[dict[str, float]]:
    """:meth:`IPPO.learn` for several agents at once (a population, seeds of one
    experiment): ``experiences[k]`` is agent k's 8-tuple and ``infos[k]`` its steps'
    infos (see :meth:`IPPO.learn`). Their networks learn as one stack where
    architectures, minibatch sizes and optimizer step counts agree
    (:func:`~ippo_cli.stacked_update.update_agents`), each with its own
    hyperparameters; every agent ends exactly as its own ``learn`` would leave it.
    Returns each agent's :meth:`IPPO.learn` value."""
    infos = infos or [None] * len(agents)
    rollouts = [
        a.experience_rollouts(e, i) for a, e, i in zip(agents, experiences, infos, strict=True)
    ]
    metrics = update_agents(list(agents), rollouts)
    return [a.losses(m) for a, m in zip(agents, metrics, strict=True)]


def validate_hyperparameters(h: Mapping[str, Any]) -> None:
    """Reject out-of-range hyperparameters with a message naming the value."""

    def need(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ValueError(f"{name}={h[name]!r} is invalid: {rule}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    def is_real(v: Any) -> bool:
        return isinstance(v, Real) and not isinstance(v, bool)

    need(is_int(h["batch_size"]) and h["batch_size"] >= 1, "batch_size", "must be an int >= 1")
    need(is_int(h["learn_step"]) and h["learn_step"] >= 1, "learn_step", "must be an int >= 1")
    need(
        is_int(h["update_epochs"]) and h["update_epochs"] >= 1,
        "update_epochs",
        "must be an int >= 1",
    )
    need(is_real(h["lr"]) and h["lr"] > 0, "lr", "must be > 0")
    need(is_real(h["gamma"]) and 0 <= h["gamma"] <= 1, "gamma", "must be in [0, 1]")
    need(is_real(h["gae_lambda"]) and 0 <= h["gae_lambda"] <= 1, "gae_lambda", "must be in [0, 1]")
    for name in ("clip_coef", "ent_coef", "vf_coef", "max_grad_norm"):
        need(is_real(h[name]) and h[name] >= 0, name, "must be >= 0")
    need(is_real(h["action_std_init"]), "action_std_init", "must be a number (a log std)")
    need(
        h["target_kl"] is None or (is_real(h["target_kl"]) and h["target_kl"] >= 0),
        "target_kl",
        "must be null or >= 0",
    )
    need(
        h["action_batch_size"] is None
        or (is_int(h["action_batch_size"]) and h["action_batch_size"] >= 1),
        "action_batch_size",
        "must be null or an int >= 1",
    )
    need(
        h["torch_compiler"] is None or h["torch_compiler"] in MODES,
        "torch_compiler",
        f"must be null or one of {', '.join(MODES)}",
    )


def _agent_spaces(observation_spaces, action_spaces, agent_ids):
    def as_dict(table, ids):
        if isinstance(table, spaces.Dict):
            table = dict(table.spaces)
        if isinstance(table, Mapping):
            return dict(table), list(ids) if ids is not None else list(table)
        if ids is None:
            raise ValueError("agent_ids is required when spaces are given as a list")
        table = list(table)
        if len(table) != len(ids):
            raise ValueError(f"{len(table)} spaces given for {len(ids)} agent_ids")
        return dict(zip(ids, table, strict=True)), list(ids)

    obs, ids = as_dict(observation_spaces, agent_ids)
    act, _ = as_dict(action_spaces, ids)
    for agent in ids:
        if agent not in obs or agent not in act:
            raise ValueError(f"agent '{agent}' has no observation or action space")
        observation_layout(obs[agent], f"observation of agent '{agent}'")
        check_action_space(act[agent], f"action of agent '{agent}'")
    return obs, act, ids


class ChannelsFirst:
    """An env (ParallelEnv or vector env) whose image observations of ``agents`` come
    with their channels moved from last to first (``[..., H, W, C]`` -> ``[..., C, H, W]``),
    the reference's ``swap_channels``. Everything else is the wrapped env's."""

    def __init__(self, env: Any, agents: Sequence[str]) -> None:
        self.env = env
        self.agents_to_swap = set(agents)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def _swap(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            a: np.moveaxis(np.asarray(o), -1, -3) if a in self.agents_to_swap else o
            for a, o in obs.items()
        }

    def reset(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], Any]:
        obs, infos = self.env.reset(*args, **kwargs)
        return self._swap(obs), infos

    def step(self, actions: Any) -> tuple[Any, ...]:
        obs, *rest = self.env.step(actions)
        return (self._swap(obs), *rest)


def _vector_episode_returns(
    agent: IPPO, env: Any, loop: int, max_steps: int | None, deterministic: bool
) -> np.ndarray:
    """Returns ``(loop * num_envs, agents)``: each env plays until its first episode ends."""
    was_training = agent.training
    agent.set_training_mode(False)
    ids = agent.agent_ids
    all_returns = []
    try:
        for _ in range(loop):
            obs, infos = env.reset()
            returns = np.zeros((env.num_envs, len(ids)))
            finished = np.zeros(env.num_envs, dtype=bool)
            steps = 0
            while not finished.all() and (max_steps is None or steps < max_steps):
                action, *_ = agent.get_action(obs, infos, deterministic=deterministic)
                obs, rewards, terms, truncs, infos = env.step(action)
                reward = np.stack([np.nan_to_num(rewards[a]) for a in ids], axis=1)
                returns[~finished] += reward[~finished]
                finished |= episodes_ended(terms, truncs, ids)
                steps += 1
            all_returns.append(returns)
    finally:
        agent.set_training_mode(was_training)
    return np.concatenate(all_returns)


def _minibatch_terms(
    actor: StochasticActor,
    critic: ValueNetwork,
    mb: dict[str, torch.Tensor],
    chosen: torch.Tensor | None,
    clip_coef: float,
) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """One network pair's action distribution on a minibatch and its PPO terms
    (:func:`ppo_terms`); compiled as one function with ``torch_compiler``."""
    dist = actor.distribution(mb["obs"], mb.get("action_masks"))
    log_prob = dist.log_prob(mb["actions"])
    return dist, ppo_terms(log_prob, dist.entropy(), critic(mb["obs"]), mb, clip_coef, chosen)


def _adam(net: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with the fused step (one kernel for all parameters) on CPU and CUDA: at these
    network sizes the optimizer's per-call overhead, not its arithmetic, is the cost.
    Elsewhere foreach: one batched kernel per operation."""
    params = list(net.parameters())
    if all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _members(agent_ids: Sequence[str]) -> dict[str, list[str]]:
    """Network id -> agents: by group when any group has several agents, else by agent."""
    groups: dict[str, list[str]] = {}
    for agent in agent_ids:
        groups.setdefault(group_id_of(agent), []).append(agent)
    if len(groups) < len(agent_ids):
        return groups
    return {agent: [agent] for agent in agent_ids}


def _agent_data(data: Mapping[str, Any]) -> Mapping[str, Any]:
    if "agent" not in data:
        raise checkpoint.CheckpointError("checkpoint holds no agent")
    return data["agent"]


def _plain(value: Any) -> Any:
    """numpy values -> python lists/floats so that checkpoints stay plain data."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
