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
from collections.abc import Callable, Iterator, Sequence
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
        self.logs = _MemberLogs([m.run_dir / "train.log" for m in members])
        self.notes = list(notes)
        self.errors: dict[int, str] = {}
        self.obs: dict[int, Any] = {}
        self.infos: dict[int, Any] = {}

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

    def _act(self, k: int, t: int, actions: dict[str, Any]) -> None:
        self.obs[k], self.infos[k] = self.members[k].act(t, actions, self.infos[k])

    def _sampler(self, live: list[int]) -> StackedSampler:
        # The actors as they are: they do not change during a rollout.
        return StackedSampler([self.members[k].agent for k in live])

    def _update(self, live: list[int], stop: StopRequest) -> tuple[list[int], dict | None]:
        """One rollout of every live member, then one stacked update; returns the members
        still live and the first one's logged row (None when stopped mid-rollout)."""
        t0 = time.perf_counter()
        sampler = self._sampler(live)
        for t in range(self.members[live[0]].num_steps):
            if stop.requested:
                return live, None
            views = {}
            for k in live:
                _, views[k] = self._guard(
                    k, self.members[k].observe, t, self.obs[k], self.infos[k]
                )
            live = [k for k in live if k not in self.errors]
            if not live:
                return live, None
            if len(sampler.agents) != len(live):  # a member failed: sample for the rest
                sampler = self._sampler(live)
            sampled = sampler.sample(
                [views[k][0] for k in live],
                [views[k][1] for k in live],
                [self.members[k].generator for k in live],
            )
            for k, actions in zip(live, sampled, strict=True):
                self._guard(k, self._act, k, t, actions)
            live = [k for k in live if k not in self.errors]
            if not live:
                return live, None
        for k in live:
            self._guard(k, self.members[k].finish_rollout, self.obs[k])
        live = [k for k in live if k not in self.errors]
        if not live:
            return live, None
        t1 = time.perf_counter()
        members = [self.members[k] for k in live]
        with members[0].learning_threads():
            metrics = update_agents(
                [m.agent for m in members],
                [m.rollouts for m in members],
                [m.generator for m in members],
            )
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


class _MemberLogs:
    """Each member's log records go to its own ``train.log``: while the stack works on a
    member (:meth:`member`), records of the ``ippo`` loggers and the root logger go to its
    file only; records outside any member go to every member's file."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.handlers: list[logging.FileHandler] = []
        self.current: int | None = None
        self._dispatch = _Dispatch(self)
        self._removed: list[logging.Handler] = []

    def __enter__(self) -> _MemberLogs:
        if not self.handlers:
            fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
            for path in self.paths:
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
    def __init__(self, logs: _MemberLogs) -> None:
        super().__init__(logging.INFO)
        self.logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        k = self.logs.current
        targets = self.logs.handlers if k is None else [self.logs.handlers[k]]
        for handler in targets:
            handler.handle(record)


def collect_together(
    trainers: Sequence[Trainer], obs: list[Any], infos: list[Any], stop: Any = None
) -> bool:
    """One rollout of each of ``trainers`` (rollouts of one length), their actors acting
    as one stack; ``obs`` and ``infos`` (one entry per trainer) are updated in place.
    Returns False when ``stop`` was requested mid-rollout (the rollout is abandoned)."""
    sampler = StackedSampler([t.agent for t in trainers])
    generators = [t.generator for t in trainers]
    for step in range(trainers[0].num_steps):
        if stop is not None and stop.requested:
            return False
        views = [t.observe(step, obs[k], infos[k]) for k, t in enumerate(trainers)]
        sampled = sampler.sample([v[0] for v in views], [v[1] for v in views], generators)
        for k, (t, actions) in enumerate(zip(trainers, sampled, strict=True)):
            obs[k], infos[k] = t.act(step, actions, infos[k])
    for k, t in enumerate(trainers):
        t.finish_rollout(obs[k])
    return True
