"""Start draws in mpe2's order, for many envs at once.

An mpe2 scenario's ``reset_world`` makes a fixed sequence of calls on the env's numpy
Generator (``integers(n)`` for a goal, ``uniform(low, high, 2)`` per entity, ...). Resetting
rows ``r0, r1, ...`` of a batched env makes the same calls row after row on one Generator,
so that one batched env seeded ``s`` starts as mpe2 seeded ``s`` does, and its later
autoresets as mpe2's later unseeded resets do.

Calling the Generator row by row costs microseconds per call; instead :func:`draw_rows`
reproduces numpy's arithmetic on the raw 64-bit words of the PCG64 stream: a double is
``(word >> 11) * 2**-53``, ``uniform(low, high)`` is ``low + (high - low) * double``, and
``integers(n)`` (n < 2**32) is Lemire's method on 32-bit halves of words, the upper half of a
word kept for the next such call (PCG64's ``has_uint32`` buffer). Lemire's method redraws
with probability about n / 2**32; when that happens anywhere in the batch, the rows are drawn
with the Generator's own calls instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Integers(NamedTuple):
    """``rng.integers(high)``: one int in [0, high)."""

    high: int


class Uniform(NamedTuple):
    """``rng.uniform(low, high, size)``: ``size`` doubles (None: one scalar)."""

    low: float
    high: float
    size: int | None = None


Draw = Integers | Uniform
_MASK32 = np.uint64(0xFFFFFFFF)


def draw_rows(rng: np.random.Generator, rows: int, program: Sequence[Draw]) -> list[np.ndarray]:
    """Make ``program``'s calls for each of ``rows`` rows in turn; one array per call, of
    shape ``(rows,)`` (Integers, scalar Uniform) or ``(rows, size)``."""
    if not isinstance(rng.bit_generator, np.random.PCG64) or rows == 0:
        return _draw_one_by_one(rng, rows, program)
    saved = rng.bit_generator.state
    out = _draw_from_words(rng, rows, program)
    if out is None:  # a redraw somewhere: let numpy do it
        rng.bit_generator.state = saved
        return _draw_one_by_one(rng, rows, program)
    return out


def draw_rows_from_each_state(
    rng: np.random.Generator, rows: int, program: Sequence[Draw]
) -> tuple[list[np.ndarray], list[dict]]:
    """:func:`draw_rows`, and the Generator's state before each row's calls (for a scenario
    that keeps a copy of its Generator as it starts, as collect_treasure does)."""
    if isinstance(rng.bit_generator, np.random.PCG64) and rows:
        saved, states = rng.bit_generator.state, []
        out = _draw_from_words(rng, rows, program, states)
        if out is not None:
            return out, states
        rng.bit_generator.state = saved
    states, rows_drawn = [], []
    for _ in range(rows):
        states.append(rng.bit_generator.state)
        rows_drawn.append(_draw_one_by_one(rng, 1, program))
    values = [np.concatenate([row[k] for row in rows_drawn]) for k in range(len(program))]
    return values, states


def _draw_one_by_one(rng: np.random.Generator, rows: int, program: Sequence[Draw]) -> list:
    values: list[list] = [[] for _ in program]
    for _ in range(rows):
        for k, call in enumerate(program):
            if isinstance(call, Integers):
                values[k].append(int(rng.integers(call.high)))
            else:
                values[k].append(rng.uniform(call.low, call.high, call.size))
    shapes = [(rows,) if _width(c) is None else (rows, _width(c)) for c in program]
    return [
        np.array(v, dtype=np.int64 if isinstance(c, Integers) else np.float64).reshape(s)
        for v, c, s in zip(values, program, shapes, strict=True)
    ]


def _width(call: Draw) -> int | None:
    return None if isinstance(call, Integers) else call.size


def _draw_from_words(
    rng: np.random.Generator, rows: int, program: Sequence[Draw], starts: list | None = None
) -> list | None:
    """The draws from raw words (None if Lemire would redraw); with ``starts``, appends the
    Generator's state before each row to it."""
    state = rng.bit_generator.state
    buffered = bool(state["has_uint32"])
    # One row's events: a double per uniform value, one 32-bit half per integer (none for
    # integers(1), which numpy answers without drawing).
    full, program = program, [c for c in program if not (isinstance(c, Integers) and c.high == 1)]
    kinds, sizes = [], []
    for call in program:
        count = 1 if _width(call) is None else int(call.size)  # type: ignore[arg-type]
        kinds.extend([isinstance(call, Integers)] * count)
        sizes.append(count)
    per_row = len(kinds)
    is_int = np.tile(np.array(kinds, dtype=bool), rows)
    # The k-th integer of the batch takes a fresh word when the buffer is empty, else the
    # upper half of the word the previous integer took (or of the buffered value).
    int_rank = np.cumsum(is_int) - 1
    fresh = ~is_int | ((int_rank + buffered) % 2 == 0)
    word_index = np.cumsum(fresh) - 1
    words = rng.bit_generator.random_raw(int(fresh.sum()))
    words = np.asarray(words, dtype=np.uint64).reshape(-1)
    event_words = words[np.maximum(word_index, 0)] if len(words) else np.zeros(0, np.uint64)
    doubles = (event_words >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    # An integer without a fresh word takes the upper half of the previous integer's word
    # (the very first one: of the buffered value).
    int_events = np.flatnonzero(is_int)
    int_words = event_words[int_events]
    upper = np.concatenate([[np.uint64(state["uinteger"])], int_words[:-1] >> np.uint64(32)])
    halves = np.zeros(len(kinds) * rows, dtype=np.uint64)
    halves[int_events] = np.where(fresh[int_events], int_words & _MASK32, upper[: len(int_events)])
    # Lemire: m = half * n; the value is m >> 32 unless the low half of m redraws.
    highs = np.tile(
        np.concatenate(
            [
                [c.high if isinstance(c, Integers) else 1] * s
                for c, s in zip(program, sizes, strict=True)
            ]
        ).astype(np.uint64),
        rows,
    )
    m = halves * highs
    threshold = (np.uint64(2**32) - highs) % highs
    if np.any(is_int & ((m & _MASK32) < threshold)):
        return None
    ints = (m >> np.uint64(32)).astype(np.int64)
    if starts is not None:
        starts.extend(_row_starts(state, rows, per_row, fresh, is_int, int_words, halves))
    # The buffer after the batch: full when the last integer took a fresh word; numpy
    # leaves the spent value in place when it empties the buffer.
    if len(int_events):
        last = int_events[-1]
        state = rng.bit_generator.state
        state["has_uint32"] = int(fresh[last])
        state["uinteger"] = (
            int(int_words[-1] >> np.uint64(32)) if fresh[last] else int(halves[last])
        )
        rng.bit_generator.state = state
    out, start = [], 0
    doubles = doubles.reshape(rows, per_row)
    ints = ints.reshape(rows, per_row)
    for call, count in zip(program, sizes, strict=True):
        cols = slice(start, start + count)
        if isinstance(call, Integers):
            out.append(ints[:, start])
        else:
            value = call.low + (call.high - call.low) * doubles[:, cols]
            out.append(value[:, 0] if call.size is None else value)
        start += count
    drawn = iter(out)
    return [np.zeros(rows, dtype=np.int64) if c not in program else next(drawn) for c in full]


def _row_starts(
    state: dict,
    rows: int,
    per_row: int,
    fresh: np.ndarray,
    is_int: np.ndarray,
    int_words: np.ndarray,
    halves: np.ndarray,
) -> list[dict]:
    """The PCG64 state before each row: ``state`` advanced by the words drawn before it, with
    the 32-bit buffer the last integer before it left (``state``'s own before any)."""
    first = np.arange(rows) * per_row
    words_before = np.concatenate([[0], np.cumsum(fresh)])[first].tolist()
    ints_before = np.concatenate([[0], np.cumsum(is_int)])[first].tolist()
    int_events = np.flatnonzero(is_int)
    # What the buffer holds after each integer: its word's upper half (full) or the value
    # it spent (empty).
    took_fresh = fresh[int_events].tolist()
    kept = np.where(fresh[int_events], int_words >> np.uint64(32), halves[int_events]).tolist()
    out = [state]  # the first row starts where the batch does
    if rows > 1:
        bits = np.random.PCG64(0)  # reused: an unseeded PCG64 would gather OS entropy
    for words, ints in zip(words_before[1:], ints_before[1:], strict=True):
        bits.state = state
        bits.advance(words)
        start = bits.state
        if ints == 0:
            start["has_uint32"], start["uinteger"] = state["has_uint32"], state["uinteger"]
        else:
            start["has_uint32"], start["uinteger"] = int(took_fresh[ints - 1]), kept[ints - 1]
        out.append(start)
    return out
