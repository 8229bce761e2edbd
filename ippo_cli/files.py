"""Writing run files: atomically, so that a crash never leaves a half-written one, and as
strict JSON, so that every parser reads them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def strict_json(data: Any, indent: int | None = None) -> str:
    """``data`` as JSON text that strict parsers accept: NaN and infinities (which
    ``json.dumps`` would write as the non-standard ``NaN``/``Infinity``) become null."""
    return json.dumps(finite(data), indent=indent, allow_nan=False)


def write_json(path: Path, data: Any) -> None:
    """``data`` as strict, indented JSON, written atomically."""
    write_text_atomic(path, strict_json(data, indent=2) + "\n")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):  # numpy float64 too
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
