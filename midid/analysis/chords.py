"""Chords per beat by template matching, and roman numerals against the key.

Chords change on beats, but a file's beats need not fall on multiples of its ticks per quarter
(performances and audio-aligned files such as POP909 start the grid anywhere), so the beat
phase is estimated first: the circular mean of note onsets modulo one beat. The notes sounding
in each beat of that grid (overlap in ticks, so a held chord counts fully, and lower notes
count more: accompaniment names the harmony, the melody decorates it) form a chroma vector.
Each of 12 roots x 9 qualities is scored as the correlation of the chroma with the chord's
template, plus a bonus when the lowest sounding note is the root or a chord tone. A Viterbi
pass with a fixed cost per chord change picks the chord sequence (so a passing note does not
flip the chord, yet a real change is placed exactly), and repeats are merged. Beats with no
notes are "N". Per-beat segments on the phase found scored 3.5 points higher against POP909
annotations than half beats on the tick grid, at half the Viterbi steps (docs/analysis.md).
Chroma, scores and Viterbi are one compiled pass over notes and beats
(:func:`.kernels.chord_path`): a beat costs about a microsecond, whatever the file.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels import beat_grid as beat_grid_kernel
from .kernels import chord_path
from .key import TONICS

QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "7": (0, 4, 7, 10),
}
# Score offsets per quality (order of QUALITIES): dim, aug and sus chords need clear evidence.
# These and the constants below were chosen on POP909 songs 001-150 and checked on 151-300
# (docs/analysis.md).
_QUALITY_BIAS = np.array([0.0, 0.0, -0.3, -0.3, -0.3, -0.3, 0.0, 0.0, 0.0])
_SWITCH_PENALTY = 0.3  # score a chord change must gain over keeping the chord
_BASS_ROOT_BONUS = 0.1  # score bonus when the lowest sounding note is the chord's root
_BASS_TONE_BONUS = 0.1  # ... when it is any chord tone (inversions)
_LOW_REGISTER_WEIGHT = 1.0  # extra weight per octave below C5 (accompaniment over melody)
_PHASE_BINS = 48  # resolution of the beat-phase histogram (a 64th-note triplet)
_MIN_PHASE_AGREEMENT = 0.1  # mean resultant length below which onsets show no beat phase
MAX_SEGMENTS = 20_000
MAX_PAIRS = 2_000_000


_ROOT_WEIGHT = 0.25  # extra template weight on the root (the most reliable tone)


def _chord_tables() -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Intervals per quality (-1 padded, root first), the scale that turns a template's sum
    over a z-scored chroma into its correlation with the z-scored template (divided by 12),
    and the (root, quality) of each chord index = quality index x 12 + root."""
    intervals = np.full((len(QUALITIES), 4), -1, dtype=np.int64)
    scale = np.zeros(len(QUALITIES))
    for q, ivs in enumerate(QUALITIES.values()):
        t = np.zeros(12)
        t[list(ivs)] = 1.0
        t[0] += _ROOT_WEIGHT
        intervals[q, : len(ivs)] = ivs
        scale[q] = 1.0 / t.std() / 12.0
    labels = [(root, quality) for quality in QUALITIES for root in range(12)]
    return intervals, scale, labels


_INTERVALS, _SCALE, _LABELS = _chord_tables()
# Label of each chord index, "N" (no chord) at index -1.
_NAMES = [f"{TONICS[root]}:{quality}" for root, quality in _LABELS] + ["N"]
_MINOR_QUALITIES = frozenset({"min", "min7", "dim"})
# Cell of each chord index in root_profiles' (2, 12) table (minor-third row x 12 + root),
# and 24 (dropped) for no chord at index -1.
_CELL = np.array([12 * (quality in _MINOR_QUALITIES) + root for root, quality in _LABELS] + [24])
_ROOT_OF = np.zeros((len(_LABELS), 12))
_TONES_OF = np.zeros((len(_LABELS), 12))
for _i, (_root, _quality) in enumerate(_LABELS):
    _ROOT_OF[_i, _root] = 1.0
    _TONES_OF[_i, [(_root + iv) % 12 for iv in QUALITIES[_quality]]] = 1.0
# Bass bonus of every chord, by the pitch class of the lowest sounding note: (12, chords).
_BASS_OF = np.ascontiguousarray((_BASS_ROOT_BONUS * _ROOT_OF + _BASS_TONE_BONUS * _TONES_OF).T)


class BeatGrid(NamedTuple):
    """Where chord segments fall, in ticks: ``phase`` (0..tpq-1) from a tick-grid beat to where
    the music's beats fall; ``shift`` = (tpq - phase) % tpq is added to every note so beats
    land on multiples of ``step`` (tpq, or more for huge files); ``segments`` counts them."""

    phase: int
    shift: int
    step: int
    segments: int


