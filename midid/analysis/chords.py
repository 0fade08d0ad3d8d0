"""Chords per beat by template matching, and roman numerals against the key.

Chords change on beats, but a file's beats need not fall on multiples of its ticks per quarter
(performances and audio-aligned files such as POP909 start the grid anywhere), so the beat
phase is estimated first: where onsets modulo one beat gather most, each weighted by its
note's length (chord tones and bass notes are long and start on the beat; melody and passing
notes are short and fall anywhere, so they neither pull the phase, as they pulled the mean of
all onsets, nor outvote it). Each beat of that grid gets a chroma vector from the notes
sounding in it (overlap in ticks, so a held chord counts fully, and lower notes count more),
square rooted so one loud or doubled note does not outweigh the other tones of the chord.
In an arrangement the accompaniment names the harmony and the melody decorates it: when some
voice plays chords (two or more notes sounding on average), only such voices and the bass
voice (the lowest) are counted, so a melody alone between accompaniment is "N", not a guess.
Each of 12 roots x 9 qualities is scored as the correlation of the chroma with the chord's
template. A Viterbi pass with a cost per chord change picks the chord sequence (so a passing
note does not flip the chord, yet a real change is placed exactly); the cost is lower on
every other beat - the strong beats, those whose onsets hold more note length - because
harmony changes on strong beats (85 % of the changes in POP909's annotations fall on beats
1 and 3). Repeats are merged; beats where no counted voice sounds are "N". How each step
scored against POP909 annotations: docs/analysis.md. Chroma, scores and Viterbi are one
compiled pass over notes and beats (:func:`.kernels.chord_path`): a beat costs about a
microsecond, whatever the file.
"""

from __future__ import annotations

import functools
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
_STRONG_CHANGE = 0.2  # score a chord change on a strong beat must gain over keeping the chord
_WEAK_CHANGE = 0.3  # ... on a weak beat
_NEAR_BEAT = 0.125  # onsets this close to a beat (in beats) tell strong beats from weak ones
_METER_MARGIN = 0.1  # extra share of note length that marks strong beats (else all are)
_CHORDAL_NOTES = 2.0  # mean notes sounding per beat that make a voice an accompaniment
_LOW_REGISTER_WEIGHT = 1.0  # extra weight per octave below C5 (accompaniment over melody)
_ROOT_WEIGHT = 0.1  # extra template weight on the root (the most reliable tone)
_PHASE_BINS = 48  # resolution of the beat-phase histogram (a 64th-note triplet)
# The tick grid's own beat is kept while it holds this share of the note length at the peak.
_GRID_PREFERENCE = 0.8
MAX_SEGMENTS = 20_000
MAX_PAIRS = 2_000_000


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
_NAME_ARRAY = np.array(_NAMES, dtype=object)  # one gather per file instead of one per run
_MINOR_QUALITIES = frozenset({"min", "min7", "dim"})
# Cell of each chord index in root_profiles' (2, 12) table (minor-third row x 12 + root),
# and 24 (dropped) for no chord at index -1.
_CELL = np.array([12 * (quality in _MINOR_QUALITIES) + root for root, quality in _LABELS] + [24])


class BeatGrid(NamedTuple):
    """Where chord segments fall, in ticks: ``phase`` (0..tpq-1) from a tick-grid beat to where
    the music's beats fall; ``shift`` = (tpq - phase) % tpq is added to every note so beats
    land on multiples of ``step`` (tpq, or more for huge files); ``segments`` counts them."""

    phase: int
    shift: int
    step: int
    segments: int


def beat_grid(start: np.ndarray, end: np.ndarray, tpq: int) -> BeatGrid:
    """The chord grid of notes (ticks): the beat phase is where onsets modulo one quarter
    note gather most, weighted by note length (a coarse histogram, refined around its peak),
    0 when the tick grid's own beat holds nearly as much (quantised files, even eighths); a
    beat per segment unless more than MAX_SEGMENTS segments or MAX_PAIRS note-segment
    overlaps would be needed."""
    return BeatGrid(*beat_grid_kernel(start, end, tpq, _PHASE_BINS, _GRID_PREFERENCE,
                                      MAX_SEGMENTS, MAX_PAIRS))


