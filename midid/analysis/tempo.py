"""Tempo from note onsets alone (in seconds), for files whose tempo map is missing or wrong.

Onsets become onset-strength envelopes (FRAME_RATE frames per second, velocity-weighted, over
MAX_SECONDS from the first onset): one for all notes and one per rhythmic role - low (kick, or
pitched notes below E3), backbeat (snare, clap, rim, pedal hi-hat) and high (hats and
cymbals). One
batched rFFT gives their spectra; their autocorrelations come from the pairs of onset frames within 4 s
of each other (:func:`.kernels.envelope_acf`, the same numbers as an inverse FFT). Each
candidate tempo is then read off them: the
autocorrelation at the beat period and its multiples and fractions (a metrical comb: a beat is
supported by its bar, its subdivisions and by the snare landing every second beat), spectral
coherence at 1/2 to 4 cycles per beat, the phase relation of kick and snare, and how many
onsets fall per beat. A linear score over those readings plus a quadratic prior on log-tempo
picks the tempo; its weights were fitted by softmax regression on Groove MIDI drummers 1 and 2
and checked on drummers 4, 5 and 10 (docs/analysis.md, ``benchmarks/analyze.py --fit``),
leaving out of the fit the files whose labelled beat has no periodicity in their onsets (a
session played well off its label): they only pulled the weights towards noise.
The score resolves octave errors (1/2x, 2x, 2/3x, 1.5x), the hard part of onset tempo.
A single drum part alone (a kick pattern ...) has its own weights, fitted the same way on
Groove beats cut to each part.

Every index that depends only on the candidate grid is computed once at import, and the
readings and the score are one compiled pass (:func:`.kernels.tempo_features`), so a file
costs one rFFT and three kernel calls, whatever its length. A file written on its own tick
grid (step-sequenced or quantised) under one tempo skips all of it: see :func:`estimate_bpm`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from .kernels import envelope_acf, grid_onsets, onset_envelopes, tempo_features

FRAME_RATE = 50.0  # envelope frames per second (20 ms: about a drummer's timing jitter)
MAX_SECONDS = 20.0  # the first 20 s (8 bars at 96 BPM) are plenty to find a loop's tempo
MIN_ONSETS = 8
GRID_SHARE = 0.95  # share of onsets on the tick grid that makes a file quantised
BPM_RANGE = (40.0, 320.0)
OCTAVE_FACTORS = (0.5, 2 / 3, 1.0, 1.5, 2.0)  # relatives of a tempo that onsets confuse with it
HINT_TOLERANCE = 0.05  # a file-name tempo this close to one relative picks it (see estimate_bpm)
CANDIDATES = np.geomspace(BPM_RANGE[0], BPM_RANGE[1], 360)  # 0.6 % apart
ROLES = ("all", "low", "back", "high")
# (role, lag in beats) autocorrelation readings.
READINGS = (
    ("all", 0.25), ("all", 1 / 3), ("all", 0.5), ("all", 2 / 3), ("all", 1.0), ("all", 1.5),
    ("all", 2.0), ("all", 3.0), ("all", 4.0),
    ("low", 0.5), ("low", 1.0), ("low", 2.0), ("low", 4.0),
    ("back", 0.5), ("back", 1.0), ("back", 2.0), ("back", 4.0),
    ("high", 0.25), ("high", 1 / 3), ("high", 0.5), ("high", 1.0), ("high", 2.0),
)
# Spectral coherence rates in cycles per beat (0.5 = every two beats, 3 = triplet eighths),
# read for every role: how well the role's onsets line up on a grid of that rate.
RATES = (0.5, 1.0, 2.0, 3.0, 4.0)
# Phase agreement of low and backbeat onsets every two beats (-1 when they alternate, as a
# kick on 1 and a snare on 2 do) and every beat.
CROSS = (0.5, 1.0)
_SMOOTH = np.array([0.5, 1.0, 0.5])  # a +-20 ms spread, applied in the spectrum for free
_SMOOTH_ACF = np.correlate(_SMOOTH, _SMOOTH, "full")  # ... and to the autocorrelation
_PRIOR_CENTER = 120.0
_MAX_LAG_S = 4.0  # autocorrelation lags beyond 4 s read as 0 (only slow 4-beat readings)
_MAX_LAG = int(_MAX_LAG_S * FRAME_RATE)
_ROLE_ROW = {r: i for i, r in enumerate(ROLES)}


def _reading_index() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat gather indices (into a (roles, _MAX_LAG + 2) ACF) and interpolation weights for
    every (candidate, reading): fixed by the grid, so computed once."""
    period = 60.0 * FRAME_RATE / CANDIDATES
    lag = np.outer(period, [b for _, b in READINGS])
    rows = np.array([_ROLE_ROW[r] for r, _ in READINGS])
    inside = lag <= _MAX_LAG
    lag = np.minimum(lag, _MAX_LAG)
    base = np.floor(lag).astype(np.int64)
    frac = np.where(inside, lag - base, 0.0)
    flat = rows[None, :] * (_MAX_LAG + 2) + base
    return flat, frac, inside.astype(np.float64)


