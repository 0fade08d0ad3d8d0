"""The library database: forward migrations, and readers of a library an older midid wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from midid import db as dbmod
from midid.db import SCHEMA_VERSION, Library
from midid.analysis import analyze_bytes
from midid.records import ANALYZER_VERSION, analysis_row

DATA = Path(__file__).parent / "data"


def test_readers_of_a_schema_1_library_work_and_a_writer_migrates_it(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "old.sqlite3"
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 1)
    Library(path).close()
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", SCHEMA_VERSION)
    reader = Library(path, readonly=True)
    assert reader.schema_version() == 1
    counts = reader.stage_counts(rename_enabled=True)
    assert counts["analyze"] == {"done": 0, "queued": 0, "failed": 0, "rate": 0.0}
    reader.close()
    writer = Library(path)
    assert writer.schema_version() == SCHEMA_VERSION == 5
    names = {r[0] for r in writer.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_analysis_category_id", "idx_files_unsplit", "idx_tags_tag_file", "idx_analysis_analyzer"} <= names
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_rows_an_older_analysis_wrote_put_their_files_back_in_the_queue(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "v2.sqlite3"
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 2)
    Library(path).close()
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", SCHEMA_VERSION)
    with sqlite3.connect(path) as conn:  # two analysed files, as a schema-2 midid wrote them
        conn.executemany("INSERT INTO files(id, hash, size, path, name, added_at, split_at, analysed_at)"
                         " VALUES (?, ?, 9, ?, ?, 1.0, 1.0, 2.0)",
                         [(1, "a", "p/a.mid", "a.mid"), (2, "b", "p/b.mid", "b.mid")])
        conn.executemany("INSERT INTO analysis(file_id, category) VALUES (?, 'Chords')", [(1,), (2,)])
        conn.executemany("INSERT INTO tags(file_id, tag, source) VALUES (?, ?, ?)",
                         [(1, "chords", "analysis"), (1, "keys", "filename"), (2, "chords", "analysis")])
    lib = Library(path)
    assert lib.db.execute("SELECT analyzer FROM analysis").fetchall() == [(0,), (0,)]
    lib.db.execute("UPDATE analysis SET analyzer = ? WHERE file_id = 2", [ANALYZER_VERSION])
    assert lib.requeue_stale_analyses() == 1
    assert lib.requeue_stale_analyses() == 0  # already queued
    assert lib.reanalyse_queue(10) == [(1, "p/a.mid", "a.mid")] and lib.analyse_queue(10) == []
    assert lib.stage_counts(rename_enabled=False)["analyze"] == {"done": 1, "queued": 1, "failed": 0, "rate": 0.0}
    # Still analysed, and found as such, until the new analysis replaces the old.
    assert lib.db.execute("SELECT count(*) FROM files WHERE analysed_at = 2.0").fetchone() == (2,)
    assert len(set(lib.db.execute("SELECT * FROM tags"))) == 3

    analysis = analyze_bytes((DATA / "midi" / "pop909_003.mid").read_bytes())
    lib.commit_analysis([analysis_row(1, analysis), analysis_row(2, analysis)], [])
    tags = set(lib.db.execute("SELECT * FROM tags"))
    assert (1, "chords", "analysis") not in tags and (1, "keys", "filename") in tags
    assert {(1, t, "analysis") for t in analysis.tags} <= tags
    assert (2, "chords", "analysis") in tags  # not queued again: its tags stay
    assert lib.db.execute("SELECT count(*) FROM files WHERE reanalyse IS NOT NULL").fetchone() == (0,)
    assert lib.db.execute("SELECT DISTINCT analyzer FROM analysis").fetchall() == [(ANALYZER_VERSION,)]
    assert lib.reanalyse_queue(10) == [] and lib.requeue_stale_analyses() == 0
    lib.close()
