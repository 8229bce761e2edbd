"""Biases for emergent communication (Eccles et al. 2019), as auxiliary actor losses.

**Positive signalling** (a speaker group): its messages should depend on what it
observes, and differ between observations. For a minibatch of observations ``o_i``,

- discrete messages: ``weight * (mean_i H(pi(.|o_i)) - H(mean_i pi(.|o_i)))`` -- low
  entropy given the observation, high entropy of the batch-average message policy;
- Gaussian messages: ``weight * (sum_d max(log_std_d, floor_d) - 0.5 * log det
  Cov_i(clip(mean_i)))`` -- the same with Gaussian entropies, the average message taken
  as a Gaussian with the covariance of the speaker's mean message over the minibatch,
  clipped to the action bounds as the env clips it. With uncorrelated dimensions the log
  det is the sum of the log-variances (issue 9's form); unclipped and per dimension, the
  term is maximised by pushing the means ever further out of bounds, where several goals
  share one clipped message (and every dimension may split the goals the same way),
  which the clipping and the full covariance rule out. A Gaussian's entropy has no lower
  bound, so the conditional part stops at ``floor_d = log(MESSAGE_STD_FLOOR * (high_d -
  low_d))`` (absolute where a bound is infinite): without it, its constant pull drove the
  tuned speaker_listener's speaker to a std of about 1e-7 by 1.6M steps, where PPO's
  probability ratios overflowed (approx_kl 1e12, then a NaN loss).

**Signalling about a key** (``{weight, about: [start, stop], symbols: K}``): where a
group's message should carry one part of its observation (simple_reference: the colour
of the landmark its partner should reach, while the rest of the observation says where
it is), the conditional part is taken per value of the observation columns ``about``
rather than per row: ``weight * (sum_k n_k/n H(mean_{i: key_i = k} pi(.|o_i)) -
H(mean_i pi(.|o_i)))``, minus the plug-in mutual information between message and key.
Rows with one key are pushed to say one message, rows with different keys different
ones, and nothing else about the policy is made deterministic. ``symbols: K`` takes the
message as the last factor of a Discrete action (mpe2's ``move + moves * symbol``: the
message is ``action // (n / K)``), so that it measures what is said, not where the agent
moves.

**Positive listening** (a listener group): its policy should change with the message it
hears. The listener's observation columns ``message = [start, stop)`` are replaced by
those of another row of the minibatch (a fixed derangement), and the loss is
``-weight * mean_i TV(pi(.|o_i), pi(.|o_i with o_j's message))``, the total-variation
distance between the two action distributions (for a diagonal Gaussian with a shared
std it is ``2 Phi(d / 2) - 1``, ``d`` the Mahalanobis distance of the two means), which
lies in [0, 1], so the bias cannot grow without bound.

Both are opt-in per group (``IPPO(signalling={"speaker": 0.1}, listening={"listener":
{"weight": 0.1, "message": [8, 11]}})``, or ``signalling={"agent": {"weight": 0.1,
"about": [8, 11], "symbols": 10}}``); without them :meth:`CommunicationBiases.loss` is
exactly 0 and nothing else is computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch
from gymnasium import spaces

from ippo_cli.networks.distributions import Categorical, DiagGaussian, MultiCategorical

# Keeps log det finite when the mean messages do not (yet) vary along some direction.
_COV_RIDGE = 1e-4
# A Gaussian message this sharp (its std as a fraction of the action's range) is sharp
# enough: below it the signalling term no longer lowers log_std (see the module doc).
MESSAGE_STD_FLOOR = 0.02


def signalling_loss(
    dist: Any, weight: torch.Tensor | None = None, bounds: Any = None
) -> torch.Tensor:
    """Conditional message entropy minus average-message entropy (see the module doc).

    ``weight`` (0/1 per row) leaves rows out, e.g. steps whose action the env chose.
    ``bounds`` (low, high) of a Box message: the mean message is clipped to them, as the
    env clips what it hears, before its spread is measured.
    """
    w = _weights(dist, weight)
    if isinstance(dist, DiagGaussian):
        mean = dist.mean.reshape(len(w), -1)
        log_std = dist.log_std.reshape(len(w), -1)
        span = torch.ones(mean.shape[1], dtype=mean.dtype, device=mean.device)
        if bounds is not None:
            low, high = (torch.as_tensor(b, dtype=mean.dtype, device=mean.device) for b in bounds)
            low, high = low.reshape(-1), high.reshape(-1)
            mean = torch.maximum(torch.minimum(mean, high), low)
            span = torch.where(torch.isfinite(high - low), high - low, span)
        log_std = torch.maximum(log_std, torch.log(MESSAGE_STD_FLOOR * span))
        dev = mean - _wmean(mean, w)
        cov = (dev * w[:, None]).T @ dev / w.sum().clamp(min=1.0)
        cov = cov + _COV_RIDGE * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return _wmean(log_std.sum(-1), w) - 0.5 * torch.logdet(cov)
    parts = dist.parts if isinstance(dist, MultiCategorical) else [dist]
    if not all(isinstance(p, Categorical) for p in parts):
        raise TypeError(f"signalling needs Discrete, MultiDiscrete or Box messages, not {dist}")
    total = torch.zeros((), device=w.device)
    for part in parts:
        log_p = part.log_p.reshape(len(w), -1)
        conditional = _wmean(part.entropy().reshape(len(w)), w)
        average = _wmean(log_p.exp(), w)
        total = total + conditional - _entropy(average)
    return total


def keyed_signalling_loss(
    dist: Any,
    key: torch.Tensor,
    weight: torch.Tensor | None = None,
    symbols: int | None = None,
) -> torch.Tensor:
    """Message entropy given ``key`` (one row per observation: rows with equal keys are
    one value) minus the entropy of the average message (see the module doc); discrete
    messages only, the last factor of a Discrete action when ``symbols`` is given."""
    w = _weights(dist, weight)
    _, inverse = torch.unique(key.reshape(len(w), -1), dim=0, return_inverse=True)
    members = torch.nn.functional.one_hot(inverse).to(w.dtype) * w[:, None]  # (rows, keys)
    share = members.sum(0)
    total = torch.zeros((), device=w.device)
    for p in _message_probs(dist, symbols, len(w)):
        by_key = members.T @ p / share.clamp(min=1.0)[:, None]
        conditional = (share * _entropy(by_key)).sum() / share.sum().clamp(min=1.0)
        total = total + conditional - _entropy(_wmean(p, w))
    return total


def _message_probs(dist: Any, symbols: int | None, n: int) -> list[torch.Tensor]:
    """The message distribution(s) of each row: every part of a MultiDiscrete action, a
    Discrete one whole, or its last factor of ``symbols`` values."""
    parts = dist.parts if isinstance(dist, MultiCategorical) else [dist]
    if not all(isinstance(p, Categorical) for p in parts):
        raise TypeError(f"signalling about a key needs discrete messages, not {dist}")
    probs = [p.log_p.exp().reshape(n, -1) for p in parts]
    if symbols is None:
        return probs
    return [probs[0].reshape(n, symbols, -1).sum(-1)]


def listening_loss(
    actor: Any,
    obs: torch.Tensor,
    dist: Any,
    message: tuple[int, int],
    masks: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Minus the mean total-variation distance between the listener's policy on its own
    observation and on the same observation with another row's message."""
    n = obs.shape[0]
    if n < 2:
        return torch.zeros((), device=obs.device)
    start, stop = message
    other = torch.roll(torch.arange(n, device=obs.device), 1)
    swapped = obs.clone()
    swapped[:, start:stop] = obs[other, start:stop]
    counterfactual = actor.distribution(swapped, masks)
    tv = total_variation(dist, counterfactual).reshape(n)
    return -_wmean(tv, _weights(dist, weight) if weight is not None else None)


