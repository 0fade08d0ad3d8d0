"""The category rule table (midid/analysis/category.py's docstring), rule by rule, at its
documented thresholds: each row is checked on both sides of its boundary, so a rule that drifts
(a threshold, a comparison, an "and" that became "or") fails here, not only on the corpus files
whose categories the other tests check end to end."""

from __future__ import annotations

from dataclasses import replace

import pytest

from midid.analysis.category import (BASS_MEDIAN_PITCH, CATEGORIES, CATEGORY_TAGS, DRUM_SHARE, SINGLE_PART_SHARE,
                                     Evidence, categorize)

NO_DRUMS = {"kick": 0.0, "snare": 0.0, "hats": 0.0, "cymbals": 0.0, "toms": 0.0, "perc": 0.0}
# A plain kit: kick, snare and hats, no part anywhere near a single-part share.
KIT = {**NO_DRUMS, "kick": 0.3, "snare": 0.3, "hats": 0.4}
# Mostly one note at a time in a bass register, 8 bars: a bass line.
LINE = Evidence(notes=40, drum_share=0.0, drum_parts=NO_DRUMS, pitched_voices=1, polyphony=1.0,
                chord_onset_share=0.0, median_pitch=43.0, bars=8, distinct_chords=1, chord_changes_per_bar=0.0)
# Block chords in the middle register, 8 bars, four chords changing every bar: a progression.
BLOCKS = replace(LINE, polyphony=3.5, chord_onset_share=0.9, median_pitch=62.0, distinct_chords=4,
                 chord_changes_per_bar=1.0)
DRUMS = replace(LINE, drum_share=1.0, drum_parts=KIT, median_pitch=None)


def drums(share: float = 1.0, **parts: float) -> Evidence:
    return replace(DRUMS, drum_share=share, drum_parts={**NO_DRUMS, **parts})


@pytest.mark.parametrize("evidence, tags, expected", [
    # 1: no notes
    (replace(LINE, notes=0), [], "FX"),
    (replace(LINE, notes=0), ["bass"], "FX"),
    # 2: >= 90 % drums and one part >= 85 % of the hits
    (drums(kick=SINGLE_PART_SHARE, snare=1 - SINGLE_PART_SHARE), [], "DrumKicks"),
    (drums(kick=0.84, snare=0.16), [], "Drums"),
    (drums(snare=1.0), [], "DrumSnares"),
    (drums(hats=0.9, cymbals=0.1), [], "DrumHats"),
    (drums(cymbals=1.0), [], "DrumCymbals"),
    (drums(toms=1.0), [], "DrumToms"),
    (drums(perc=1.0), [], "DrumPerc"),
    (drums(DRUM_SHARE, kick=1.0), [], "DrumKicks"),
    # 3: a tag names a part holding >= 50 % of the hits
    (drums(kick=0.5, snare=0.3, hats=0.2), ["kick"], "DrumKicks"),
    (drums(kick=0.49, snare=0.31, hats=0.2), ["kick"], "Drums"),
    (drums(kick=0.3, snare=0.2, hats=0.5), ["Hihat"], "DrumHats"),
    (drums(kick=0.6, snare=0.4), ["bass"], "Drums"),  # a melodic tag says nothing of a kit
    # 4: a kit
    (DRUMS, [], "Drums"),
    # 5: drums and pitched notes both >= 10 %: one part alone is no longer enough
    (drums(0.89, kick=1.0), [], "Loops"),
    (drums(0.1, kick=1.0), [], "Loops"),
    (replace(LINE, drum_share=0.09, drum_parts={**NO_DRUMS, "kick": 1.0}), [], "Bass"),
    # 7: too few notes, or a median pitch outside 22..96
    (replace(LINE, notes=3), [], "FX"),
    (replace(LINE, notes=4), [], "Bass"),
    (replace(LINE, median_pitch=21.5), [], "FX"),
    (replace(LINE, median_pitch=22.0), [], "Bass"),
    (replace(LINE, median_pitch=96.0), [], "Melody"),
    (replace(LINE, median_pitch=96.5), [], "FX"),
    (replace(BLOCKS, median_pitch=100.0), [], "FX"),
    # 8: two pitched voices
    (replace(LINE, pitched_voices=2), [], "Loops"),
    # 9: mostly one note at a time: Bass below G3, else Melody
    (replace(LINE, median_pitch=BASS_MEDIAN_PITCH - 0.5), [], "Bass"),
    (replace(LINE, median_pitch=BASS_MEDIAN_PITCH), [], "Melody"),
    (replace(LINE, polyphony=1.29), [], "Bass"),
    (replace(LINE, polyphony=1.3), [], "Chords"),
    (replace(LINE, chord_onset_share=0.24), [], "Bass"),
    (replace(LINE, chord_onset_share=0.25), [], "Chords"),  # single notes, with stabs on a quarter of the onsets
    # 10: chordal, <= 16 bars, >= 2 chords changing at least every 2 bars
    (BLOCKS, [], "Progressions"),
    (replace(BLOCKS, bars=16), [], "Progressions"),
    (replace(BLOCKS, bars=17), [], "Chords"),
    (replace(BLOCKS, distinct_chords=1), [], "Chords"),
    (replace(BLOCKS, distinct_chords=2), [], "Progressions"),
    (replace(BLOCKS, chord_changes_per_bar=0.5), [], "Progressions"),
    (replace(BLOCKS, chord_changes_per_bar=0.49), [], "Chords"),
])
def test_each_rule_at_its_threshold(evidence: Evidence, tags: list[str], expected: str) -> None:
    assert categorize(evidence, tags) == expected


