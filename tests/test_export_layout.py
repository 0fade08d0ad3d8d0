"""Export folder layout per profile and collision-safe, FAT-legal names."""

from __future__ import annotations

import re

import pytest

from midid.export.layout import CATEGORIES, LAYOUTS, export_relpath, progression_relpath

FAT_ILLEGAL = re.compile(r'[<>:"\\|?*\x00-\x1f ]')


def test_every_profile_maps_all_thirteen_categories():
    assert len(CATEGORIES) == 13
    for profile, layout in LAYOUTS.items():
        assert set(layout) == set(CATEGORIES), profile
        assert len(set(layout.values())) == len(CATEGORIES), f"{profile}: a folder is shared"


def test_mpc_layout_matches_the_seed_design():
    mpc = LAYOUTS["mpc"]
    assert mpc["DrumKicks"] == "SAMPLES/Drums/Kicks"
    assert mpc["DrumPerc"] == "SAMPLES/Drums/Percussion"
    assert mpc["Drums"] == "SAMPLES/Drums"
    assert mpc["Bass"] == "SAMPLES/Bass"
    assert mpc["Progressions"] == "Progressions"
    assert LAYOUTS["force"]["Progressions"] == "Progressions"


def test_relpath_has_root_category_pack_and_legal_name():
    rel = export_relpath("mpc", "DrumSnares", "Trap Pack Vol.2 (2019).zip", "x/Snare Roll #1.MIDI")
    assert rel.startswith("MPC_Documents/SAMPLES/Drums/Snares/")
    pack, name = rel.split("/")[-2:]
    assert "Trap" in pack and not pack.endswith(".zip")
    assert name.endswith(".mid") and "Snare" in name
    for part in rel.split("/"):
        assert not FAT_ILLEGAL.search(part), part
        assert part and not part.endswith(".")


def test_no_pack_and_custom_root():
    assert export_relpath("force", "Bass", None, "b.mid", root="") == "MIDI/Bass/b.mid"
    rel = export_relpath("mpc", "FX", "  ", "f.mid", root="My Stuff")
    assert rel == "My_Stuff/SAMPLES/FX/f.mid"


def test_collisions_get_suffixes_case_insensitively():
    taken: set[str] = set()

    def is_taken(path: str) -> bool:
        return path.casefold() in taken

    results = []
    for name in ["Kick.mid", "KICK.mid", "kick.midi"]:
        rel = export_relpath("mpc", "DrumKicks", "p", name, taken=is_taken)
        taken.add(rel.casefold())
        results.append(rel.rsplit("/", 1)[1])
    assert len({r.casefold() for r in results}) == 3
    assert results[0] == "Kick.mid"
    assert results[1].endswith("_2.mid") and results[2].endswith("_3.mid")


def test_long_names_stay_within_64_characters_with_suffix():
    long = "A" * 200 + ".mid"
    rel = export_relpath("mpc", "Melody", "p", long, taken=lambda p: not p.endswith("_12.mid"))
    assert rel.endswith("_12.mid") and len(rel.rsplit("/", 1)[1]) <= 64
    prog = progression_relpath("mpc", long)
    assert prog.startswith("MPC_Documents/Progressions/") and prog.endswith(".progression")
    assert len(prog.rsplit("/", 1)[1]) <= 64


def test_progression_files_go_flat_into_progressions():
    rel = progression_relpath("force", "Am F C G.mid", taken=lambda p: p.endswith("G.progression"))
    assert rel == "MPC_Documents/Progressions/Am_F_C_G_2.progression"


@pytest.mark.parametrize(("profile", "category"), [("mpc3000", "Bass"), ("mpc", "Vocals")])
def test_unknown_profile_or_category_names_allowed_values(profile, category):
    with pytest.raises(ValueError, match="allowed: .*(force|DrumKicks)"):
        export_relpath(profile, category, None, "x.mid")


@pytest.mark.parametrize("library_name", ["CON.mid", "src/CON_.mid", "nul.MID", "Lpt1.midi", "aux_.mid"])
def test_a_windows_device_name_keeps_its_underscore_on_the_drive(library_name):
    """A drive the MPC uses is often read on Windows too, which cannot open CON.mid."""
    rel = export_relpath("mpc", "Drums", "p", library_name)
    stem = rel.rsplit("/", 1)[1].partition(".")[0]
    assert stem.endswith("_") and stem[:-1].upper() in {"CON", "NUL", "LPT1", "AUX"}
    assert progression_relpath("mpc", library_name).rsplit("/", 1)[1].partition(".")[0] == stem