def total_variation(p: Any, q: Any) -> torch.Tensor:
    """Per-row total-variation distance between two distributions of the same kind
    (summed over the parts of a MultiDiscrete action, so up to one per part)."""
    if isinstance(p, DiagGaussian):
        z = (p.mean - q.mean) * torch.exp(-p.log_std)
        d = z.pow(2).sum(-1).add(1e-12).sqrt()
        return torch.erf(d / (2 * math.sqrt(2)))  # 2 Phi(d/2) - 1
    p_parts = p.parts if isinstance(p, MultiCategorical) else [p]
    q_parts = q.parts if isinstance(q, MultiCategorical) else [q]
    if not all(isinstance(x, Categorical) for x in p_parts):
        raise TypeError(f"listening needs Discrete, MultiDiscrete or Box actions, not {p}")
    return sum(
        0.5 * (a.log_p.exp() - b.log_p.exp()).abs().sum(-1)
        for a, b in zip(p_parts, q_parts, strict=True)
    )


class CommunicationBiases:
    """The configured biases, keyed by group id; :meth:`loss` adds them to an actor loss."""

    def __init__(
        self,
        signalling: Mapping[str, Any] | None,
        listening: Mapping[str, Any] | None,
        action_spaces: Mapping[str, Any] | None = None,
    ) -> None:
        # Box bounds of each group's actions, so that signalling measures heard messages.
        self.bounds = {
            g: (s.low, s.high)
            for g, s in (action_spaces or {}).items()
            if getattr(s, "low", None) is not None and getattr(s, "high", None) is not None
        }
        self.signalling = {g: _signalling_weight(v) for g, v in (signalling or {}).items()}
        # The mapping form's (about columns or None: the whole observation, symbols).
        self.keyed = {
            g: (
                None if v.get("about") is None else (int(v["about"][0]), int(v["about"][1])),
                None if v.get("symbols") is None else int(v["symbols"]),
            )
            for g, v in (signalling or {}).items()
            if isinstance(v, Mapping) and (v.get("about"), v.get("symbols")) != (None, None)
        }
        self.listening = {
            g: (float(v["weight"]), (int(v["message"][0]), int(v["message"][1])))
            for g, v in (listening or {}).items()
        }

    def signals(self, group: str) -> bool:
        """Whether ``group``'s actor loss has a positive-signalling term."""
        return self.signalling.get(group, 0.0) > 0

    def listens(self, group: str) -> bool:
        """Whether ``group``'s actor loss has a positive-listening term (which runs the
        actor a second time, on observations with swapped messages)."""
        return self.listening.get(group, (0.0,))[0] > 0

    def signalling_term(
        self, group: str, dist: Any, weight: torch.Tensor | None, obs: torch.Tensor
    ) -> torch.Tensor | float:
        """``group``'s weighted positive-signalling term for one minibatch (0.0 if none);
        it reads the action distribution and, signalling about a key, the observations."""
        if not self.signals(group):
            return 0.0
        scale = self.signalling[group]
        if group in self.keyed:
            about, symbols = self.keyed[group]
            key = obs if about is None else obs[:, about[0] : about[1]]
            return scale * keyed_signalling_loss(dist, key, weight, symbols)
        return scale * signalling_loss(dist, weight, self.bounds.get(group))

    def loss(
        self,
        group: str,
        actor: Any,
        obs: torch.Tensor,
        dist: Any,
        masks: torch.Tensor | None,
        weight: torch.Tensor | None,
    ) -> torch.Tensor | float:
        """The bias terms of ``group``'s actor loss for one minibatch (0.0 if none)."""
        total = self.signalling_term(group, dist, weight, obs)
        if self.listens(group):
            scale, message = self.listening[group]
            total = total + scale * listening_loss(actor, obs, dist, message, masks, weight)
        return total


