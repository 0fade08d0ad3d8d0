"""Filename, folder and archive metadata: BPM, key and role/genre words become tagged priors."""

from __future__ import annotations

import pytest

from midid.metadata import (Tag, bpm_from_name, bpm_of_tag, bpm_tag, key_from_name, key_of_tag, key_tag, name_metadata,
                            tags_from_name)


@pytest.mark.parametrize("name, bpm", [
    ("loop 128bpm", 128.0), ("Loop_128 BPM_final", 128.0), ("trap_140_dark", 140.0), ("bpm90 chill", 90.0),
    ("92.5bpm groove", 92.5), ("kick-174-", 174.0), ("808 bass", None), ("track 7", None),
    ("take_12_final", None), ("20_latin-brazilian-baiao_110_beat_4-4", 110.0), ("Pack 2024", None),
    ("100_neworleans-secondline_94_beat_4-4", 94.0), ("75 Funk 95", 95.0), ("128 trap loop", 128.0),
    ("128 trap loop 2", 128.0), ("[90] dusty 85 keys", 85.0), ("loop 90 v2 140", 140.0),
    ("drummer3_session1_75_rock_95_beat_4-4", 95.0), ("180_rock_50_beat_4-4", 50.0), ("loop 45", None),
    ("Melody 3 (C minor, 128)", 128.0), ("keys,96,Am", 96.0),
])
def test_bpm_patterns(name: str, bpm: float | None) -> None:
    assert bpm_from_name(name) == bpm


@pytest.mark.parametrize("name, key", [
    ("bass Cmaj", ("C", "major")), ("lead C#m", ("C#", "minor")), ("pad Am", ("A", "minor")),
    ("chords F minor", ("F", "minor")), ("keys Bb major", ("A#", "major")), ("Ebmin arp", ("D#", "minor")),
    ("G#-min", ("G#", "minor")), ("D_dur", ("D", "major")), ("c-moll", ("C", "minor")), ("riff F#", ("F#", "major")),
    ("Loop A", None), ("Game em", None), ("Emotion", None), ("Bass", None), ("Abstract", None),
    ("Melody 3 (C minor, 128 BPM)", ("C", "minor")), ("keys,96,Am", ("A", "minor")),
])
def test_key_patterns(name: str, key: tuple[str, str] | None) -> None:
    assert key_from_name(name) == key


def test_the_key_and_bpm_tags_read_back_as_what_they_were_written_from() -> None:
    from midid.analysis.key import MODES, TONICS

    for tonic in TONICS:
        for mode in MODES:
            assert key_of_tag(key_tag(tonic, mode)) == (tonic, mode)
            assert key_of_tag(key_tag(tonic, mode).lower()) == (tonic, mode)
    assert [key_of_tag(t) for t in ("bpm:120", "key:", "key:H", "key:mm", "kick")] == [None] * 5
    assert [bpm_of_tag(bpm_tag(b)) for b in (140, 92.5)] == [140.0, 92.5]
    assert [bpm_of_tag(t) for t in ("key:Am", "bpm:", "bpm-stated:140", "kick")] == [None] * 4


@pytest.mark.parametrize("name, tags", [
    ("Kick Loop 01", ["kick", "loop"]), ("HiHat_open", ["hat"]), ("snare roll fill", ["snare", "fill"]),
    ("808 Bassline", ["bass"]), ("Lead Synth Hook", ["lead", "melody"]), ("chord stabs", ["chord"]),
    ("lo-fi hip-hop keys", ["lofi", "hiphop", "piano"]), ("soul-groove10", ["soul"]), ("Riser FX", ["fx"]),
    ("crash ride", ["cymbal"]), ("conga perc", ["perc"]), ("tom fill", ["tom", "fill"]), ("PadProgression", ["pad", "progression"]),
])
def test_tag_words(name: str, tags: list[str]) -> None:
    assert tags_from_name(name) == tags


def test_sources_and_precedence() -> None:
    meta = name_metadata("loop 90bpm.mid", folders=["Trap 140 BPM", "Drums"], archives=["Mega Pack Am.zip"])
    assert meta.bpm == 90.0                       # the file name wins over its folder
    assert (meta.key_tonic, meta.key_mode) == ("A", "minor")   # from the archive name
    assert Tag("loop", "filename") in meta.tags
    assert Tag("trap", "folder") in meta.tags and Tag("drums", "folder") in meta.tags
    inner = name_metadata("kick.mid", folders=["Trap 140 BPM", "Slow 70 BPM"])
    assert inner.bpm == 70.0                      # the nearest folder wins
    assert [t.tag for t in inner.tags].count("kick") == 1


@pytest.mark.parametrize("name, folders, bpm, stated", [
    ("Trap 140bpm.mid", (), 140.0, True), ("bpm128 keys.mid", (), 128.0, True),
    ("Loop 95.mid", (), 95.0, False), ("187.mid", (), 187.0, False),
    ("loop.mid", ("Trap 140 BPM",), 140.0, True), ("loop 90.mid", ("Trap 140 BPM",), 90.0, False),
    ("loop.mid", ("Trap 140",), 140.0, False), ("keys.mid", (), None, False),
])
def test_a_tempo_written_with_the_word_bpm_is_stated(name: str, folders: tuple, bpm: float | None,
                                                     stated: bool) -> None:
    meta = name_metadata(name, folders=folders)
    assert (meta.bpm, meta.bpm_stated) == (bpm, stated)