_GATHER, _FRAC, _INSIDE = _reading_index()
# FFT lengths with only 2, 3 and 5 as factors (fast in pocketfft), long enough for any
# envelope: padding to the next one instead of the next power of two saves ~25 % per file.
_FFT_SIZES = tuple(sorted(
    2**a * 3**b * 5**c for a in range(13) for b in range(8) for c in range(6)
    if 2**a * 3**b * 5**c >= 64 and 2**a * 3**b * 5**c <= 2 * int(MAX_SECONDS * FRAME_RATE) + 4096
))
_Z = np.log2(CANDIDATES / _PRIOR_CENTER)
_PRIOR = np.column_stack([_Z, _Z * _Z])
_BIN_PER_N = np.outer(CANDIDATES / 60.0 / FRAME_RATE, RATES)  # x FFT length = FFT bin
FEATURE_NAMES = (
    [f"acf {r} {b:.3g}" for r, b in READINGS]
    + [f"coh {r} {c:g}" for r in ROLES for c in RATES]
    + [f"cross {c:g}" for c in CROSS]
    + [f"log2 {r} onsets/beat{sq}" for r in ROLES for sq in ("", " ^2")]
    + ["log2 bpm/120", "log2 bpm/120 ^2"]
)
# Weights of the linear tempo score, in FEATURE_NAMES order. Fitted by softmax over
# CANDIDATES (L2 towards a plain metrical comb) on the beats of Groove drummers 1 and 2 whose
# labelled beat shows in their onsets, checked on drummers 4, 5 and 10 (and the reverse fit):
# reproduce with ``benchmarks/analyze.py --fit``.
WEIGHTS = np.array([
    1.008, -0.224, 0.074, 0.674, 1.755, -0.608, 1.526, 0.781, 1.108,
    0.058, -0.562, 0.286, 0.293, -0.112, -0.288, 0.88, 0.446, 0.192,
    -0.233, 0.649, 0.639, 0.031, 0.296, 0.712, 0.463, 1.32, 1.179,
    0.431, 1.289, 0.808, -0.031, 0.26, 1.221, 0.611, -0.148, 0.349,
    1.165, -0.228, -0.343, 0.579, 0.53, 0.762, 0.428, 0.439, 0.513,
    -0.792, 0.513, 0.181, 0.513, -0.105, 0.513, -0.073, -0.513, -1.448,
])

