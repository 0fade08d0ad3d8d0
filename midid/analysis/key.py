"""Key finding: pitch-class and chord-root profiles matched against learned key templates.

Four 12-bin profiles describe a file's pitched notes: total sounding time per pitch class
(quarter notes, so a held chord outweighs a grace note), the same for notes below G3 (the
bass tells a major key from its relative minor), and the beats held by the detected chords
of each root, major-third and minor-third chords apart (a song dwells on its tonic chord:
the clearest evidence between C major and A minor, whose notes are the same). Each of the 24
keys scores the dot product of these profiles, rotated to the key's tonic, with a template per
mode. The templates started as Albrecht & Shanahan's (2013) profile - the best published
profile on POP909 - and were fitted by softmax regression on POP909 songs 001-150, each song
whole, each of its tracks alone and 8-bar loops cut from it (what the analysis is given: the
pipeline analyses split parts, and packs are mostly short loops; templates that only ever saw
full arrangements read a melody alone far worse); checked on 151-300, see docs/analysis.md.
Confidence is the softmax probability of the winning key.

A key a pack's name states ("Dark Pad Am.mid") is a prior, not an override: its probability
is multiplied by `NAME_KEY_ODDS` before the winner is taken, so the name wins unless the
notes make another key that many times likelier. Short loops and single parts are where the
notes say least (a melody alone: relative keys share their notes) and where pack names state
keys. Measured on tracks alone and 8-bar loops of POP909 (the 24-key probabilities of each;
docs/analysis.md): 20 was chosen on songs 001-150 (a right name 0.823 -> 0.955 MIREX, a
random wrong one 0.823 -> 0.794) and gives 0.821 -> 0.968 / 0.787 on 151-300.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metadata import TONICS
from .kernels import key_profiles

MODES = ("major", "minor")
BASS_PITCH = 55  # notes below G3 form the bass profile
NAME_KEY_ODDS = 20.0  # how much likelier a key is for being the one a name states

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
            [9.994, 1.386, 1.828, -3.589, 5.878, -1.609,
             -9.407, 7.187, -1.463, -4.685, -5.472, -4.179],
            [1.555, 1.002, -1.088, 0.05, -2.175, 3.939,
             -1.406, 3.003, 0.27, -2.247, 0.098, -2.145],
            [3.759, 2.902, -2.466, -3.269, -1.76, 1.904,
             0.242, 2.208, -1.131, -0.413, -3.838, -0.842],
            [-5.938, -1.706, 1.607, 0.642, 3.956, 1.017,
             -0.583, -3.897, 1.131, 4.46, -0.794, 0.921],
        ],
        [  # minor: duration, bass duration, major-third chord roots, minor-third chord roots
            [7.121, -3.094, 1.534, 2.91, 2.907, 0.157,
             -3.162, 6.334, -3.052, -10.317, -5.097, 7.891],
            [0.281, -0.833, 0.055, 0.333, 1.614, -0.799,
             -1.474, -0.854, 1.937, -2.261, 0.381, 0.764],
            [0.702, -5.444, 0.57, 3.104, 2.124, -1.328,
             0.564, 1.809, 3.924, -5.6, 2.75, -0.47],
            [4.924, 0.074, -1.222, -2.029, 3.978, 2.662,
             -4.642, 3.284, -0.105, -5.313, -2.954, 0.514],
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


def find_key(pitch: np.ndarray, duration_q: np.ndarray, chord_roots: np.ndarray,
             named: tuple[str, str] | None = None) -> Key | None:
    """Best key for pitched notes (MIDI pitches, durations in quarter notes) and the beats
    held by their chords' roots (:func:`.chords.root_profiles`); None without notes.
    ``named``: (tonic, mode) a file's name states, the prior described above."""
    if pitch.size == 0 or duration_q.sum() <= 0:
        return None
    scores = _MATRIX @ key_features(pitch, duration_q, chord_roots)
    if named is not None and named[0] in TONICS and named[1] in MODES:
        scores[MODES.index(named[1]) * 12 + TONICS.index(named[0])] += np.log(NAME_KEY_ODDS)
    best = int(scores.argmax())
    return Key(
        tonic=TONICS[best % 12],
        mode=MODES[best // 12],
        confidence=round(1.0 / float(np.exp(scores - scores[best]).sum()), 4),
    )
