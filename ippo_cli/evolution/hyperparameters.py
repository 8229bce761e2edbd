"""Ranges within which evolution may change an agent's RL hyperparameters.

``HyperparameterConfig(lr=RLParameter(min=1e-5, max=1e-3), ...)`` is the reference's
``hp_config``: an agent built with one has its listed hyperparameters mutated by
:class:`~ippo_cli.evolution.mutations.Mutations` (``rl_hp``), each step multiplying one
of them by ``grow_factor`` or ``shrink_factor`` and clipping it to ``[min, max]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# IPPO hyperparameters that evolution may change, and whether each is an integer.
MUTABLE_HYPERPARAMETERS: dict[str, type] = {
    "lr": float,
    "batch_size": int,
    "learn_step": int,
    "ent_coef": float,
    "clip_coef": float,
    "vf_coef": float,
    "gamma": float,
    "gae_lambda": float,
    "max_grad_norm": float,
    "update_epochs": int,
}


@dataclass(frozen=True)
class RLParameter:
    """One hyperparameter's range and step factors (``dtype`` int truncates)."""

    min: float
    max: float
    shrink_factor: float = 0.8
    grow_factor: float = 1.2
    dtype: type = float

    def __post_init__(self) -> None:
        if self.min > self.max:
            raise ValueError(f"RLParameter min={self.min} is greater than max={self.max}")
        if not 0 < self.shrink_factor <= 1 <= self.grow_factor:
            raise ValueError(
                f"RLParameter factors must satisfy 0 < shrink_factor ({self.shrink_factor}) "
                f"<= 1 <= grow_factor ({self.grow_factor})"
            )

    def mutate(self, value: float, rng: np.random.Generator) -> float | int:
        """``value`` grown or shrunk (50/50), clipped to the range."""
        factor = self.grow_factor if rng.random() < 0.5 else self.shrink_factor
        new = float(np.clip(value * factor, self.min, self.max))
        return int(new) if self.dtype is int else new


class HyperparameterConfig(Mapping[str, RLParameter]):
    """The mutable hyperparameters of an agent: ``HyperparameterConfig(lr=RLParameter(...))``."""

    def __init__(self, **parameters: RLParameter) -> None:
        unknown = set(parameters) - set(MUTABLE_HYPERPARAMETERS)
        if unknown:
            raise ValueError(
                f"hp_config cannot mutate {sorted(unknown)}; mutable: "
                f"{', '.join(MUTABLE_HYPERPARAMETERS)}"
            )
        self._parameters = dict(parameters)

    def __getitem__(self, name: str) -> RLParameter:
        return self._parameters[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parameters)

    def __len__(self) -> int:
        return len(self._parameters)

    def __repr__(self) -> str:
        return f"HyperparameterConfig({self._parameters!r})"

    def names(self) -> list[str]:
        return list(self._parameters)

    def sample(self, rng: np.random.Generator) -> str:
        """One hyperparameter name, uniformly."""
        return self.names()[int(rng.integers(len(self._parameters)))]

    @classmethod
    def from_ranges(cls, ranges: Mapping[str, Mapping[str, Any]]) -> HyperparameterConfig:
        """From plain ``{name: {min, max[, shrink_factor, grow_factor]}}`` (the CLI's
        ``hpo.hp_config``); integer hyperparameters get ``dtype=int``."""
        return cls(
            **{
                name: RLParameter(
                    **{k: v for k, v in dict(r).items() if v is not None},
                    dtype=MUTABLE_HYPERPARAMETERS.get(name, float),
                )
                for name, r in ranges.items()
            }
        )
