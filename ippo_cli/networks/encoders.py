"""Encoders: a batch of stored observations -> a latent vector per observation.

:func:`make_encoder` picks the encoder for an observation space, as the reference does:

* vector observations (Box that is not an image, Discrete, MultiDiscrete, MultiBinary):
  an MLP to ``latent_dim``, then LayerNorm (no affine) and ReLU;
* images (Box with 3 dims): convolutions, flatten, Linear to ``latent_dim`` and ReLU;
* Dict / Tuple: a CNN per image subspace (each to the multi-input ``latent_dim``), the
  other subspaces concatenated (optionally through one MLP), then Linear to the network's
  ``latent_dim``, LayerNorm (no affine) and ReLU.

Every encoder takes storage-format tensors (see :mod:`ippo_cli.networks.observations`) of
any dtype and casts them to float itself.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from ippo_cli.networks.mlp import _linear, activation, mlp
from ippo_cli.networks.observations import ObservationLayout, Part

MLP_ENCODER_DEFAULTS: dict[str, Any] = {
    "hidden_size": [64, 64],
    "activation": "ReLU",
    "layer_norm": True,
    "output_activation": "ReLU",
}
CNN_ENCODER_DEFAULTS: dict[str, Any] = {
    "channel_size": [32, 32],
    "kernel_size": 3,
    "stride_size": 1,
    "activation": "ReLU",
}
# The reference's defaults for the feature extractors of Dict/Tuple observations.
MULTI_INPUT_CNN_DEFAULTS: dict[str, Any] = {**CNN_ENCODER_DEFAULTS, "channel_size": [16, 16]}
MULTI_INPUT_MLP_DEFAULTS: dict[str, Any] = {
    "hidden_size": [64, 64],
    "activation": "ReLU",
    "layer_norm": True,
}
MULTI_INPUT_DEFAULTS: dict[str, Any] = {
    "latent_dim": 16,
    "vector_space_mlp": False,
    "cnn_config": MULTI_INPUT_CNN_DEFAULTS,
    "mlp_config": MULTI_INPUT_MLP_DEFAULTS,
}


def encoder_kind(layout: ObservationLayout) -> str:
    """ "multi_input", "image" or "vector": which encoder observes ``layout``."""
    if layout.is_multi_input:
        return "multi_input"
    return "image" if layout.is_image else "vector"


_DEFAULTS_OF_KIND = {
    "vector": MLP_ENCODER_DEFAULTS,
    "image": CNN_ENCODER_DEFAULTS,
    "multi_input": MULTI_INPUT_DEFAULTS,
}
_KIND_TEXT = {
    "vector": "vector observations (MLP encoder)",
    "image": "image observations (CNN encoder)",
    "multi_input": "Dict/Tuple observations (multi-input encoder)",
}


def encoder_config_with_defaults(
    layout: ObservationLayout, config: dict[str, Any] | None
) -> dict[str, Any]:
    """``config`` completed with the reference's defaults; unknown keys raise ValueError."""
    kind = encoder_kind(layout)
    cfg = _complete(
        config or {}, _DEFAULTS_OF_KIND[kind], "net_config.encoder_config", _KIND_TEXT[kind]
    )
    if kind == "multi_input":
        where = "net_config.encoder_config"
        cfg["cnn_config"] = _complete(
            config.get("cnn_config") if config else None,
            MULTI_INPUT_CNN_DEFAULTS,
            f"{where}.cnn_config",
            "the CNN of image subspaces",
        )
        cfg["mlp_config"] = _complete(
            config.get("mlp_config") if config else None,
            MULTI_INPUT_MLP_DEFAULTS,
            f"{where}.mlp_config",
            "the MLP of vector subspaces",
        )
    return cfg


# The side of the last feature map that a CNN sized to its image aims at (see sized_cnn).
SIZED_CNN_TARGET = 4


def sized_cnn(image_shape: tuple[int, int, int], layers: int) -> dict[str, list[int]]:
    """Kernels and strides for ``layers`` conv layers that bring an image of ``image_shape``
    (C, H, W) down to a feature map about ``SIZED_CNN_TARGET`` wide.

    Each layer's stride is the share of the remaining reduction that falls to it (the
    ``layers - i``-th root), rounded up for all but the last layer, so that the first,
    most expensive layer shrinks the image most, as in the reference's 8/4, 4/2 image
    network; a share under 2 keeps stride 1, so small images keep their detail. Kernels
    are twice the stride (3 at stride 1). 32x32 gets kernels [6, 4] and strides [3, 2]
    (3x3 features), 84x84 [10, 6] and [5, 3] (4x4), 8x8 keeps [3, 3] and [1, 1] (4x4).
    Sized by the smaller side; every layer fits the image.
    """
    side = min(image_shape[1:])
    kernels, strides = [], []
    for i in range(layers):
        share = (side / SIZED_CNN_TARGET) ** (1 / (layers - i))
        last = i == layers - 1
        stride = math.ceil(share) if share >= 2 and not last else max(1, math.floor(share))
        kernel = min(3 if stride == 1 else 2 * stride, side)
        kernels.append(kernel)
        strides.append(stride)
        side = (side - kernel) // stride + 1
    return {"kernel_size": kernels, "stride_size": strides}


