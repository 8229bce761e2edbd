"""PPO's losses and training metrics for one minibatch.

Every function reduces over the last dimension only, so the same code serves one network
(``(B,)`` tensors -> scalars) and several networks learning side by side (``(G, B)``
tensors -> one value per network, see :mod:`ippo_cli.stacked_update`).
"""

from __future__ import annotations

import torch

METRIC_NAMES = (
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
)


def masked_mean(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the samples where ``weight`` is 1 (all samples without one)."""
    if weight is None:
        return x.mean(-1)
    return (x * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)


def normalize(advantages: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-minibatch advantage normalisation over the weighted samples (left as is for
    fewer than two). No host sync: a weighted sample count stays a tensor."""
    if weight is None:
        if advantages.shape[-1] < 2:
            return advantages
        mean = advantages.mean(-1, keepdim=True)
        return (advantages - mean) / (advantages.std(-1, keepdim=True) + 1e-8)
    n = weight.sum(-1, keepdim=True)
    mean = (advantages * weight).sum(-1, keepdim=True) / n.clamp(min=1.0)
    var = ((advantages - mean).pow(2) * weight).sum(-1, keepdim=True) / (n - 1).clamp(min=1.0)
    return torch.where(n >= 2, (advantages - mean) / (var.sqrt() + 1e-8), advantages)


def clipped_losses(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    clip_coef: float,
    policy_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate policy loss and clipped value loss (means over the batch).

    policy: mean(max(-A * r, -A * clip(r, 1 - c, 1 + c))), over the samples whose
            ``policy_weight`` is 1 (the policy chose their action)
    value:  0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2))
    """
    policy_loss = masked_mean(
        torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)),
        policy_weight,
    )
    clipped = old_value + (value - old_value).clamp(-clip_coef, clip_coef)
    value_loss = 0.5 * torch.max((value - returns).pow(2), (clipped - returns).pow(2)).mean(-1)
    return policy_loss, value_loss


def ppo_terms(
    log_prob: torch.Tensor,
    entropy: torch.Tensor,
    value: torch.Tensor,
    mb: dict[str, torch.Tensor],
    clip_coef: float,
    chosen: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy loss, value loss, mean entropy, approximate KL and clip fraction of a
    minibatch ``mb`` (old ``log_probs``, ``values``, ``advantages`` and ``returns``).

    ``chosen`` weighs the policy terms (None: every row is the policy's own choice). The
    KL estimate is ``mean((r - 1) - log r)``; it and the clip fraction carry no gradient.
    The log-ratio of a row not chosen is set to 0 before ``exp``: its stored log-prob is
    not the policy's, and an overflowing ratio times a weight of 0 would be NaN.
    """
    log_ratio = log_prob - mb["log_probs"]
    if chosen is not None:
        log_ratio = torch.where(chosen > 0, log_ratio, torch.zeros_like(log_ratio))
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1) - log_ratio, chosen)
        clip_frac = masked_mean(((ratio - 1).abs() > clip_coef).float(), chosen)
    policy_loss, value_loss = clipped_losses(
        ratio,
        normalize(mb["advantages"], chosen),
        value,
        mb["values"],
        mb["returns"],
        clip_coef,
        chosen,
    )
    return policy_loss, value_loss, masked_mean(entropy, chosen), approx_kl, clip_frac


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns); NaN when the returns do not vary."""
    var = returns.var(unbiased=False) if returns.numel() > 0 else torch.tensor(0.0)
    if var.item() == 0:
        return float("nan")
    return float(1 - (returns - values).var(unbiased=False) / var)
