"""`midictl import`: folders and nested archives into a deduplicated, tagged SQLite library."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from archives import (TarMember, midi_bytes, rmid_wrap, truncate, write_7z, write_rar4, RarMember,
                      write_tar, write_zero_bomb, write_zip, write_zip_symlink)
from conftest import DATA, write_config
from midid.config import load_config
from midid.ctl import cli
from midid.db import Library
from midid.importer import Importer, placement
from midid.pathtext import path_text

KEYS = {"seen", "imported", "duplicates", "skipped", "errors", "elapsed_s", "failed"}


def run_import(config: Path, *paths: Path | str, extra: tuple[str, ...] = ()) -> dict:
    result = CliRunner().invoke(cli, ["--config", str(config), "import", "--local", "--json", *extra,
                                      *map(str, paths)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert KEYS <= set(summary)
    assert summary["imported"] + summary["duplicates"] + summary["skipped"] + summary["errors"] == summary["seen"]
    return summary


def db_rows(tmp_path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A pack folder as producers have them: odd names, archives in archives, junk files."""
    root = tmp_path / "packs"
    (root / "Trap Pack 140 BPM" / "Drums").mkdir(parents=True)
    a, b = midi_bytes(0), midi_bytes(1)
    (root / "Trap Pack 140 BPM" / "Drums" / "Kick Loop Am.MID").write_bytes(a)
    (root / "Trap Pack 140 BPM" / "readme.txt").write_text("thanks for downloading")
    (root / "Trap Pack 140 BPM" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0junk")
    (root / "no_extension").write_bytes(b)          # MIDI by content, no extension
    (root / "song.kar").write_bytes(a + b"\x00")     # distinct bytes, karaoke extension
    (root / "wrapped.rmi").write_bytes(rmid_wrap(b))  # RIFF RMID: same SMF as no_extension
    inner_zip = write_zip(tmp_path / "inner.zip", {"Bass Lines/808 bass C#m 90bpm.midi": a + b"\x01"})
    inner_7z = write_7z(tmp_path / "inner.7z", {"deep/inner.zip": inner_zip.read_bytes(),
                                                "deep/lead.mid": a + b"\x02"})
    write_tar(root / "Mega Bundle.tar.gz", [TarMember("bundle/inner.7z", inner_7z.read_bytes()),
                                            TarMember("bundle/copy of kick.mid", a)], mode="w:gz")
    write_rar4(root / "Rar Pack.rar", [RarMember(b"Chords/pad chords F minor.mid", a + b"\x03")])
    return root


def test_messy_folder_is_imported_deduplicated_and_tagged(tmp_path: Path, messy: Path) -> None:
    config = write_config(tmp_path)
    before = {p: p.read_bytes() for p in messy.rglob("*") if p.is_file()}
    s = run_import(config, messy)
    # a, b, a+0, a+1 (zip in 7z in tar), a+2, a+3 (rar) are distinct; the rest duplicates
    assert s["imported"] == 6
    assert s["duplicates"] == 2          # wrapped.rmi (== no_extension) and "copy of kick.mid"
    assert s["skipped"] == 2             # readme.txt, cover.jpg
    assert s["errors"] == 0
    assert {p: p.read_bytes() for p in messy.rglob("*") if p.is_file()} == before, "sources must not change"
    paths = [r[0] for r in db_rows(tmp_path, "SELECT path FROM files WHERE parent_id IS NULL ORDER BY path")]
    # the kick is in the pack folder and (first seen, same bytes) in the bundle: one copy, either place
    assert len({"Trap_Pack_140_BPM/Drums/Kick_Loop_Am.mid", "Mega_Bundle/bundle/copy_of_kick.mid"} & set(paths)) == 1
    assert "Mega_Bundle/deep/inner/Bass_Lines/808_bass_C_m_90bpm.mid" in paths
    assert "Rar_Pack/Chords/pad_chords_F_minor.mid" in paths
    assert "packs/song.mid" in paths
    for p in paths:
        assert (tmp_path / "library" / p).is_file()
        assert " " not in p and p.endswith(".mid")
    # every place a file was seen is recorded, duplicates as aliases
    origins = [r[0] for r in db_rows(tmp_path, "SELECT origin FROM sources")]
    assert len(origins) == 8
    assert any(o.endswith("Mega Bundle.tar.gz!bundle/inner.7z!deep/inner.zip!Bass Lines/808 bass C#m 90bpm.midi")
               for o in origins)
    tags = db_rows(tmp_path, "SELECT f.name, t.tag, t.source FROM tags t JOIN files f ON f.id = t.file_id")
    assert ("808 bass C#m 90bpm.midi", "bass", "filename") in tags
    assert ("808 bass C#m 90bpm.midi", "key:C#m", "filename") in tags
    assert ("808 bass C#m 90bpm.midi", "bpm:90", "filename") in tags
    if "Trap_Pack_140_BPM/Drums/Kick_Loop_Am.mid" in paths:
        assert ("Kick Loop Am.MID", "kick", "filename") in tags
        assert ("Kick Loop Am.MID", "bpm:140", "filename") in tags   # from the folder name
    assert ("pad chords F minor.mid", "chord", "filename") in tags
    assert ("pad chords F minor.mid", "key:Fm", "filename") in tags


def test_second_import_is_all_duplicates(tmp_path: Path, messy: Path) -> None:
    config = write_config(tmp_path)
    first = run_import(config, messy)
    second = run_import(config, messy)
    assert second["imported"] == 0
    assert second["duplicates"] == first["imported"] + first["duplicates"]
    assert db_rows(tmp_path, "SELECT count(*) FROM files WHERE parent_id IS NULL")[0][0] == first["imported"]


def test_hostile_and_broken_archives_are_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = midi_bytes(0)
    write_tar(src / "slip.tar", [TarMember("../../escaped.mid", good), TarMember("ok/fine.mid", good + b"1")])
    write_zip(src / "backslash.zip", {"..\\..\\evil.mid": good + b"2", "fine2.mid": good + b"3"})
    write_zip_symlink(src / "link.zip", "passwd.mid", "/etc/passwd", {"fine3.mid": good + b"4"})
    write_tar(src / "abs.tar", [TarMember("/tmp/abs-escape.mid", good + b"5")])
    write_zero_bomb(src / "bomb.zip", 64 * 1024**2)
    truncate(write_zip(src / "truncated.zip", {f"t{i}.mid": good + bytes([i]) * 500 for i in range(20)}), 0.5)
    config = write_config(tmp_path, "[import]\nmax_ratio = 50.0\n")
    s = run_import(config, src)
    assert s["imported"] >= 3              # fine, fine2, fine3 at least
    reasons = " ".join(f["error"] for f in s["failed"])
    assert s["errors"] == len(s["failed"]) >= 5
    assert not (tmp_path / "escaped.mid").exists() and not Path("/tmp/abs-escape.mid").exists()
    assert not (tmp_path.parent / "evil.mid").exists()
    assert "escape" in reasons or ".." in reasons
    failed_paths = [f["path"] for f in s["failed"]]
    assert any("bomb.zip" in p for p in failed_paths)
    assert any("truncated.zip" in p for p in failed_paths)
    assert db_rows(tmp_path, "SELECT count(*) FROM failures")[0][0] == s["errors"]


def test_corrupt_midi_is_imported_with_its_analysis_error_and_the_batch_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x05\x01\xe0MTrk\xff\xff\xff\xff junk")
    (src / "good.mid").write_bytes(midi_bytes(0))
    config = write_config(tmp_path)
    s = run_import(config, src)
    assert s["imported"] == 2 and s["errors"] == 0
    assert s["analysed"] + s["analysis_errors"] == 2
    assert s["analysed"] >= 1
    rows = dict(db_rows(tmp_path, "SELECT name, analysed_at IS NOT NULL FROM files"))
    assert rows["good.mid"] == 1


def test_modes_hardlink_and_move(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mid").write_bytes(midi_bytes(0))
    (src / "b.mid").write_bytes(midi_bytes(1))
    config = write_config(tmp_path, '[sources]\nmode = "hardlink"\n')
    run_import(config, src / "a.mid")
    lib_file = next((tmp_path / "library").rglob("a.mid"))
    assert os.stat(lib_file).st_ino == os.stat(src / "a.mid").st_ino
    config = write_config(tmp_path, '[sources]\nmode = "move"\n', name="move.toml")
    s = run_import(config, src / "b.mid")
    assert s["imported"] == 1 and not (src / "b.mid").exists()
    assert next((tmp_path / "library").rglob("b.mid")).read_bytes() == midi_bytes(1)


def test_interrupted_import_leaves_no_temp_files_and_resumes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    base = midi_bytes(0)
    for i in range(3000):
        (src / f"f{i:05d}.mid").write_bytes(base + i.to_bytes(4, "big"))
    config = write_config(tmp_path, "[pipeline]\nbatch_size = 50\n")
    code = (
        "import os, sys, midid.durable as d\n"
        "orig = d.BatchWriter.publish\n"
        "calls = [0]\n"
        "def publish(self):\n"
        "    calls[0] += 1\n"
        "    if calls[0] == 7:\n"
        "        d.syncfs(self.root); os._exit(9)\n"   # die with staged files written, not renamed
        "    orig(self)\n"
        "d.BatchWriter.publish = publish\n"
        "from midid.ctl import main\n"
        f"main(['--config', {str(config)!r}, 'import', '--local', {str(src)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 9
    staging = tmp_path / "library" / ".midid-staging"
    assert any(staging.iterdir()), "the crash should have left staged files behind"
    committed = db_rows(tmp_path, "SELECT count(*) FROM files")[0][0]
    assert committed == 6 * 200            # import batches are 4 x [pipeline] batch_size
    s = run_import(config, src)
    assert s["imported"] == 1800 and s["duplicates"] == 1200
    assert not any(staging.iterdir())
    on_disk = {str(p.relative_to(tmp_path / "library")) for p in (tmp_path / "library").rglob("*.mid")}
    in_db = {r[0] for r in db_rows(tmp_path, "SELECT path FROM files")}
    assert on_disk == in_db and len(in_db) == 3000


def test_unwritable_library_is_a_clear_fatal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    config = tmp_path / "c.toml"
    config.write_text(f'[library]\npath = "{blocker}/library"\n[control]\nsocket = "{tmp_path}/s.sock"\n'
                      f'database = "{tmp_path}/db.sqlite3"\n'.replace('[control]\nsocket', '[control]\nsocket', 1))
    config.write_text(f'[library]\npath = "{blocker}/library"\ndatabase = "{tmp_path}/db.sqlite3"\n'
                      f'[control]\nsocket = "{tmp_path}/s.sock"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "import", "--local", str(DATA / "midi")])
    assert result.exit_code == 2
    assert "cannot write to the library" in result.output and "[library] path" in result.output


def test_the_summary_shows_a_failed_name_in_square_brackets_as_it_is(tmp_path: Path) -> None:
    """"[FREE] ..." packs are common; the summary must not read their brackets as markup."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "[FREE] Trap [red] Pack.zip").write_bytes(b"PK\x03\x04 truncated [/x]")
    (src / "ok.mid").write_bytes((DATA / "midi" / "29_latin-samba_116_fill_4-4.mid").read_bytes())
    result = CliRunner().invoke(cli, ["--config", str(write_config(tmp_path)), "import", "--local", str(src)],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    failed = [line for line in result.stdout.splitlines() if "failed" in line]
    assert len(failed) == 1 and "[FREE] Trap [red] Pack.zip" in failed[0], result.stdout


def test_bad_config_is_a_clear_fatal_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[sources]\nmode = "teleport"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "import", "--local", str(DATA / "midi")])
    assert result.exit_code == 2 and "sources.mode" in result.output


def test_placement_keeps_pack_structure() -> None:
    roots = [Path("/in/packs")]
    assert placement("/in/packs/Trap/Drums/k.mid", (), roots) == (["Trap", "Drums"], [], ["Trap", "Drums"], "k.mid")
    assert placement("/in/packs/k.mid", (), roots)[3] == "k.mid"
    assert placement("/in/packs/k.mid", (), roots)[0] == ["packs"]
    folders, archives, levels, name = placement("/in/packs/Bundle.tar.gz", ("x/in.zip", "Bass/b.mid"), roots)
    assert archives == ["Bundle", "in"] and levels == ["Bundle", "x", "in", "Bass"] and name == "b.mid"
    assert folders == ["x", "Bass"]
    assert placement("/in/packs/Sub/B.zip", ("k.mid",), roots)[2] == ["Sub", "B"]
    assert placement("/in/packs/Lofi.zip", ("Lofi/Keys/k.mid",), roots)[2] == ["Lofi", "Keys"]


def test_names_that_are_not_utf8_are_imported_and_recognised_again(tmp_path: Path) -> None:
    """Latin-1 names (an old Windows pack copied as is) in a folder and a file name: imported,
    shown with their bad bytes as \\xNN, the source untouched, and found unchanged by the
    catch-up scan (the text stored is the same each time)."""
    root = tmp_path / "packs"
    folder = os.fsencode(root) + b"/Caf\xe9 Pack"
    os.makedirs(folder)
    with open(folder + b"/m\xe9lodie 120.mid", "wb") as f:
        f.write(midi_bytes(0))
    with open(folder + b"/broken \xff.zip", "wb") as f:
        f.write(b"PK\x03\x04" + b"\x00" * 10)  # a damaged archive: an import error under this name
    config = write_config(tmp_path)
    s = run_import(config, root)
    assert (s["imported"], s["errors"]) == (1, 1)
    assert s["failed"][0]["path"] == f"{root}/Caf\\xe9 Pack/broken \\xff.zip"
    assert db_rows(tmp_path, "SELECT origin FROM failures") == [(s["failed"][0]["path"],)]
    name, pack, path = db_rows(tmp_path, "SELECT name, pack, path FROM files")[0]
    assert (name, pack) == ("m\\xe9lodie 120.mid", "Caf\\xe9 Pack")
    assert path == "Cafe_Pack/melodie_120.mid"  # as the MPC will show it (not "Cafxe9_Pack/mxe9lodie")
    assert (tmp_path / "library" / path).read_bytes() == midi_bytes(0)
    assert ("bpm:120",) in db_rows(tmp_path, "SELECT tag FROM tags")
    disk = os.fsdecode(folder + b"/m\xe9lodie 120.mid")
    assert db_rows(tmp_path, "SELECT origin, disk_path FROM sources") == [(path_text(disk), path_text(disk))]
    assert open(os.fsencode(disk), "rb").read() == midi_bytes(0)
    cfg = load_config(config)
    again = Importer(cfg, Library(cfg.database_path)).run([root], catch_up=True)
    assert (again.seen, again.skipped, again.imported, again.duplicates) == (2, 2, 0, 0)


def test_an_import_failure_lasts_only_as_long_as_the_file_is_broken(tmp_path: Path) -> None:
    """A damaged download shows in `midictl status` until it is replaced by a good one and
    imported again; a member of an archive that is still damaged stays listed, once."""
    src = tmp_path / "src"
    src.mkdir()
    pack = src / "Pack!1.zip"  # a "!" in the name, as in an archive member's origin
    pack.write_bytes(b"PK\x03\x04" + b"\x00" * 10)
    config = write_config(tmp_path)
    assert run_import(config, src)["errors"] == 1
    failures = "SELECT origin FROM failures ORDER BY origin"
    assert db_rows(tmp_path, failures) == [(str(pack),)]
    lib = Library(load_config(config).database_path)
    assert lib.import_failure_paths() == [str(pack)]
    write_zip(pack, {"good.mid": midi_bytes(0), "inner.zip": b"PK\x03\x04" + b"\x00" * 10})
    again = run_import(config, src)
    assert (again["imported"], again["errors"]) == (1, 1)
    assert db_rows(tmp_path, failures) == [(f"{pack}!inner.zip",)]
    assert lib.import_failure_paths() == [str(pack)]  # the archive, not its member
    assert run_import(config, src)["errors"] == 1
    assert db_rows(tmp_path, failures) == [(f"{pack}!inner.zip",)]
    write_zip(pack, {"good.mid": midi_bytes(0)})
    assert run_import(config, src)["errors"] == 0
    assert db_rows(tmp_path, failures) == []
    result = CliRunner().invoke(cli, ["--config", str(config), "status", "--json"])
    assert json.loads(result.output)["errors"] == []
