"""The library database: forward migrations, and readers of a library an older midid wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from midid import db as dbmod
from midid.db import SCHEMA_VERSION, Library


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
    assert writer.schema_version() == SCHEMA_VERSION == 2
    names = {r[0] for r in writer.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_analysis_category_id", "idx_files_unsplit", "idx_tags_tag_file"} <= names
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
