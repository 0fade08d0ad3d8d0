"""Key finding: pitch-class and chord-root profiles matched against learned key templates.

Four 12-bin profiles describe a file's pitched notes: total sounding time per pitch class
(quarter notes, so a held chord outweighs a grace note), the same for notes below G3 (the
bass tells a major key from its relative minor), and the beats held by the detected chords
of each root, major-third and minor-third chords apart (a song dwells on its tonic chord:
the clearest evidence between C major and A minor, whose notes are the same). Each of the 24
keys scores the dot product of these profiles, rotated to the key's tonic, with a template per
mode. The templates started as Albrecht & Shanahan's (2013) profile - the best published
profile on POP909 - and were fitted by softmax regression on POP909 songs 001-150 (checked on
151-300, see docs/analysis.md). Confidence is the softmax probability of the winning key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import key_profiles

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
# duration, bass duration, major-third chord roots, minor-third chord roots (see module
# docstring). Reproduce with ``benchmarks/analyze.py --fit``.
TEMPLATES = np.array(
    [
        [  # major: duration, bass duration, major-third chord roots, minor-third chord roots
            [8.272, -0.015, -0.583, -1.781, -0.456, 0.131,
             -1.447, 6.773, -1.838, -5.969, -3.074, -1.987],
            [0.949, 0.708, -0.782, -0.456, -2.091, 4.071,
             -0.123, 4.129, -1.043, -3.367, -2.218, -1.752],
            [6.035, 1.228, -4.464, -1.686, -3.986, 2.535,
             0.196, 3.505, -1.705, -0.269, -3.334, -0.029],
            [-4.058, -0.346, 1.909, 1.695, 3.090, 1.750,
             -0.114, -5.399, -1.481, 4.820, -1.240, -2.600],
        ],
        [  # minor: duration, bass duration, major-third chord roots, minor-third chord roots
            [6.090, -1.551, 1.604, -0.041, 0.545, -0.566,
             -2.053, 4.091, -0.188, -4.983, -3.006, 2.033],
            [-0.770, -0.805, 3.899, -0.992, 3.814, -2.644,
             -1.025, -0.143, 1.368, -2.729, 1.010, 0.992],
            [-1.205, -3.846, 0.585, 1.428, 0.118, -2.844,
             0.297, 4.685, 3.630, -3.485, 3.341, -0.731],
            [6.500, 1.489, -2.987, -1.016, 3.250, 4.198,
             -3.398, 1.533, -0.659, -1.937, -4.866, -0.131],
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


def key_features(pitch: np.ndarray, duration_q: np.ndarray, chord_roots: np.ndarray) -> np.ndarray:
    """The four profiles (duration, bass duration, major- and minor-third chord roots, see
    :func:`.chords.root_profiles`), each normalised to sum 1 (or all 0), as one 48-vector."""
    return key_profiles(pitch, duration_q, chord_roots, BASS_PITCH)


def find_key(pitch: np.ndarray, duration_q: np.ndarray, chord_roots: np.ndarray) -> Key | None:
    """Best key for pitched notes (MIDI pitches, durations in quarter notes) and the beats
    held by their chords' roots (:func:`.chords.root_profiles`); None without notes."""
    if pitch.size == 0 or duration_q.sum() <= 0:
        return None
    scores = _MATRIX @ key_features(pitch, duration_q, chord_roots)
    best = int(scores.argmax())
    return Key(
        tonic=TONICS[best % 12],
        mode=MODES[best // 12],
        confidence=round(1.0 / float(np.exp(scores - scores[best]).sum()), 4),
    )
