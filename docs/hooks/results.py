"""Benchmark figures read from benchmarks/results/*.json (the files the benchmarks write)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@cache
def load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def lookup(name: str, path: str) -> Any:
    """The value at a dotted ``path`` in results file ``name`` (list items by index)."""
    value = load(name)
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)]
        elif part in value:
            value = value[part]
        else:
            raise KeyError(f"{name} has no {path!r} (no {part!r})")
    return value


def result(name: str, path: str, fmt: str = "{}") -> str:
    """The figure formatted with ``fmt``, e.g. "{:,.0f}" or "{:.2f}"."""
    return fmt.format(lookup(name, path))