def sized_encoder_config(
    layout: ObservationLayout, config: dict[str, Any] | None
) -> dict[str, Any]:
    """``config`` with CNN kernels and strides sized to the images of ``layout``
    (:func:`sized_cnn`) where it sets neither: the encoder of ``network=auto``.

    A multi-input encoder's ``cnn_config`` is sized to its smallest image. Vector
    observations, and CNNs given a kernel or a stride, are left as they are.
    """
    config = copy.deepcopy(dict(config or {}))
    kind = encoder_kind(layout)
    if kind == "vector":
        return config
    images = [p.image_shape for p in layout.parts if p.kind == "image"]
    if kind == "multi_input":
        if not images:
            return config
        cnn = dict(config.get("cnn_config") or {})
        if "kernel_size" not in cnn and "stride_size" not in cnn:
            layers = len(_channels(cnn, MULTI_INPUT_CNN_DEFAULTS))
            smallest = min(images, key=lambda shape: min(shape[1:]))
            config["cnn_config"] = {**cnn, **sized_cnn(smallest, layers)}
        return config
    if "kernel_size" not in config and "stride_size" not in config:
        config.update(sized_cnn(images[0], len(_channels(config, CNN_ENCODER_DEFAULTS))))
    return config


def _channels(config: dict[str, Any], defaults: dict[str, Any]) -> list[int]:
    return _int_list(config.get("channel_size", defaults["channel_size"]), "channel_size", None)


def _complete(
    config: dict[str, Any] | None, defaults: dict[str, Any], where: str, what: str
) -> dict[str, Any]:
    config = dict(config or {})
    unknown = set(config) - set(defaults)
    if unknown:
        raise ValueError(
            f"unknown {where} key(s) {sorted(unknown)} for {what}; known: {sorted(defaults)}"
        )
    return copy.deepcopy({**defaults, **config})


def make_encoder(
    obs_space: spaces.Space,
    encoder_config: dict[str, Any] | None,
    latent_dim: int,
    normalize_images: bool = True,
) -> nn.Module:
    """The encoder of ``obs_space``: ``forward(x)`` maps ``(B, *layout.shape)`` to
    ``(B, latent_dim)`` (extra leading batch dims are kept)."""
    layout = ObservationLayout(obs_space)
    cfg = encoder_config_with_defaults(layout, encoder_config)
    _check_positive_int(latent_dim, "net_config.latent_dim")
    kind = encoder_kind(layout)
    if kind == "multi_input":
        return MultiInputEncoder(layout, cfg, latent_dim, normalize_images)
    if kind == "image":
        return CNNEncoder(layout.parts[0], cfg, latent_dim, normalize_images)
    return MLPEncoder(layout.flat_dim, cfg, latent_dim)


