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
"""

from __future__ import annotations

import numpy as np

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
_PHASE_ROTOR = np.exp(2j * np.pi * np.arange(_PHASE_BINS) / _PHASE_BINS)
MAX_SEGMENTS = 20_000
MAX_PAIRS = 2_000_000


def _templates() -> tuple[np.ndarray, list[tuple[int, str]]]:
    rows, labels = [], []
    for quality, intervals in QUALITIES.items():
        for root in range(12):
            t = np.zeros(12)
            t[[(root + i) % 12 for i in intervals]] = 1.0
            t[root] += 0.25  # the root is the most reliable tone
            rows.append((t - t.mean()) / t.std() / 12.0)
            labels.append((root, quality))
    return np.array(rows), labels


_TEMPLATES, _LABELS = _templates()
_ROOT_OF = np.zeros((len(_LABELS), 12))
_TONES_OF = np.zeros((len(_LABELS), 12))
for _i, (_root, _quality) in enumerate(_LABELS):
    _ROOT_OF[_i, _root] = 1.0
    _TONES_OF[_i, [(_root + iv) % 12 for iv in QUALITIES[_quality]]] = 1.0
_BIAS = np.repeat(_QUALITY_BIAS, 12)
# Bass bonus of every chord, by the pitch class of the lowest sounding note: (12, chords).
_BASS_OF = (_BASS_ROOT_BONUS * _ROOT_OF + _BASS_TONE_BONUS * _TONES_OF).T


def segment_chroma(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, step: int, n_seg: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chroma (n_seg, 12) of sounding ticks per segment, and the lowest pitch per segment
    (128 where silent). Times in ticks; ``step`` ticks per segment."""
    s0 = np.minimum(start // step, n_seg - 1)
    s1 = np.minimum(np.maximum(end - 1, start) // step, n_seg - 1)
    span = s1 - s0 + 1
    note = np.repeat(np.arange(start.size), span)
    seg = np.arange(note.size) - np.repeat(np.cumsum(span) - span, span) + s0[note]
    overlap = np.minimum(end[note], (seg + 1) * step) - np.maximum(start[note], seg * step)
    overlap = np.maximum(overlap, 0).astype(np.float64)
    overlap *= 1.0 + _LOW_REGISTER_WEIGHT * np.maximum(72 - pitch[note], 0) / 12.0
    chroma = np.bincount(seg * 12 + pitch[note] % 12, weights=overlap, minlength=n_seg * 12)
    low = np.full(n_seg, 128, dtype=np.int16)
    heard = overlap > 0
    key = np.sort(seg[heard] * 128 + pitch[note][heard])  # lowest pitch first within a segment
    first = np.flatnonzero(np.diff(key // 128, prepend=-1))
    low[key[first] // 128] = key[first] % 128
    return chroma.reshape(n_seg, 12), low


def beat_phase(start: np.ndarray, tpq: int) -> int:
    """Ticks (0..tpq-1) from a tick-grid beat to where the music's beats fall: the circular
    mean of onsets modulo one quarter note, from a coarse histogram (cheap for long files)."""
    nearest = (start % tpq * _PHASE_BINS + tpq // 2) // tpq % _PHASE_BINS
    hist = np.bincount(nearest, minlength=_PHASE_BINS)
    resultant = hist @ _PHASE_ROTOR
    if abs(resultant) < _MIN_PHASE_AGREEMENT * start.size:  # e.g. even eighths: keep the grid
        return 0
    return int(round(np.angle(resultant) / (2 * np.pi) % 1.0 * tpq)) % tpq


def detect_chords(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, tpq: int
) -> list[tuple[float, str]]:
    """(beat, label) chord segments in order; beats in quarter notes from the file start
    (the first is 0.0, later ones sit on the file's own beat grid, see :func:`beat_phase`).

    Labels are ``root:quality`` with sharp roots (``"A:min"``) or ``"N"`` where nothing sounds.
    """
    if start.size == 0:
        return []
    shift = (tpq - beat_phase(start, tpq)) % tpq  # ticks added so beats fall on the grid
    start, end = start + shift, end + shift
    step = tpq
    last = int(end.max())
    n_seg = max(1, -(-last // step))
    if n_seg > MAX_SEGMENTS:
        step = -(-last // MAX_SEGMENTS)
        n_seg = max(1, -(-last // step))
    while int(np.sum((np.maximum(end - 1, start) // step) - start // step + 1)) > MAX_PAIRS:
        step *= 2
        n_seg = max(1, -(-last // step))
    chroma, low = segment_chroma(start, end, pitch, step, n_seg)
    sounding = chroma.sum(axis=1) > 0
    peak = chroma.max(axis=1, keepdims=True)
    chroma = np.divide(chroma, peak, out=np.zeros_like(chroma), where=peak > 0)
    z = chroma - chroma.mean(axis=1, keepdims=True)
    std = z.std(axis=1, keepdims=True)
    z = np.divide(z, std, out=np.zeros_like(z), where=std > 0)
    scores = z @ _TEMPLATES.T + _BIAS
    has_bass = low < 128
    scores[has_bass] += _BASS_OF[low[has_bass] % 12]
    best = _viterbi(scores)
    best[~sounding] = -1
    change = np.flatnonzero(np.concatenate(([True], best[1:] != best[:-1])))
    beats = np.maximum(change * step - shift, 0) / tpq
    return [(round(b, 3), _label(i)) for b, i in zip(beats.tolist(), best[change].tolist())]


def _viterbi(scores: np.ndarray) -> np.ndarray:
    """Best chord path when changing chord costs _SWITCH_PENALTY (score units).

    With one cost for every change, the best predecessor of a chord is either itself or the
    best chord of the previous segment, so each step is O(chords) instead of O(chords^2).
    Runs of identical segments (a held chord) are scored as one step: the best path never
    changes chord inside such a run."""
    same = np.concatenate(([False], np.all(scores[1:] == scores[:-1], axis=1)))
    run_id = np.cumsum(~same) - 1
    runs = np.add.reduceat(scores, np.flatnonzero(~same), axis=0)
    n = runs.shape[0]
    keep = np.empty(runs.shape, dtype=bool)
    top = np.zeros(n, dtype=np.int64)
    delta = runs[0].copy()
    for t in range(1, n):
        top[t] = delta.argmax()
        switch = delta[top[t]] - _SWITCH_PENALTY
        np.greater_equal(delta, switch, out=keep[t])
        np.maximum(delta, switch, out=delta)
        delta += runs[t]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(delta.argmax())
    for t in range(n - 1, 0, -1):
        path[t - 1] = path[t] if keep[t, path[t]] else top[t]
    return path[run_id]


def _label(index: int) -> str:
    if index < 0:
        return "N"
    root, quality = _LABELS[index]
    return f"{TONICS[root]}:{quality}"


# Degree names by semitones above the tonic; minor keys name degrees from the minor scale.
_NUMERALS = {
    "major": ("I", "bII", "II", "bIII", "III", "IV", "#IV", "V", "bVI", "VI", "bVII", "VII"),
    "minor": ("I", "bII", "II", "III", "#III", "IV", "#IV", "V", "VI", "#VI", "VII", "#VII"),
}
_SUFFIX = {"dim": "o", "aug": "+", "sus2": "sus2", "sus4": "sus4", "maj7": "maj7",
           "min7": "7", "7": "7"}
_MINOR_QUALITIES = frozenset({"min", "min7", "dim"})


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
