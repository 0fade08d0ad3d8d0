"""Tests for midid.stages.sanitize: examples and FAT/exFAT legality properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midid.stages.sanitize import (
    DIRNAME_MAX,
    FILENAME_MAX,
    MAX_FOLDER_LEVELS,
    RESERVED_NAMES,
    clean_component,
    library_relpath,
    sanitize_dirname,
    sanitize_filename,
)

FAT_FORBIDDEN = set('<>:"/\\|?*') | {chr(c) for c in range(32)} | {"\x7f"}
SHELL_HOSTILE = set("$;&!'`(){}[]#%~@^=+, \n\t")

# Names with everything that goes wrong in real packs: spaces, symbols, accents, CJK, emoji,
# device names, dots at the edges, control characters.
names = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from(list("<>:\"/\\|?*$;&!'`(){}[]#%~@^=+,. -_\n\t")),
    ),
    max_size=120,
) | st.sampled_from(["CON", "con.mid", "Nul", "COM1.txt", "lpt9.MIDI", "aux.", " .", ".."])
names = names | st.tuples(names, st.sampled_from([".zip", ".7z.", ".mid.", ".tar.gz", ".MIDI "])).map(
    "".join)


def assert_fat_legal(component: str, max_len: int) -> None:
    assert component, "empty component"
    assert component.isascii()
    assert len(component) <= max_len
    assert not FAT_FORBIDDEN & set(component)
    assert not SHELL_HOSTILE & set(component)
    assert component[-1] not in ". "
    assert component[0] not in "-. "
    assert component.split(".")[0].upper() not in RESERVED_NAMES
    assert "__" not in component


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Kick 01.wav.MID", "Kick_01.wav.mid"),
        ("my song (final)!!.MIDI", "my_song_final.mid"),
        ("Café Beat #2.kar", "Cafe_Beat_2.mid"),
        ("Artist - Song: Remix [128 BPM].mid", "Artist-Song_Remix_128_BPM.mid"),
        ("Don't Stop.Mid", "Dont_Stop.mid"),
        ("karaoke.rmi", "karaoke.mid"),
        ("no extension", "no_extension.mid"),
        ("song.v2", "song.v2.mid"),
        ("-rf .mid", "rf.mid"),
        ("  .hidden.MID ", "hidden.mid"),
        ("CON.mid", "CON_.mid"),
        ("lpt1.backup.mid", "lpt1_.backup.mid"),
        ("...", "untitled.mid"),
        (".mid", "untitled.mid"),
        ("日本語.mid", "RiBenYu.mid"),
        ("line\nbreak\x00.mid", "line_break.mid"),
        ("twice.mid.mid", "twice.mid"),
        ("dotted.mid.", "dotted.mid"),
    ],
)
def test_sanitize_filename_examples(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Trap Pack.zip", "Trap_Pack"),
        ("Drums Vol. 2.tar.gz", "Drums_Vol.2"),
        ("Loops.7Z", "Loops"),
        ("Keys & Pads.rar", "Keys_Pads"),
        ("AUX", "AUX_"),
        ("", "untitled"),
        ("Folder.", "Folder"),
        ("Pack.7z.zip", "Pack"),
        ("Pack.zip.", "Pack"),
    ],
)
def test_sanitize_dirname_examples(name: str, expected: str) -> None:
    assert sanitize_dirname(name) == expected


def test_long_names_are_cut_to_the_bound() -> None:
    name = sanitize_filename("a very long name " * 10 + ".mid")
    assert len(name) == FILENAME_MAX or len(name) == FILENAME_MAX - 1
    assert name.endswith(".mid") and not name.endswith("_.mid")
    assert len(sanitize_dirname("x" * 300)) == DIRNAME_MAX


@settings(max_examples=500)
@given(names)
def test_filenames_are_fat_legal(name: str) -> None:
    result = sanitize_filename(name)
    assert result.endswith(".mid")
    assert_fat_legal(result, FILENAME_MAX)
    assert sanitize_filename(result) == result  # idempotent: re-importing keeps the name


@settings(max_examples=500)
@given(names, st.integers(min_value=1, max_value=FILENAME_MAX))
def test_cleaning_is_idempotent(name: str, max_len: int) -> None:
    """What lets a cleaned stem without a suffix be final (`_clean_stem`)."""
    once = clean_component(name, max_len)
    assert clean_component(once, max_len) == once


@settings(max_examples=500)
@given(names)
def test_dirnames_are_fat_legal(name: str) -> None:
    result = sanitize_dirname(name)
    assert_fat_legal(result, DIRNAME_MAX)
    assert sanitize_dirname(result) == result


def _taken_in(paths: set[str]):
    return lambda path: path.casefold() in paths


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.lists(names, max_size=7),
            names,
            st.text("0123456789abcdef", min_size=1, max_size=32),
        ),
        max_size=25,
    )
)
def test_relpaths_are_legal_and_unique(files: list[tuple[list[str], str, str]]) -> None:
    placed: set[str] = set()
    for folders, filename, digest in files:
        relpath = library_relpath(folders, filename, digest, _taken_in(placed))
        assert relpath.casefold() not in placed
        placed.add(relpath.casefold())
        *dirs, name = relpath.split("/")
        assert len(dirs) <= MAX_FOLDER_LEVELS
        for component in dirs:
            assert_fat_legal(component, DIRNAME_MAX)
        assert name.endswith(".mid")
        assert_fat_legal(name, FILENAME_MAX)


def test_relpath_keeps_last_four_folders_and_skips_empty_ones() -> None:
    relpath = library_relpath(
        ["Downloads", "packs", "", ".", "Trap Pack.zip", "Drums", "Kicks 808"],
        "Kick 1.MID", "abcdef012345", lambda p: False,
    )
    assert relpath == "packs/Trap_Pack/Drums/Kicks_808/Kick_1.mid"


def test_collision_suffix_comes_from_the_content_hash_and_is_order_independent() -> None:
    a, b, c = "1a2b3c4d5e6f", "1a2b3c999999", "ffff00001111"
    placed: set[str] = set()
    first = library_relpath(["Pack"], "kick.mid", a, _taken_in(placed))
    placed.add(first.casefold())
    second = library_relpath(["pack"], "KICK.midi", b, _taken_in(placed))
    placed.add(second.casefold())
    third = library_relpath(["Pack"], "Kick.mid", c, _taken_in(placed))
    assert first == "Pack/kick.mid"
    assert second == "pack/KICK_1a2b3c.mid"
    # The 6-character prefix of c does not collide with anything, whatever came before.
    assert third == "Pack/Kick_ffff00.mid"
    # Same hash prefix taken: more hash characters, not a counter.
    placed.add(third.casefold())
    fourth = library_relpath(["Pack"], "kick.mid", "1a2b3c777777", _taken_in(placed))
    assert fourth == "Pack/kick_1a2b3c7.mid"


def test_collision_suffix_keeps_long_names_within_the_bound() -> None:
    placed = {("L" * 60 + ".mid").casefold()}
    relpath = library_relpath([], "L" * 80, "0123456789abcdef", _taken_in(placed))
    assert len(relpath) <= FILENAME_MAX
    assert re.fullmatch(r"L+_012345\.mid", relpath)


def test_same_hash_taken_everywhere_falls_back_to_a_counter() -> None:
    digest = "abcdef"
    placed = {"kick.mid", "kick_abcdef.mid"}
    relpath = library_relpath([], "kick.mid", digest, _taken_in(placed))
    assert relpath == "kick_abcdef_2.mid"
