"""The MPC category of a file: one of the 13 folders the MPC browser groups MIDI into.

Rules, first match wins (priority: drum analysis, then tags, then note analysis):

| # | evidence | category |
|---|---|---|
| 1 | no notes | FX |
| 2 | >= 90 % of notes are drums, one part has >= 85 % of hits | DrumKicks / DrumSnares / DrumHats / DrumCymbals / DrumToms / DrumPerc |
| 3 | >= 90 % drums, a tag names a part holding >= 50 % of hits | that part's category |
| 4 | >= 90 % drums otherwise | Drums |
| 5 | drums and pitched notes both >= 10 % | Loops |
| 6 | a filename/folder tag names a category the notes allow (table below) | that category |
| 7 | fewer than 4 notes, or median pitch outside 22..96 | FX |
| 8 | two or more pitched voices, each >= 10 % of the notes | Loops |
| 9 | mostly one note at a time (polyphony < 1.3, < 25 % of onsets in chords) | Bass if median pitch < 55 (G3), else Melody |
| 10 | chordal, <= 16 bars, >= 2 chords, changing at least every 2 bars | Progressions |
| 11 | chordal otherwise | Chords |

Tags are priors: a tag is accepted only when the notes allow it - ``bass`` needs mostly
single notes below middle C, ``melody``/``lead`` mostly single notes, ``chord``/``pad``
chordal material, ``progression`` chordal material with >= 2 chords, ``loop`` <= 16 bars,
``fx`` anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CATEGORIES = (
    "DrumKicks",
    "DrumSnares",
    "DrumHats",
    "DrumCymbals",
    "DrumToms",
    "DrumPerc",
    "Drums",
    "Bass",
    "Melody",
    "Chords",
    "Progressions",
    "FX",
    "Loops",
)
PART_CATEGORY = {
    "kick": "DrumKicks",
    "snare": "DrumSnares",
    "hats": "DrumHats",
    "cymbals": "DrumCymbals",
    "toms": "DrumToms",
    "perc": "DrumPerc",
}
# Tag words naming a drum part.
PART_TAGS = {
    "kick": "kick", "kicks": "kick", "bd": "kick",
    "snare": "snare", "snares": "snare", "clap": "snare", "rim": "snare",
    "hat": "hats", "hats": "hats", "hihat": "hats", "hihats": "hats", "hh": "hats",
    "cymbal": "cymbals", "cymbals": "cymbals", "ride": "cymbals", "crash": "cymbals",
    "tom": "toms", "toms": "toms",
    "perc": "perc", "percussion": "perc", "shaker": "perc", "conga": "perc", "bongo": "perc",
}
# Tag words naming a melodic category.
CATEGORY_TAGS = {
    "bass": "Bass", "bassline": "Bass", "sub": "Bass", "808": "Bass",
    "melody": "Melody", "lead": "Melody", "arp": "Melody", "hook": "Melody", "pluck": "Melody",
    "chord": "Chords", "chords": "Chords", "pad": "Chords", "stab": "Chords",
    "progression": "Progressions", "progressions": "Progressions", "prog": "Progressions",
    "fx": "FX", "sfx": "FX", "effect": "FX", "riser": "FX",
    "loop": "Loops", "loops": "Loops",
}
DRUM_SHARE = 0.9
SINGLE_PART_SHARE = 0.85
BASS_MEDIAN_PITCH = 55


@dataclass(frozen=True)
class Evidence:
    """What the category rules look at. Pitches are MIDI numbers; ``polyphony`` and
    ``chord_onset_share`` are over pitched (non-drum) notes only."""

    notes: int
    drum_share: float
    drum_parts: dict[str, float]
    pitched_voices: int
    polyphony: float
    chord_onset_share: float
    median_pitch: float | None
    bars: int
    distinct_chords: int
    chord_changes_per_bar: float


def categorize(ev: Evidence, tags: Sequence[str]) -> str:
    """Apply the rule table of the module docstring."""
    if ev.notes == 0:
        return "FX"
    if ev.drum_share >= DRUM_SHARE:
        return _drum_category(ev, tags)
    if ev.drum_share >= 0.1:
        return "Loops"
    for tag in tags:
        category = CATEGORY_TAGS.get(tag.lower())
        if category and _allowed(category, ev):
            return category
    if ev.notes < 4 or ev.median_pitch is None or not 22 <= ev.median_pitch <= 96:
        return "FX"
    if ev.pitched_voices >= 2:
        return "Loops"
    if _monophonic(ev):
        return "Bass" if ev.median_pitch < BASS_MEDIAN_PITCH else "Melody"
    if ev.bars <= 16 and ev.distinct_chords >= 2 and ev.chord_changes_per_bar >= 0.5:
        return "Progressions"
    return "Chords"


def _drum_category(ev: Evidence, tags: Sequence[str]) -> str:
    part, share = max(ev.drum_parts.items(), key=lambda kv: kv[1])
    if share >= SINGLE_PART_SHARE:
        return PART_CATEGORY[part]
    for tag in tags:
        tagged = PART_TAGS.get(tag.lower())
        if tagged and ev.drum_parts.get(tagged, 0.0) >= 0.5:
            return PART_CATEGORY[tagged]
    return "Drums"


def _monophonic(ev: Evidence) -> bool:
    return ev.polyphony < 1.3 and ev.chord_onset_share < 0.25


def _allowed(category: str, ev: Evidence) -> bool:
    """Whether the notes allow a category a tag suggests."""
    chordal = not _monophonic(ev)
    median = ev.median_pitch if ev.median_pitch is not None else 0.0
    return {
        "Bass": ev.polyphony < 1.5 and median < 60,
        "Melody": ev.polyphony < 1.8,
        "Chords": chordal,
        "Progressions": chordal and ev.distinct_chords >= 2,
        "Loops": ev.bars <= 16,
        "FX": True,
    }[category]
