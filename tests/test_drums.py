"""Kit detection off channel 10 (midid/analysis/drums.py), rule by rule at its thresholds: the
end-to-end tests (test_analysis: a kit on channel 1, a bass line in a "Drum & Bass" folder)
show that it works; these pin where each rule starts and stops."""

from __future__ import annotations

import numpy as np
import pytest

from midid.analysis.drums import looks_like_kit, names_say_drums, part_shares

KICK, SNARE, HAT, CRASH, RIDE = 36, 38, 42, 49, 51
LOW_TOM, CONGA, COWBELL = 45, 63, 56  # on the kit map, not core kit notes


def notes(*groups: tuple[int, int]) -> np.ndarray:
    """(pitch, count) groups as a pitch array."""
    return np.array([p for p, n in groups for _ in range(n)], dtype=np.int64)


@pytest.mark.parametrize("pitch, expected", [
    # >= 4 notes, >= 80 % on core kit notes, >= 2 of kick / snare / hats with >= 5 % each
    (notes((KICK, 2), (SNARE, 2)), True),
    (notes((KICK, 2), (SNARE, 1)), False),  # fewer than 4 notes
    (notes((KICK, 40), (SNARE, 40), (LOW_TOM, 20)), True),  # 80 % core
    (notes((KICK, 40), (SNARE, 39), (LOW_TOM, 21)), False),  # 79 %
    (notes((KICK, 95), (SNARE, 5)), True),  # the second group at 5 %
    (notes((KICK, 96), (SNARE, 4)), False),  # ... at 4 %: one group
    (notes((KICK, 50), (CRASH, 25), (RIDE, 25)), False),  # kick and cymbals: one of the three groups
    (notes((HAT, 10), (SNARE, 10)), True),
    # at most 16 distinct notes, all inside the GM kit range 22..81
    (notes((KICK, 30), (SNARE, 30), *[(p, 1) for p in range(60, 74)]), True),  # 16 distinct
    (notes((KICK, 30), (SNARE, 30), *[(p, 1) for p in range(60, 75)]), False),  # 17 distinct
    (notes((KICK, 30), (SNARE, 30), (81, 1)), True),
    (notes((KICK, 30), (SNARE, 30), (82, 1)), False),
    (notes((KICK, 30), (SNARE, 30), (21, 1)), False),
    (np.zeros(0, dtype=np.int64), False),
])
def test_an_unnamed_voice_is_a_kit_by_its_note_map(pitch: np.ndarray, expected: bool) -> None:
    assert looks_like_kit(pitch, named=False, tagged=False) is expected


@pytest.mark.parametrize("pitch, expected", [
    # a file name or folder saying drums: up to 4 distinct notes, none of them "perc", suffice
    (notes((KICK, 2)), True),
    (notes((KICK, 1), (SNARE, 1), (HAT, 1), (CRASH, 1)), True),
    (notes((KICK, 8), (CONGA, 1)), False),  # a perc note: the plain rule, one group
    (notes((KICK, 1), (SNARE, 1), (HAT, 1), (CRASH, 1), (RIDE, 1)), True),  # 5 distinct: the plain rule
    (notes((KICK, 1), (SNARE, 1), (HAT, 1), (CRASH, 1), (LOW_TOM, 1)), True),  # 80 % core
    (notes((KICK, 1), (SNARE, 1), (HAT, 1), (LOW_TOM, 1), (COWBELL, 1)), False),  # 60 % core
    (notes((36, 1), (40, 1), (43, 1), (48, 1), (55, 1)), False),  # 5 distinct, 40 % core
    (notes((40, 2), (43, 2), (45, 2), (47, 2)), True),  # a bass line's notes, all on the kit map ...
    (notes((40, 2), (43, 2), (45, 2), (47, 2), (50, 2)), False),  # ... but the fifth note decides
])
def test_a_drum_word_in_the_path_accepts_a_few_kit_notes(pitch: np.ndarray, expected: bool) -> None:
    assert looks_like_kit(pitch, named=False, tagged=True) is expected


@pytest.mark.parametrize("pitch, expected", [
    # a track named as drums: >= 90 % of its notes inside the GM kit range
    (notes((CONGA, 9), (90, 1)), True),
    (notes((CONGA, 8), (90, 2)), False),
    (notes((COWBELL, 1)), True),
])
def test_a_track_named_drums_needs_only_the_kit_range(pitch: np.ndarray, expected: bool) -> None:
    assert looks_like_kit(pitch, named=True, tagged=False) is expected


def test_drum_words_and_part_shares() -> None:
    assert names_say_drums(["Kick 1"]) and names_say_drums(["lofi", "DRUMS"]) and names_say_drums(["hi-hat"])
    assert not names_say_drums(["Bass", "drumandbass"]) and not names_say_drums([])
    assert part_shares(np.array([3, 1, 0, 0, 0, 0])) == {
        "kick": 0.75, "snare": 0.25, "hats": 0.0, "cymbals": 0.0, "toms": 0.0, "perc": 0.0}
    assert set(part_shares(np.zeros(6, dtype=np.int64)).values()) == {0.0}
