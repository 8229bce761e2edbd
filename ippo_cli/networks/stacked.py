"""Several MLP networks of one shape, run and trained as one stack of batched tensors.

The actor and critic of every agent group are small MLPs (encoder then head, see
:mod:`ippo_cli.networks.actor_critic`); at PPO's minibatch sizes each of their operations
costs far more in dispatch than in arithmetic. :class:`NetworkStack` copies the
parameters of ``M`` such networks into stacked tensors, one leading row per network, so
that one ``baddbmm`` computes a Linear layer of all of them, one LayerNorm call normalises
all of them, and so on. Their inputs may differ in width (zero-padded) and so may their
outputs (padded; the caller ignores the extra columns); every hidden layer must agree.

Zero padding is exact: a zero input column meets its weights with zero gradient, and an
output column the loss ignores sends none back, so the padded entries stay zero and every
real entry gets exactly the gradient it would get in its own network.

All parameters live in one ``(M, width)`` buffer, one row per network, and so do their
gradients (:meth:`NetworkStack.gradient`), so one Adam step, one norm and one clip cover
the whole stack (see :mod:`ippo_cli.stacked_update`). Each stacked parameter is kept in
the shape its operation reads (a Linear weight transposed to ``(M, in, out)``, a vector
as ``(M, 1, n)``): a forward pass then takes no views of them, whose backward would
otherwise rebuild every gradient at full size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from ippo_cli.networks.actor_critic import StochasticActor, ValueNetwork
from ippo_cli.networks.distributions import Categorical, DiagGaussian
from ippo_cli.networks.encoders import MLPEncoder
from ippo_cli.networks.mlp import ACTIVATIONS

_ELEMENTWISE = tuple(ACTIVATIONS.values())


def layer_chain(net: nn.Module) -> list[nn.Module] | None:
    """The layers of an actor or critic with an MLP encoder, input to output (the encoder's
    then the head's); None for any other network (CNN or multi-input encoders, user
    subclasses), which then trains on its own."""
    if type(net) not in (StochasticActor, ValueNetwork) or type(net.encoder) is not MLPEncoder:
        return None
    encoder = net.encoder.net
    layers = [*encoder[0], *encoder[1:], *net.head]
    if not all(type(layer) in (nn.Linear, nn.LayerNorm, *_ELEMENTWISE) for layer in layers):
        return None
    if not isinstance(layers[-1], nn.Linear) or layers[-1].bias is None:
        return None
    return layers


def action_kind(actor: StochasticActor) -> tuple | None:
    """What must agree for actors' distributions to stack: a 1-D Box (and whether it is
    squashed) or a Discrete; None for other action spaces."""
    space = actor.action_space
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return ("box", actor.squash_output)
    if isinstance(space, spaces.Discrete):
        return ("discrete",)
    return None


def stacked_distribution(
    actors: Sequence[StochasticActor],
    head: torch.Tensor,
    log_std: torch.Tensor | None,
    columns: torch.Tensor,
    masks: torch.Tensor | None = None,
) -> DiagGaussian | Categorical:
    """The action distributions of G stacked actors (one :func:`action_kind`) from their
    ``(G, B, A)`` head outputs, the padded columns (``columns`` False, see
    :func:`action_columns`) left out: a diagonal Gaussian with the ``(G, 1, A)``
    ``log_std`` (Box), or a categorical whose ``masks`` (True = legal, ``(G, B, A)`` or
    None) are narrowed to each actor's own actions (Discrete)."""
    if action_kind(actors[0])[0] == "box":
        return DiagGaussian(head, log_std, actors[0].squash_output, columns.to(head.dtype))
    return Categorical(head, columns if masks is None else masks & columns)


def action_width(actor: StochasticActor) -> int:
    """The number of head outputs of ``actor``: its action's dimensions or choices."""
    return int(actor.head[-1].out_features)


def action_columns(actors: Sequence[StochasticActor], device: torch.device) -> torch.Tensor:
    """``(G, 1, A)``: True where column ``a`` is one of actor ``g``'s actions."""
    dims = [action_width(actor) for actor in actors]
    columns = torch.zeros(len(dims), 1, max(dims), dtype=torch.bool, device=device)
    for g, d in enumerate(dims):
        columns[g, :, :d] = True
    return columns


