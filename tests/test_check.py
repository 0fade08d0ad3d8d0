"""`midictl check`: the library folder and the database agree, and `--repair` makes them agree."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from conftest import copied, write_config
from midid.ctl import cli


def run(config: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def test_check_finds_and_repairs_disagreements(tmp_path: Path, sample_midi) -> None:
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path)
    assert run(config, "import", "--local", "--json", str(src)).exit_code == 0
    clean = run(config, "check", "--json")
    assert clean.exit_code == 0 and json.loads(clean.output)["ok"]
    lib = tmp_path / "library"
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        paths = dict(conn.execute("SELECT name, path FROM files"))
    groove = next(n for n in paths if n.startswith("100_"))
    (lib / paths[groove]).unlink()                        # missing, a source still has the bytes
    part = next(n for n in paths if n.endswith("_PIANO.mid"))
    (lib / paths[part]).unlink()                          # missing, only derived: unrecoverable
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
    assert report["repaired"] == {"staging": 1, "restored": 1, "unrecoverable": 1, "adopted": 1, "removed_copies": 1}
    assert (lib / paths[groove]).read_bytes() == (src / groove).read_bytes()
    assert not stray.exists() and new.exists()
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        error = conn.execute("SELECT error FROM files WHERE name = ?", [part]).fetchone()[0]
        adopted = conn.execute("SELECT analysed_at FROM files WHERE path = 'src/adopt_me.mid'").fetchone()
    assert "no source has the same bytes" in error
    assert adopted == (None,)  # adopted files are queued for analysis
    assert report["missing"] == [paths[part]] and report["orphans"] == [] and report["staging"] == 0
