"""Key finding: pitch-class and chord-root profiles matched against learned key templates.

Four 12-bin profiles describe a file's pitched notes: total sounding time per pitch class
(quarter notes, so a held chord outweighs a grace note), the same for notes below G3 (the
bass tells a major key from its relative minor), and the beats held by the detected chords
of each root, major-third and minor-third chords apart (a song dwells on its tonic chord:
the clearest evidence between C major and A minor, whose notes are the same). Each of the 24
keys scores the dot product of these profiles, rotated to the key's tonic, with a template per
mode. The templates started as Albrecht & Shanahan's (2013) profile - the best published
profile on POP909 - and were fitted by softmax regression on POP909 songs 001-150, each song
whole and each of its tracks alone (the pipeline analyses split parts too, and a melody alone
must not be read against templates that only ever saw full arrangements); checked on 151-300,
see docs/analysis.md. Confidence is the softmax probability of the winning key.
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
            [11.434, 2.089, 1.758, -2.308, 3.379, -1.591,
             -6.188, 8.922, -2.127, -7.34, -5.505, -4.788],
            [1.762, 1.28, -2.046, 0.402, -2.325, 4.353,
             -0.76, 3.59, -0.133, -2.584, -0.335, -3.703],
            [6.386, 5.236, -3.943, -2.815, -3.661, 3.108,
             -0.112, 3.078, -2.54, -0.403, -4.27, -2.335],
            [-7.3, -1.672, 1.377, 0.817, 4.869, 1.25,
             -0.548, -6.531, -0.143, 6.017, -0.339, -0.084],
        ],
        [  # minor: duration, bass duration, major-third chord roots, minor-third chord roots
            [6.538, -2.052, 1.586, 2.404, 3.75, 0.054,
             -3.271, 4.554, -0.914, -10.805, -7.79, 8.221],
            [-0.216, -1.987, 1.575, 0.42, 1.611, -0.46,
             -1.095, -0.424, 2.329, -3.425, 0.601, 1.571],
            [0.609, -6.123, 1.534, 3.103, 3.908, -3.151,
             3.037, 3.262, 3.598, -6.98, 2.152, -2.677],
            [8.277, 0.303, -1.713, -3.628, 5.994, 4.486,
             -7.094, 5.216, 0.773, -5.597, -5.391, 0.574],
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