# The same score for a single-part drum file (a kick, snare, hat ... pattern alone: what
# analyze_bytes files under DrumKicks ... DrumToms), fitted the same way on each Groove beat
# of drummers 1 and 2 cut to each of its parts, checked on 4, 5 and 10. A part alone has far
# fewer cues: the kit weights read most kick patterns at double or half time.
PART_WEIGHTS = np.array([
    0.785, -0.009, 0.832, 0.555, 0.81, 0.905, 1.678, 0.195, 1.584,
    0.174, -0.331, -0.031, 0.435, 0.057, -0.323, 0.053, 0.25, 0.125,
    -0.007, 0.056, 0.382, 0.505, 1.952, 0.814, 0.678, 1.921, 2.483,
    -0.046, 0.563, 0.219, 0.226, 0.606, 0.661, 0.913, 0.705, 0.495,
    1.017, -0.266, -0.345, 0.036, 1.042, 0.181, 0.0, 0.0, -0.146,
    -0.058, -0.146, 0.016, -0.146, 0.021, -0.146, 0.038, 0.146, -2.213,
])

_CROSS_COLS = np.array([RATES.index(c) for c in CROSS])
_LOG_STEP = math.log(CANDIDATES[1] / CANDIDATES[0])
_REFINE_LOG = math.log(1.03)  # a hinted relative is refined on the score within +-3 % of it
_SMOOTH_SPECTRA: dict[int, np.ndarray] = {}  # rfft of _SMOOTH per FFT length (a few dozen)


