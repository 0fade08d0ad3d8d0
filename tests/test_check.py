"""`midictl check`: the library folder and the database agree, and `--repair` makes them agree."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import copied, write_config
from midid.check import UNRECOVERABLE, UNRECOVERABLE_PART
from midid.ctl import cli


def run(config: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def _library_paths(tmp_path: Path) -> dict[str, str]:
    """Name -> library path of every file, split parts included."""
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        return dict(conn.execute("SELECT name, path FROM files"))


def test_check_finds_and_repairs_disagreements(tmp_path: Path, sample_midi) -> None:
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path)
    assert run(config, "import", "--local", "--json", str(src)).exit_code == 0
    clean = run(config, "check", "--json")
    assert clean.exit_code == 0 and json.loads(clean.output)["ok"]
    lib = tmp_path / "library"
    paths = _library_paths(tmp_path)
    groove = next(n for n in paths if n.startswith("100_"))
    (lib / paths[groove]).unlink()                        # missing, a source still has the bytes
    part = next(n for n in paths if n.endswith("_PIANO.mid"))
    part_bytes = (lib / paths[part]).read_bytes()
    (lib / paths[part]).unlink()                          # missing, derived: cut again from its parent
    stray = lib / "src" / "stray_copy.mid"
    stray.write_bytes((src / sample_midi[1].name).read_bytes())   # a second copy of a known file
    new = lib / "src" / "adopt_me.mid"
    new.write_bytes(sample_midi[1].read_bytes() + b"\x00new")     # bytes the library lacks
    (lib / ".midid-staging").mkdir(exist_ok=True)
    (lib / ".midid-staging" / "leftover").write_bytes(b"half")
    found = run(config, "check", "--json")
    assert found.exit_code == 1
    report = json.loads(found.output)
    assert set(report["missing"]) == {paths[groove], paths[part]}
    assert set(report["orphans"]) == {"src/stray_copy.mid", "src/adopt_me.mid"}
    assert report["staging"] == 1
    fixed = run(config, "check", "--repair", "--json")
    report = json.loads(fixed.output)
    assert report["repaired"] == {"staging": 1, "restored": 2, "unrecoverable": 0, "adopted": 1, "removed_copies": 1}
    assert (lib / paths[groove]).read_bytes() == (src / groove).read_bytes()
    assert (lib / paths[part]).read_bytes() == part_bytes
    assert not stray.exists() and new.exists()
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        adopted = conn.execute("SELECT analysed_at FROM files WHERE path = 'src/adopt_me.mid'").fetchone()
    assert adopted == (None,)  # adopted files are queued for analysis
    assert report["ok"] and report["missing"] == [] and report["orphans"] == [] and report["staging"] == 0


def test_a_part_whose_parent_is_gone_too_comes_back_after_the_parent_is_re_imported(tmp_path: Path,
                                                                                      sample_midi) -> None:
    """With the parent's library file and its source both gone, neither can be restored; each
    row says what to do (re-import the parent, then repair), and doing it restores both."""
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path)
    assert run(config, "import", "--local", "--json", str(src)).exit_code == 0
    lib = tmp_path / "library"
    paths = _library_paths(tmp_path)
    song = next(n for n in paths if n.startswith("pop909"))
    part = next(n for n in paths if n.endswith("_MELODY.mid"))
    part_bytes = (lib / paths[part]).read_bytes()
    for gone in (lib / paths[song], lib / paths[part], src / song):
        gone.unlink()
    report = json.loads(run(config, "check", "--repair", "--json").output)
    assert report["repaired"]["unrecoverable"] == 2 and set(report["missing"]) == {paths[song], paths[part]}

    def errors() -> dict[str, str | None]:
        with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
            return dict(conn.execute("SELECT name, error FROM files WHERE name IN (?, ?)", [song, part]))

    assert errors() == {song: UNRECOVERABLE, part: UNRECOVERABLE_PART}
    assert run(config, "import", "--local", "--json", str(copied([s for s in sample_midi if s.name == song],
                                                                  tmp_path / "found"))).exit_code == 0
    assert errors() == {song: None, part: UNRECOVERABLE_PART}
    report = json.loads(run(config, "check", "--repair", "--json").output)
    assert report["repaired"]["restored"] == 1 and report["ok"]
    assert (lib / paths[part]).read_bytes() == part_bytes
    assert errors() == {song: None, part: None}


def test_a_re_import_writes_back_library_files_that_went_missing(tmp_path: Path, sample_midi,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Library files deleted by hand come back from a re-import of their sources (they are still
    duplicates: the counts do not change), and the library agrees with its database again."""
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path)
    assert run(config, "import", "--local", "--json", str(src)).exit_code == 0
    paths = _library_paths(tmp_path)
    lib = tmp_path / "library"
    gone = [f.name for f in sample_midi[:2]]
    for name in gone:
        (lib / paths[name]).unlink()
    assert json.loads(run(config, "check", "--json").output)["missing"] == sorted(paths[n] for n in gone)
    again = run(config, "import", "--local", "--json", str(src))
    summary = json.loads(again.output.strip().splitlines()[-1])
    assert (summary["imported"], summary["duplicates"]) == (0, len(sample_midi))
    assert "2 library file(s) were missing" in caplog.text
    for name in gone:
        assert (lib / paths[name]).read_bytes() == (src / name).read_bytes()
    assert json.loads(run(config, "check", "--json").output)["ok"]


