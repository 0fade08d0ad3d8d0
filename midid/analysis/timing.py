"""The tempo map: ticks to seconds, the file's tempo, time signature and length in bars.

A set-tempo event holds microseconds per quarter note (mspq); BPM here always means quarter
notes per minute, whatever the time signature says.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from .parse import DEFAULT_MSPQ, ParsedMidi


_SMALL_MAP = 64  # tempo events up to which plain Python beats numpy's per-call cost


@dataclass(frozen=True)
class TempoSummary:
    """``bpm`` is the tempo holding for the most ticks of the music (None without tempo events);
    ``changes`` counts set-tempo events that change the value."""

    bpm: float | None
    changes: int


def ticks_to_seconds(ticks: np.ndarray, midi: ParsedMidi) -> np.ndarray:
    """Seconds from the start of the file for tick positions, following the tempo map."""
    ticks = np.asarray(ticks, dtype=np.int64)
    if not midi.tempo_ticks.size:
        return ticks * (DEFAULT_MSPQ / 1e6 / midi.tpq)
    bt, mspq = midi.tempo_ticks, midi.tempo_mspq
    if bt.size == 1 and bt[0] == 0:  # one tempo from the start: a plain scale
        return ticks * (float(mspq[0]) / 1e6 / midi.tpq)
    if bt[0] > 0:
        bt = np.concatenate(([0], bt))
        mspq = np.concatenate(([DEFAULT_MSPQ], mspq))
    sec_per_tick = mspq / 1e6 / midi.tpq
    sec_at = np.concatenate(([0.0], np.cumsum(np.diff(bt) * sec_per_tick[:-1])))
    idx = np.searchsorted(bt, ticks, side="right") - 1
    idx = np.maximum(idx, 0)
    return sec_at[idx] + (ticks - bt[idx]) * sec_per_tick[idx]


def seconds_at(tick: int, midi: ParsedMidi) -> float:
    """Seconds from the start of the file to one tick position (see :func:`ticks_to_seconds`)."""
    if midi.tempo_ticks.size <= 1:
        mspq = float(midi.tempo_mspq[0]) if midi.tempo_ticks.size else DEFAULT_MSPQ
        if not midi.tempo_ticks.size or midi.tempo_ticks[0] == 0:
            return tick * mspq / 1e6 / midi.tpq
    # The array version's sums, term by term, on plain numbers: one position does not pay
    # for numpy's calls.
    bt, values = midi.tempo_ticks.tolist(), midi.tempo_mspq.tolist()
    if bt[0] > 0:
        bt, values = [0, *bt], [DEFAULT_MSPQ, *values]
    per_tick = [v / 1e6 / midi.tpq for v in values]
    at = max(bisect.bisect_right(bt, tick) - 1, 0)
    seconds = 0.0
    for i in range(at):
        seconds += (bt[i + 1] - bt[i]) * per_tick[i]
    return seconds + (tick - bt[at]) * per_tick[at]


def opening_tempo(midi: ParsedMidi, first_tick: int, until_tick: int) -> float | None:
    """The tempo (quarter notes per minute) holding from ``first_tick`` through
    ``until_tick``, or None when the tempo map changes in between or has no tempo event."""
    ticks, mspq = midi.tempo_ticks, midi.tempo_mspq
    if not ticks.size:
        return None
    if ticks.size == 1:  # the usual map: the same test on plain ints
        tick, only = int(ticks[0]), int(mspq[0])
        if tick <= first_tick:
            return round(60e6 / only, 2)
        if tick <= until_tick and only != DEFAULT_MSPQ:
            return None
        return round(60e6 / DEFAULT_MSPQ, 2)
    at = bisect.bisect_right(ticks.tolist(), first_tick) - 1
    value = int(mspq[at]) if at >= 0 else DEFAULT_MSPQ
    inside = mspq[(ticks > first_tick) & (ticks <= until_tick)]
    if (inside != value).any():
        return None
    return round(60e6 / value, 2)


def tempo_summary(midi: ParsedMidi, last_tick: int) -> TempoSummary:
    """The dominant tempo up to ``last_tick`` and the number of tempo changes."""
    mspq = midi.tempo_mspq
    if not mspq.size:
        return TempoSummary(bpm=None, changes=0)
    if mspq.size == 1:
        return TempoSummary(bpm=round(60e6 / float(mspq[0]), 2), changes=0)
    if mspq.size <= _SMALL_MAP:  # the same sums on plain ints: a tenth of numpy's calls
        return _small_map_summary(midi.tempo_ticks.tolist(), mspq.tolist(), last_tick)
    changes = int(np.count_nonzero(mspq[1:] != mspq[:-1]))
    bt = midi.tempo_ticks
    ends = np.append(bt[1:], max(last_tick, int(bt[-1]) + 1))
    span = np.clip(ends, 0, None) - np.clip(bt, 0, ends)
    values, inverse = np.unique(mspq, return_inverse=True)
    held = np.bincount(inverse, weights=span.astype(np.float64), minlength=values.size)
    dominant = int(values[int(np.argmax(held))]) if held.max() > 0 else int(mspq[0])
    return TempoSummary(bpm=round(60e6 / dominant, 2), changes=changes)


def _small_map_summary(ticks: list[int], values: list[int], last_tick: int) -> TempoSummary:
    """:func:`tempo_summary` of a short map: ticks held per value in event order, ties to
    the faster tempo (the smaller value), as the array version sums and breaks them."""
    ends = ticks[1:] + [max(last_tick, ticks[-1] + 1)]
    held: dict[int, float] = {}
    for tick, end, value in zip(ticks, ends, values):
        held[value] = held.get(value, 0.0) + float(max(end, 0) - min(max(tick, 0), end))
    dominant = max(sorted(held), key=held.__getitem__) if max(held.values()) > 0 else values[0]
    changes = sum(a != b for a, b in zip(values, values[1:]))
    return TempoSummary(bpm=round(60e6 / dominant, 2), changes=changes)


def time_signature(midi: ParsedMidi, first_tick: int) -> tuple[int, int]:
    """The time signature in force at the first note (``first_tick``; 4/4 when the file has
    none).

    A signature of one beat per bar (1/4, 1/8 ...) counts as none: it groups no beats into a
    bar, and files carry it as a converter's placeholder (117 of the 300 POP909 songs in
    ../shared/corpus declare only 1/4, all of them pop songs in 4/4), so taken literally it
    made every beat a bar: an 8-bar chord loop counted 32 bars and could never be filed
    under Progressions."""
    valid = [(t, n, d) for t, n, d in midi.time_signatures if 1 < n <= 64 and 0 < d <= 64]
    if not valid:
        return (4, 4)
    before = [s for s in valid if s[0] <= first_tick]
    _, num, den = before[-1] if before else valid[0]
    return (num, den)


def bar_count(end_quarters: float, signature: tuple[int, int]) -> int:
    """Whole bars needed to hold music ending at ``end_quarters`` (a little slack for
    notes released just before the bar line would otherwise be lost to rounding)."""
    quarters_per_bar = signature[0] * 4.0 / signature[1]
    if end_quarters <= 0:
        return 0
    return max(1, math.ceil(end_quarters / quarters_per_bar - 0.02))