def _scored(
    onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray, keep_features: bool = False,
    weights: np.ndarray = WEIGHTS,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(features, score) of every candidate (see :func:`features`; without ``keep_features``
    the features are a scratch row), None with too few onsets."""
    env, total, onset_frames = onset_envelopes(
        onset_s, weight, role, FRAME_RATE, int(MAX_SECONDS * FRAME_RATE), len(ROLES))
    if onset_frames[0] < MIN_ONSETS:
        return None
    size = env.shape[1]
    n = _FFT_SIZES[bisect.bisect_left(_FFT_SIZES, size + _MAX_LAG + _SMOOTH.size)]
    smooth = _SMOOTH_SPECTRA.get(n)
    if smooth is None:
        smooth = _SMOOTH_SPECTRA.setdefault(n, np.fft.rfft(_SMOOTH, n))
    # Zero-padded here rather than by rfft's ``n``: pocketfft's own padding is slower.
    centred = np.zeros((env.shape[0], n))
    np.subtract(env, (total / size)[:, None], out=centred[:, :size])
    spec = np.fft.rfft(centred, axis=1) * smooth
    acf = envelope_acf(env, total, _MAX_LAG + 2, _SMOOTH_ACF)
    return tempo_features(
        acf, spec, np.maximum(total, 1e-9), onset_frames, size, n,
        _GATHER, _FRAC, _INSIDE, _BIN_PER_N, _CROSS_COLS, CANDIDATES, _PRIOR, FRAME_RATE,
        weights, keep_features,
    )


def from_first_onset(onset_s: np.ndarray) -> np.ndarray:
    """Onset times counted from the first onset: the estimate reads the first MAX_SECONDS of
    the music, not of the file (a track that comes in after a 30 s intro has a tempo too)."""
    return onset_s - onset_s.min() if onset_s.size else onset_s


def features(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> np.ndarray | None:
    """(len(CANDIDATES), len(FEATURE_NAMES)) features; None with < MIN_ONSETS onset frames.

    ``onset_s`` in seconds (any order), ``weight`` per-onset strength (velocity / 127),
    ``role`` indexes ROLES[1:] or is -1."""
    scored = _scored(from_first_onset(onset_s), weight, role, keep_features=True)
    return None if scored is None else scored[0]


@dataclass(frozen=True)
class MetaGrid:
    """What the tempo map says: note onsets in ticks, ticks per quarter, and the one tempo
    (quarter notes per minute) holding over the onsets the estimate reads (MAX_SECONDS from
    the first onset), for :func:`estimate_bpm`'s shortcut."""

    start: np.ndarray
    tpq: int
    bpm: float


def estimate_bpm(
    onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray, meta: MetaGrid | None = None,
    hint: float | None = None, single_part: bool = False,
) -> float | None:
    """Beats (quarter notes) per minute from onset times in seconds; None with fewer than
    MIN_ONSETS distinct onset frames.

    ``weight`` is per-onset strength (velocity / 127); ``role`` indexes ROLES[1:] or is -1.
    ``meta`` (one tempo over those onsets) allows a shortcut: when at least GRID_SHARE of the
    onsets sit on a 16th or 16th-triplet of the tick grid (a step-sequenced or quantised
    file), the notes were written on that tempo's beats, so it is their tempo by
    construction (a scan of the onsets in seconds could only return it or a multiple of it)
    and it is returned without the scan. Performances (onsets off the tick grid) are scanned.

    ``hint`` is the tempo a file name gives ("..._140bpm_..."). Onsets tell a tempo's family
    far better than its octave (half time, double time, 2/3 and 3/2 differ only in which
    pulse is called the beat), and a pack's name is exactly a statement of which pulse is
    meant; so the hint chooses among the octave relatives of the onsets' tempo, within
    HINT_TOLERANCE of one of them, and a scanned relative is refined on the score around it.
    A hint that is no octave relative of what the onsets say is ignored: it cannot override
    them.

    ``single_part``: the onsets are one drum part alone (a kick pattern ...), scored with
    PART_WEIGHTS.
    """
    onset_s = from_first_onset(onset_s)
    if meta is not None and meta.start.size:
        grid = _grid(meta, onset_s)
        if grid is not None:
            if grid < MIN_ONSETS:
                return None
            return round(meta.bpm * _hinted_factor(meta.bpm, hint), 2)
    scored = _scored(onset_s, weight, role, weights=PART_WEIGHTS if single_part else WEIGHTS)
    if scored is None:
        return None
    score = scored[1]
    best = int(score.argmax())
    tempo = _parabolic(CANDIDATES, score, best)
    factor = _hinted_factor(tempo, hint)
    if factor != 1.0:
        near = np.flatnonzero(np.abs(np.log(CANDIDATES / (tempo * factor))) <= _REFINE_LOG)
        tempo = _parabolic(CANDIDATES, score, int(near[score[near].argmax()]))
    return round(tempo, 2)


def on_tick_grid(onset_s: np.ndarray, meta: MetaGrid) -> bool:
    """The notes were written on the tick grid of their one tempo (step-sequenced or
    quantised; see :func:`estimate_bpm`): their timing carries no tempo of its own."""
    return bool(meta.start.size) and _grid(meta, from_first_onset(onset_s)) is not None


def _grid(meta: MetaGrid, onset_s: np.ndarray) -> int | None:
    """Onset frames read when GRID_SHARE of the onsets are on a 16th or 16th-triplet of the
    tick grid, else None (``onset_s`` counted from the first onset)."""
    on_grid, frames = grid_onsets(meta.start, onset_s, meta.tpq, FRAME_RATE, int(MAX_SECONDS * FRAME_RATE))
    return int(frames) if on_grid >= GRID_SHARE * meta.start.size else None


def _hinted_factor(tempo: float, hint: float | None) -> float:
    """The octave factor that takes ``tempo`` within HINT_TOLERANCE of ``hint`` (1.0 when
    none does, or when that relative falls outside BPM_RANGE)."""
    if hint is None or not hint > 0:
        return 1.0
    factor = min(OCTAVE_FACTORS, key=lambda f: abs(math.log(tempo * f / hint)))
    relative = tempo * factor
    if abs(relative / hint - 1.0) > HINT_TOLERANCE or not BPM_RANGE[0] <= relative <= BPM_RANGE[1]:
        return 1.0
    return factor


def _parabolic(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """Vertex of the parabola through the best grid point and its neighbours (in log x)."""
    if i == 0 or i == x.size - 1:
        return float(x[i])
    below, at, above = float(y[i - 1]), float(y[i]), float(y[i + 1])
    denom = below - 2 * at + above
    shift = 0.5 * (below - above) / denom if denom < 0 else 0.0
    return float(x[i]) * math.exp(min(max(shift, -0.5), 0.5) * _LOG_STEP)