class MLPEncoder(nn.Module):
    """Flat vector -> latent: MLP, then LayerNorm (no affine) and the output activation."""

    def __init__(self, in_dim: int, config: dict[str, Any], latent_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        layers: list[nn.Module] = [
            mlp(
                in_dim,
                latent_dim,
                list(config["hidden_size"]),
                config["activation"],
                config["layer_norm"],
                output_layer_norm=True,
            )
        ]
        if config.get("output_activation") is not None:
            layers.append(activation(config["output_activation"]))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


class ImageScale(nn.Module):
    """Scale images by their space's bounds: ``(x - low) / (high - low)``.

    The bounds are used only when every one is finite and they are not already [0, 1];
    otherwise the input is just cast to float. ``active`` tells which.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, enabled: bool = True) -> None:
        super().__init__()
        finite = bool(np.isfinite(low).all() and np.isfinite(high).all())
        unit = bool((low == 0).all() and (high == 1).all())
        self.active = enabled and finite and not unit
        if self.active:
            span = high - low
            inv = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0)
            low, inv = _compact(low), _compact(inv.astype(np.float32))
            self.register_buffer("low", torch.as_tensor(low), persistent=False)
            self.register_buffer("inv_span", torch.as_tensor(inv), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return (x - self.low) * self.inv_span if self.active else x

    def extra_repr(self) -> str:
        return f"active={self.active}"


def _compact(bound: np.ndarray) -> np.ndarray:
    """A (C, H, W) bound, reduced to shape (1, 1, 1) when it is uniform."""
    bound = np.ascontiguousarray(bound, dtype=np.float32)
    return bound.reshape(-1)[:1].reshape(1, 1, 1) if (bound == bound.flat[0]).all() else bound


class CNNEncoder(nn.Module):
    """(C, H, W) image -> latent: ``scale`` (bounds), conv layers with activation,
    flatten, Linear to ``latent_dim`` and ReLU."""

    def __init__(
        self,
        part: Part,
        config: dict[str, Any],
        latent_dim: int,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        assert part.image_shape is not None and part.low is not None and part.high is not None
        self.image_shape = part.image_shape
        self.scale = ImageScale(part.low, part.high, normalize_images)
        self.convs, flat = conv_stack(part.image_shape, config, part.key)
        self.out = nn.Sequential(_linear(flat, latent_dim, math.sqrt(2)), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-3]
        x = self.scale(obs.reshape(-1, *self.image_shape))
        return self.out(self.convs(x).flatten(start_dim=1)).reshape(*lead, -1)


def conv_stack(
    image_shape: tuple[int, int, int], config: dict[str, Any], key: str | int | None = None
) -> tuple[nn.Sequential, int]:
    """Conv2d layers (orthogonal init, gain sqrt(2), zero bias), each followed by the
    activation, then Flatten; returns it and its output size. Raises ValueError when the
    image is too small for a layer."""
    channels = _int_list(config["channel_size"], "channel_size", None)
    kernels = _int_list(config["kernel_size"], "kernel_size", len(channels))
    strides = _int_list(config["stride_size"], "stride_size", len(channels))
    c, h, w = image_shape
    layers: list[nn.Module] = []
    for i, (out_c, k, s) in enumerate(zip(channels, kernels, strides, strict=True), start=1):
        new_h, new_w = (h - k) // s + 1, (w - k) // s + 1
        if new_h < 1 or new_w < 1:
            where = "" if key is None else f" (observation subspace {key!r})"
            raise ValueError(
                f"image of {image_shape[1]}x{image_shape[2]} is too small for CNN layer {i} "
                f"(kernel {k}, stride {s}): output would be {max(new_h, 0)}x{max(new_w, 0)}"
                f"{where}; use smaller kernel_size/stride_size or fewer layers"
            )
        conv = nn.Conv2d(c, out_c, kernel_size=k, stride=s)
        nn.init.orthogonal_(conv.weight, math.sqrt(2))
        nn.init.zeros_(conv.bias)
        layers += [conv, activation(config["activation"])]
        c, h, w = out_c, new_h, new_w
    return nn.Sequential(*layers), c * h * w


def _int_list(value: Any, name: str, length: int | None) -> list[int]:
    """An int or list of positive ints; an int is repeated ``length`` times."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and length:
        values = [int(value)] * length
    elif isinstance(value, list | tuple):
        values = list(value)
    else:
        expected = "a list of ints" if length is None else "an int or a list of ints"
        raise ValueError(f"encoder_config {name}={value!r} is invalid: must be {expected}")
    if length is None and not values:
        raise ValueError(f"encoder_config {name} must name at least one layer")
    for v in values:
        _check_positive_int(v, f"encoder_config {name}")
    if length is not None and len(values) != length:
        raise ValueError(
            f"encoder_config {name}={value!r} has {len(values)} entries; channel_size has "
            f"{length} layers"
        )
    return [int(v) for v in values]


def _check_positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: must be an int >= 1")


class MultiInputEncoder(nn.Module):
    """Dict/Tuple observations (a flat storage vector) -> latent.

    Each image subspace goes through its own CNN (``cnn_config``, output of the multi-input
    ``latent_dim``); the other subspaces are concatenated raw, or through one MLP
    (``mlp_config``) when ``vector_space_mlp``; everything is then concatenated and mapped
    by Linear + LayerNorm (no affine) + ReLU to the network's ``latent_dim``.
    """

    def __init__(
        self,
        layout: ObservationLayout,
        config: dict[str, Any],
        latent_dim: int,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        feature_dim = config["latent_dim"]
        _check_positive_int(feature_dim, "net_config.encoder_config.latent_dim")
        self.flat_dim = layout.flat_dim
        self.image_parts = [p for p in layout.parts if p.kind == "image"]
        self.cnns = nn.ModuleList(
            CNNEncoder(p, config["cnn_config"], feature_dim, normalize_images)
            for p in self.image_parts
        )
        columns = [
            np.arange(p.offset, p.offset + p.length) for p in layout.parts if p.kind != "image"
        ]
        index = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
        self.register_buffer("vector_index", torch.as_tensor(index), persistent=False)
        vector_dim = len(index)
        self.vector_mlp: nn.Module | None = None
        if config["vector_space_mlp"] and vector_dim > 0:
            m = config["mlp_config"]
            self.vector_mlp = mlp(
                vector_dim,
                feature_dim,
                list(m["hidden_size"]),
                m["activation"],
                m["layer_norm"],
                output_activation=m["activation"],
                output_layer_norm=m["layer_norm"],
            )
            vector_dim = feature_dim
        features = feature_dim * len(self.cnns) + vector_dim
        self.final = nn.Sequential(
            _linear(features, latent_dim, math.sqrt(2)),
            nn.LayerNorm(latent_dim, elementwise_affine=False),
            nn.ReLU(),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-1]
        x = obs.reshape(-1, self.flat_dim).float()
        features = [
            cnn(x[:, p.offset : p.offset + p.length].reshape(-1, *p.image_shape))
            for p, cnn in zip(self.image_parts, self.cnns, strict=True)
        ]
        if self.vector_index.numel() > 0:
            vectors = x.index_select(1, self.vector_index)
            features.append(self.vector_mlp(vectors) if self.vector_mlp is not None else vectors)
        return self.final(torch.cat(features, dim=1)).reshape(*lead, -1)
