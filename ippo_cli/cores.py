"""How many CPU cores a run may use."""

from __future__ import annotations

import os
from typing import Any


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_cores(hardware: Any) -> int:
    """Cores a run may use: ``hardware.cores`` (a sweep job's share), else every core
    this process may run on."""
    return hardware.get("cores") or available_cores()
