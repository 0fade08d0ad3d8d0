"""Third-pass analysis: the compiled kernels against plain numpy references, numba's cache
directory, the tempo-map shortcut of the onset tempo, and chord-root key evidence."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mido
import numpy as np
import pytest

from midid.analysis import analyze_bytes
from midid.analysis import chords as chords_mod
from midid.analysis.drums import PART_OF_PITCH
from midid.analysis import timing
from midid.analysis.kernels import chord_path, envelope_acf, note_columns, note_summary, tidy_tempo_map
from midid.analysis.parse import ParsedMidi, parse_midi
from midid.compiled import numba_cache_dir
from test_analysis_fast import TPQ, smf, timed_notes



def random_notes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    start = rng.integers(0, 40 * TPQ, n).astype(np.int64)
    end = start + rng.integers(0, 3 * TPQ, n)
    pitch = rng.integers(24, 100, n).astype(np.int16)
    return start, end, pitch


# ----- numba's cache directory ------------------------------------------------------------
def test_cache_dir_is_left_to_numba_when_the_package_is_writable_or_the_user_chose(
    tmp_path: Path,
) -> None:
    assert numba_cache_dir(tmp_path, {}) is None  # numba writes beside the package
    assert numba_cache_dir(tmp_path / "missing", {"NUMBA_CACHE_DIR": "/x"}) is None


def test_cache_dir_falls_back_to_xdg_then_temp_for_a_read_only_package(tmp_path: Path) -> None:
    read_only = tmp_path / "site-packages" / "midid" / "analysis"  # not there: not writable
    xdg = tmp_path / "xdg"
    chosen = numba_cache_dir(read_only, {"XDG_CACHE_HOME": str(xdg)})
    assert chosen == str(xdg / "midid" / "numba") and Path(chosen).is_dir()
    home = tmp_path / "home"
    chosen = numba_cache_dir(read_only, {"HOME": str(home)})
    assert chosen == str(home / ".cache" / "midid" / "numba") and Path(chosen).is_dir()
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # cache homes that cannot hold directories
    chosen = numba_cache_dir(read_only, {"XDG_CACHE_HOME": str(blocked), "HOME": str(blocked)})
    assert chosen is not None and Path(chosen).is_dir() and "midid-numba-" in chosen


# ----- kernels against numpy references ---------------------------------------------------
def reference_polyphony(start: np.ndarray, end: np.ndarray) -> float:
    """Mean sounding notes while any sounds, by brute force over every tick."""
    if start.size == 0:
        return 0.0
    ticks = np.zeros(int(end.max()) + 2)
    np.add.at(ticks, start, 1)
    np.add.at(ticks, end, -1)
    sounding = np.cumsum(ticks)[:-1]
    busy = np.count_nonzero(sounding > 0)
    return float(sounding.sum() / busy) if busy else 1.0


@pytest.mark.parametrize("seed", range(6))
def test_note_summary_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    start, end, pitch = random_notes(rng, int(rng.integers(1, 300)))
    chord = slice(0, start.size // 4)  # a chord of many notes at one onset
    end[chord] += start[0] - start[chord]
    start[chord] = start[0]
    drum = rng.random(start.size) < 0.3
    voice = rng.integers(0, 3, start.size).astype(np.int16)
    summary = note_summary(start, end, pitch, voice, drum, 4, PART_OF_PITCH,
                           np.zeros(0, dtype=np.intp))
    given = note_summary(start, end, pitch, voice, drum, 4, PART_OF_PITCH,
                         np.argsort(start, kind="stable"))
    assert repr(given) == repr(summary)  # the caller's sort changes nothing
    (first, last, low, high, parts, per_voice, pitched_per_voice, poly, pitched_poly,
     chord_share, median) = summary
    assert (first, last, low, high) == (start.min(), end.max(), pitch.min(), pitch.max())
    assert parts.tolist() == np.bincount(PART_OF_PITCH[pitch[drum]], minlength=6).tolist()
    assert per_voice.tolist() == np.bincount(voice, minlength=4).tolist()
    assert pitched_per_voice.tolist() == np.bincount(voice[~drum], minlength=4).tolist()
    assert poly == pytest.approx(reference_polyphony(start, end))
    assert pitched_poly == pytest.approx(reference_polyphony(start[~drum], end[~drum]))
    if (~drum).any():
        _, counts = np.unique(start[~drum], return_counts=True)
        assert chord_share == pytest.approx((counts >= 3).mean())
        assert median == np.median(pitch[~drum])
    else:
        assert (chord_share, median) == (0.0, -1.0)


def reference_chord_path(start: np.ndarray, end: np.ndarray, pitch: np.ndarray,
                         voice: np.ndarray, step: int, n_seg: int) -> np.ndarray:
    """The chord path by the textbook route: counted voices from per-voice piano rolls,
    dense chroma, correlation with dense z-scored templates, and a full (chords x chords)
    Viterbi with the change cost of each beat."""
    c = chords_mod
    per_beat = []
    for v in range(voice.max() + 1):
        mine = voice == v
        roll = np.zeros(n_seg, dtype=bool)
        for s, e in zip(start[mine].tolist(), end[mine].tolist(), strict=True):
            roll[s // step:max(e - 1, s) // step + 1] = True
        length = np.maximum(end[mine] - start[mine], 1).sum()
        per_beat.append(length / roll.sum() / step if roll.any() else 0.0)
    mean_pitch = [pitch[voice == v].mean() if (voice == v).any() else np.inf
                  for v in range(voice.max() + 1)]
    counted = np.array(per_beat) >= c._CHORDAL_NOTES
    counted = counted if counted.any() else np.ones_like(counted)
    counted[int(np.argmin(mean_pitch))] = True
    chroma = np.zeros((n_seg, 12))
    on_beat = np.zeros(2)
    for s, e, p, v in zip(start.tolist(), end.tolist(), pitch.tolist(), voice.tolist(),
                          strict=True):
        nearest = round(s / step)
        if abs(s - nearest * step) < c._NEAR_BEAT * step:
            on_beat[nearest % 2] += max(e - s, 1)
        for seg in range(min(s // step, n_seg - 1), min(max(e - 1, s) // step, n_seg - 1) + 1):
            overlap = min(e, (seg + 1) * step) - max(s, seg * step)
            if overlap > 0 and counted[v]:
                chroma[seg, p % 12] += overlap * (1 + c._LOW_REGISTER_WEIGHT * max(72 - p, 0) / 12)
    templates = []
    for quality, intervals in c.QUALITIES.items():
        for root in range(12):
            t = np.zeros(12)
            t[[(root + i) % 12 for i in intervals]] = 1.0
            t[root] += c._ROOT_WEIGHT
            templates.append((t - t.mean()) / t.std() / 12)
    templates = np.array(templates)
    root = np.sqrt(chroma)
    std = root.std(axis=1, keepdims=True)
    z = np.divide(root - root.mean(axis=1, keepdims=True), std, out=np.zeros_like(root),
                  where=std > 0)
    scores = z @ templates.T + np.repeat(c._QUALITY_BIAS, 12)
    weak = [parity for parity in range(2)
            if on_beat[1 - parity] > (1 + c._METER_MARGIN) * on_beat[parity]]
    k = scores.shape[1]
    delta, back = scores[0].copy(), []
    for t in range(1, n_seg):
        change = c._WEAK_CHANGE if weak and t % 2 == weak[0] else c._STRONG_CHANGE
        cost = np.full((k, k), -change)
        np.fill_diagonal(cost, 0.0)
        total = delta[:, None] + cost  # from (rows) -> to (columns)
        back.append(total.argmax(axis=0))
        delta = total.max(axis=0) + scores[t]
    path = [int(delta.argmax())]
    for b in reversed(back):
        path.append(int(b[path[-1]]))
    path = np.array(path[::-1])
    path[chroma.sum(axis=1) == 0] = -1
    return path


@pytest.mark.parametrize("seed", range(6))
def test_chord_path_matches_a_dense_viterbi(seed: int) -> None:
    rng = np.random.default_rng(seed)
    start, end, pitch = random_notes(rng, 120)
    # Three voices: one of them chordal (which one depends on the seed), the others single
    # lines, one of which may be the lowest voice.
    voice = rng.integers(0, 3, start.size)
    held = voice == seed % 3
    end[held] = start[held] + rng.integers(TPQ, 6 * TPQ, held.sum())
    if seed >= 3:  # pitch order of the voices changes which one is the bass
        pitch[voice == 2] -= 24
    n_seg = int(end.max()) // TPQ + 1
    c = chords_mod
    beat, chord = chord_path(
        start, end, pitch, voice, 0, TPQ, n_seg, c._INTERVALS, c._ROOT_WEIGHT, c._SCALE,
        c._QUALITY_BIAS, c._LOW_REGISTER_WEIGHT, c._CHORDAL_NOTES, c._STRONG_CHANGE,
        c._WEAK_CHANGE, c._NEAR_BEAT, c._METER_MARGIN, TPQ)
    path = reference_chord_path(start, end, pitch, voice, TPQ, n_seg)
    change = np.flatnonzero(np.diff(path, prepend=-2))
    assert beat.tolist() == change.astype(float).tolist()  # one segment per beat here
    assert chord.tolist() == path[change].tolist()


@pytest.mark.parametrize(("frames", "density"), [(40, 0.5), (700, 0.15), (1000, 1.0)])
def test_envelope_acf_equals_the_fft_autocorrelation(frames: int, density: float) -> None:
    rng = np.random.default_rng(frames)
    env = np.where(rng.random((4, frames)) < density, rng.random((4, frames)), 0.0)
    total = env.sum(axis=1)
    smooth = np.array([0.5, 1.0, 0.5])
    lags = 202
    n = 4096  # long enough that the FFT's autocorrelation does not wrap
    spec = np.fft.rfft(env - (total / frames)[:, None], n, axis=1) * np.fft.rfft(smooth, n)
    reference = np.fft.irfft(spec.real**2 + spec.imag**2, n, axis=1)[:, :lags]
    sparse = envelope_acf(env, total, lags, np.correlate(smooth, smooth, "full"))
    np.testing.assert_allclose(sparse, reference, atol=1e-9)


def test_chord_grid_widens_its_step_for_huge_files() -> None:
    start = np.array([0, 10**9], dtype=np.int64)  # two notes a billion ticks apart
    grid = chords_mod.beat_grid(start, start + 100, TPQ)
    assert grid.segments <= chords_mod.MAX_SEGMENTS and grid.step > TPQ
    held = np.zeros(50_000, dtype=np.int64)  # 50,000 notes held over the whole file
    grid = chords_mod.beat_grid(held, held + 200 * TPQ, TPQ)
    assert grid.step > TPQ and 50_000 * (200 * TPQ // grid.step + 1) <= chords_mod.MAX_PAIRS


# ----- tempo: the tempo map as a shortcut ---------------------------------------------------
def beat(bars: int, jitter_ticks: int = 0, seed: int = 0) -> list[tuple[int, int, int]]:
    """Kick on 1 and 3, snare on 2 and 4, eighth hats (ticks), optionally jittered."""
    rng = np.random.default_rng(seed)
    events = []
    for eighth in range(bars * 8):
        t = eighth * TPQ // 2 + (int(rng.integers(-jitter_ticks, jitter_ticks + 1))
                                 if jitter_ticks else 0) + jitter_ticks
        events.append((t, t + 60, 42))
        if eighth % 4 == 0:
            events.append((t, t + 60, 36))
        if eighth % 4 == 2:
            events.append((t, t + 60, 38))
    return events


def test_a_quantised_file_gets_its_tempo_map_tempo_as_estimate() -> None:
    # 61 BPM: the scan alone would read a straight-eighth beat this slow as double time
    # (docs/analysis.md), but notes written on the file's own beat grid are at its tempo.
    tempo = mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(61.0), time=0)
    a = analyze_bytes(smf([tempo, *timed_notes(beat(8), channel=9)]))
    assert a.bpm == a.bpm_estimate == pytest.approx(61.0, abs=0.01)


def test_a_performance_against_a_wrong_tempo_map_is_scanned() -> None:
    # Played at 90 BPM (in seconds) but written against a 120 BPM map and off the tick
    # grid: the estimate must come from the onsets, not from the map.
    ticks_per_90_beat = TPQ * 120 // 90
    events = [(s * ticks_per_90_beat // TPQ, e * ticks_per_90_beat // TPQ, p)
              for s, e, p in beat(8, jitter_ticks=7)]
    tempo = mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120.0), time=0)
    a = analyze_bytes(smf([tempo, *timed_notes(events, channel=9)]))
    assert a.bpm == 120.0 and a.bpm_source == "meta"
    assert a.bpm_estimate == pytest.approx(90.0, rel=0.04)


def test_a_quantised_file_with_tempo_changes_is_scanned() -> None:
    # 100 BPM for 8 bars then 150: the map has no one tempo, so the onsets (first 20 s,
    # all at 100) decide.
    msgs = [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100.0), time=0),
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(150.0), time=32 * TPQ)]
    a = analyze_bytes(smf(msgs, timed_notes(beat(16), channel=9)))
    assert a.tempo_changes == 1
    assert a.bpm_estimate == pytest.approx(100.0, rel=0.04)


# ----- key: chord roots tell a major key from its relative minor ---------------------------
def test_chord_root_profiles_count_beats_per_root_and_third() -> None:
    labels = ["N", "A:min", "C:maj7", "A:min7", "B:dim"]
    index = [-1] + [chords_mod._NAMES.index(label) for label in labels[1:]]
    runs = chords_mod.ChordRuns(np.array([0.0, 1.0, 5.0, 7.0, 8.0]), np.array(index))
    assert chords_mod.labelled(runs) == list(zip([0.0, 1.0, 5.0, 7.0, 8.0], labels))
    roots = chords_mod.root_profiles(runs, end_beat=10.0)
    assert roots[1, 9] == 5.0 and roots[0, 0] == 2.0 and roots[1, 11] == 2.0
    assert roots.sum() == 9.0  # the leading "N" beat counts for no root


def test_a_minor_song_is_not_read_as_its_relative_major() -> None:
    # i - iv - V - i in A minor with a C major melody line over it: the same notes as
    # C major but for G#; the chords dwell on A minor.
    chords = [(45, 57, 60, 64), (50, 57, 62, 65), (52, 56, 59, 64), (45, 57, 60, 64)]
    melody = [72, 71, 72, 76, 74, 72, 71, 69]
    events = []
    for rep in range(4):
        for i, chord in enumerate(chords):
            s = (rep * 4 + i) * 4 * TPQ
            events += [(s, s + 4 * TPQ - 10, p) for p in chord]
            events += [(s + k * TPQ // 2, s + (k + 1) * TPQ // 2, melody[k]) for k in range(8)]
    a = analyze_bytes(smf(timed_notes(events)))
    assert (a.key_tonic, a.key_mode) == ("A", "minor")
    assert a.progression == ["i", "iv", "V"]


def test_warm_up_readies_every_kernel_in_a_fresh_process() -> None:
    # A new process, so kernels other tests ran here cannot hide one warm_up misses. The pool
    # workers' warm-up: the analysis kernels and the split's type-0 channel walk.
    code = ("from midid.tasks import warm_up\n"
            "from midid.compiled import KERNELS, ready_kernels\n"
            "assert not ready_kernels()\n"
            "warm_up()\n"
            "print(sorted(set(KERNELS) - ready_kernels()), len(KERNELS))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], check=True)
    assert done.stdout.split() == ["[]", "11"]


# ----- the parse's columns ----------------------------------------------------------------
def test_note_columns_match_the_numpy_conversion() -> None:
    """int64 starts and ends (negative durations count as 0), int16 pitch and velocity, and
    the earliest start (0 at most), from symusic's int32/int8 columns."""
    rng = np.random.default_rng(5)
    for n in (0, 1, 7, 500):
        time = rng.integers(-2**31, 2**31 - 1, n, dtype=np.int64).astype(np.int32)
        if n > 1:
            time[: n // 2] = np.abs(time[: n // 2])
        duration = rng.integers(-2**31, 2**31 - 1, n, dtype=np.int64).astype(np.int32)
        pitch = rng.integers(-128, 127, n).astype(np.int8)
        velocity = rng.integers(-128, 127, n).astype(np.int8)
        start, end, pitch16, velocity16, earliest = note_columns(time, duration, pitch, velocity)
        assert start.dtype == end.dtype == np.int64 and pitch16.dtype == velocity16.dtype == np.int16
        np.testing.assert_array_equal(start, time.astype(np.int64))
        np.testing.assert_array_equal(end, time.astype(np.int64) + np.maximum(duration, 0))
        np.testing.assert_array_equal(pitch16, pitch.astype(np.int16))
        np.testing.assert_array_equal(velocity16, velocity.astype(np.int16))
        assert earliest == min(0, int(time.min(initial=0)))


def reference_tempo_map(ticks: np.ndarray, mspq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = mspq > 0
    ticks, mspq = ticks[keep], mspq[keep]
    if ticks.size < 2:
        return ticks, mspq
    order = np.argsort(ticks, kind="stable")
    ticks, mspq = ticks[order], mspq[order]
    last = np.append(ticks[1:] != ticks[:-1], True)
    return ticks[last], mspq[last]


def test_tidy_tempo_map_keeps_positive_tempi_in_order_and_the_last_at_each_tick() -> None:
    rng = np.random.default_rng(9)
    for n in (2, 3, 10, 200):
        for _ in range(50):
            ticks = rng.integers(0, max(n // 2, 2), n).astype(np.int64)  # many shared ticks
            mspq = rng.integers(-2, 4, n).astype(np.int64) * 100_000  # zero and negative too
            got, want = tidy_tempo_map(ticks, mspq), reference_tempo_map(ticks, mspq)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    ticks, mspq = np.array([480, 0, 480, 960]), np.array([400_000, 500_000, 300_000, 0])
    tidy = tidy_tempo_map(ticks, mspq)
    assert tidy[0].tolist() == [0, 480] and tidy[1].tolist() == [500_000, 300_000]


def test_a_tempo_map_spread_over_tracks_is_read_in_tick_order() -> None:
    conductor = [mido.MetaMessage("set_tempo", tempo=500_000, time=0),
                 mido.MetaMessage("set_tempo", tempo=400_000, time=8 * TPQ)]
    notes_and_tempo = [mido.MetaMessage("set_tempo", tempo=600_000, time=4 * TPQ),
                       *timed_notes([(4 * TPQ + i * TPQ, 4 * TPQ + i * TPQ + TPQ // 2, 60) for i in range(8)])]
    midi = parse_midi(smf(conductor, notes_and_tempo))
    assert midi.parser == "symusic"
    assert midi.tempo_ticks.tolist() == [0, 4 * TPQ, 8 * TPQ]
    assert midi.tempo_mspq.tolist() == [500_000, 600_000, 400_000]


# ----- the tempo map's dominant tempo -------------------------------------------------------
def with_tempo_map(ticks: np.ndarray, mspq: np.ndarray) -> ParsedMidi:
    """A one-note file's parse, given the tempo map (set-tempo ticks, microseconds per quarter)."""
    note = parse_midi(smf([mido.Message("note_on", note=60, velocity=90, time=0),
                           mido.Message("note_off", note=60, velocity=0, time=TPQ)]))
    return replace(note, tempo_ticks=ticks, tempo_mspq=mspq)


def test_short_and_long_tempo_maps_are_summed_alike() -> None:
    """tempo_summary reads maps of up to _SMALL_MAP events with plain ints and longer ones
    with numpy: the same map, cut to any length, must get the same answer both ways (ties
    included: values are drawn from a handful, spans often equal)."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(2, 40))
        ticks = np.sort(rng.choice(np.arange(0, 50) * TPQ, n, replace=False)).astype(np.int64)
        if trial % 3 == 0:
            ticks[0] = 0
        mspq = rng.choice([400_000, 500_000, 600_000], n).astype(np.int64)
        midi = with_tempo_map(ticks, mspq)
        last = int(rng.integers(0, 60)) * TPQ
        short = timing.tempo_summary(midi, last)
        timing._SMALL_MAP, saved = 0, timing._SMALL_MAP
        try:
            long = timing.tempo_summary(midi, last)
        finally:
            timing._SMALL_MAP = saved
        assert short == long, (ticks.tolist(), mspq.tolist(), last)


def test_one_position_in_seconds_is_the_array_answer() -> None:
    """seconds_at walks the map on plain numbers; ticks_to_seconds on arrays: equal to the
    last bit, for maps that start at 0 or later, positions before, on and after changes."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        ticks = np.sort(rng.choice(np.arange(0, 40) * 37, n, replace=False)).astype(np.int64)
        mspq = rng.integers(200_000, 1_500_000, n).astype(np.int64)
        midi = with_tempo_map(ticks, mspq)
        for tick in [0, int(ticks[0]), int(ticks[-1]), int(rng.integers(0, 2000))]:
            assert timing.seconds_at(tick, midi) == float(timing.ticks_to_seconds(np.array([tick]), midi)[0])