def validate_biases(
    signalling: Any,
    listening: Any,
    obs_spaces: Mapping[str, Any],
    action_spaces: Mapping[str, Any] | None = None,
) -> None:
    """Reject bad bias settings with one line naming the value (``obs_spaces`` and
    ``action_spaces``: each group's observation and action space)."""
    groups = list(obs_spaces)
    obs_sizes = {
        g: s.shape[0] for g, s in obs_spaces.items() if s.shape is not None and len(s.shape) == 1
    }

    def fail(name: str, value: Any, rule: str) -> None:
        raise ValueError(f"{name}={value!r} is invalid: {rule}")

    known = f"groups: {', '.join(groups)}"
    for name, table in (("signalling", signalling), ("listening", listening)):
        if table is None:
            continue
        if not isinstance(table, Mapping):
            fail(name, table, "must be a mapping of group id to settings")
        for group in table:
            if group not in groups:
                fail(f"{name}.{group}", table[group], f"unknown group '{group}'; {known}")

    def check_columns(name: str, m: Any, group: str) -> None:
        size = obs_sizes.get(group)
        ok = (
            isinstance(m, list | tuple)
            and len(m) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in m)
            and 0 <= m[0] < m[1]
            and (size is None or m[1] <= size)
        )
        if not ok:
            bound = "" if size is None else f" <= {size} (the observation size)"
            fail(name, m, f"must be [start, stop] with 0 <= start < stop{bound}")

    for group, v in (signalling or {}).items():
        if not isinstance(v, Mapping):
            if not _is_real(v) or v < 0:
                fail(f"signalling.{group}", v, "must be a number >= 0")
            continue
        if "weight" not in v or not set(v) <= {"weight", "about", "symbols"}:
            fail(
                f"signalling.{group}",
                v,
                "must be a weight or {weight: W, about: [start, stop], symbols: K}",
            )
        if not _is_real(v["weight"]) or v["weight"] < 0:
            fail(f"signalling.{group}.weight", v["weight"], "must be a number >= 0")
        if v.get("about") is not None:
            check_columns(f"signalling.{group}.about", v["about"], group)
        space = (action_spaces or {}).get(group)
        if (v.get("about"), v.get("symbols")) != (None, None) and isinstance(space, spaces.Box):
            fail(f"signalling.{group}", v, "about and symbols need discrete messages, not Box")
        k = v.get("symbols")
        if k is not None:
            n = space.n if isinstance(space, spaces.Discrete) else None
            if space is not None and n is None:
                fail(f"signalling.{group}.symbols", k, "needs a Discrete action space")
            if not isinstance(k, int) or isinstance(k, bool) or k < 2 or (n and n % k):
                whole = "" if n is None else f" dividing the {n} actions"
                fail(f"signalling.{group}.symbols", k, f"must be an integer >= 2{whole}")
    for group, v in (listening or {}).items():
        if not isinstance(v, Mapping) or set(v) != {"weight", "message"}:
            fail(f"listening.{group}", v, "must be {weight: W, message: [start, stop]}")
        w, m = v["weight"], v["message"]
        if not _is_real(w) or w < 0:
            fail(f"listening.{group}.weight", w, "must be a number >= 0")
        check_columns(f"listening.{group}.message", m, group)


def _signalling_weight(v: Any) -> float:
    return float(v["weight"] if isinstance(v, Mapping) else v)


def _weights(dist: Any, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is not None:
        return weight.reshape(-1).float()
    first = dist.mean if isinstance(dist, DiagGaussian) else _first_log_p(dist)
    return torch.ones(first.shape[0], device=first.device)


def _first_log_p(dist: Any) -> torch.Tensor:
    return dist.parts[0].log_p if isinstance(dist, MultiCategorical) else dist.log_p


def _wmean(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Mean over the first axis, rows weighted by ``w`` (all rows without one)."""
    if w is None:
        return x.mean(0)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x * w.reshape(shape)).sum(0) / w.sum().clamp(min=1.0)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.where(p > 0, p * torch.log(p.clamp(min=1e-30)), torch.zeros_like(p)).sum(-1)


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)
