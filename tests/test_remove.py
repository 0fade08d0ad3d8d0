"""`midictl remove` on a real library made by `midictl import`: rows, files, parts, sources."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import DATA, write_config
from midid.config import load_config
from midid.ctl import cli
from midid.db import Library
from midid.engine import Engine
from midid.importer import Importer
from midid.pool import LocalRunner
from midid.remove import remove_from_library
from midid.runjob import writer_lock

SONG = DATA / "split" / "pop909_229.mid"  # three tracks: split into three parts
FILL = DATA / "midi" / "29_latin-samba_116_fill_4-4.mid"
BEAT = DATA / "midi" / "100_neworleans-secondline_94_beat_4-4.mid"


def ctl(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def failing(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 2, result.output
    return result.output


def counts(config: Path) -> dict[str, int]:
    with closing(sqlite3.connect(config.parent / "midid.sqlite3")) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("files", "analysis", "sources", "tags", "search", "exports")}


@pytest.fixture()
def library(tmp_path: Path) -> tuple[Path, Path]:
    """(config, source folder): "Bad Pack" holds a song (split into 3 parts) and a fill, "Good"
    a beat and a second copy of the fill (an alias of the same library file)."""
    src = tmp_path / "src"
    (src / "Bad Pack").mkdir(parents=True)
    (src / "Good").mkdir()
    (src / "Bad Pack" / "song.mid").write_bytes(SONG.read_bytes())
    (src / "Bad Pack" / "fill.mid").write_bytes(FILL.read_bytes())
    (src / "Good" / "beat.mid").write_bytes(BEAT.read_bytes())
    (src / "Good" / "fill copy.mid").write_bytes(FILL.read_bytes())
    config = write_config(tmp_path)
    summary = json.loads(ctl(config, "import", "--local", "--json", str(src)).splitlines()[-1])
    assert (summary["imported"], summary["duplicates"], summary["split_parts"]) == (3, 1, 3)
    return config, src


def library_files(config: Path) -> set[str]:
    root = config.parent / "library"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".midid-staging" not in p.parts}


def test_dry_run_lists_the_file_and_its_parts_and_changes_nothing(library: tuple[Path, Path]) -> None:
    config, _ = library
    before, files = counts(config), library_files(config)
    out = ctl(config, "remove", "--dry-run", "Bad_Pack/song.mid")
    assert out.split() == ["Bad_Pack/song.mid", "Bad_Pack/song_MELODY.mid", "Bad_Pack/song_BRIDGE.mid",
                           "Bad_Pack/song_PIANO.mid", "would", "remove", "4", "file(s),", "3", "of", "them",
                           "split", "parts"]
    assert (counts(config), library_files(config)) == (before, files)


def test_remove_a_file_takes_its_parts_rows_and_files_and_leaves_sources(library: tuple[Path, Path]) -> None:
    config, src = library
    sources = {p: p.read_bytes() for p in src.rglob("*.mid")}
    before = counts(config)
    result = json.loads(ctl(config, "remove", "--json", "Bad_Pack/song.mid"))
    assert result == {"removed": ["Bad_Pack/song.mid", "Bad_Pack/song_MELODY.mid", "Bad_Pack/song_BRIDGE.mid",
                                  "Bad_Pack/song_PIANO.mid"], "files": 4, "parts": 3, "kept": 0, "dry_run": False}
    after = counts(config)
    assert after["files"] == before["files"] - 4 and after["analysis"] == before["analysis"] - 4
    assert after["search"] == before["search"] - 4 and after["sources"] == before["sources"] - 4
    with closing(sqlite3.connect(config.parent / "midid.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM tags WHERE file_id NOT IN (SELECT id FROM files)").fetchone() == (0,)
    assert library_files(config) == {"Bad_Pack/fill.mid", "Good/beat.mid"}
    assert {json.loads(line)["path"] for line in ctl(config, "find", "--json").splitlines()} == library_files(config)
    assert json.loads(CliRunner().invoke(cli, ["--config", str(config), "check", "--json"]).stdout)["ok"]
    assert {p: p.read_bytes() for p in src.rglob("*.mid")} == sources


def test_remove_a_folder_by_the_path_find_prints_with_its_leftovers(library: tuple[Path, Path]) -> None:
    config, _ = library
    root = config.parent / "library"
    (root / "Bad_Pack" / "left over from a crash.mid").write_bytes(FILL.read_bytes())
    folder = root / "Bad_Pack"
    assert str(folder / "fill.mid") in ctl(config, "find", "--paths").splitlines()
    out = ctl(config, "remove", str(folder))
    assert out.splitlines()[-1] == ("removed 5 file(s), 3 of them split parts; sources untouched"
                                    " (import them again to bring the files back)")
    assert not folder.exists() and library_files(config) == {"Good/beat.mid"}
    assert counts(config)["files"] == 1
    assert counts(config)["sources"] == 1  # the fill's alias in Good went with the fill


def test_remove_by_the_source_a_pack_came_from_keeps_what_another_pack_also_brought(
        library: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """"Bad Pack" as the user downloaded it: the song and its parts go; the fill, which "Good"
    brought too, stays with "Good"."""
    config, src = library
    monkeypatch.chdir(src.parent)
    out = ctl(config, "remove", "src/Bad Pack").splitlines()
    assert out[-2:] == ["removed 4 file(s), 3 of them split parts; sources untouched (import them again to bring"
                        " the files back)", "kept 1 file(s) also imported from elsewhere"]
    assert library_files(config) == {"Bad_Pack/fill.mid", "Good/beat.mid"}
    assert (src / "Bad Pack" / "song.mid").is_file()


def test_remove_by_a_source_deleted_from_disk_since(library: tuple[Path, Path]) -> None:
    """A producer deletes a pack, then wants it off the library (and the MPC) too."""
    config, src = library
    for f in (src / "Good").iterdir():
        f.unlink()
    (src / "Good").rmdir()
    result = json.loads(ctl(config, "remove", "--json", str(src / "Good")))
    assert (result["removed"], result["kept"]) == (["Good/beat.mid"], 1)
    assert "Good/beat.mid" not in library_files(config)


def test_a_path_in_the_library_folder_with_nothing_there_says_so(library: tuple[Path, Path]) -> None:
    config, _ = library
    typo = config.parent / "library" / "Bad_Pak"
    assert "nothing in the library at Bad_Pak (`midictl find` shows library paths)" in failing(
        config, "remove", str(typo))


def test_a_removal_cut_short_after_its_files_went_is_finished_by_running_it_again(
        library: tuple[Path, Path]) -> None:
    """Files go first, rows last: a crash in between leaves rows to find the rest by."""
    config, _ = library
    root = config.parent / "library"
    for name in ("song.mid", "song_MELODY.mid", "fill.mid"):  # what went before the crash
        (root / "Bad_Pack" / name).unlink()
    result = json.loads(ctl(config, "remove", "--json", "Bad_Pack"))
    assert (result["files"], result["parts"]) == (5, 3)
    assert library_files(config) == {"Good/beat.mid"} and counts(config)["files"] == 1
    assert json.loads(CliRunner().invoke(cli, ["--config", str(config), "check", "--json"]).stdout)["ok"]


def test_a_rescan_does_not_bring_removed_files_back_importing_them_again_does(library: tuple[Path, Path]) -> None:
    config, src = library
    ctl(config, "remove", "Bad_Pack")
    cfg = load_config(config)
    lib = Library(cfg.database_path)
    with writer_lock(cfg):
        caught_up = Importer(cfg, lib).run([src], catch_up=True)  # the daemon's start-up scan and `rescan`
    assert (caught_up.imported, caught_up.duplicates) == (0, 0)
    assert library_files(config) == {"Good/beat.mid"}
    again = json.loads(ctl(config, "import", "--local", "--json", str(src / "Bad Pack")).splitlines()[-1])
    assert (again["imported"], again["split_parts"]) == (2, 3)
    assert {"Bad_Pack/song.mid", "Bad_Pack/fill.mid"} <= library_files(config)


def test_remove_forgets_what_was_synced_to_a_drive(library: tuple[Path, Path]) -> None:
    """A removed file's export records go too (the drive keeps its copy: midid never deletes
    files on a drive)."""
    config, _ = library
    lib = Library(load_config(config).database_path)
    with lib.db.atomic():
        lib.db["exports"].insert_all([{"device_uuid": "AB12-CD34", "file_id": file_id, "path": f"x/{file_id}.mid",
                                       "hash": h, "category": "Drums", "exported_at": time.time(), "gone": 0}
                                      for file_id, h in lib.db.execute("SELECT id, hash FROM files")])
    ctl(config, "remove", "Good/beat.mid")
    assert counts(config)["exports"] == counts(config)["files"] == 5


@pytest.mark.parametrize(("path", "message"), [
    ("/etc", "/etc is neither in the library folder"),
    ("../..", "nor a source midid imported files from: give a path as `midictl find` shows it"),
    (".", "is the whole library; to start over, stop midid and delete the library folder and its database"),
    (".midid-staging", "is midid's staging folder, not part of the library"),
    ("No_Such_Pack", "No_Such_Pack is neither in the library folder"),
])
def test_a_path_that_is_not_a_library_file_is_refused(library: tuple[Path, Path], path: str, message: str) -> None:
    config, _ = library
    before = counts(config)
    assert message in failing(config, "remove", path)
    assert counts(config) == before


def test_remove_waits_for_no_one_while_another_process_writes(library: tuple[Path, Path]) -> None:
    """With no daemon to hand the removal to, it needs the library's writer lock (held here as
    a one-shot `midictl import --local` holds it); with a daemon, the daemon removes (test_daemon)."""
    config, _ = library
    with writer_lock(load_config(config)):
        assert "is being written by another midid process; try again when it ends" in failing(
            config, "remove", "Good/beat.mid")
    assert "Good/beat.mid" in library_files(config)


class AnalysisHeld(LocalRunner):
    """The in-process runner, with analysis results held back until released: a batch still
    out on a worker while `midictl remove` runs in the daemon's main loop."""

    def __init__(self) -> None:
        super().__init__()
        self.held = True

    def wait(self, timeout_s: float):  # type: ignore[no-untyped-def]
        if not self.held:
            return super().wait(timeout_s)
        out = [d for d in self._done if d.kind != "analyze"]
        for d in out:
            self._done.remove(d)
        return out


def test_a_file_removed_while_its_analysis_is_in_flight_is_dropped_not_committed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in (FILL, BEAT):
        (src / f.name).write_bytes(f.read_bytes())
    cfg = load_config(write_config(tmp_path))
    lib = Library(cfg.database_path)
    Importer(cfg, lib).run([src])
    runner = AnalysisHeld()
    engine = Engine(cfg, lib, runner)
    for _ in range(50):
        engine.step(0.0)
        if any(d.kind == "analyze" for d in runner._done):
            break
    held = [t.file_id for d in runner._done if d.kind == "analyze" for t in d.tasks]
    assert len(held) == 2, "both files' analysis is out"
    removed = lib.db.execute("SELECT path FROM files WHERE name = ?", [FILL.name]).fetchone()[0]
    remove_from_library(lib, cfg.library_path, [removed])
    runner.held = False
    engine.run()
    assert [name for (name,) in lib.db.execute(
        "SELECT f.name FROM analysis a JOIN files f ON f.id = a.file_id")] == [BEAT.name]
    assert lib.db.execute("SELECT count(*) FROM analysis").fetchone() == (1,)
    assert engine.totals.analysed == 1
