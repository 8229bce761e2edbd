"""Several runs trained as the members of one stack, in one process.

Each member is a :class:`~ippo_cli.trainer.Trainer` with its own config, run directory,
envs, agent, generator, logger and checkpoints: everything that makes a run a run. What
the stack shares is the work: every env step samples the actions of all members' actors
as one stack (:class:`~ippo_cli.stacked_acting.StackedSampler`), and every update trains
all members' networks as one stack (:func:`~ippo_cli.stacked_update.update_agents`),
each with its own hyperparameters. A member learns exactly what it would alone.

A member that fails (a non-finite observation or loss, a crashed env) is stopped,
recorded with its reason and saved as a solo run would be; the others train on. Ctrl-C
stops every member and saves each one's ``last.pt``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ippo_cli.run_control import ProgressBar, StopRequest, first_line
from ippo_cli.stacked_acting import StackedSampler
from ippo_cli.stacked_update import update_agents
from ippo_cli.trainer import Trainer

log = logging.getLogger("ippo")


class RunStack:
    """Trains ``members`` (trainers of configs that agree in every shape, see
    :mod:`ippo_cli.stacking`) side by side; :meth:`run` returns each one's summary."""

    def __init__(self, members: list[Trainer], notes: Sequence[str] = ()) -> None:
        """``notes`` go to every member's log (how the sweep's jobs were grouped)."""
        steps = {(m.num_steps, m.total_steps) for m in members}
        if len(steps) != 1:
            raise ValueError(f"members of a stack must agree on rollout length and budget: {steps}")
        self.members = members
        self.logs = MemberLogs([m.run_dir / "train.log" for m in members])
        self.notes = list(notes)
        self.errors: dict[int, str] = {}
        self.obs: list[Any] = [None] * len(members)
        self.infos: list[Any] = [None] * len(members)

    def run(self) -> list[dict[str, Any]]:
        stop = StopRequest()
        live: list[int] = []
        try:
            with self.logs:
                for note in self.notes:
                    log.info("stacked launcher: %s", note)
                log.info("training as one of a stack of %d members", len(self.members))
                live = [k for k in range(len(self.members)) if self._guard(k, self._begin, k)[0]]
                first = self.members[0]
                with ProgressBar(bool(first.cfg.progress), first.total_steps) as bar:
                    while live and not self.members[live[0]].done and not stop.requested:
                        live, row = self._update(live, stop)
                        if row is not None and live:
                            bar.update(self.members[live[0]].progress.env_steps, row)
                for k in live:
                    self._guard(k, self.members[k].final_evaluation, stop.requested)
                live = [k for k in live if k not in self.errors]
        finally:
            stop.restore()
            failure = sys.exc_info()[1]
            with self.logs:
                for k in live:
                    with self.logs.member(k):
                        self.members[k].finish(failure)
            self.logs.close()
        return [self._summary(k, stop.requested) for k in range(len(self.members))]

    def _begin(self, k: int) -> None:
        self.obs[k], self.infos[k] = self.members[k].begin()

    def _update(self, live: list[int], stop: StopRequest) -> tuple[list[int], dict | None]:
        """One rollout of every live member, then one stacked update; returns the members
        still live and the first one's logged row (None when stopped mid-rollout)."""
        t0 = time.perf_counter()
        done = collect_together(self.members, self.obs, self.infos, stop, self._guard, live)
        if not done:
            return [k for k in live if k not in self.errors], None
        live = done
        t1 = time.perf_counter()
        members = [self.members[k] for k in live]
        metrics = update_together(members)
        rows = [
            self._guard(k, self.members[k].after_update, m, t0, t1)[1]
            for k, m in zip(live, metrics, strict=True)
        ]
        live_rows = [r for k, r in zip(live, rows, strict=True) if k not in self.errors]
        return [k for k in live if k not in self.errors], (live_rows[0] if live_rows else None)

    def _guard(self, k: int, step: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """``step(*args)`` for member ``k``, its records into its log file; a failure
        stops that member alone (saved as a solo run would be) and is recorded.
        Returns whether it ran, and what it returned."""
        try:
            with self.logs.member(k):
                return True, step(*args)
        except Exception as exc:
            reason = first_line(str(exc), type(exc).__name__)
            self.errors[k] = reason
            with self.logs.member(k):
                log.error("member failed: %s", reason, exc_info=True)
                try:
                    self.members[k].finish(exc)
                except Exception:  # closing a broken env must not stop the others
                    log.warning("the failed member did not close cleanly", exc_info=True)
            return False, None

    def _summary(self, k: int, interrupted: bool) -> dict[str, Any]:
        member = self.members[k]
        summary = member.summary(interrupted and k not in self.errors)
        if k in self.errors:
            summary["status"] = "failed"
            summary["error"] = self.errors[k]
        else:
            summary["status"] = "interrupted" if summary["interrupted"] else "completed"
        return summary


class MemberLogs:
    """Each member's log records go to its own ``train.log``: while the stack works on a
    member (:meth:`member`), records of the ``ippo`` loggers and the root logger go to its
    file only; records outside any member go to every member's file."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.handlers: list[logging.FileHandler] = []
        self.current: int | None = None
        self._dispatch = _Dispatch(self)
        self._removed: list[logging.Handler] = []

    def __enter__(self) -> MemberLogs:
        if not self.handlers:
            fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
            for path in self.paths:
                path.parent.mkdir(parents=True, exist_ok=True)  # as the trainer makes it
                handler = logging.FileHandler(path, encoding="utf-8")
                handler.setFormatter(fmt)
                self.handlers.append(handler)
        root = logging.getLogger()
        # The file handler Hydra set up for the last job set up would get every record.
        self._removed = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        for handler in self._removed:
            root.removeHandler(handler)
        root.addHandler(self._dispatch)
        return self

    def __exit__(self, *exc: Any) -> None:
        root = logging.getLogger()
        root.removeHandler(self._dispatch)
        for handler in self._removed:
            root.addHandler(handler)
        for handler in self.handlers:
            handler.flush()

    def close(self) -> None:
        for handler in self.handlers:
            handler.close()

    @contextmanager
    def member(self, k: int) -> Iterator[None]:
        previous, self.current = self.current, k
        try:
            yield
        finally:
            self.current = previous


class _Dispatch(logging.Handler):
    def __init__(self, logs: MemberLogs) -> None:
        super().__init__(logging.INFO)
        self.logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        k = self.logs.current
        targets = self.logs.handlers if k is None else [self.logs.handlers[k]]
        for handler in targets:
            handler.handle(record)


# Runs one member's step: whether it ran, and its result (see RunStack._guard).
Guard = Callable[..., tuple[bool, Any]]


def collect_together(
    trainers: Sequence[Trainer],
    obs: MutableSequence[Any],
    infos: MutableSequence[Any],
    stop: Any = None,
    guard: Guard | None = None,
    live: list[int] | None = None,
) -> list[int] | None:
    """One rollout of the ``live`` trainers (default: all; rollouts of one length), their
    actors acting as one stack; ``obs`` and ``infos`` (one entry per trainer) are updated
    in place. ``guard(k, step, *args)`` runs each of trainer ``k``'s steps and returns
    whether it ran and its result: a trainer whose step failed leaves the rollout, the
    others go on (without one, a failure propagates). Returns the trainers that finished
    the rollout, or None when ``stop`` was requested mid-rollout (it is abandoned)."""
    guard = guard or _unguarded
    live = list(range(len(trainers))) if live is None else live
    sampler = None

    def act(k: int, step: int, actions: dict[str, Any]) -> None:
        obs[k], infos[k] = trainers[k].act(step, actions, infos[k])

    for step in range(trainers[0].num_steps):
        if stop is not None and stop.requested:
            return None
        views = {k: guard(k, trainers[k].observe, step, obs[k], infos[k]) for k in live}
        live = [k for k in live if views[k][0]]
        if not live:
            return live
        if sampler is None or len(sampler.agents) != len(live):  # first step, or one failed
            sampler = StackedSampler([trainers[k].agent for k in live])
        sampled = sampler.sample(
            [views[k][1][0] for k in live],
            [views[k][1][1] for k in live],
            [trainers[k].generator for k in live],
        )
        ran = [guard(k, act, k, step, a)[0] for k, a in zip(live, sampled, strict=True)]
        live = [k for k, ok in zip(live, ran, strict=True) if ok]
        if not live:
            return live
    return [k for k in live if guard(k, trainers[k].finish_rollout, obs[k])[0]]


def update_together(trainers: Sequence[Trainer], others: Sequence[Trainer] = ()) -> list[Any]:
    """One update of the ``trainers``' agents, as one stack, from their rollouts; returns
    each one's metrics. The first trainer's threads learn for the stack and are judged as
    its own (:meth:`Trainer.judged_learning`): on cores that other processes hold, every
    trainer, and ``others`` that take turns with them, falls back to one thread."""
    first = trainers[0]
    for t in trainers:
        t.set_learning_rate()
    with first.judged_learning():
        metrics = update_agents(
            [t.agent for t in trainers],
            [t.rollouts for t in trainers],
            [t.generator for t in trainers],
        )
    for t in [*trainers[1:], *others]:
        t.learn_threads = first.learn_threads
    return metrics


def _unguarded(k: int, step: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    return True, step(*args)