class ChordRuns(NamedTuple):
    """Chords in order: ``beat`` where each starts (quarter notes from the file start, the
    first 0.0) and ``chord``, its index (quality x 12 + root; -1 = no chord)."""

    beat: np.ndarray
    chord: np.ndarray


def chord_runs(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, tpq: int,
    voice: np.ndarray | None = None,
) -> ChordRuns:
    """The chords of notes (ticks) on their beat grid (see :func:`beat_grid`). ``voice``
    numbers each note's voice (track x channel, 0-based), so that single-line voices can be
    left out when others play the chords; None takes all notes as one voice."""
    if start.size == 0:
        return ChordRuns(np.zeros(0), np.zeros(0, dtype=np.int64))
    if voice is None:
        voice = np.zeros(start.size, dtype=np.int16)  # the dtype parse_midi gives
    grid = beat_grid(start, end, tpq)
    return ChordRuns(*chord_path(
        start, end, pitch, voice, grid.shift, grid.step, grid.segments,
        _INTERVALS, _ROOT_WEIGHT, _SCALE, _QUALITY_BIAS, _LOW_REGISTER_WEIGHT, _CHORDAL_NOTES,
        _STRONG_CHANGE, _WEAK_CHANGE, _NEAR_BEAT, _METER_MARGIN, tpq,
    ))


def labelled(runs: ChordRuns) -> list[tuple[float, str]]:
    """(beat, label) pairs of chord runs; labels are ``root:quality`` with sharp roots
    (``"A:min"``) or ``"N"`` where nothing sounds."""
    return list(zip(runs.beat.tolist(), _NAME_ARRAY[runs.chord].tolist(), strict=True))


def detect_chords(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, tpq: int,
    voice: np.ndarray | None = None,
) -> list[tuple[float, str]]:
    """(beat, label) chord segments of notes (ticks) in order, see :func:`chord_runs` and
    :func:`labelled`."""
    return labelled(chord_runs(start, end, pitch, tpq, voice))


def root_profiles(runs: ChordRuns, end_beat: float) -> np.ndarray:
    """(2, 12) beats held by chords of each root: row 0 chords with a major third (and sus
    chords), row 1 chords with a minor third. ``end_beat`` (quarter notes) closes the last
    run. The key finder reads the tonic off these (a song dwells on its tonic chord, and
    tells a major key from its relative minor by which of the two chords it dwells on)."""
    beat = runs.beat
    held = np.empty(beat.size)  # np.diff(beat, append=end_beat) without the concatenation
    np.subtract(beat[1:], beat[:-1], out=held[:-1])
    if beat.size:
        held[-1] = end_beat - beat[-1]
    np.maximum(held, 0.0, out=held)
    return np.bincount(_CELL[runs.chord], weights=held, minlength=25)[:24].reshape(2, 12)


# Degree names by semitones above the tonic; minor keys name degrees from the minor scale.
_NUMERALS = {
    "major": ("I", "bII", "II", "bIII", "III", "IV", "#IV", "V", "bVI", "VI", "bVII", "VII"),
    "minor": ("I", "bII", "II", "III", "#III", "IV", "#IV", "V", "VI", "#VI", "VII", "#VII"),
}
_SUFFIX = {"dim": "o", "aug": "+", "sus2": "sus2", "sus4": "sus4", "maj7": "maj7",
           "min7": "7", "7": "7"}


@functools.lru_cache(maxsize=4096)  # a song names a handful of (chord, key) pairs, again and again
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
        # Period ``size`` means every label equals the one ``size`` later: one list compare
        # that stops at the first mismatch, not a repeated copy of the prefix.
        if labels[size:] == labels[:-size]:
            return labels[:size]
    return labels[:limit]
