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


def test_beat_phase_follows_long_notes_not_a_busy_offbeat_line() -> None:
    # Chords held two beats on a grid a quarter beat late, under a syncopated line of short
    # notes on the second and fourth sixteenths of each beat (more onsets than the chords
    # have): the chords' onsets set the grid, however many short notes fall between them.
    late = TPQ // 4
    events = []
    for half_bar in range(16):
        s = late + half_bar * 2 * TPQ
        events += [(s, s + 2 * TPQ - 20, p) for p in (48, 55, 64)]
        events += [(s + b * TPQ + k * TPQ // 4, s + b * TPQ + k * TPQ // 4 + 40, 79)
                   for b in range(2) for k in (2, 3)]
    start, end, _ = (np.array(x, dtype=np.int64) for x in zip(*events))
    assert beat_grid(start, end, TPQ).phase == late


def test_a_melody_alone_is_no_chord_when_another_voice_plays_the_chords() -> None:
    # A bar of melody alone, then piano chords C - Am - F - G under it: the melody names no
    # chord by itself, and its notes do not colour the piano's.
    cycle = [(48, 60, 64, 67), (45, 60, 64, 69), (41, 60, 65, 69), (43, 59, 62, 67)]
    piano = [(s, s + 4 * TPQ - 10, p) for i, chord in enumerate(cycle)
             for s in [(i + 1) * 4 * TPQ] for p in chord]
    line = [74, 72, 71, 69, 67, 69, 71, 72]
    melody = [(k * TPQ * 5 // 2, k * TPQ * 5 // 2 + 2 * TPQ, line[k % 8]) for k in range(8)]
    a = analyze_bytes(smf(timed_notes(piano), timed_notes(melody, channel=1)))
    assert [(c["beat"], c["label"]) for c in a.chords] == [
        (0.0, "N"), (4.0, "C:maj"), (8.0, "A:min"), (12.0, "F:maj"), (16.0, "G:maj")]
    alone = analyze_bytes(smf(timed_notes(melody, channel=1)))  # a line by itself: chords
    assert alone.chords and "N" not in {c["label"] for c in alone.chords}


@pytest.mark.parametrize("strong", [0, 1])
def test_an_ambiguous_beat_changes_chord_on_the_strong_beat(strong: int) -> None:
    # C major for three beats, a beat of E and G alone (in both C major and E minor), then
    # E minor: the change goes to beat 4 when the even beats are strong and to beat 3 when
    # the odd ones are. A high single line, left out of the chroma, marks the strong beats.
    chords = [(48, 52, 55)] * 3 + [(52, 55)] + [(52, 55, 59)] * 4
    events = [(b * TPQ, (b + 1) * TPQ, p) for b, chord in enumerate(chords) for p in chord]
    voice = [0] * len(events)
    for b in range(strong, 7, 2):
        events.append((b * TPQ, b * TPQ + TPQ * 19 // 10, 84))
        voice.append(1)
    start, end, pitch = (np.array(x, dtype=np.int64) for x in zip(*events))
    segments = detect_chords(start, end, pitch.astype(np.int16), TPQ, np.array(voice))
    assert segments == [(0.0, "C:maj"), (4.0 - strong, "E:min")]


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
