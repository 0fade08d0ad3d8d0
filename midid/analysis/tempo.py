"""Tempo from note onsets alone (in seconds), for files whose tempo map is missing or wrong.

Onsets become onset-strength envelopes (FRAME_RATE frames per second, velocity-weighted, over
the first MAX_SECONDS): one for all notes and one per rhythmic role - low (kick, or pitched
notes below E3), backbeat (snare, clap, rim) and high (hats and cymbals). One batched FFT gives
their spectra and autocorrelations. Each candidate tempo is then read off them: the
autocorrelation at the beat period and its multiples and fractions (a metrical comb: a beat is
supported by its bar, its subdivisions and by the snare landing every second beat), spectral
coherence at 1/2 to 4 cycles per beat, the phase relation of kick and snare, and how many
onsets fall per beat. A linear score over those readings plus a quadratic prior on log-tempo
picks the tempo; its weights were fitted by softmax regression on Groove MIDI drummers 1 and 2
and checked on drummers 4, 5 and 10 (docs/analysis.md, ``benchmarks/analyze.py --fit``).
The score resolves octave errors (1/2x, 2x, 2/3x, 1.5x), the hard part of onset tempo.

Every index that depends only on the candidate grid is computed once at import, so a file
costs one bincount, one FFT pair and a few gathers, whatever its length.
"""

from __future__ import annotations

import numpy as np

FRAME_RATE = 50.0  # envelope frames per second (20 ms: about a drummer's timing jitter)
MAX_SECONDS = 20.0  # the first 20 s (8 bars at 96 BPM) are plenty to find a loop's tempo
MIN_ONSETS = 8
BPM_RANGE = (40.0, 320.0)
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
_FFT_SIZES = np.array(sorted(
    2**a * 3**b * 5**c for a in range(13) for b in range(8) for c in range(6)
    if 2**a * 3**b * 5**c >= 64 and 2**a * 3**b * 5**c <= 2 * int(MAX_SECONDS * FRAME_RATE) + 4096
))
_Z = np.log2(CANDIDATES / _PRIOR_CENTER)
_PRIOR = np.column_stack([_Z, _Z * _Z])
_BIN_PER_N = np.outer(CANDIDATES / 60.0 / FRAME_RATE, RATES)  # x FFT length = FFT bin
_CROSS_COLS = np.array([RATES.index(c) for c in CROSS])
FEATURE_NAMES = (
    [f"acf {r} {b:.3g}" for r, b in READINGS]
    + [f"coh {r} {c:g}" for r in ROLES for c in RATES]
    + [f"cross {c:g}" for c in CROSS]
    + [f"log2 {r} onsets/beat{sq}" for r in ROLES for sq in ("", " ^2")]
    + ["log2 bpm/120", "log2 bpm/120 ^2"]
)
# Weights of the linear tempo score, in FEATURE_NAMES order. Fitted by softmax over
# CANDIDATES (L2 towards a plain metrical comb) on the beats of Groove drummers 1 and 2,
# checked on drummers 4, 5 and 10: reproduce with ``benchmarks/analyze.py --fit``.
WEIGHTS = np.array([
    0.972, -1.06, 0.235, 1.85, 0.68, -0.949, 2.52, 0.318, 1.083,
    -0.191, -0.345, -0.154, -0.363, 0.01, -0.27, -1.579, 0.206, 0.206,
    0.351, 0.686, 0.408, -0.398, 0.205, 1.158, 0.827, 1.51, 1.72,
    0.809, 1.184, 1.026, -0.323, 0.128, 0.677, 0.537, -0.469, 0.964,
    0.834, 0.449, -0.162, -0.014, 0.152, 1.445, 0.194, 0.387, 0.724,
    -1.168, 0.724, 0.144, 0.724, 0.032, 0.724, -0.035, -0.724, -1.557,
])


_BLOCK_SIZES = (len(READINGS), len(ROLES) * len(RATES), len(CROSS), 2 * len(ROLES))
_BLOCK_WEIGHTS = np.split(WEIGHTS[: sum(_BLOCK_SIZES)], np.cumsum(_BLOCK_SIZES)[:-1])
_PRIOR_SCORE = _PRIOR @ WEIGHTS[sum(_BLOCK_SIZES) :]


