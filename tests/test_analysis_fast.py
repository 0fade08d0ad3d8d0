"""Second-pass analysis details: beat-phase chords, the block-wise tempo score, polyphony of
unsorted multi-track notes, and tempo estimates across the range on synthetic grooves."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest

from midid.analysis import analyze_bytes
from midid.analysis.analyze import onset_roles
from midid.analysis.chords import beat_grid, detect_chords
from midid.analysis.tempo import CANDIDATES, WEIGHTS, estimate_bpm, features

TPQ = 480


def smf(*tracks: list, tpq: int = TPQ) -> bytes:
    mf = mido.MidiFile(type=1, ticks_per_beat=tpq)
    for msgs in tracks:
        mf.tracks.append(mido.MidiTrack(msgs))
    out = io.BytesIO()
    mf.save(file=out)
    return out.getvalue()


def timed_notes(events: list[tuple[int, int, int]], channel: int = 0) -> list:
    """Messages for (start tick, end tick, pitch) notes, in any overlap."""
    points = sorted([(s, 1, p) for s, _, p in events] + [(e, 0, p) for _, e, p in events])
    msgs, now = [], 0
    for tick, on, pitch in points:
        kind = "note_on" if on else "note_off"
        msgs.append(mido.Message(kind, note=pitch, velocity=90, channel=channel, time=tick - now))
        now = tick
    return msgs


def rock_beat(bars: int, bpm: float) -> list:
    """Kick on 1 and 3, snare on 2 and 4, eighth hats, with a tempo event of ``bpm``."""
    events = []
    for eighth in range(bars * 8):
        t = eighth * TPQ // 2
        events.append((t, t + 60, 42))
        if eighth % 4 == 0:
            events.append((t, t + 60, 36))
        if eighth % 4 == 2:
            events.append((t, t + 60, 38))
    return [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
            *timed_notes(events, channel=9)]


def test_chords_follow_a_beat_grid_that_is_off_the_tick_grid() -> None:
    # C - Am - F - G, two bars each, all starting a third of a beat late (as performances
    # and audio-aligned files do): chord changes must land on the late grid, not between.
    late = TPQ // 3
    cycle = [(48, 64, 67, 72), (45, 64, 69, 72), (41, 65, 69, 72), (43, 62, 67, 71)]
    events = []
    for i, chord in enumerate(cycle * 2):
        s = late + i * 8 * TPQ
        # re-struck every beat, each note a little short, so onsets mark the beat
        events += [(s + b * TPQ, s + b * TPQ + TPQ - 40, p) for b in range(8) for p in chord]
    start, end, pitch = (np.array(x, dtype=np.int64) for x in zip(*events))
    assert beat_grid(start, end, TPQ).phase == late
    segments = detect_chords(start, end, pitch.astype(np.int16), TPQ)
    # The third of a beat before the first chord is silence, then one chord per two bars.
    assert [label for _, label in segments] == ["N"] + ["C:maj", "A:min", "F:maj", "G:maj"] * 2
    assert [beat for beat, _ in segments] == pytest.approx(
        [0.0] + [8 * i + 1 / 3 for i in range(8)], abs=1e-3)


def test_beat_phase_is_zero_on_the_tick_grid_and_wraps() -> None:
    on_grid = np.arange(0, 32 * TPQ, TPQ // 2, dtype=np.int64)
    assert beat_grid(on_grid, on_grid + 60, TPQ).phase == 0  # even eighths: keep the grid
    assert beat_grid(on_grid[::2], on_grid[::2] + 60, TPQ).phase == 0
    just_early = on_grid[::2] + TPQ - 12  # quarter notes 12 ticks before each beat
    grid = beat_grid(just_early, just_early + 60, TPQ)
    assert abs(grid.phase - (TPQ - 12)) <= TPQ // 48  # histogram resolution
    assert grid.shift == (TPQ - grid.phase) % TPQ and grid.step == TPQ


# Below ~80 BPM a straight-eighth beat reads as double time (the fitted prior's choice; see
# docs/analysis.md), so the synthetic range starts there.
@pytest.mark.parametrize("bpm", [80.0, 100.0, 128.0, 174.0])
def test_bpm_estimate_of_a_rock_beat_across_tempi(bpm: float) -> None:
    a = analyze_bytes(smf(rock_beat(16, bpm)))
    assert a.bpm == pytest.approx(bpm, abs=0.01) and a.bpm_source == "meta"
    assert a.bpm_estimate == pytest.approx(bpm, rel=0.04)


def test_block_scores_equal_the_fitted_feature_matrix() -> None:
    # estimate_bpm scores block by block; the fit (benchmarks/analyze.py --fit) uses the
    # stacked feature matrix. Both must pick the same tempo.
    rng = np.random.default_rng(7)
    beat = 60.0 / 103.0
    onsets = np.sort(np.concatenate([np.arange(64) * beat / 2, np.arange(32) * beat * 2]))
    onsets = onsets + rng.normal(0, 0.004, onsets.size)
    weight = rng.uniform(0.4, 1.0, onsets.size)
    pitch = np.where(np.arange(onsets.size) % 3 == 0, 36, 42).astype(np.int16)
    role = onset_roles(pitch, np.ones(onsets.size, dtype=bool))
    feats = features(onsets, weight, role)
    assert feats is not None and feats.shape == (CANDIDATES.size, WEIGHTS.size)
    grid_best = CANDIDATES[int(np.argmax(feats @ WEIGHTS))]
    estimate = estimate_bpm(onsets, weight, role)
    assert estimate == pytest.approx(grid_best, rel=0.01)
    assert estimate == pytest.approx(103.0, rel=0.04)


def test_too_few_onsets_give_no_estimate() -> None:
    onsets = np.arange(5) * 0.5
    assert estimate_bpm(onsets, np.ones(5), np.zeros(5, dtype=np.int8)) is None


def test_polyphony_of_overlapping_tracks_with_a_gap() -> None:
    # Track 1: 0-480 and 1920-2400; track 2: 240-720. Notes sound for 480+480+480 ticks
    # over a union of 720 + 480 ticks -> 1440 / 1200.
    a = analyze_bytes(smf(timed_notes([(0, 480, 60), (1920, 2400, 64)]),
                          timed_notes([(240, 720, 67)], channel=1)))
    assert a.polyphony == pytest.approx(1440 / 1200, abs=1e-3)
    assert a.channels == 2 and a.notes == 3
