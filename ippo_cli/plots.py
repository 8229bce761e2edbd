"""Figures written to PNG files: every plot of the project (learning curves, populations,
sweeps, benchmarks) is drawn inside :func:`figure`, which sets matplotlib up for files
(no display), lays the figure out, writes it (whole or not at all: a crash mid-write
leaves the previous file) and frees it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def figure(out_path: Path, size: tuple[float, float] = (7, 4), columns: int = 0) -> Iterator[Any]:
    """Yields the axes of a new figure (``columns`` > 0: a row of that many axes, as a
    list) and writes the figure to ``out_path`` when the block ends without error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(columns, 1), figsize=size, dpi=100, squeeze=False)
    try:
        yield list(axes[0]) if columns else axes[0][0]
        fig.tight_layout()
        tmp = out_path.with_name(f".{out_path.stem}.tmp{os.getpid()}{out_path.suffix}")
        fig.savefig(tmp)
        os.replace(tmp, out_path)
    finally:
        plt.close(fig)


def label(ax: Any, xlabel: str, ylabel: str, title: str = "", legend: bool = True) -> None:
    """Axis labels, title, a light grid, and a legend when anything is labelled."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()
