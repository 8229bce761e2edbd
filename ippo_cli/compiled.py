"""``torch.compile`` for the learner's per-minibatch functions.

Each function is compiled once per mode and the result reused by every update: its
arguments are new tensors each time, but of the same shapes, so the compiled code's
guards pass and nothing recompiles.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


@functools.cache
def compiled(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
    """``fn`` compiled with ``torch.compile`` in ``mode`` (default, reduce-overhead,
    max-autotune)."""
    return torch.compile(fn, mode=mode)
