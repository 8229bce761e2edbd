"""``torch.compile`` for the learner: which mode a run uses, and the compiled functions.

The learner's per-minibatch functions (forward pass and losses, whose backward pass
AOTAutograd compiles with them) are compiled once per mode and reused by every update:
their arguments are new tensors each time, but of the same shapes, so the compiled
code's guards pass and nothing recompiles.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("ippo")

MODES = ("default", "reduce-overhead", "max-autotune")
# hardware.torch_compile=auto compiles runs of at least this many updates: compiling takes
# 5-10 s with a warm inductor cache and about 35-40 s without one (speaker_listener,
# 2 cores).
AUTO_MIN_UPDATES = 100


@functools.cache
def compiled(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
    """``fn`` compiled with ``torch.compile`` in ``mode``."""
    return torch.compile(fn, mode=mode)


def maybe_compiled(fn: Callable[..., Any], mode: str | None) -> Callable[..., Any]:
    """``fn`` itself when ``mode`` is None (eager), else :func:`compiled`."""
    return fn if mode is None else compiled(fn, mode)


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with, or None when there is none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return shutil.which(get_cpp_compiler())
    except Exception:  # inductor's search raises when it finds no compiler
        return None


def resolve_mode(
    setting: str | None, device: torch.device, updates: int, per: str = ""
) -> str | None:
    """The compile mode for ``hardware.torch_compile=setting``: itself, or for ``auto``
    ``default`` on CPU when the run has ``AUTO_MIN_UPDATES`` updates or more (``per``:
    what they are counted per, for the log, e.g. " per member") and a C++ compiler is
    installed, else None (eager). ``auto`` says what it chose in the log."""
    if setting != "auto":
        return setting
    if device.type != "cpu":
        why, mode = f"not on {device.type} (measured on CPU only)", None
    elif updates < AUTO_MIN_UPDATES:
        why, mode = f"{updates} updates{per} are too few to repay compiling", None
    elif cpp_compiler() is None:
        why, mode = "no C++ compiler for inductor's CPU kernels", None
    else:
        why, mode = f"{updates} updates{per} on CPU", "default"
    log.info("hardware.torch_compile=auto: %s -> %s", why, mode or "eager")
    return mode