def test_with_move_a_duplicate_of_a_missing_library_file_is_not_lost(tmp_path: Path, sample_midi) -> None:
    """`mode = "move"` removes an imported source. When the library's copy of those bytes had
    been deleted, the source was removed as a mere duplicate and the music was gone; now the
    library file is written back from it first."""
    config = write_config(tmp_path, '[sources]\nmode = "move"\n')
    assert run(config, "import", "--local", "--json", str(copied(sample_midi, tmp_path / "first"))).exit_code == 0
    assert not any((tmp_path / "first").iterdir())  # moved into the library
    paths = _library_paths(tmp_path)
    name = sample_midi[0].name
    (tmp_path / "library" / paths[name]).unlink()
    second = copied(sample_midi[:1], tmp_path / "second")
    assert run(config, "import", "--local", "--json", str(second)).exit_code == 0
    assert not (second / name).exists()
    assert (tmp_path / "library" / paths[name]).read_bytes() == sample_midi[0].read_bytes()
    assert json.loads(run(config, "check", "--json").output)["ok"]


def test_a_file_check_could_not_restore_is_restored_by_importing_it_again(tmp_path: Path, sample_midi) -> None:
    """`check --repair` marks a missing file whose sources are gone too with "re-import it";
    importing a copy found elsewhere restores the file and clears that error, and its
    analysis (of the same bytes) stays."""
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path)
    assert run(config, "import", "--local", "--json", str(src)).exit_code == 0
    name = sample_midi[0].name
    path = _library_paths(tmp_path)[name]
    (tmp_path / "library" / path).unlink()
    (src / name).unlink()
    assert json.loads(run(config, "check", "--repair", "--json").output)["repaired"]["unrecoverable"] == 1

    def row() -> tuple:
        with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
            return conn.execute("SELECT f.error, a.category IS NOT NULL FROM files f LEFT JOIN analysis a"
                                " ON a.file_id = f.id WHERE f.path = ?", [path]).fetchone()

    assert "re-import it" in row()[0]
    found = copied(sample_midi[:1], tmp_path / "backup")
    assert run(config, "import", "--local", "--json", str(found)).exit_code == 0
    assert row() == (None, 1)
    assert (tmp_path / "library" / path).read_bytes() == sample_midi[0].read_bytes()
    assert json.loads(run(config, "check", "--json").output)["ok"]
