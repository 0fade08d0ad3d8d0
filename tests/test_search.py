"""`midictl find`, `stats` and `devices` over a real library made by `midictl import`."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner

from conftest import DATA, write_config
from midid.analysis import analyze_bytes
from midid.ctl import cli
from midid.config import load_config
from midid.db import Library
from midid.search import FindQuery, QueryError, find, parse_bpm, parse_key
from test_analysis import TPQ, chords_track, drum_pattern, notes, smf

FIND_KEYS = {"id", "path", "file", "name", "pack", "parent_id", "bpm", "key", "category", "tags", "duration_s"}
# A minor: i - iv - V - i, a bar each, twice.
AM_DM_E_AM = [(45, 60, 64, 69), (50, 62, 65, 69), (52, 59, 64, 68), (45, 60, 64, 69)]


def tempo(bpm: float) -> list:
    return [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)]


def pack_files() -> dict[str, bytes]:
    """A small pack whose tempo, key and category are unambiguous (checked in ``library``)."""
    return {
        "Kick Loop 128.mid": smf(tempo(128), drum_pattern(4, kick_only=True)),
        "Minor Pad Chords.mid": smf(tempo(90), chords_track(AM_DM_E_AM * 2, 4 * TPQ)),
        "Deep Bass Line.mid": smf(tempo(100), notes([(p, TPQ) for p in (36, 36, 43, 41, 36, 38, 43, 41)])),
    }


def run(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], terminal_width=60)
    assert result.exit_code == 0, result.output
    return result.stdout  # click >= 8.2 keeps stderr (the table's footer) apart


def find_json(config: Path, *args: str) -> list[dict]:
    return [json.loads(line) for line in run(config, "find", "--json", *args).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose library holds the pack above, the repo's two Groove files and its POP909
    song (split into its three tracks), and one duplicate of the kick loop under another name
    in another pack."""
    root = tmp_path_factory.mktemp("search")
    pack = root / "Producer Pack"
    pack.mkdir()
    for name, data in pack_files().items():
        (pack / name).write_bytes(data)
    (pack / "Other Pack").mkdir()
    (pack / "Other Pack" / "kick copy.mid").write_bytes(pack_files()["Kick Loop 128.mid"])
    for f in sorted((DATA / "midi").glob("*.mid")):
        (pack / f.name).write_bytes(f.read_bytes())
    config = write_config(root)
    summary = json.loads(run(config, "import", "--local", "--json", str(pack)).splitlines()[-1])
    assert (summary["imported"], summary["duplicates"], summary["split_parts"]) == (6, 1, 3)
    return config


def test_the_pack_is_what_the_tests_below_assume() -> None:
    made = {name: analyze_bytes(data) for name, data in pack_files().items()}
    assert (made["Kick Loop 128.mid"].category, made["Kick Loop 128.mid"].bpm) == ("DrumKicks", 128.0)
    chords = made["Minor Pad Chords.mid"]
    assert (chords.key_tonic, chords.key_mode, chords.bpm) == ("A", "minor", 90.0)
    assert (made["Deep Bass Line.mid"].category, made["Deep Bass Line.mid"].bpm) == ("Bass", 100.0)


def test_find_json_rows_have_the_documented_keys(library: Path) -> None:
    rows = find_json(library)
    assert len(rows) == 9  # 6 imported files and 3 parts; the duplicate is an alias
    assert all(set(row) == FIND_KEYS for row in rows)
    parts = [r for r in rows if r["parent_id"] is not None]
    song = next(r for r in rows if r["name"] == "pop909_003.mid")
    assert len(parts) == 3 and {p["parent_id"] for p in parts} == {song["id"]}


def test_find_by_bpm_exact_and_range(library: Path) -> None:
    assert [r["name"] for r in find_json(library, "--bpm", "128")] == ["Kick Loop 128.mid"]
    assert find_json(library, "--bpm", "127") == []
    in_range = find_json(library, "--bpm", "89-117")
    bpms = [r["bpm"] for r in in_range]
    assert bpms == sorted(bpms) and all(89 <= b <= 117 for b in bpms)
    names = {r["name"] for r in in_range}
    assert {"Minor Pad Chords.mid", "Deep Bass Line.mid", "100_neworleans-secondline_94_beat_4-4.mid",
            "29_latin-samba_116_fill_4-4.mid"} <= names
    assert "Kick Loop 128.mid" not in names
    assert find_json(library, "--bpm", "117-89") == in_range  # a range written backwards


