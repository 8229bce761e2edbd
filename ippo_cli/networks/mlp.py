"""Multi-layer perceptrons, the building block of encoders and heads."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "ReLU": nn.ReLU,
    "Tanh": nn.Tanh,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "SiLU": nn.SiLU,
    "LeakyReLU": nn.LeakyReLU,
    "Sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """Instantiate an activation by its torch class name (e.g. ``"ReLU"``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        known = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {name!r}; known: {known}") from None


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_size: list[int],
    activation_name: str = "ReLU",
    layer_norm: bool = True,
    output_activation: str | None = None,
    output_layer_norm: bool = False,
    output_gain: float = math.sqrt(2),
) -> nn.Sequential:
    """Linear layers with (LayerNorm +) activation between them.

    Hidden layers use orthogonal init with gain sqrt(2), as in the reference; the output
    layer's gain is configurable (the actor uses a small one so its first policy is near
    uniform).
    """
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden_size]
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        layers.append(_linear(d_in, d_out, math.sqrt(2)))
        if layer_norm:
            layers.append(nn.LayerNorm(d_out))
        layers.append(activation(activation_name))
    layers.append(_linear(dims[-1], out_dim, output_gain))
    if output_layer_norm:
        layers.append(nn.LayerNorm(out_dim, elementwise_affine=False))
    if output_activation is not None:
        layers.append(activation(output_activation))
    return nn.Sequential(*layers)


def _linear(d_in: int, d_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def flat_input(x: torch.Tensor, obs_ndim: int) -> torch.Tensor:
    """Flatten the observation dimensions of ``x``, keeping the batch dimensions."""
    return x.reshape(*x.shape[: x.dim() - obs_ndim], -1) if obs_ndim != 1 else x
