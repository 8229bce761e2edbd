"""Action distributions behind one interface: sample, mode, log_prob, entropy.

Each distribution is built from a head's raw output for a batch of observations;
``log_prob`` and ``entropy`` return one value per batch row. Action masks are boolean
(True = legal): ``(B, n)`` for Discrete, ``(B, sum(nvec))`` for MultiDiscrete (one block
per sub-action) and ``(B, n)`` for MultiBinary (a False bit is forced to 0).

``sample(noise)`` turns noise drawn beforehand (:func:`draw_noise`, one row per batch
row and one column per head output) into actions, so that each run's draws come from its
own generator even when several runs' actors sample as one stack
(:mod:`ippo_cli.stacked_acting`); without noise, actions come from torch's global RNG.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces
from torch.nn import functional as F

_LOG_2PI = math.log(2 * math.pi)
# Keeps atanh finite for squashed actions that sit exactly on the bounds.
_SQUASH_EPS = 1e-6
# Uniform noise is kept inside (0, 1) so that the Gumbel transform stays finite.
_TINY = 1e-20
_EPS_BELOW_ONE = 1e-7


class Categorical:
    """Discrete actions; an optional boolean mask (True = legal) removes illegal actions."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if mask is not None:
            logits = logits.masked_fill(~mask, -1e8)
        self.log_p = torch.log_softmax(logits, dim=-1)

    def sample(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            flat = self.log_p.reshape(-1, self.log_p.shape[-1]).exp()
            return torch.multinomial(flat, 1).reshape(self.log_p.shape[:-1])
        # Gumbel-max: argmax(log p + Gumbel noise) is a draw from p; an illegal action
        # (log p = -1e8) never wins.
        gumbel = -torch.log(-torch.log(noise.clamp(_TINY, 1.0 - _EPS_BELOW_ONE)))
        return (self.log_p + gumbel).argmax(dim=-1)

    def mode(self) -> torch.Tensor:
        return self.log_p.argmax(dim=-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.log_p.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        p = self.log_p.exp()
        # Masked actions have p == 0; where() keeps 0 * -1e8 from leaking into the sum.
        return -torch.where(p > 0, p * self.log_p, torch.zeros_like(p)).sum(-1)


class MultiCategorical:
    """MultiDiscrete actions: independent categoricals over the ``nvec`` slices of the logits.

    Actions are ``(B, len(nvec))`` int64; log-probs and entropies are summed over the
    sub-actions. A mask ``(B, sum(nvec))`` is split the same way.
    """

    def __init__(
        self, logits: torch.Tensor, nvec: list[int], mask: torch.Tensor | None = None
    ) -> None:
        self.nvec = [int(n) for n in nvec]
        logit_parts = torch.split(logits, self.nvec, dim=-1)
        mask_parts = torch.split(mask, self.nvec, dim=-1) if mask is not None else None
        self.parts = [
            Categorical(part, None if mask_parts is None else mask_parts[i])
            for i, part in enumerate(logit_parts)
        ]

    def sample(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        noises = [None] * len(self.parts) if noise is None else torch.split(noise, self.nvec, -1)
        return torch.stack([p.sample(n) for p, n in zip(self.parts, noises, strict=True)], -1)

    def mode(self) -> torch.Tensor:
        return torch.stack([p.mode() for p in self.parts], dim=-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        action = action.long()
        return torch.stack(
            [p.log_prob(action[..., i]) for i, p in enumerate(self.parts)], dim=-1
        ).sum(-1)

    def entropy(self) -> torch.Tensor:
        return torch.stack([p.entropy() for p in self.parts], dim=-1).sum(-1)


class Bernoulli:
    """MultiBinary actions: one independent Bernoulli per bit, ``p = sigmoid(logit)``.

    Actions are 0./1. floats ``(B, n)``; log-probs and entropies are summed over bits. A
    masked bit (mask False) is always 0 and contributes nothing to either.
    """

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.logits = logits
        self.mask = mask

    def _masked(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mask is None else torch.where(self.mask, x, torch.zeros_like(x))

    def sample(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            p = torch.sigmoid(self.logits)
            bits = torch.bernoulli(p) if noise is None else (noise < p).to(p.dtype)
        return self._masked(bits)

    def mode(self) -> torch.Tensor:
        return self._masked((self.logits > 0).to(self.logits.dtype))

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        action = action.to(self.logits.dtype)
        log_p = -F.binary_cross_entropy_with_logits(self.logits, action, reduction="none")
        return self._masked(log_p).sum(-1)

    def entropy(self) -> torch.Tensor:
        p = torch.sigmoid(self.logits)
        h = F.binary_cross_entropy_with_logits(self.logits, p, reduction="none")
        return self._masked(h).sum(-1)


class DiagGaussian:
    """Box actions: a diagonal Gaussian with a state-independent learned log-std.

    Without squashing, samples are unbounded and ``log_prob`` is that of the raw sample;
    the caller clips what it sends to the env. With ``squash=True`` actions are
    ``tanh(u)`` in [-1, 1] and ``log_prob`` includes the tanh Jacobian.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        log_std: torch.Tensor,
        squash: bool = False,
        columns: torch.Tensor | None = None,
    ) -> None:
        self.mean = mean
        self.log_std = log_std.expand_as(mean)
        self.squash = squash
        # 1 for the action's dimensions, 0 for padding (networks trained as one stack,
        # see ippo_cli.networks.stacked): padding enters neither log_prob nor entropy.
        self.columns = columns

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.columns is None else x * self.columns).sum(-1)

    def sample(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(self.mean) if noise is None else noise
        u = self.mean + self.log_std.exp() * noise
        return torch.tanh(u) if self.squash else u

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean) if self.squash else self.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        if self.squash:
            action = action.clamp(-1 + _SQUASH_EPS, 1 - _SQUASH_EPS)
            u = torch.atanh(action)
        else:
            u = action
        z = (u - self.mean) * torch.exp(-self.log_std)
        log_p = self._sum(-0.5 * z.pow(2) - self.log_std - 0.5 * _LOG_2PI)
        if self.squash:
            log_p = log_p - self._sum(torch.log1p(-action.pow(2)))
        return log_p

    def entropy(self) -> torch.Tensor:
        # For squashed actions this is the entropy of the pre-tanh Gaussian, a standard
        # stand-in since the squashed entropy has no closed form.
        return self._sum(0.5 + 0.5 * _LOG_2PI + self.log_std)


Distribution = Categorical | MultiCategorical | Bernoulli | DiagGaussian


def draw_noise(
    space: spaces.Space,
    rows: int,
    width: int,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The noise :meth:`sample` turns into ``rows`` actions of a head with ``width``
    outputs over ``space``, drawn from ``generator`` (torch's global RNG when None):
    standard normal for a Box (a Gaussian's noise), uniform for the rest."""
    draw = torch.randn if isinstance(space, spaces.Box) else torch.rand
    return draw(rows, width, generator=generator, device=device)


def make_distribution(
    space: spaces.Space,
    head_out: torch.Tensor,
    log_std: torch.Tensor | None,
    mask: torch.Tensor | None = None,
    squash: bool = False,
) -> Distribution:
    """The distribution over ``space`` parameterised by a head's output.

    ``mask`` (boolean, True = legal; 0/1 numbers are accepted) must have as many columns
    as the head has outputs; Box action spaces take no mask.
    """
    if isinstance(space, spaces.Box):
        if mask is not None:
            raise ValueError(f"action masks are not supported for Box action space {space}")
        assert log_std is not None
        return DiagGaussian(head_out, log_std, squash)
    if mask is not None:
        mask = _check_mask(space, torch.as_tensor(mask, device=head_out.device), head_out)
    if isinstance(space, spaces.Discrete):
        return Categorical(head_out, mask)
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return MultiCategorical(head_out, space.nvec.tolist(), mask)
    if isinstance(space, spaces.MultiBinary):
        return Bernoulli(head_out, mask)
    raise TypeError(f"unsupported action space {space}")


def _check_mask(space: spaces.Space, mask: torch.Tensor, head_out: torch.Tensor) -> torch.Tensor:
    width = head_out.shape[-1]
    if mask.shape[-1:] != (width,):
        raise ValueError(
            f"action mask of shape {tuple(mask.shape)} does not fit action space {space}: "
            f"expected (batch, {width})"
        )
    return mask.bool() if mask.dtype != torch.bool else mask