@pytest.mark.parametrize("spelling", ["Am", "A minor", "a min", "Am "])
def test_find_by_key_in_any_spelling(library: Path, spelling: str) -> None:
    rows = find_json(library, "--key", spelling)
    assert "Minor Pad Chords.mid" in {r["name"] for r in rows}
    assert {r["key"] for r in rows} == {"Am"}


def test_find_by_category_any_case_and_tag_and_text(library: Path) -> None:
    assert [r["name"] for r in find_json(library, "--category", "DrumKicks")] == ["Kick Loop 128.mid"]
    assert find_json(library, "--category", "drumkicks") == find_json(library, "--category", "DrumKicks")
    bass = find_json(library, "--category", "bass")
    assert "Deep Bass Line.mid" in {r["name"] for r in bass} and {r["category"] for r in bass} == {"Bass"}
    kicks = find_json(library, "--tag", "KICK")
    assert "Kick Loop 128.mid" in {r["name"] for r in kicks}
    assert all("kick" in r["tags"] for r in kicks)
    assert [r["name"] for r in find_json(library, "--text", "samba")] == ["29_latin-samba_116_fill_4-4.mid"]
    assert [r["name"] for r in find_json(library, "--text", "pad chor")] == ["Minor Pad Chords.mid"]


def test_a_file_is_found_by_the_name_and_pack_of_its_duplicates(library: Path) -> None:
    for words in ("kick copy", "other pack", "Kick Loop"):
        assert [r["name"] for r in find_json(library, "--text", words)] == ["Kick Loop 128.mid"], words
    again = CliRunner().invoke(cli, ["--config", str(library), "import", "--local", "--json",
                                     str(library.parent / "Producer Pack")])
    assert again.exit_code == 0 and json.loads(again.output.splitlines()[-1])["duplicates"] == 7
    with closing(sqlite3.connect(library.parent / "midid.sqlite3")) as conn:
        name, pack = conn.execute("SELECT s.name, s.pack FROM search s JOIN files f ON f.id = s.rowid"
                                  " WHERE f.name = 'Kick Loop 128.mid'").fetchone()
    assert (name, pack) == ("Kick Loop 128.mid kick copy.mid", "Producer Pack Other Pack")  # each once


def test_find_gives_each_file_where_it_is_on_disk(library: Path) -> None:
    library_folder = library.parent / "library"
    rows = find_json(library)
    for row in rows:
        assert Path(row["file"]) == library_folder / row["path"]
        assert Path(row["file"]).is_file()
    paths = run(library, "find", "--paths").splitlines()
    assert paths == [row["file"] for row in rows]
    bass = run(library, "find", "--category", "Bass", "--paths").splitlines()
    assert bass and all(Path(p).is_absolute() and p.endswith(".mid") for p in bass)
    both = CliRunner().invoke(cli, ["--config", str(library), "find", "--json", "--paths"])
    assert both.exit_code == 2 and "choose one" in both.output


def test_find_table_says_how_many_files_where_and_when_the_limit_cut_them(library: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(library), "find"])
    assert result.exit_code == 0
    assert " ".join(result.stderr.split()) == f"9 files in {library.parent / 'library'}"
    cut = CliRunner().invoke(cli, ["--config", str(library), "find", "--limit", "2"], env={"COLUMNS": "200"})
    assert len([line for line in cut.stdout.splitlines() if line.strip()]) == 3  # header + 2
    assert "2 files in" in cut.stderr and "there may be more: --limit 20" in cut.stderr
    none = CliRunner().invoke(cli, ["--config", str(library), "find", "--bpm", "300"])
    assert (none.stdout, none.stderr.strip()) == ("", "no matching files")


def test_find_table_gives_a_narrow_terminal_to_the_path_and_cuts_the_tags(library: Path) -> None:
    rows = find_json(library, "--limit", "100")
    longest = max(len(r["path"]) for r in rows)
    width = longest + 40  # room for every path on one line, not for all the tags
    table = CliRunner().invoke(cli, ["--config", str(library), "find", "--limit", "100"],
                               env={"COLUMNS": str(width)}).stdout.splitlines()
    assert len(table) == 1 + len(rows)  # no row folded onto a second line
    assert all(len(line) <= width for line in table)
    assert {line.split()[0] for line in table[1:]} == {r["path"] for r in rows}
    assert any(line.rstrip().endswith("…") for line in table[1:])  # the long tag lists cut short


