"""Architecture mutations of an actor or critic that keep what it has learned.

Each mutation replaces modules of the network in place, copying the weights of every
unit that survives, and updates the network's ``init_config`` so that clones and
checkpoints rebuild the same shapes. The mutable parts are the MLP head (``head.*``),
an MLP encoder of vector observations (``encoder.*``), the latent layer between encoder
and head (``*_latent_node``) and the channels of a CNN encoder (``*_channel``).

What happens to the function the network computes:

* **add node / add latent node / add channel: preserved.** New units get zero outgoing
  weights. Without a LayerNorm after them their incoming weights are a fresh orthogonal
  init; with one, they start at the mean of the layer's rows, so they sit exactly at the
  layer's mean: the mean is unchanged and the standard deviation shrinks by the constant
  factor sqrt(n / (n + k)), which the surviving LayerNorm gains absorb (a LayerNorm
  without gains, as after the latent layer, is compensated in the next layer's weights,
  exact for ReLU-like outputs). Such new units start from distinct LayerNorm biases (or,
  without gains, a 1e-3 perturbation of their weights) so that training tells them apart.
* **add layer: preserved without LayerNorm** (for ReLU; the default encoders use it):
  the new hidden layer, inserted before the output layer, has identity weights and zero
  bias. With LayerNorm the new layer normalises its input, so the outputs change.
* **remove node / remove layer / activation: changed.** The units with the smallest
  outgoing weights are removed; a removed last hidden layer leaves the output layer
  with the overlapping part of its weights; every other weight is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ippo_cli.networks.actor_critic import DEFAULT_HEAD
from ippo_cli.networks.encoders import (
    CNN_ENCODER_DEFAULTS,
    MLP_ENCODER_DEFAULTS,
    CNNEncoder,
    MLPEncoder,
    MultiInputEncoder,
)
from ippo_cli.networks.mlp import ACTIVATIONS, activation

MIN_LAYERS, MAX_LAYERS = 1, 4
# (min, max, step sizes) of each kind of width.
NODES = (16, 512, (16, 32, 64))
LATENT = (8, 128, (8, 16, 32))
CHANNELS = (8, 256, (8, 16, 32))
# Positively homogeneous: act(c * x) = c * act(x) for c > 0.
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity)

LAYER_METHODS = ("head.add_layer", "head.remove_layer", "encoder.add_layer", "encoder.remove_layer")
NODE_METHODS = (
    "head.add_node",
    "head.remove_node",
    "encoder.add_node",
    "encoder.remove_node",
    "add_latent_node",
    "remove_latent_node",
    "add_channel",
    "remove_channel",
)


def methods(net: nn.Module) -> tuple[list[str], list[str]]:
    """The (layer, node) architecture mutations that apply to ``net``'s kind of network."""
    layer, node = list(LAYER_METHODS[:2]), [*NODE_METHODS[:2], *NODE_METHODS[4:6]]
    if isinstance(net.encoder, MLPEncoder):
        layer += LAYER_METHODS[2:]
        node += NODE_METHODS[2:4]
    if isinstance(net.encoder, CNNEncoder):
        node += NODE_METHODS[6:]
    return layer, node


def mutate(net: nn.Module, method: str, u: float, v: float, gen: torch.Generator) -> bool:
    """Apply ``method`` to ``net``; ``u`` and ``v`` in [0, 1) pick the layer and the
    number of units. Returns False when the network is at the method's limit."""
    if method in ("add_latent_node", "remove_latent_node"):
        return _latent(net, method.startswith("add"), _pick(LATENT[2], v), gen)
    if method in ("add_channel", "remove_channel"):
        return _channels(net, method.startswith("add"), u, _pick(CHANNELS[2], v), gen)
    part, op = method.split(".")
    sizes = list(_config(net, part)["hidden_size"])
    if op == "add_layer":
        if len(sizes) >= MAX_LAYERS:
            return False
        _add_layer(net, part)
    elif op == "remove_layer":
        if len(sizes) <= MIN_LAYERS:
            return False
        _remove_layer(net, part)
    else:
        if not sizes:
            return False
        return _nodes(net, part, int(u * len(sizes)), op == "add_node", _pick(NODES[2], v), gen)
    return True