@pytest.mark.parametrize("evidence, tag, allowed", [
    # "bass": mostly single notes (polyphony < 1.5) below middle C (median < 60)
    (replace(LINE, median_pitch=59.5), "bass", True),
    (replace(LINE, median_pitch=60.0), "bass", False),
    (replace(LINE, median_pitch=50.0, polyphony=1.49, chord_onset_share=0.3), "bass", True),
    (replace(LINE, median_pitch=50.0, polyphony=1.5, chord_onset_share=0.3), "bass", False),
    (replace(BLOCKS, median_pitch=72.0), "808", False),  # high block chords: neither half of the rule
    # "melody" / "lead": mostly single notes (polyphony < 1.8), in any register
    (replace(LINE, median_pitch=48.0, polyphony=1.79, chord_onset_share=0.3), "lead", True),
    (replace(LINE, median_pitch=48.0, polyphony=1.8, chord_onset_share=0.3), "melody", False),
    # "chord" / "pad": chordal material only
    (replace(LINE, median_pitch=70.0), "pad", False),
    (replace(BLOCKS, bars=32, distinct_chords=1), "pad", True),
    # "progression": chordal material with >= 2 chords
    (replace(BLOCKS, bars=32), "progression", True),
    (replace(BLOCKS, bars=32, distinct_chords=2), "progression", True),
    (replace(BLOCKS, bars=32, distinct_chords=1), "progression", False),
    (replace(LINE, median_pitch=70.0, distinct_chords=3), "prog", False),  # a tune names chords too
    # "loop": at most 16 bars
    (replace(LINE, median_pitch=70.0, bars=16), "loop", True),
    (replace(LINE, median_pitch=70.0, bars=17), "loop", False),
    # "fx": anything
    (BLOCKS, "riser", True),
])
def test_a_tag_wins_only_where_the_notes_allow_it(evidence: Evidence, tag: str, allowed: bool) -> None:
    tagged, untagged = categorize(evidence, [tag]), categorize(evidence, [])
    if allowed:
        assert tagged == CATEGORY_TAGS[tag]
    else:
        assert tagged == untagged != CATEGORY_TAGS[tag]


def test_the_first_allowed_tag_wins_and_the_table_covers_every_category() -> None:
    chordal_loop = replace(BLOCKS, bars=8)
    assert categorize(chordal_loop, ["bass", "pad", "loop"]) == "Chords"  # "bass" is not allowed here
    assert categorize(chordal_loop, ["loop", "pad"]) == "Loops"
    seen = {categorize(e, t) for e, t in [
        (replace(LINE, notes=0), []), (drums(kick=1.0), []), (drums(snare=1.0), []), (drums(hats=1.0), []),
        (drums(cymbals=1.0), []), (drums(toms=1.0), []), (drums(perc=1.0), []), (DRUMS, []), (LINE, []),
        (replace(LINE, median_pitch=70.0), []), (BLOCKS, []), (replace(BLOCKS, bars=32), []),
        (replace(LINE, pitched_voices=2), []),
    ]}
    assert seen == set(CATEGORIES)
