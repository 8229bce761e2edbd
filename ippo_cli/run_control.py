"""What a training loop needs from its surroundings, shared by a lone run
(:mod:`ippo_cli.trainer`), a stack of runs (:mod:`ippo_cli.run_stack`) and a population
(:mod:`ippo_cli.evolution`): a stop request from Ctrl-C or SIGTERM, a progress bar, and the
first line of an error for a one-line report."""

from __future__ import annotations

import signal
import threading
from typing import Any


def first_line(text: str, fallback: str) -> str:
    """The first non-blank line of ``text`` (stripped), or ``fallback`` when it has none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else fallback


class StopRequest:
    """Ctrl-C and SIGTERM ask the loop to stop at the next vector step.

    The handler only sets a flag: an exception raised at an arbitrary point could land in
    a finalizer (where Python drops it) or leave the rollout half-written. A second
    signal restores the default behaviour, so a stuck run can still be killed.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.restore()
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class ProgressBar:
    """A rich progress bar (steps, steps/s, latest return, ETA), or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self.latest: float | None = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[sps]:>6.0f} steps/s"),
                TextColumn("return {task.fields[ret]}"),
                TimeRemainingColumn(),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.total, sps=0.0, ret="-")
        return self

    def update(self, steps: int, row: dict[str, Any]) -> None:
        if row.get("return") is not None:
            self.latest = row["return"]
        if self.enabled:
            ret = "-" if self.latest is None else f"{self.latest:.2f}"
            self.bar.update(
                self.task, completed=min(steps, self.total), sps=row["steps_per_second"], ret=ret
            )

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