def change_activation(net: nn.Module, name: str) -> None:
    """Use activation ``name`` in every hidden layer of the head and an MLP encoder."""
    for part in ("head", "encoder"):
        if part == "encoder" and not isinstance(net.encoder, MLPEncoder):
            continue
        seq = _mlp(net, part)
        for i, module in enumerate(seq):
            if isinstance(module, tuple(ACTIVATIONS.values())):
                seq[i] = activation(name)
        _config(net, part)["activation"] = name


def describe(net: nn.Module) -> str:
    """The architecture in brief: ``encoder [64, 64] latent 64 head [64]``."""
    head = _config(net, "head")["hidden_size"]
    text = f"latent {net.init_config['net_config'].get('latent_dim', 64)} head {list(head)}"
    if isinstance(net.encoder, MLPEncoder):
        return f"encoder {list(_config(net, 'encoder')['hidden_size'])} {text}"
    if isinstance(net.encoder, CNNEncoder):
        return f"channels {list(_config(net, 'encoder')['channel_size'])} {text}"
    return text


# --------------------------------------------------------------- internals
def _pick(steps: tuple[int, ...], v: float) -> int:
    return steps[min(int(v * len(steps)), len(steps) - 1)]


def _config(net: nn.Module, part: str) -> dict[str, Any]:
    """The mutable config of ``part`` in ``net.init_config``, defaults filled in."""
    net_config = net.init_config["net_config"]
    key, defaults = ("head_config", DEFAULT_HEAD) if part == "head" else ("encoder_config", {})
    if part == "encoder":
        defaults = MLP_ENCODER_DEFAULTS if isinstance(net.encoder, MLPEncoder) else {}
        if isinstance(net.encoder, CNNEncoder):
            defaults = CNN_ENCODER_DEFAULTS
    node = dict(net_config.get(key) or {})
    for k, value in defaults.items():
        node.setdefault(k, list(value) if isinstance(value, list) else value)
    net_config[key] = node
    return node


def _mlp(net: nn.Module, part: str) -> nn.Sequential:
    return net.head if part == "head" else net.encoder.net[0]


def _set_mlp(net: nn.Module, part: str, seq: nn.Sequential) -> None:
    if part == "head":
        net.head = seq
    else:
        net.encoder.net[0] = seq


def _linears(seq: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(seq) if isinstance(m, nn.Linear)]


def _norm_after(seq: nn.Sequential, pos: int) -> nn.LayerNorm | None:
    nxt = seq[pos + 1] if pos + 1 < len(seq) else None
    return nxt if isinstance(nxt, nn.LayerNorm) else None


