"""Drums: which voices are a drum kit, and how the hits split into kit parts.

Channel 10 (0-based 9) is a kit by General MIDI. Kits on other channels (common in DAW exports,
which put everything on channel 1 with a piano program) are recognised by their note map: most
notes fall on the core GM kit notes (kick, snare, hats, crash, ride) and at least two of the
kick / snare / hat groups are used, or the track name or filename tags say it is a drum part
and the notes sit on the GM kit map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

PARTS = ("kick", "snare", "hats", "cymbals", "toms", "perc")

# Index into PARTS for each MIDI note (GM percussion map; 22/26 are e-kit hi-hat edges).
PART_OF_PITCH = np.full(128, PARTS.index("perc"), dtype=np.int8)
for _part, _pitches in {
    "kick": (35, 36),
    "snare": (37, 38, 40),
    "hats": (22, 26, 42, 44, 46),
    "toms": (41, 43, 45, 47, 48, 50, 58),
    "cymbals": (49, 51, 52, 53, 55, 57, 59),
}.items():
    PART_OF_PITCH[list(_pitches)] = PARTS.index(_part)

_CORE_KIT = np.zeros(128, dtype=bool)
_CORE_KIT[[22, 26, 35, 36, 37, 38, 40, 42, 44, 46, 49, 51]] = True
_GM_KIT_RANGE = (22, 81)
DRUM_WORDS = frozenset(
    {"drum", "drums", "kit", "perc", "percussion", "beat", "groove", "kick", "snare", "hat",
     "hats", "hihat", "hihats", "cymbal", "cymbals", "ride", "crash", "tom", "toms", "fill",
     "clap"}
)
_WORD = re.compile(r"[a-z]+")


def names_say_drums(texts: Sequence[str]) -> bool:
    """True when a track name or tag contains a drum word (``"Kick 1"``, ``"drums"``)."""
    return any(w in DRUM_WORDS for t in texts for w in _WORD.findall(t.lower()))


def looks_like_kit(pitch: np.ndarray, named: bool, tagged: bool) -> bool:
    """Decide whether the notes of a non-channel-10 voice are a drum kit, from the note map.

    ``named``: the track name says drums (strong: any notes on the kit map qualify).
    ``tagged``: only the filename or folder says drums (a prior: accepted for a few distinct
    notes that all sit on the core kit map, so a bass line in a "Drum & Bass" folder stays bass).
    """
    if pitch.size == 0:
        return False
    # Shares as count / size: the same number as a bool array's mean(), at a third of its cost.
    if named:
        in_kit = (pitch >= _GM_KIT_RANGE[0]) & (pitch <= _GM_KIT_RANGE[1])
        return bool(np.count_nonzero(in_kit) / pitch.size >= 0.9)
    core = np.count_nonzero(_CORE_KIT[pitch]) / pitch.size
    if not tagged and (pitch.size < 4 or core < 0.8):
        return False  # most melodic voices: decided without sorting their notes
    distinct = np.unique(pitch)
    if tagged and distinct.size <= 4 and (PART_OF_PITCH[distinct] != PARTS.index("perc")).all():
        return True
    if pitch.size < 4 or distinct.size > 16:
        return False
    in_range = (distinct[0] >= _GM_KIT_RANGE[0]) & (distinct[-1] <= _GM_KIT_RANGE[1])
    groups = np.bincount(PART_OF_PITCH[pitch], minlength=len(PARTS))[:3] / pitch.size
    return bool(core >= 0.8 and np.count_nonzero(groups >= 0.05) >= 2 and in_range)


def part_shares(hits: np.ndarray) -> dict[str, float]:
    """Share of drum hits per kit part from hit counts in PARTS order (sums to 1; all zeros
    when there are no hits)."""
    counts = hits.tolist()
    total = sum(counts)
    return {p: round(h / total, 4) if total else 0.0 for p, h in zip(PARTS, counts, strict=True)}