def chain_signature(layers: Sequence[nn.Module]) -> tuple:
    """What must agree for networks to stack: every layer but the first input width and
    the last output width."""
    linears = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    signature = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            d_in = None if i == linears[0] else layer.in_features
            d_out = None if i == linears[-1] else layer.out_features
            signature.append(("Linear", d_in, d_out, layer.bias is not None))
        elif isinstance(layer, nn.LayerNorm):
            affine = (layer.weight is not None, layer.bias is not None)
            signature.append(("LayerNorm", tuple(layer.normalized_shape), layer.eps, affine))
        else:
            signature.append((type(layer).__name__, layer.extra_repr()))
    return tuple(signature)


class NetworkStack:
    """``M`` networks' layers (``chains``, all of one :func:`chain_signature`) and, per
    network, optional ``extras`` (parameters outside the layers, e.g. an actor's log-std;
    as many per network, None where a network has none, padded like outputs) as stacked
    tensors.

    :attr:`flat` holds every parameter, one row per network; the stacked tensors
    (:attr:`stacked`, leaves for autograd) are views of it. :meth:`forward` maps
    ``(K, B, in)`` inputs to ``(M, B, out)`` outputs; :meth:`load` copies the networks'
    parameters in and :meth:`store` copies them back.
    """

    def __init__(
        self,
        chains: Sequence[Sequence[nn.Module]],
        extras: Sequence[Sequence[torch.Tensor | None]] | None = None,
    ) -> None:
        self.chains = [list(c) for c in chains]
        self.num_members = m = len(self.chains)
        extras = [list(e) for e in extras] if extras is not None else [[] for _ in range(m)]
        # slots[k][i]: member i's k-th parameter (None: it has none there, e.g. a critic's
        # log-std slot); each slot is one stacked tensor of the largest member's shape,
        # laid out as _stored() turns a parameter.
        layer_params = [[p for layer in chain for p in layer.parameters()] for chain in chains]
        self.num_layer_params = len(layer_params[0])
        self.slots: list[list[torch.Tensor | None]] = [
            list(group) for group in zip(*layer_params, strict=True)
        ]
        self.slots += [list(group) for group in zip(*extras, strict=True)]
        first = next(p for p in self.slots[0] if p is not None)
        self.device = first.device
        self.shapes = [
            _max_shape([_stored(p).shape for p in slot if p is not None]) for slot in self.slots
        ]
        width = sum(math.prod(shape) for shape in self.shapes)
        self.flat = torch.zeros(m, width, device=self.device, dtype=first.dtype)
        # detach(): each a leaf of its own, sharing the buffer's memory.
        self.stacked = [view.detach().requires_grad_() for view in self._views(self.flat)]
        self._ops = self._build_ops()

    # ------------------------------------------------------------- parameters

    def pack(self, value_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """An ``(M, width)`` buffer laid out like :attr:`flat`, holding ``value_of(p)`` for
        each member parameter ``p`` (zeros for padding)."""
        out = torch.zeros_like(self.flat)
        for slot, view in zip(self.slots, self._views(out), strict=True):
            for i, p in enumerate(slot):
                if p is not None:
                    value = _stored(value_of(p))
                    view[i][_corner(value.shape)].copy_(value)
        return out

    def unpack(self, flat: torch.Tensor, put: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        """``put(p, value)`` for each member parameter ``p``, ``value`` its part of ``flat``
        in ``p``'s shape (a view, transposed for a weight)."""
        for slot, view in zip(self.slots, self._views(flat), strict=True):
            for i, p in enumerate(slot):
                if p is not None:
                    part = view[i][_corner(_stored(p).shape)]
                    put(p, part.t() if p.dim() == 2 else part.view(p.shape))

    def load(self) -> None:
        """Copy the member networks' parameters into the stack."""
        with torch.no_grad():
            self.flat.copy_(self.pack(lambda p: p))

    def store(self) -> None:
        """Copy the stack's parameters back into the member networks."""
        with torch.no_grad():
            self.unpack(self.flat, lambda p, value: p.copy_(value))

    def zero_grad(self) -> None:
        """Forget the stacked tensors' gradients (the next backward pass sets them)."""
        for p in self.stacked:
            p.grad = None

    def gradient(self) -> torch.Tensor:
        """The stacked tensors' gradients, laid out like :attr:`flat`."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.stacked]
        return torch.cat([g.reshape(self.num_members, -1) for g in grads], dim=1)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        views, offset = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            views.append(flat[:, offset : offset + size].view(self.num_members, *shape))
            offset += size
        return views

    # ---------------------------------------------------------------- forward

    def extra(self, k: int) -> torch.Tensor:
        """The stacked ``k``-th extra parameter: ``(M, 1, n)`` for a vector."""
        return self.stacked[self.num_layer_params + k]

    def _build_ops(self) -> list[tuple]:
        ops: list[tuple] = []
        k = 0
        for layer in self.chains[0]:
            n = len(list(layer.parameters()))
            params = tuple(self.stacked[k : k + n])
            k += n
            if isinstance(layer, nn.Linear):
                ops.append(("linear", *params))
            elif isinstance(layer, nn.LayerNorm):
                # Passing a weight of ones takes torch's faster affine kernel; the stacked
                # weight and bias then apply per network.
                ones = self.flat.new_ones(layer.normalized_shape)
                ops.append(("layer_norm", tuple(layer.normalized_shape), layer.eps, ones, *params))
            else:
                ops.append(("elementwise", layer))
        return ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, in)`` inputs (zero-padded to the widest) -> ``(M, B, out)`` outputs.

        Member ``i`` reads input ``i % K``: ``K = M`` gives each network its own input,
        a smaller ``K`` (dividing ``M``) lets several share one (an actor and its critic
        see the same observations) without copying it.
        """
        ops = self._ops
        if x.shape[0] != self.num_members:
            x, ops = self._shared_first_linear(x), ops[1:]
        for op in ops:
            if op[0] == "linear":
                x = torch.baddbmm(op[2], x, op[1])
            elif op[0] == "layer_norm":
                x = F.layer_norm(x, op[1], op[3], eps=op[2])
                if len(op) == 6:
                    x = torch.addcmul(op[5], x, op[4])
                elif len(op) == 5:
                    x = x * op[4]
            else:
                x = op[1](x)
        return x

    def _shared_first_linear(self, x: torch.Tensor) -> torch.Tensor:
        """The first Linear layer when member ``r * K + k`` reads input ``k``: one
        ``baddbmm`` per input against its members' weights side by side."""
        k, m = x.shape[0], self.num_members
        r = m // k
        weight, bias = self.stacked[0], self.stacked[1]
        width, out = weight.shape[1], weight.shape[2]
        weight = weight.view(r, k, width, out).permute(1, 2, 0, 3).reshape(k, width, r * out)
        bias = bias.view(r, k, 1, out).permute(1, 2, 0, 3).reshape(k, 1, r * out)
        y = torch.baddbmm(bias, x, weight)  # (K, B, R * out)
        return y.view(k, -1, r, out).permute(2, 0, 1, 3).reshape(m, -1, out)


def padded(
    parts: Sequence[torch.Tensor], dtype: torch.dtype | None = None, fill: float = 0.0
) -> torch.Tensor:
    """``(..., w_g)`` tensors of one leading shape as one ``(G, ..., max w)``, ``fill``
    (zero, False) beyond each one's width."""
    shape = (len(parts), *parts[0].shape[:-1], max(p.shape[-1] for p in parts))
    out = torch.full(shape, fill, dtype=dtype or parts[0].dtype, device=parts[0].device)
    for g, part in enumerate(parts):
        out[g, ..., : part.shape[-1]] = part
    return out


def _stored(p: torch.Tensor) -> torch.Tensor:
    """``p`` as the stack keeps it: a weight ``(out, in)`` transposed to ``(in, out)``
    (what ``baddbmm`` reads), a vector ``(n,)`` as ``(1, n)`` (it broadcasts over rows)."""
    return p.t() if p.dim() == 2 else p.reshape(1, -1)


def _max_shape(shapes: Sequence[torch.Size]) -> tuple[int, ...]:
    return tuple(max(dims) for dims in zip(*shapes, strict=True))


def _corner(shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(0, d) for d in shape)
