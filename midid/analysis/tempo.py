"""Tempo from note onsets alone (in seconds), for files whose tempo map is missing or wrong.

Onsets become onset-strength envelopes (FRAME_RATE frames per second, velocity-weighted): one
for all notes and one per rhythmic role - low (kick, or pitched notes below E3), backbeat
(snare, clap, rim) and high (hats and cymbals). Their autocorrelations are read at each
candidate beat period and at its multiples and fractions (a metrical comb: a beat is supported
by its bar, its subdivisions and by the snare landing every second beat). A linear score over
those readings plus a quadratic prior on log-tempo picks the tempo; its weights were fitted by
cross-validation on the Groove MIDI drummers (docs/analysis.md, benchmarks/analyze.py --fit).
The score resolves octave errors (1/2x, 2x, 2/3x, 1.5x), the hard part of onset tempo.
"""

from __future__ import annotations

import numpy as np

FRAME_RATE = 100.0  # envelope frames per second
MAX_SECONDS = 120.0  # the first two minutes are plenty to find a tempo
MIN_ONSETS = 8
BPM_RANGE = (40.0, 250.0)
CANDIDATES = np.exp(np.linspace(np.log(BPM_RANGE[0]), np.log(BPM_RANGE[1]), 400))
ROLES = ("all", "low", "back", "high")
# (role, lag in beats) autocorrelation readings that make up the features.
READINGS = (
    ("all", 0.25), ("all", 1 / 3), ("all", 0.5), ("all", 1.0), ("all", 2.0), ("all", 4.0),
    ("low", 1.0), ("low", 2.0), ("low", 4.0),
    ("back", 1.0), ("back", 2.0), ("back", 4.0),
    ("high", 0.5), ("high", 1.0),
)
# (role, cycles per beat) spectral coherence readings: how well the role's onsets line up on a
# grid of that rate (0.5 = every two beats, 3 = triplet eighths).
COHERENCE = (
    ("all", 0.5), ("all", 1.0), ("all", 2.0), ("all", 3.0), ("all", 4.0),
    ("low", 0.5), ("low", 1.0), ("low", 2.0),
    ("back", 0.5), ("back", 1.0), ("back", 2.0),
    ("high", 1.0), ("high", 2.0), ("high", 3.0), ("high", 4.0),
)
# Phase agreement of low and backbeat onsets every two beats (-1 when they alternate, as a
# kick on 1 and a snare on 2 do) and every beat.
CROSS = (0.5, 1.0)
_SMOOTH = np.array([0.25, 0.5, 1.0, 0.5, 0.25])
_PRIOR_CENTER = 120.0
_MAX_LAG = int(FRAME_RATE * 60.0 / BPM_RANGE[0] * max(b for _, b in READINGS)) + 2
# Weights of the linear tempo score, in feature order: READINGS, COHERENCE, CROSS, then
# log2(bpm/120) and its square (the prior). Fitted by softmax over CANDIDATES (L2 0.01) on the
# beats of Groove drummers 1 and 2, checked on drummers 4, 5 and 10: reproduce with
# ``benchmarks/analyze.py --fit`` (docs/analysis.md).
WEIGHTS = np.array([
    1.7, -0.566, 0.082, 1.288, 3.183, 2.0, 0.681, 0.11, 0.576, 0.093, -0.477,
    0.767, 0.554, 1.293, 0.027, -0.186, 0.274, 1.363, 0.274, 1.004, 0.927, 0.403,
    1.559, 0.793, -0.748, -0.468, -0.151, -0.44, 0.065, 0.247, -0.032, 0.092, -2.656,
])


