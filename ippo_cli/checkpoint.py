"""The checkpoint format: plain data written atomically, loaded without running code.

A checkpoint is a dict of dicts, lists, numbers, strings and tensors saved with
``torch.save`` and read with ``torch.load(weights_only=True)``, so a checkpoint file
can never execute code. It is written to a temporary file in the same directory,
flushed to disk and renamed over the target: a crash mid-write leaves the previous
file intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({**payload, "format_version": FORMAT_VERSION}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory whose ``checkpoints/last.pt`` is taken."""
    p = Path(path)
    if p.is_dir():
        last = p / "checkpoints" / "last.pt"
        if last.is_file():
            return last
        raise CheckpointError(
            f"'{path}' is a directory without checkpoints/last.pt; give a .pt file or a run "
            "directory"
        )
    return p


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`, refusing anything else with a clear error."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a directory; give a .pt file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty")
    # torch.save writes a zip archive; anything else (a raw pickle, random bytes, a cut-off
    # file) is refused before any byte of it is unpickled.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated (not a torch checkpoint archive)"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling failed"
        raise CheckpointError(
            f"checkpoint '{path}' was refused: it is not plain data ({reason[:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated ({reason[:160]})"
        ) from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise CheckpointError(f"checkpoint '{path}' is not an ippo checkpoint")
    version = data["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {version!r}; this ippo reads "
            f"version {FORMAT_VERSION}: upgrade ippo-cli to load it"
        )
    return data