def _linear_like(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _orthogonal(shape: tuple[int, ...], like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    w = torch.empty(shape[0], math.prod(shape[1:]))
    nn.init.orthogonal_(w, math.sqrt(2), generator=gen)
    return w.reshape(shape).to(like)


def _norm_like(norm: nn.LayerNorm, size: int) -> nn.LayerNorm:
    return nn.LayerNorm(
        size, eps=norm.eps, elementwise_affine=norm.elementwise_affine, device=_device(norm)
    )


def _device(module: nn.Module) -> torch.device | None:
    buffers = list(module.parameters()) + list(module.buffers())
    return buffers[0].device if buffers else None


@torch.no_grad()
def _widen(
    lin: nn.Linear,
    norm: nn.LayerNorm | None,
    nxt: nn.Linear,
    k: int,
    homogeneous: bool,
    gen: torch.Generator,
) -> tuple[nn.Linear, nn.LayerNorm | None, nn.Linear]:
    """``lin`` with ``k`` more outputs (and its LayerNorm, and ``nxt`` reading them), the
    function preserved as the module docstring says."""
    n, w, b = lin.out_features, lin.weight, lin.bias
    if norm is None:
        rows, bias = _orthogonal((k, lin.in_features), w, gen), torch.zeros(k).to(b)
    else:
        rows = w.mean(0, keepdim=True).expand(k, -1).clone()
        bias = b.mean().expand(k).clone()
        if not norm.elementwise_affine:
            rows += 1e-3 * w.std() * torch.randn(rows.shape, generator=gen).to(w)
    new_lin = _linear_like(torch.cat([w, rows]), torch.cat([b, bias]))
    new_norm, scale = None, 1.0
    if norm is not None:
        shrink = math.sqrt(n / (n + k))  # the layer's std after adding k units at its mean
        new_norm = _norm_like(norm, n + k)
        if norm.elementwise_affine:
            new_norm.weight.copy_(torch.cat([norm.weight * shrink, torch.ones(k).to(w)]))
            spread = 0.1 * torch.randn(k, generator=gen).to(w)
            new_norm.bias.copy_(torch.cat([norm.bias, spread]))
        elif homogeneous:
            scale = shrink
    cols = torch.zeros(nxt.out_features, k).to(nxt.weight)
    new_nxt = _linear_like(torch.cat([nxt.weight * scale, cols], dim=1), nxt.bias)
    return new_lin, new_norm, new_nxt


@torch.no_grad()
def _narrow(
    lin: nn.Linear, norm: nn.LayerNorm | None, nxt: nn.Linear, k: int
) -> tuple[nn.Linear, nn.LayerNorm | None, nn.Linear]:
    """``lin`` without the ``k`` outputs whose outgoing weights are smallest."""
    keep = nxt.weight.norm(dim=0).argsort(descending=True)[: lin.out_features - k].sort().values
    new_lin = _linear_like(lin.weight[keep], lin.bias[keep])
    new_norm = None
    if norm is not None:
        new_norm = _norm_like(norm, len(keep))
        if norm.elementwise_affine:
            new_norm.weight.copy_(norm.weight[keep])
            new_norm.bias.copy_(norm.bias[keep])
    return new_lin, new_norm, _linear_like(nxt.weight[:, keep], nxt.bias)


def _nodes(net: nn.Module, part: str, layer: int, add: bool, k: int, gen) -> bool:
    seq, cfg = _mlp(net, part), _config(net, part)
    sizes = list(cfg["hidden_size"])
    n = sizes[layer]
    new = min(n + k, NODES[1]) if add else max(n - k, NODES[0])
    if new == n:
        return False
    pos, nxt_pos = _linears(seq)[layer], _linears(seq)[layer + 1]
    norm = _norm_after(seq, pos)
    if add:
        lin, new_norm, nxt = _widen(seq[pos], norm, seq[nxt_pos], new - n, True, gen)
    else:
        lin, new_norm, nxt = _narrow(seq[pos], norm, seq[nxt_pos], n - new)
    seq[pos], seq[nxt_pos] = lin, nxt
    if norm is not None:
        seq[pos + 1] = new_norm
    sizes[layer] = new
    cfg["hidden_size"] = sizes
    return True


@torch.no_grad()
def _add_layer(net: nn.Module, part: str) -> None:
    seq, cfg = _mlp(net, part), _config(net, part)
    out_pos = _linears(seq)[-1]
    width = seq[out_pos].in_features
    w = seq[out_pos].weight
    block: list[nn.Module] = [_linear_like(torch.eye(width).to(w), torch.zeros(width).to(w))]
    if cfg["layer_norm"]:
        block.append(nn.LayerNorm(width, device=w.device))
    block.append(activation(cfg["activation"]))
    _set_mlp(net, part, nn.Sequential(*seq[:out_pos], *block, *seq[out_pos:]))
    cfg["hidden_size"] = [*cfg["hidden_size"], width]


@torch.no_grad()
def _remove_layer(net: nn.Module, part: str) -> None:
    seq, cfg = _mlp(net, part), _config(net, part)
    *_, last_hidden, out_pos = _linears(seq)
    out = seq[out_pos]
    width = seq[last_hidden].in_features  # what the output layer now reads
    weight = torch.zeros(out.out_features, width).to(out.weight)
    common = min(width, out.in_features)
    weight[:, :common] = out.weight[:, :common]
    new_out = _linear_like(weight, out.bias)
    _set_mlp(net, part, nn.Sequential(*seq[:last_hidden], new_out, *seq[out_pos + 1 :]))
    cfg["hidden_size"] = list(cfg["hidden_size"])[:-1]


def _latent_layer(net: nn.Module) -> tuple[nn.Sequential, int, bool]:
    """(the Sequential holding the encoder's last Linear, its position, whether the
    encoder's output activation is positively homogeneous)."""
    enc = net.encoder
    if isinstance(enc, MLPEncoder):
        seq = enc.net[0]
        act = enc.net[1] if len(enc.net) > 1 else nn.Identity()
        return seq, _linears(seq)[-1], isinstance(act, HOMOGENEOUS)
    if isinstance(enc, CNNEncoder):
        return enc.out, 0, True
    assert isinstance(enc, MultiInputEncoder)
    return enc.final, 0, isinstance(enc.final[-1], HOMOGENEOUS)


def _latent(net: nn.Module, add: bool, k: int, gen: torch.Generator) -> bool:
    cfg = net.init_config["net_config"]
    n = cfg.get("latent_dim", 64)
    new = min(n + k, LATENT[1]) if add else max(n - k, LATENT[0])
    if new == n:
        return False
    seq, pos, homogeneous = _latent_layer(net)
    norm = _norm_after(seq, pos)
    if add:
        lin, new_norm, head = _widen(seq[pos], norm, net.head[0], new - n, homogeneous, gen)
    else:
        lin, new_norm, head = _narrow(seq[pos], norm, net.head[0], n - new)
    seq[pos], net.head[0] = lin, head
    if norm is not None:
        seq[pos + 1] = new_norm
    cfg["latent_dim"] = new
    return True


@torch.no_grad()
def _channels(net: nn.Module, add: bool, u: float, k: int, gen: torch.Generator) -> bool:
    """Add (zero outgoing weights: preserved) or remove (smallest outgoing weights)
    ``k`` output channels of one conv layer of a CNN encoder."""
    enc, cfg = net.encoder, _config(net, "encoder")
    convs = [i for i, m in enumerate(enc.convs) if isinstance(m, nn.Conv2d)]
    layer = int(u * len(convs))
    conv = enc.convs[convs[layer]]
    n = conv.out_channels
    new = min(n + k, CHANNELS[1]) if add else max(n - k, CHANNELS[0])
    if new == n:
        return False
    last = layer == len(convs) - 1
    nxt = enc.out[0] if last else enc.convs[convs[layer + 1]]
    # The next layer's weights grouped by this layer's channels: (out, channels, rest).
    grouped = nxt.weight.reshape(nxt.weight.shape[0], n, -1)
    if add:
        filters = _orthogonal((new - n, *conv.weight.shape[1:]), conv.weight, gen)
        weight = torch.cat([conv.weight, filters])
        bias = torch.cat([conv.bias, torch.zeros(new - n).to(conv.bias)])
        pad = torch.zeros(grouped.shape[0], new - n, grouped.shape[2]).to(grouped)
        grouped = torch.cat([grouped, pad], dim=1)
    else:
        keep = grouped.norm(dim=(0, 2)).argsort(descending=True)[:new].sort().values
        weight, bias, grouped = conv.weight[keep], conv.bias[keep], grouped[:, keep]
    new_conv = nn.Conv2d(weight.shape[1], new, conv.kernel_size, conv.stride, device=weight.device)
    new_conv.weight.copy_(weight)
    new_conv.bias.copy_(bias)
    enc.convs[convs[layer]] = new_conv
    if last:
        enc.out[0] = _linear_like(grouped.reshape(grouped.shape[0], -1), nxt.bias)
    else:
        new_nxt = nn.Conv2d(
            new, nxt.out_channels, nxt.kernel_size, nxt.stride, device=weight.device
        )
        new_nxt.weight.copy_(grouped.reshape(nxt.out_channels, new, *nxt.kernel_size))
        new_nxt.bias.copy_(nxt.bias)
        enc.convs[convs[layer + 1]] = new_nxt
    sizes = list(cfg["channel_size"])
    sizes[layer] = new
    cfg["channel_size"] = sizes
    return True