def envelopes(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> np.ndarray:
    """(len(ROLES), frames) weighted onset envelopes; ``role`` indexes ROLES[1:], -1 = none."""
    frames = (onset_s * FRAME_RATE + 0.5).astype(np.int64)
    keep = (frames >= 0) & (frames < MAX_SECONDS * FRAME_RATE)
    frames, weight, role = frames[keep], weight[keep], role[keep]
    n = int(frames.max()) + 1 if frames.size else 1
    rows = (role.astype(np.int64) + 1) * n + frames
    has_role = role >= 0
    env = np.bincount(frames, weights=weight, minlength=len(ROLES) * n)
    env += np.bincount(rows[has_role], weights=weight[has_role], minlength=len(ROLES) * n)
    return env.reshape(len(ROLES), n)


def _blocks(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> list[np.ndarray] | None:
    """The feature blocks of :func:`features` (each (len(CANDIDATES), k)), before stacking."""
    env = envelopes(onset_s, weight, role)
    size = env.shape[1]
    onset_frames = np.count_nonzero(env, axis=1)
    if onset_frames[0] < MIN_ONSETS:
        return None
    x = env - env.mean(axis=1, keepdims=True)
    n = int(_FFT_SIZES[np.searchsorted(_FFT_SIZES, size + _MAX_LAG + _SMOOTH.size)])
    spec = np.fft.rfft(x, n, axis=1) * np.fft.rfft(_SMOOTH, n)
    acf = np.fft.irfft(spec.real**2 + spec.imag**2, n, axis=1)[:, : _MAX_LAG + 2]
    # Unbiased: a lag of k frames overlaps size - k frames (floored so long lags of a short
    # loop do not blow up), then normalised by the zero lag.
    acf /= np.maximum(size - np.arange(_MAX_LAG + 2), size / 4)
    acf = (acf / np.maximum(acf[:, :1], 1e-12)).ravel()
    readings = (acf[_GATHER] * (1.0 - _FRAC) + acf[_GATHER + 1] * _FRAC) * _INSIDE
    bins = np.minimum(_BIN_PER_N * n + 0.5, spec.shape[1] - 1).astype(np.int64)
    at = spec[:, bins]  # (roles, candidates, rates)
    total = np.maximum(env.sum(axis=1), 1e-9)
    coherence = (np.abs(at) / total[:, None, None]).transpose(1, 0, 2)
    low, back = at[1][:, _CROSS_COLS], at[2][:, _CROSS_COLS]
    mag = np.abs(low) * np.abs(back)
    cross = np.divide((low * np.conj(back)).real, mag, out=np.zeros(mag.shape), where=mag > 0)
    # Onset frames per beat of each role (log2, 0.5 floor for roles without onsets).
    per_beat = np.log2(np.outer(60.0 * FRAME_RATE / size / CANDIDATES,
                                np.maximum(onset_frames, 0.5)))
    return [readings, coherence.reshape(CANDIDATES.size, -1), cross,
            np.stack([per_beat, per_beat**2], axis=2).reshape(CANDIDATES.size, -1), _PRIOR]


def features(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> np.ndarray | None:
    """(len(CANDIDATES), len(FEATURE_NAMES)) features; None with < MIN_ONSETS onset frames.

    ``onset_s`` in seconds (any order), ``weight`` per-onset strength (velocity / 127),
    ``role`` indexes ROLES[1:] or is -1."""
    blocks = _blocks(onset_s, weight, role)
    return None if blocks is None else np.column_stack(blocks)


def estimate_bpm(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> float | None:
    """Beats (quarter notes) per minute from onset times in seconds; None with fewer than
    MIN_ONSETS distinct onset frames.

    ``weight`` is per-onset strength (velocity / 127); ``role`` indexes ROLES[1:] or is -1.
    Scores block by block (the same numbers as ``features(...) @ WEIGHTS``, without
    stacking a matrix).
    """
    blocks = _blocks(onset_s, weight, role)
    if blocks is None:
        return None
    score = _PRIOR_SCORE.copy()
    for block, w in zip(blocks[:-1], _BLOCK_WEIGHTS, strict=True):
        score += block @ w
    best = int(np.argmax(score))
    return round(float(_parabolic(CANDIDATES, score, best)), 2)


def _parabolic(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """Vertex of the parabola through the best grid point and its neighbours (in log x)."""
    if i == 0 or i == x.size - 1:
        return float(x[i])
    denom = y[i - 1] - 2 * y[i] + y[i + 1]
    shift = 0.5 * (y[i - 1] - y[i + 1]) / denom if denom < 0 else 0.0
    step = np.log(x[1] / x[0])
    return float(x[i] * np.exp(np.clip(shift, -0.5, 0.5) * step))