def beat_grid(start: np.ndarray, end: np.ndarray, tpq: int) -> BeatGrid:
    """The chord grid of notes (ticks): the beat phase is the circular mean of onsets modulo
    one quarter note (a coarse histogram, cheap for long files), 0 when the onsets show no
    phase (even eighths); a beat per segment unless more than MAX_SEGMENTS segments or
    MAX_PAIRS note-segment overlaps would be needed."""
    return BeatGrid(*beat_grid_kernel(start, end, tpq, _PHASE_BINS, _MIN_PHASE_AGREEMENT,
                                      MAX_SEGMENTS, MAX_PAIRS))


class ChordRuns(NamedTuple):
    """Chords in order: ``beat`` where each starts (quarter notes from the file start, the
    first 0.0) and ``chord``, its index (quality x 12 + root; -1 = no chord)."""

    beat: np.ndarray
    chord: np.ndarray


def chord_runs(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, tpq: int) -> ChordRuns:
    """The chords of notes (ticks) on their beat grid (see :func:`beat_grid`)."""
    if start.size == 0:
        return ChordRuns(np.zeros(0), np.zeros(0, dtype=np.int64))
    grid = beat_grid(start, end, tpq)
    return ChordRuns(*chord_path(
        start, end, pitch, grid.shift, grid.step, grid.segments, _INTERVALS, _ROOT_WEIGHT,
        _SCALE, _QUALITY_BIAS, _BASS_OF, _LOW_REGISTER_WEIGHT, _SWITCH_PENALTY, tpq,
    ))


def labelled(runs: ChordRuns) -> list[tuple[float, str]]:
    """(beat, label) pairs of chord runs; labels are ``root:quality`` with sharp roots
    (``"A:min"``) or ``"N"`` where nothing sounds."""
    return list(zip(runs.beat.tolist(), [_NAMES[i] for i in runs.chord.tolist()], strict=True))


def detect_chords(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, tpq: int
) -> list[tuple[float, str]]:
    """(beat, label) chord segments of notes (ticks) in order, see :func:`chord_runs` and
    :func:`labelled`."""
    return labelled(chord_runs(start, end, pitch, tpq))


def root_profiles(runs: ChordRuns, end_beat: float) -> np.ndarray:
    """(2, 12) beats held by chords of each root: row 0 chords with a major third (and sus
    chords), row 1 chords with a minor third. ``end_beat`` (quarter notes) closes the last
    run. The key finder reads the tonic off these (a song dwells on its tonic chord, and
    tells a major key from its relative minor by which of the two chords it dwells on)."""
    held = np.maximum(np.diff(runs.beat, append=end_beat), 0.0)
    return np.bincount(_CELL[runs.chord], weights=held, minlength=25)[:24].reshape(2, 12)


# Degree names by semitones above the tonic; minor keys name degrees from the minor scale.
_NUMERALS = {
    "major": ("I", "bII", "II", "bIII", "III", "IV", "#IV", "V", "bVI", "VI", "bVII", "VII"),
    "minor": ("I", "bII", "II", "III", "#III", "IV", "#IV", "V", "VI", "#VI", "VII", "#VII"),
}
_SUFFIX = {"dim": "o", "aug": "+", "sus2": "sus2", "sus4": "sus4", "maj7": "maj7",
           "min7": "7", "7": "7"}
def roman(label: str, key_tonic: str, key_mode: str) -> str:
    """Roman numeral of a chord label relative to a key (``"A:min"`` in C major -> ``"vi"``).

    Minor-quality chords are lower case; chromatic roots get ``b``/``#`` (in C major, Bb major
    is ``"bVII"``; in A minor, C major is ``"III"``)."""
    root_name, quality = label.split(":")
    degree = (TONICS.index(root_name) - TONICS.index(key_tonic)) % 12
    numeral = _NUMERALS[key_mode][degree]
    if quality in _MINOR_QUALITIES:
        accidental = numeral.rstrip("IV")
        numeral = accidental + numeral[len(accidental):].lower()
    return numeral + _SUFFIX.get(quality, "")


def progression(
    chords: list[tuple[float, str]], key_tonic: str | None, key_mode: str | None, limit: int = 8
) -> list[str]:
    """Roman numerals of the chord sequence: its repeating cycle if it has one, else the
    first ``limit`` chords. Empty without a key."""
    if key_tonic is None or key_mode is None:
        return []
    labels = [label for _, label in chords if label != "N"]
    labels = [lab for i, lab in enumerate(labels) if i == 0 or lab != labels[i - 1]]
    if not labels:
        return []
    cycle = _shortest_cycle(labels, limit)
    return [roman(lab, key_tonic, key_mode) for lab in cycle]


def _shortest_cycle(labels: list[str], limit: int) -> list[str]:
    """The shortest prefix that, repeated, reproduces the sequence (at least twice over)."""
    n = len(labels)
    for size in range(2, min(limit, n // 2) + 1):
        if all(labels[i] == labels[i % size] for i in range(n)):
            return labels[:size]
    return labels[:limit]