@pytest.mark.parametrize("query", [
    dict(category="Drums", text="neworleans"), dict(bpm="60-200", tags=("kick",)), dict(key="Am", text="pack"),
    dict(category="Melody", tags=("melody",), text="pop909"), dict(bpm="90-130", category="Drums", text="beat"),
])
def test_find_gives_the_same_rows_whether_a_tag_or_word_drives_the_query_or_is_checked_row_by_row(
        library: Path, monkeypatch: pytest.MonkeyPatch, query: dict) -> None:
    from midid import search

    lib = Library(load_config(library).database_path, readonly=True)
    sql: list[str] = []
    lib.db.conn.set_trace_callback(sql.append)
    monkeypatch.setattr(search, "MANY_MEMBERS", 10**9)  # every list small: it drives
    driven = find(lib, FindQuery(**query, limit=100))
    assert not any("+f.id IN" in s for s in sql)
    monkeypatch.setattr(search, "MANY_MEMBERS", 1)  # every list large: checked row by row
    checked = find(lib, FindQuery(**query, limit=100))
    assert any("+f.id IN" in s for s in sql)
    assert driven == checked and driven  # same rows, same order, and some


def test_conditions_combine_and_limit_caps(library: Path) -> None:
    both = find_json(library, "--category", "Drums", "--bpm", "90-100")
    assert [r["name"] for r in both] == ["100_neworleans-secondline_94_beat_4-4.mid"]
    assert find_json(library, "--category", "Drums", "--bpm", "120-130") == []
    assert len(find_json(library, "--limit", "2")) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--bpm", "fast"], "expected a number like 120 or a range like 118-122"),
    (["--key", "H"], "expected a key like C, Am"),
    (["--category", "Basses"], "'Basses' is not one of"),
])
def test_a_badly_written_option_says_what_is_allowed(library: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["--config", str(library), "find", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_flat_and_enharmonic_key_names() -> None:
    assert parse_key("Bbmaj") == ("A#", "major")
    assert parse_key("ebm") == ("D#", "minor")
    assert parse_key("E#") == ("F", "major")
    assert parse_key("B#m") == ("C", "minor")
    assert parse_key("Cb minor") == ("B", "minor")
    assert parse_bpm("120") == (119.5, 120.5)
    with pytest.raises(QueryError):
        parse_key("Am7")


def test_find_table_shows_whole_file_names_on_a_narrow_terminal(library: Path) -> None:
    out = run(library, "find", "--text", "secondline")
    header, *lines = [line for line in out.splitlines() if line.strip()]
    assert header.split() == ["path", "bpm", "key", "category", "tags"]
    assert len(lines) > 1  # the path wrapped
    assert "".join(line.split()[0] for line in lines) == "Producer_Pack/100_neworleans-secondline_94_beat_4-4.mid"
    assert lines[0].split()[1:3] == ["94.0", "Drums"]


def test_find_on_a_missing_library_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(write_config(tmp_path)), "find"])
    assert result.exit_code == 2
    assert "midid.sqlite3" in result.output


def test_stats_counts_files_parts_duplicates_and_histograms(library: Path) -> None:
    data = json.loads(run(library, "stats", "--json"))
    assert (data["files"], data["parts"], data["sources"], data["duplicates"]) == (9, 3, 7, 1)
    assert data["duplicate_bytes_saved"] == len(pack_files()["Kick Loop 128.mid"])
    assert sum(data["categories"].values()) == 9
    assert data["categories"]["DrumKicks"] == 1 and data["categories"]["Bass"] >= 1
    assert sum(data["bpm"].values()) == 9
    assert data["bpm"]["120-129"] == 1 and data["bpm"]["90-99"] >= 2  # 128; 90 and 94
    assert data["keys"]["Am"] >= 1
    rows = find_json(library, "--limit", "100")
    assert sum(1 for r in rows if r["key"]) == sum(data["keys"].values())
    table = run(library, "stats")
    assert "DrumKicks" in table and "Am" in table


def test_stats_of_a_library_without_duplicates_saves_nothing(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    for name, data in pack_files().items():
        (pack / name).write_bytes(data)
    config = write_config(tmp_path)
    run(config, "import", "--local", str(pack))
    data = json.loads(run(config, "stats", "--json"))
    assert (data["files"], data["sources"], data["duplicates"], data["duplicate_bytes_saved"]) == (3, 3, 0, 0)


def test_devices_before_any_drive_says_how_to_get_one(library: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(library), "devices"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and result.stdout == ""
    assert " ".join(result.stderr.split()) == ("no export drive seen yet; plug one in (label MPC*, FORCE*, AKAI*"
                                               " or listed in [export] devices)")