def envelopes(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> np.ndarray:
    """(len(ROLES), frames) weighted onset envelopes; ``role`` indexes ROLES[1:], -1 = none."""
    frames = np.round(onset_s * FRAME_RATE).astype(np.int64)
    keep = (frames >= 0) & (frames < MAX_SECONDS * FRAME_RATE)
    frames, weight, role = frames[keep], weight[keep], role[keep]
    n = int(frames.max()) + 1 if frames.size else 1
    has_role = role >= 0
    flat = np.concatenate((frames, (role[has_role].astype(np.int64) + 1) * n + frames[has_role]))
    weights = np.concatenate((weight, weight[has_role]))
    return np.bincount(flat, weights=weights, minlength=len(ROLES) * n).reshape(len(ROLES), n)


def spectra(env: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """Real FFT of each mean-removed envelope row, smoothed by _SMOOTH (timing jitter of
    ~20 ms), and the FFT length. Padding to twice the length keeps lags up to ``max_lag``
    from wrapping and interpolates the spectrum finely enough that a long, steady file's
    narrow peak is not missed between bins."""
    x = env - env.mean(axis=1, keepdims=True)
    n = 1 << int(np.ceil(np.log2(2 * x.shape[1] + max_lag + _SMOOTH.size)))
    return np.fft.rfft(x, n, axis=1) * np.fft.rfft(_SMOOTH, n), n


def autocorrelations(spec: np.ndarray, n: int, size: int, max_lag: int) -> np.ndarray:
    """Unbiased, normalised autocorrelation of each envelope row up to ``max_lag`` frames."""
    acf = np.fft.irfft(spec.real**2 + spec.imag**2, n, axis=1)[:, : max_lag + 1]
    acf /= np.maximum(size - np.arange(acf.shape[1]), size / 4)
    zero = acf[:, :1]
    return np.divide(acf, zero, out=np.zeros_like(acf), where=zero > 0)


def features(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> np.ndarray | None:
    """(len(CANDIDATES), len(WEIGHTS)) feature matrix; None with fewer than MIN_ONSETS onsets."""
    if np.unique(np.round(onset_s * FRAME_RATE)).size < MIN_ONSETS:
        return None
    env = envelopes(onset_s, weight, role)
    spec, n = spectra(env, _MAX_LAG)
    max_lag = _MAX_LAG
    acf = autocorrelations(spec, n, env.shape[1], max_lag)
    period = 60.0 * FRAME_RATE / CANDIDATES
    lag_axis = np.arange(acf.shape[1])
    cols = [
        np.interp(period * beats, lag_axis, acf[ROLES.index(r)], right=0.0)
        for r, beats in READINGS
    ]
    total = np.maximum(env.sum(axis=1), 1e-9)
    bins = CANDIDATES / 60.0 * n / FRAME_RATE  # FFT bin of one cycle per beat
    index = np.minimum(np.round(np.outer(bins, [0.5, 1.0, 2.0, 3.0, 4.0])).astype(np.int64),
                       spec.shape[1] - 1)
    rate_col = {0.5: 0, 1.0: 1, 2.0: 2, 3.0: 3, 4.0: 4}
    for r, rate in COHERENCE:
        row = ROLES.index(r)
        cols.append(np.abs(spec[row, index[:, rate_col[rate]]]) / total[row])
    low, back = spec[ROLES.index("low")], spec[ROLES.index("back")]
    for rate in CROSS:
        a, b = low[index[:, rate_col[rate]]], back[index[:, rate_col[rate]]]
        mag = np.abs(a) * np.abs(b)
        cols.append(np.divide((a * np.conj(b)).real, mag, out=np.zeros(a.size), where=mag > 0))
    z = np.log2(CANDIDATES / _PRIOR_CENTER)
    return np.column_stack([*cols, z, z * z])


def estimate_bpm(onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray) -> float | None:
    """Beats per minute from onset times in seconds; None with fewer than MIN_ONSETS onsets.

    ``weight`` is per-onset strength (velocity); ``role`` indexes ROLES[1:] or is -1.
    """
    feats = features(onset_s, weight, role)
    if feats is None:
        return None
    score = feats @ WEIGHTS
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
