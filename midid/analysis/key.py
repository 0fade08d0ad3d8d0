"""Key finding: pitch-class profiles matched against learned key templates.

Three 12-bin profiles describe a file's pitched notes: total sounding time per pitch class
(quarter notes, so a held chord outweighs a grace note), the same for notes below G3 (the
bass tells a major key from its relative minor), and onset counts. Each of the 24 keys scores
the dot product of these profiles, rotated to the key's tonic, with a template per mode.
The templates started as Albrecht & Shanahan's (2013) profile - the best published profile on
POP909 - and were refined by softmax regression on POP909 songs 001-150 (checked on 151-300,
see docs/analysis.md). Confidence is the softmax probability of the winning key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TONICS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = ("major", "minor")
BASS_PITCH = 55  # notes below G3 form the bass profile

ALBRECHT_SHANAHAN = np.array(
    [
        [0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081],
        [0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052],
    ]
)
# Learned templates [mode][profile][interval above the tonic]; profiles in the order
# duration, bass duration, onset count (see module docstring).
TEMPLATES = np.array(
    [
        [  # major: duration, bass duration, onsets
            [8.114, -0.608, -0.112, -3.520, 3.222, -0.690,
             -3.450, 5.690, -2.035, -1.483, -5.683, -0.875],
            [2.731, 0.248, 0.065, -1.890, -0.819, 2.116,
             -1.052, 3.636, -1.181, 0.327, -4.505, -1.107],
            [4.531, 0.082, 0.008, -2.708, 4.391, -0.688,
             -3.186, 3.224, -0.960, -0.499, -5.216, -0.410],
        ],
        [  # minor: duration, bass duration, onsets
            [7.158, -3.962, 1.129, 2.563, -1.769, -0.661,
             -1.995, 5.245, 0.323, -5.773, -1.636, 0.808],
            [4.392, -3.489, -0.733, -0.893, 1.126, -0.887,
             -1.331, 1.524, 2.771, -3.074, 1.538, 0.486],
            [2.975, -3.116, 1.557, 3.465, -2.068, 0.172,
             -0.819, 3.501, 0.568, -5.225, -0.893, 1.314],
        ],
    ]
)


@dataclass(frozen=True)
class Key:
    """``tonic`` in sharps ("C#"), ``mode`` "major"/"minor", ``confidence`` in 0..1."""

    tonic: str
    mode: str
    confidence: float

    @property
    def index(self) -> int:
        """0-11 for major keys, 12-23 for minor keys (tonic pitch class + 12 x mode)."""
        return TONICS.index(self.tonic) + 12 * MODES.index(self.mode)


def key_matrix(templates: np.ndarray) -> np.ndarray:
    """(24, 12 x profiles) matrix: row tonic + 12 x mode holds the templates rotated to that
    tonic, so ``matrix @ features`` scores all 24 keys at once."""
    modes, profiles, _ = templates.shape
    rows = np.zeros((modes * 12, profiles * 12))
    for mode in range(modes):
        for tonic in range(12):
            rows[mode * 12 + tonic] = np.roll(templates[mode], tonic, axis=1).ravel()
    return rows


_MATRIX = key_matrix(TEMPLATES)


def key_features(pitch: np.ndarray, duration_q: np.ndarray) -> np.ndarray:
    """The three normalised profiles (duration, bass duration, onsets) as one 36-vector."""
    pc = pitch % 12
    low = pitch < BASS_PITCH
    parts = (
        np.bincount(pc, weights=duration_q, minlength=12),
        np.bincount(pc[low], weights=duration_q[low], minlength=12),
        np.bincount(pc, minlength=12).astype(np.float64),
    )
    return np.concatenate([p / p.sum() if p.sum() > 0 else p for p in parts])


def find_key(pitch: np.ndarray, duration_q: np.ndarray) -> Key | None:
    """Best key for pitched notes (MIDI pitches, durations in quarter notes); None if none."""
    if pitch.size == 0 or duration_q.sum() <= 0:
        return None
    scores = _MATRIX @ key_features(pitch, duration_q)
    best = int(np.argmax(scores))
    probs = np.exp(scores - scores[best])
    return Key(
        tonic=TONICS[best % 12],
        mode=MODES[best // 12],
        confidence=round(float(probs[best] / probs.sum()), 4),
    )
