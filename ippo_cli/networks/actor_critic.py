"""The actor (policy) and critic (value) networks of one agent group.

Both are an encoder (observation -> latent vector, see :mod:`ippo_cli.networks.encoders`)
followed by an MLP head, built from the reference's ``net_config``: ``encoder_config``,
``head_config``, ``latent_dim`` and, for Box actions, ``squash_output``. Both take
observations in the storage format of :class:`~ippo_cli.networks.observations.ObservationLayout`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from ippo_cli.networks.distributions import make_distribution
from ippo_cli.networks.encoders import encoder_config_with_defaults, make_encoder
from ippo_cli.networks.mlp import mlp
from ippo_cli.networks.observations import ObservationLayout
from ippo_cli.spaces import action_dim, action_shape, check_action_space

DEFAULT_HEAD = {"hidden_size": [64], "activation": "ReLU", "layer_norm": True}
NET_CONFIG_KEYS = {"encoder_config", "head_config", "latent_dim", "squash_output"}
MLP_KEYS = {"hidden_size", "activation", "layer_norm", "output_activation"}


def check_net_config(net_config: dict[str, Any], obs_space: spaces.Space | None = None) -> None:
    """Reject keys that do not exist, naming them (a typo must not be silently ignored).

    ``encoder_config`` is checked against the encoder of ``obs_space`` (MLP, CNN or
    multi-input keys) when it is given.
    """
    unknown = set(net_config) - NET_CONFIG_KEYS
    if unknown:
        raise ValueError(
            f"unknown net_config key(s) {sorted(unknown)}; known: {sorted(NET_CONFIG_KEYS)}"
        )
    bad = set(net_config.get("head_config") or {}) - MLP_KEYS
    if bad:
        raise ValueError(
            f"unknown net_config.head_config key(s) {sorted(bad)}; known: {sorted(MLP_KEYS)}"
        )
    if obs_space is not None:
        encoder_config_with_defaults(
            ObservationLayout(obs_space), net_config.get("encoder_config") or {}
        )
    else:
        bad = set(net_config.get("encoder_config") or {}) - MLP_KEYS
        if bad:
            raise ValueError(
                f"unknown net_config.encoder_config key(s) {sorted(bad)}; known: {sorted(MLP_KEYS)}"
            )


def _head(latent_dim: int, out_dim: int, config: dict[str, Any], gain: float) -> nn.Sequential:
    cfg = {**DEFAULT_HEAD, **config}
    return mlp(
        latent_dim,
        out_dim,
        list(cfg["hidden_size"]),
        cfg["activation"],
        cfg["layer_norm"],
        output_activation=cfg.get("output_activation"),
        output_gain=gain,
    )


class StochasticActor(nn.Module):
    """Policy network: observation -> action distribution."""

    def __init__(
        self,
        obs_space: spaces.Space,
        action_space: spaces.Space,
        net_config: dict[str, Any] | None = None,
        action_std_init: float = 0.0,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        check_action_space(action_space)
        net_config = dict(net_config or {})
        # Plain data enough to rebuild this network (checkpoints, clones).
        self.init_config = {
            "net_config": copy.deepcopy(net_config),
            "action_std_init": float(action_std_init),
            "normalize_images": bool(normalize_images),
        }
        check_net_config(net_config, obs_space)
        latent_dim = net_config.get("latent_dim", 64)
        self.action_space = action_space
        self.squash_output = bool(net_config.get("squash_output", False))
        self.encoder = make_encoder(
            obs_space, net_config.get("encoder_config") or {}, latent_dim, normalize_images
        )
        head_config = {**(net_config.get("head_config") or {}), "output_activation": None}
        # A small output gain makes the initial policy close to uniform / zero-mean.
        self.head = _head(latent_dim, action_dim(action_space), head_config, gain=0.01)
        self.log_std: nn.Parameter | None = None
        if isinstance(action_space, spaces.Box):
            self.log_std = nn.Parameter(
                torch.full((action_dim(action_space),), float(action_std_init))
            )
            low = np.array(np.broadcast_to(action_space.low, action_space.shape)).reshape(-1)
            high = np.array(np.broadcast_to(action_space.high, action_space.shape)).reshape(-1)
            self.register_buffer("action_low", torch.as_tensor(low, dtype=torch.float32))
            self.register_buffer("action_high", torch.as_tensor(high, dtype=torch.float32))

    def distribution(self, obs: torch.Tensor, mask: torch.Tensor | None = None):
        """The action distribution for a batch of (preprocessed) observations."""
        return make_distribution(
            self.action_space, self.head(self.encoder(obs)), self.log_std, mask, self.squash_output
        )

    def forward(
        self, obs: torch.Tensor, mask: torch.Tensor | None = None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) an action: returns (action, log_prob, entropy)."""
        dist = self.distribution(obs, mask)
        action = dist.mode() if deterministic else dist.sample()
        return action, dist.log_prob(action), dist.entropy()

    def scale_action(self, action: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Map a squashed action in [-1, 1] to the Box bounds: low + (a + 1) / 2 * (high - low)."""
        assert isinstance(self.action_space, spaces.Box), "scale_action needs a Box action space"
        low, high = self.action_space.low, self.action_space.high
        if isinstance(action, torch.Tensor):
            low, high = self.action_low, self.action_high
        return low + 0.5 * (action + 1.0) * (high - low)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """The action sent to the env, ``(*batch, *action_space.shape)``.

        Box: scaled once if squashed, else clipped to the bounds; then
        :meth:`env_layout`.
        """
        if isinstance(self.action_space, spaces.Box):
            if self.squash_output:
                action = self.scale_action(action)
            else:
                action = torch.clamp(action, self.action_low, self.action_high)
        return self.env_layout(action)

    def env_layout(self, action: torch.Tensor) -> torch.Tensor:
        """A sampled action in the env's layout, its values otherwise as sampled: Discrete
        and MultiDiscrete get the space's ``start`` added; Box and MultiBinary take the
        space's shape (MultiBinary as 0./1. floats)."""
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return action + int(space.start) if space.start else action
        if isinstance(space, spaces.MultiDiscrete):
            if space.start.any():
                action = action + torch.as_tensor(space.start, device=action.device)
            return action
        batch = action.shape[: action.dim() - len(action_shape(space))]
        return action.reshape(*batch, *space.shape)

    def policy_action(self, action: torch.Tensor, scaled: bool = True) -> torch.Tensor:
        """An action given in the env's layout (``(*batch, *action_space.shape)``) as this
        actor samples it: the inverse of :meth:`env_action` (of :meth:`env_layout` with
        ``scaled=False``). Used for env-defined actions, which the rollout stores like the
        policy's own. A squashed Box action is mapped back from the bounds to [-1, 1]."""
        space = self.action_space
        if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
            start = torch.as_tensor(np.asarray(space.start), device=action.device)
            return (action - start).round().long()
        batch = action.shape[: action.dim() - len(space.shape)]
        flat = action.reshape(*batch, -1).float()
        if isinstance(space, spaces.Box) and self.squash_output and scaled:
            span = (self.action_high - self.action_low).clamp(min=1e-12)
            flat = (2.0 * (flat - self.action_low) / span - 1.0).clamp(-1.0, 1.0)
        return flat


class ValueNetwork(nn.Module):
    """Critic: observation -> scalar state value."""

    def __init__(
        self,
        obs_space: spaces.Space,
        net_config: dict[str, Any] | None = None,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        net_config = dict(net_config or {})
        net_config.pop("squash_output", None)  # an actor setting; the critic ignores it
        self.init_config = {
            "net_config": copy.deepcopy(net_config),
            "normalize_images": bool(normalize_images),
        }
        check_net_config(net_config, obs_space)
        latent_dim = net_config.get("latent_dim", 64)
        self.encoder = make_encoder(
            obs_space, net_config.get("encoder_config") or {}, latent_dim, normalize_images
        )
        head_config = {**(net_config.get("head_config") or {}), "output_activation": None}
        self.head = _head(latent_dim, 1, head_config, gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)
