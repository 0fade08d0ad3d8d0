"""The SQLite library: schema, migrations, and the batch writes and queries every edge shares.

SQLite is also the durable work queue: each file row carries its stage state, and "what to do
next" is a query (`analysed_at IS NULL AND error IS NULL`). Writes come in batches, one
transaction per batch, from the one process that owns the library (the daemon or a one-shot
`midictl import`); everyone else only reads, which WAL mode allows concurrently.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from .pathtext import path_text
from .records import ANALYSIS_COLUMNS, ANALYZER_VERSION

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 5
STAGES = ("import", "sanitize", "split", "analyze", "rename", "export")


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["files"].create(
        {
            "id": int, "hash": str, "size": int, "path": str, "name": str, "pack": str,
            "format": int, "tracks": int, "parent_id": int, "part_index": int,
            "added_at": float, "sanitized_at": float, "split_at": float, "split_parts": int,
            "split_error": str, "analysed_at": float, "renamed_at": float, "original_path": str,
            "error": str, "error_stage": str, "attempts": int,
        },
        pk="id", not_null=["hash", "size", "path", "name", "added_at"], defaults={"attempts": 0},
    )
    db.execute("CREATE UNIQUE INDEX idx_files_hash ON files(hash)")
    db.execute("CREATE UNIQUE INDEX idx_files_path ON files(path COLLATE NOCASE)")
    db.execute("CREATE INDEX idx_files_parent ON files(parent_id)")
    db.execute("CREATE INDEX idx_files_analyse_queue ON files(id) WHERE analysed_at IS NULL AND error IS NULL")
    db.execute("CREATE INDEX idx_files_split_queue ON files(id) WHERE split_at IS NULL AND parent_id IS NULL AND error IS NULL")
    db.execute("CREATE INDEX idx_files_analysed_at ON files(analysed_at)")
    db.execute("CREATE INDEX idx_files_rename_queue ON files(id) WHERE renamed_at IS NULL AND analysed_at IS NOT NULL")
    db["sources"].create(
        {"id": int, "file_id": int, "origin": str, "disk_path": str, "kind": str, "size": int,
         "mtime": float, "seen_at": float, "missing": int},
        pk="id", not_null=["file_id", "origin", "seen_at"], defaults={"missing": 0},
        foreign_keys=[("file_id", "files", "id")],
    )
    db.execute("CREATE UNIQUE INDEX idx_sources_origin ON sources(origin)")
    db.execute("CREATE INDEX idx_sources_disk ON sources(disk_path)")
    db.execute("CREATE INDEX idx_sources_file ON sources(file_id)")
    db["scanned"].create(
        {"disk_path": str, "size": int, "mtime": float, "seen_at": float, "outcome": str},
        pk="disk_path",
    )
    db["failures"].create(
        {"id": int, "origin": str, "stage": str, "error": str, "at": float},
        pk="id", not_null=["origin", "error", "at"],
    )
    db.execute("CREATE UNIQUE INDEX idx_failures_origin ON failures(origin, stage)")
    db["tags"].create(
        {"file_id": int, "tag": str, "source": str}, pk=("file_id", "tag", "source"),
        foreign_keys=[("file_id", "files", "id")],
    )
    db.execute("CREATE INDEX idx_tags_tag ON tags(tag)")
    # The columns of version 1 (later ones come with their migrations).
    db["analysis"].create({k: v for k, v in ANALYSIS_COLUMNS.items() if k != "analyzer"}, pk="file_id",
                          foreign_keys=[("file_id", "files", "id")])
    db.execute("CREATE INDEX idx_analysis_category ON analysis(category, bpm)")
    db.execute("CREATE INDEX idx_analysis_bpm ON analysis(bpm)")
    db.execute("CREATE INDEX idx_analysis_key ON analysis(key_tonic, key_mode, bpm)")
    db.execute(
        "CREATE VIRTUAL TABLE search USING fts5(name, path, pack, tags, tokenize='unicode61 remove_diacritics 2')"
    )
    db["devices"].create(
        {"uuid": str, "label": str, "name": str, "profile": str, "first_seen": float,
         "last_seen": float, "last_sync": float, "mountpoint": str, "state": str, "message": str},
        pk="uuid",
    )
    db["exports"].create(
        {"device_uuid": str, "file_id": int, "path": str, "hash": str, "category": str,
         "exported_at": float, "gone": int},
        pk=("device_uuid", "file_id"), defaults={"gone": 0},
        foreign_keys=[("file_id", "files", "id")],
    )
    db["progress"].create({"stage": str, "at": float, "count": int, "failed": int})
    db.execute("CREATE INDEX idx_progress ON progress(stage, at)")


def _migrate_2(db: sqlite_utils.Database) -> None:
    """Indexes that let `find` stop after LIMIT rows and `status` count through small indexes."""
    db.execute("CREATE INDEX idx_analysis_category_id ON analysis(category, file_id)")
    db.execute("CREATE INDEX idx_analysis_key_id ON analysis(key_tonic, key_mode, file_id)")
    db.execute("CREATE INDEX idx_tags_tag_file ON tags(tag, file_id)")
    db.execute("CREATE INDEX idx_files_errors ON files(error_stage) WHERE error IS NOT NULL")
    db.execute("CREATE INDEX idx_files_split_errors ON files(id) WHERE split_error IS NOT NULL")
    db.execute("CREATE INDEX idx_files_unsplit ON files(id) WHERE split_at IS NULL")


def _migrate_3(db: sqlite_utils.Database) -> None:
    """Which analysis wrote each row (`records.ANALYZER_VERSION`); rows from before say 0, so
    the files behind them are analysed again by this version. `files.reanalyse` = 1 queues a
    file whose analysis is out of date (`Library.reanalyse_queue`) without taking it out of
    the library's analysed files until the new analysis replaces the old."""
    db.execute("ALTER TABLE analysis ADD COLUMN analyzer INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX idx_analysis_analyzer ON analysis(analyzer)")
    db.execute("ALTER TABLE files ADD COLUMN reanalyse INTEGER")
    db.execute("CREATE INDEX idx_files_reanalyse_queue ON files(id) WHERE reanalyse = 1 AND error IS NULL")


def _migrate_4(db: sqlite_utils.Database) -> None:
    """Tempos a pack's name states ("Trap 140bpm/loop.mid") now beat a file's 120 BPM
    placeholder tempo (`analysis.analyze_bytes`), through a `bpm-stated:` tag the import
    writes. Files imported before have no such tag: the ones whose analysis took the
    placeholder get it from their name and first source (as the import would have written it),
    and are queued for analysis again with their split parts. Only those: a library's other
    files are not analysed again for it."""
    from .metadata import bpm_stated_tag, bpm_tag, name_metadata
    from .pathtext import readable

    stated: list[tuple[int, str]] = []
    for file_id, name, origin, tag in db.execute(
            "SELECT f.id, f.name, (SELECT s.origin FROM sources s WHERE s.file_id = f.id AND s.kind != 'split'"
            "  ORDER BY s.id LIMIT 1),"
            " (SELECT t.tag FROM tags t WHERE t.file_id = f.id AND t.tag LIKE 'bpm:%' LIMIT 1)"
            " FROM files f JOIN analysis a ON a.file_id = f.id"
            " WHERE f.parent_id IS NULL AND a.bpm = 120.0 AND a.bpm_source = 'meta'").fetchall():
        if not tag or not origin:
            continue
        disk, *members = origin.split("!")
        folders = [*PurePath(disk).parent.parts[-2:], *(p for m in members for p in PurePath(m).parent.parts)]
        archives = [PurePath(disk).name, *(PurePath(m).name for m in members[:-1])] if members else []
        meta = name_metadata(readable(name), folders=[readable(f) for f in folders],
                             archives=[readable(a) for a in archives])
        if meta.bpm and meta.bpm_stated and tag == bpm_tag(meta.bpm):
            stated.append((file_id, bpm_stated_tag(meta.bpm)))
    db.conn.executemany("INSERT OR IGNORE INTO tags(file_id, tag, source) VALUES (?, ?, 'filename')", stated)
    db.conn.executemany(
        "INSERT OR IGNORE INTO tags(file_id, tag, source) SELECT id, ?, 'parent' FROM files WHERE parent_id = ?",
        [(t, i) for i, t in stated])
    db.conn.executemany(
        "UPDATE files SET reanalyse = 1 WHERE (id = ?1 OR parent_id = ?1) AND analysed_at IS NOT NULL",
        [(i,) for i, _ in stated])


def _migrate_5(db: sqlite_utils.Database) -> None:
    """A key a pack's name states ("Dark Pad Am.mid", the `key:` tag the import writes) is now
    a prior on the analysed key (`analysis.key`). Files analysed before, whose key differs from
    the one their name (or their parent's) states, are queued for analysis again; those that
    agree already, and files without such a name, are not."""
    db.execute(
        "UPDATE files SET reanalyse = 1 WHERE analysed_at IS NOT NULL AND id IN ("
        " SELECT t.file_id FROM tags t JOIN analysis a ON a.file_id = t.file_id"
        " WHERE t.tag >= 'key:' AND t.tag < 'key;' AND t.source != 'analysis' AND a.key_tonic IS NOT NULL"
        " AND t.tag != 'key:' || a.key_tonic || CASE a.key_mode WHEN 'minor' THEN 'm' ELSE '' END)")


MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5}


class ReadOnlyDatabase:
    """The part of sqlite-utils' Database that readers use: `execute`, `query`, `close`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Any = ()) -> Iterator[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(names, row))

    def close(self) -> None:
        self.conn.close()


class Library:
    """A handle on the library database; one per process, writes only from the owner."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no library database at {self.path}; run `midictl import` or start midid first")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            # Readers (`midictl status`, `find`) only run queries: importing sqlite-utils (and
            # the numpy it pulls in) would double their start-up time.
            self.db = ReadOnlyDatabase(conn)
        else:
            import sqlite_utils

            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
        self.readonly = readonly
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # Readers holding old snapshots can make the WAL grow; once they let go, the next
            # checkpoint truncates it back to this size.
            self.db.execute("PRAGMA journal_size_limit=67108864")
            self.migrate()
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA temp_store=MEMORY")
        self.db.execute("PRAGMA cache_size=-65536")

    def close(self) -> None:
        self.db.close()

    # ---- schema -------------------------------------------------------------------------

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply forward migrations; each runs in its own transaction with the version bump."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema {current}, newer than this midid ({SCHEMA_VERSION}); upgrade midid"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.db.atomic():
                MIGRATIONS[version](self.db)
                self.db.execute(f"PRAGMA user_version={version}")

    # ---- import --------------------------------------------------------------------------

    def known_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """Which of these content hashes are already library files (hash → file id)."""
        found: dict[str, int] = {}
        chunk: list[str] = []
        for h in hashes:
            chunk.append(h)
            if len(chunk) == 500:
                found.update(self._hash_chunk(chunk))
                chunk = []
        if chunk:
            found.update(self._hash_chunk(chunk))
        return found

    def _hash_chunk(self, chunk: list[str]) -> dict[str, int]:
        marks = ",".join("?" * len(chunk))
        return dict(self.db.execute(f"SELECT hash, id FROM files WHERE hash IN ({marks})", chunk).fetchall())

    def paths_of(self, ids: Sequence[int]) -> dict[int, str]:
        """Library path of each of these file ids (those that exist)."""
        found: dict[int, str] = {}
        for chunk, marks in _id_chunks(ids):
            found.update(self.db.execute(f"SELECT id, path FROM files WHERE id IN ({marks})", chunk).fetchall())
        return found

    def path_taken(self, relpath: str) -> bool:
        return self.db.execute("SELECT 1 FROM files WHERE path = ? COLLATE NOCASE", [relpath]).fetchone() is not None

    def unchanged(self, disk_path: str, size: int, mtime: float) -> bool:
        """True when this on-disk file (its path as the OS gives it) was scanned before with
        the same size and mtime."""
        row = self.db.execute("SELECT size, mtime FROM scanned WHERE disk_path = ?",
                              [path_text(disk_path)]).fetchone()
        return row is not None and row[0] == size and abs(row[1] - mtime) < 1e-6

    def commit_import(self, files: list[dict[str, Any]], sources: list[dict[str, Any]],
                      tags: list[dict[str, Any]], scanned: list[dict[str, Any]],
                      failures: list[dict[str, Any]], *, aliases: Sequence[tuple[int, str, str]] = (),
                      run_started: float = 0.0, restored: Sequence[int] = ()) -> None:
        """One import batch in one transaction. `files` rows carry their id (pre-allocated).

        `aliases` are (file id, name, pack) of duplicates met under another name or in another
        pack: `midictl find --text` finds a file by any name it came under. Each is added once,
        and a file's aliases stop growing at ALIAS_TEXT_MAX characters (a kick in a thousand
        packs).

        `restored` are files whose library copy had gone and was written again from this
        batch: the error `check --repair` left on such a file ("re-import it") is cleared.

        An on-disk file in `scanned` keeps only the import failures of this run (the one that
        began at `run_started`): an older failure of it, or of a member of it, was of a file
        since replaced, or of one an older midid could not read, and must not linger in
        `midictl status`.

        The hot tables are written with plain `executemany` on fixed column lists: per-row
        type inspection in a generic inserter costs more than SQLite itself at thousands of
        files per second. Rarely written tables keep sqlite-utils' upserts.
        """
        now = time.time()
        words: dict[int, list[str]] = {}
        for t in tags:
            words.setdefault(t["file_id"], []).append(t["tag"])
        with self.db.atomic():
            conn = self.db.conn
            if files:
                _insert(conn, "files", FILE_COLUMNS, files)
                conn.executemany("INSERT INTO search(rowid, name, path, pack, tags) VALUES (?, ?, ?, ?, ?)",
                                 [(f["id"], f["name"], f["path"], f.get("pack") or "", " ".join(words.get(f["id"], ())))
                                  for f in files])
            if sources:
                _insert(conn, "sources", SOURCE_COLUMNS, sources, on_conflict="origin")
            if tags:
                conn.executemany("INSERT OR IGNORE INTO tags(file_id, tag, source) VALUES (?, ?, ?)",
                                 [(t["file_id"], t["tag"], t["source"]) for t in tags])
            if aliases:  # instr() of "" is 1: an empty pack adds nothing
                conn.executemany("UPDATE search SET name = name || ' ' || ? WHERE rowid = ?"
                                 " AND instr(name, ?) = 0 AND length(name) < ?",
                                 [(name, fid, name, ALIAS_TEXT_MAX) for fid, name, _ in aliases])
                conn.executemany("UPDATE search SET pack = pack || ' ' || ? WHERE rowid = ?"
                                 " AND instr(pack, ?) = 0 AND length(pack) < ?",
                                 [(pack, fid, pack, ALIAS_TEXT_MAX) for fid, _, pack in aliases])
            if scanned:
                conn.executemany("INSERT OR REPLACE INTO scanned(disk_path, size, mtime, seen_at, outcome)"
                                 " VALUES (?, ?, ?, ?, ?)",
                                 [(r["disk_path"], r["size"], r["mtime"], r["seen_at"], r["outcome"]) for r in scanned])
                conn.executemany(f"DELETE FROM failures WHERE at < ? AND {_FAILURES_OF}",
                                 [(run_started, *_failures_of(r["disk_path"])) for r in scanned])
            if failures:
                self.db["failures"].upsert_all(failures, pk=("origin", "stage"), batch_size=500)
            if restored:
                conn.executemany("UPDATE files SET error = NULL, error_stage = NULL WHERE id = ? AND error_stage = 'check'",
                                 [(file_id,) for file_id in restored])
            self._progress("import", len(files), len(failures), now)
            if files:
                self._progress("sanitize", len(files), 0, now)

    def next_file_id(self) -> int:
        row = self.db.execute("SELECT max(id) FROM files").fetchone()
        return int(row[0] or 0) + 1

    # ---- work queues ---------------------------------------------------------------------

    def split_queue(self, limit: int, after_id: int = 0) -> list[tuple[int, str, str]]:
        """Parents not yet split: (id, library path, name), in id order from after_id."""
        return self.db.execute(
            "SELECT id, path, name FROM files WHERE split_at IS NULL AND parent_id IS NULL AND error IS NULL"
            " AND id > ? ORDER BY id LIMIT ?", [after_id, limit]).fetchall()

    def work_left_for(self, first_id: int, last_id: int, rename_enabled: bool) -> bool:
        """Whether files first_id..last_id (one import's) or their parts still wait for a
        stage; files that failed wait for nothing."""
        return self.db.execute(
            "SELECT 1 FROM files WHERE (id BETWEEN :lo AND :hi OR parent_id BETWEEN :lo AND :hi)"
            " AND error IS NULL AND (analysed_at IS NULL OR (parent_id IS NULL AND split_at IS NULL)"
            " OR (:rename AND renamed_at IS NULL)) LIMIT 1",
            {"lo": first_id, "hi": last_id, "rename": int(rename_enabled)}).fetchone() is not None

    def reanalyse_queue(self, limit: int, after_id: int = 0) -> list[tuple[int, str, str]]:
        """Files whose analysis an older version wrote (:meth:`requeue_stale_analyses`), in id
        order from after_id: the engine turns to them when :meth:`analyse_queue` is empty."""
        return self.db.execute(
            "SELECT id, path, name FROM files WHERE reanalyse = 1 AND error IS NULL"
            " AND id > ? ORDER BY id LIMIT ?", [after_id, limit]).fetchall()

    def analyse_queue(self, limit: int, after_id: int = 0) -> list[tuple[int, str, str]]:
        return self.db.execute(
            "SELECT id, path, name FROM files WHERE analysed_at IS NULL AND error IS NULL"
            " AND id > ? ORDER BY id LIMIT ?", [after_id, limit]).fetchall()

    def rename_queue(self, limit: int, after_id: int = 0) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT f.id, f.path, f.name, f.pack, a.bpm, a.key_tonic, a.key_mode, a.category, a.tags"
            " FROM files f JOIN analysis a ON a.file_id = f.id"
            " WHERE f.renamed_at IS NULL AND f.analysed_at IS NOT NULL AND f.error IS NULL AND f.id > ?"
            " ORDER BY f.id LIMIT ?",
            [after_id, limit]))

    def prior_tags(self, file_ids: Sequence[int]) -> dict[int, list[str]]:
        if not file_ids:
            return {}
        marks = ",".join("?" * len(file_ids))
        out: dict[int, list[str]] = {}
        for fid, tag in self.db.execute(
            f"SELECT file_id, tag FROM tags WHERE source != 'analysis' AND file_id IN ({marks})", list(file_ids)
        ):
            out.setdefault(fid, []).append(tag)
        return out

    def commit_split(self, done: list[dict[str, Any]], parts: list[dict[str, Any]],
                     sources: list[dict[str, Any]], tags: list[dict[str, Any]]) -> None:
        """Mark parents split and insert their part files (already durable in the library)."""
        now = time.time()
        with self.db.atomic():
            self.db.conn.executemany(
                "UPDATE files SET split_at = ?, split_parts = ?, split_error = ? WHERE id = ?",
                [(now, row["split_parts"], row.get("split_error"), row["id"]) for row in done])
            if parts:
                _insert(self.db.conn, "files", FILE_COLUMNS, parts)
                self.db.conn.executemany(
                    "INSERT INTO search(rowid, name, path, pack, tags) VALUES (?, ?, ?, ?, '')",
                    [(p["id"], p["name"], p["path"], p.get("pack") or "") for p in parts])
            if sources:
                _insert(self.db.conn, "sources", SOURCE_COLUMNS, sources, on_conflict="origin")
            if tags:
                self.db.conn.executemany("INSERT OR IGNORE INTO tags(file_id, tag, source) VALUES (?, ?, ?)",
                                         [(t["file_id"], t["tag"], t["source"]) for t in tags])
            self._progress("split", len(done), sum(1 for r in done if r.get("split_error")), now)

    def requeue_stale_analyses(self, version: int = ANALYZER_VERSION) -> int:
        """Queue for analysis again the files an older analysis (``analyzer < version``)
        analysed; returns how many. They stay analysed (found by `find`, synced to drives)
        until the new analysis replaces the old, and wait behind files never analysed
        (:meth:`reanalyse_queue`). Cheap when there is nothing to do (an index on the
        version), so every writer calls it when it opens the library."""
        stale = "SELECT file_id FROM analysis WHERE analyzer < ?"
        if self.db.execute(stale + " LIMIT 1", [version]).fetchone() is None:
            return 0
        with self.db.atomic():
            return self.db.execute(
                "UPDATE files SET reanalyse = 1 WHERE reanalyse IS NULL AND analysed_at IS NOT NULL"
                f" AND id IN ({stale})", [version]).rowcount

    def commit_analysis(self, rows: list[dict[str, Any]], errors: list[tuple[int, str]]) -> None:
        """Analysis rows (`records.analysis_row`: lists as JSON) and per-file errors."""
        now = time.time()
        with self.db.atomic():
            if rows:
                ids = [r["file_id"] for r in rows]
                # A file analysed again keeps no tag of its old analysis.
                self.db.execute(
                    "DELETE FROM tags WHERE source = 'analysis' AND file_id IN (SELECT id FROM files"
                    f" WHERE reanalyse = 1 AND error IS NULL AND id IN ({','.join('?' * len(ids))}))", ids)
                # plain executemany: sqlite-utils' upsert_all and insert_all cost the driver more
                # than the SQL itself
                _insert(self.db.conn, "analysis", tuple(ANALYSIS_COLUMNS), rows, on_conflict="file_id")
                # A file analysed again is renamed again (when `[rename]` is on): a name made from
                # its old key or BPM ("Cmaj_lead.mid" now in A minor) would contradict `find`.
                self.db.conn.executemany(
                    "UPDATE files SET analysed_at = ?, reanalyse = NULL,"
                    " renamed_at = CASE WHEN reanalyse = 1 THEN NULL ELSE renamed_at END WHERE id = ?",
                    [(now, fid) for fid in ids])
                self.db.conn.executemany(
                    "INSERT OR IGNORE INTO tags(file_id, tag, source) VALUES (?, ?, 'analysis')",
                    [(r["file_id"], t) for r in rows for t in json.loads(r["tags"] or "[]") if t])
                self.db.conn.executemany(
                    "UPDATE search SET tags = (SELECT group_concat(DISTINCT tag) FROM tags WHERE file_id = ?)"
                    " || ' ' || ? WHERE rowid = ?",
                    [(r["file_id"], r["category"] or "", r["file_id"]) for r in rows])
            if errors:
                self.db.conn.executemany(
                    "UPDATE files SET error = ?, error_stage = 'analyze', analysed_at = NULL WHERE id = ?",
                    [(err, fid) for fid, err in errors])
            self._progress("analyze", len(rows) + len(errors), len(errors), now)

    def commit_rename(self, renames: list[tuple[int, str]], unchanged: list[int]) -> None:
        now = time.time()
        with self.db.atomic():
            for fid, new_path in renames:
                self.db.execute(
                    "UPDATE files SET original_path = coalesce(original_path, path), path = ?, renamed_at = ?"
                    " WHERE id = ?", [new_path, now, fid])
                self.db.execute("UPDATE search SET path = ? WHERE rowid = ?", [new_path, fid])
            self.db.conn.executemany("UPDATE files SET renamed_at = ? WHERE id = ?", [(now, f) for f in unchanged])
            self._progress("rename", len(renames) + len(unchanged), 0, now)

    def record_file_error(self, file_id: int, stage: str, error: str) -> None:
        with self.db.atomic():
            if stage == "split":
                self.db.execute("UPDATE files SET split_at = ?, split_parts = 0, split_error = ? WHERE id = ?",
                                [time.time(), error, file_id])
            else:
                self.db.execute("UPDATE files SET error = ?, error_stage = ? WHERE id = ?", [error, stage, file_id])
            self._progress(stage, 1, 1, time.time())

    def import_failure_paths(self) -> list[str]:
        """The on-disk files (as stored: :func:`.pathtext.path_text`) behind the import
        failures: the file itself, or the outermost archive of a failed member. An origin is
        ``path!member!...`` and a path may itself hold "!", so each cut is looked up."""
        found: set[str] = set()
        for (origin,) in self.db.execute("SELECT DISTINCT origin FROM failures WHERE stage = 'import'"):
            cuts = [origin] + [origin[:i] for i, ch in enumerate(origin) if ch == "!"]
            found.update(c for c in cuts if self.db.execute(
                "SELECT 1 FROM scanned WHERE disk_path = ?", [c]).fetchone())
        return sorted(found)

    def forget_import_failures(self, paths: Iterable[str]) -> None:
        """Drop the import failures of these on-disk files or folders (as stored), of an
        archive's members and of everything in a folder (:func:`_at_or_under`): they are gone,
        nothing is left to retry there."""
        with self.db.atomic():
            self.db.conn.executemany(
                f"DELETE FROM failures WHERE {_FAILURES_OF} OR (stage = 'import' AND origin > ? AND origin < ?)",
                [(*_failures_of(p), *_at_or_under(p)[1:]) for p in paths])

    def move_import_failures(self, old: str, new: str) -> None:
        """The import failures of an on-disk file (as stored) and of its members follow it to
        its new path (in the caller's transaction)."""
        self.db.execute(f"UPDATE OR REPLACE failures SET origin = ? || substr(origin, ?) WHERE {_FAILURES_OF}",
                        [new, len(old) + 1, *_failures_of(old)])

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that are still library files."""
        found: set[int] = set()
        for chunk, marks in _id_chunks(ids):
            found.update(i for (i,) in self.db.execute(f"SELECT id FROM files WHERE id IN ({marks})", chunk))
        return found

    def files_under(self, rel: str) -> list[tuple[int, str, bool]]:
        """(id, library path, is a split part) of the library file at this library path or the
        files inside this library folder, and of their split parts, in id order.
        Case-insensitive, as the library's names are unique (a library on exFAT sees "pack" and
        "Pack" as one folder)."""
        # Both halves use idx_files_path, whose NOCASE collation these comparisons share.
        found: dict[int, tuple[str, bool]] = {i: (p, bool(part)) for i, p, part in self.db.execute(
            "SELECT id, path, parent_id IS NOT NULL FROM files WHERE path = ?1 COLLATE NOCASE"
            " OR (path > ?2 COLLATE NOCASE AND path < ?3 COLLATE NOCASE)", _at_or_under(rel))}
        for chunk, marks in _id_chunks(list(found)):
            found.update((i, (p, True)) for i, p in self.db.execute(
                f"SELECT id, path FROM files WHERE parent_id IN ({marks})", chunk))
        return [(i, p, part) for i, (p, part) in sorted(found.items())]

    def files_from_source(self, disk_path: str) -> tuple[list[str], int]:
        """Library paths of the files imported from this on-disk file, archive or folder (as
        stored) and from nowhere else, and the count of those also imported from elsewhere."""
        under = "(s.disk_path = ?1 OR (s.disk_path > ?2 AND s.disk_path < ?3))"
        rows = self.db.execute(
            "SELECT f.path, EXISTS (SELECT 1 FROM sources o WHERE o.file_id = f.id AND o.kind != 'split'"
            f" AND NOT {under.replace('s.', 'o.')}) FROM files f WHERE f.id IN"
            f" (SELECT s.file_id FROM sources s WHERE {under}) ORDER BY f.id",
            _at_or_under(disk_path)).fetchall()
        return [path for path, elsewhere in rows if not elsewhere], sum(1 for _, elsewhere in rows if elsewhere)

    def remove_files(self, ids: Sequence[int]) -> None:
        """Delete these files' rows - analysis, tags, search words, sources, exports - in one
        transaction. Their sources' `scanned` rows stay, so a catch-up scan or `rescan` finds
        those sources unchanged and does not bring the files back; importing them again by
        hand does."""
        with self.db.atomic():
            for chunk, marks in _id_chunks(ids):
                for table in ("analysis", "tags", "sources", "exports"):
                    self.db.execute(f"DELETE FROM {table} WHERE file_id IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM search WHERE rowid IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM files WHERE id IN ({marks})", chunk)

    def retry_failed(self) -> int:
        """Clear per-file errors so the queues pick the files up again."""
        with self.db.atomic():
            cur = self.db.execute("UPDATE files SET error = NULL, error_stage = NULL WHERE error IS NOT NULL")
            self.db.execute("UPDATE files SET split_at = NULL, split_error = NULL WHERE split_error IS NOT NULL")
            return cur.rowcount

    def _progress(self, stage: str, count: int, failed: int, now: float) -> None:
        if count:
            self.db.execute("INSERT INTO progress(stage, at, count, failed) VALUES (?, ?, ?, ?)",
                            [stage, now, count, failed])

    def prune_progress(self, keep_s: float = 600) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM progress WHERE at < ?", [time.time() - keep_s])

    def checkpoint(self) -> None:
        """Fold the WAL into the database without waiting for readers (PASSIVE)."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # ---- status and queries --------------------------------------------------------------

    def stage_counts(self, rename_enabled: bool) -> dict[str, dict[str, Any]]:
        """done/queued/failed/rate per stage, from the rows themselves (not from memory).

        Every count goes through a small (partial) index; "done" is the total minus what is
        queued or failed, so a million-row library answers in milliseconds.
        """
        q = lambda sql: int(self.db.execute(sql).fetchone()[0] or 0)  # noqa: E731
        # A reader may open a library an older midid wrote, before a writer migrated it.
        version = self.schema_version()
        hint = (lambda index: f" INDEXED BY {index}") if version >= 2 else (lambda index: "")
        total = q("SELECT count(*) FROM files")
        parts = q("SELECT count(*) FROM files WHERE parent_id IS NOT NULL")
        # INDEXED BY: the partial queue indexes hold exactly these rows; left to itself the
        # planner walks a far larger index (parent_id IS NULL matches most of the library).
        analyse_queued = q(f"SELECT count(*) FROM files{hint('idx_files_analyse_queue')}"
                           " WHERE analysed_at IS NULL AND error IS NULL")
        # Analysed by an older version, queued again (counted as queued, not done).
        reanalyse_queued = q("SELECT count(*) FROM files INDEXED BY idx_files_reanalyse_queue"
                             " WHERE reanalyse = 1 AND error IS NULL") if version >= 3 else 0
        errors = dict(self.db.execute(
            "SELECT error_stage, count(*) FROM files WHERE error IS NOT NULL GROUP BY error_stage").fetchall())
        split_failed = q("SELECT count(*) FROM files WHERE split_error IS NOT NULL")
        split_queued = q(f"SELECT count(*) FROM files{hint('idx_files_split_queue')}"
                         " WHERE split_at IS NULL AND parent_id IS NULL AND error IS NULL")
        unsplit = q(f"SELECT count(*) FROM files{hint('idx_files_unsplit')} WHERE split_at IS NULL")
        rename_queued = q("SELECT count(*) FROM files WHERE renamed_at IS NULL AND analysed_at IS NOT NULL"
                          " AND error IS NULL") if rename_enabled else 0
        not_analysed = analyse_queued + sum(errors.values())
        since = time.time() - 60
        rates = dict(self.db.execute(
            "SELECT stage, sum(count) / 60.0 FROM progress WHERE at >= ? GROUP BY stage", [since]).fetchall())
        stages = {
            "import": {"done": total - parts, "queued": 0,
                       "failed": q("SELECT count(*) FROM failures WHERE stage = 'import'")},
            "sanitize": {"done": total, "queued": 0, "failed": 0},
            "split": {"done": total - unsplit, "queued": split_queued, "failed": split_failed},
            "analyze": {"done": total - not_analysed - reanalyse_queued, "queued": analyse_queued + reanalyse_queued,
                        "failed": int(errors.get("analyze", 0))},
            "rename": {"done": total - not_analysed - rename_queued if rename_enabled else 0,
                       "queued": rename_queued, "failed": int(errors.get("rename", 0))},
            "export": {"done": q("SELECT count(DISTINCT file_id) FROM exports WHERE gone = 0"), "queued": 0,
                       "failed": q("SELECT count(*) FROM failures WHERE stage = 'export'")},
        }
        for stage, row in stages.items():
            row["rate"] = round(float(rates.get(stage) or 0.0), 1)
        return stages

    def latest_errors(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = list(self.db.query(
            "SELECT origin AS path, stage, error, at FROM failures ORDER BY at DESC LIMIT ?", [limit]))
        rows += list(self.db.query(
            "SELECT path, coalesce(error_stage, 'split') AS stage, coalesce(error, split_error) AS error,"
            " coalesce(analysed_at, split_at, added_at) AS at FROM files"
            " WHERE error IS NOT NULL OR split_error IS NOT NULL ORDER BY id DESC LIMIT ?", [limit]))
        rows.sort(key=lambda r: r["at"] or 0, reverse=True)
        return rows[:limit]

    def file_rows(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(ids))
        return list(self.db.query(f"SELECT * FROM files WHERE id IN ({marks})", list(ids)))


ALIAS_TEXT_MAX = 2000  # characters of a search row's name or pack that aliases may fill
# The import failures of an on-disk file: its own and its archive members' ("path!member ..."),
# one index range from "path!" up to 'path"' ("!" is 0x21, '"' 0x22). Arguments: _failures_of.
_FAILURES_OF = "(stage = 'import' AND (origin = ? OR (origin > ? AND origin < ?)))"


def _failures_of(path: str) -> tuple[str, str, str]:
    return path, path + "!", path + '"'


def _at_or_under(path: str) -> tuple[str, str, str]:
    """Arguments for "= ? OR (> ? AND < ?)": the path itself, and everything in it as a folder,
    one index range from "path/" up to "path0" ("/" is 0x2F, "0" 0x30)."""
    return path, path + "/", path + "0"


def _id_chunks(ids: Sequence[int], size: int = 500) -> Iterator[tuple[list[int], str]]:
    """``ids`` in chunks small enough for SQLite's bound-parameter limit, each with its "?,?,..."."""
    for start in range(0, len(ids), size):
        chunk = list(ids[start:start + size])
        yield chunk, ",".join("?" * len(chunk))


FILE_COLUMNS = ("id", "hash", "size", "path", "name", "pack", "format", "tracks", "parent_id", "part_index",
                "added_at", "sanitized_at", "split_at", "split_parts")
SOURCE_COLUMNS = ("file_id", "origin", "disk_path", "kind", "size", "mtime", "seen_at", "missing")


def _insert(conn: sqlite3.Connection, table: str, columns: Sequence[str], rows: list[dict[str, Any]],
            on_conflict: str | None = None) -> None:
    """executemany over a fixed column list (missing keys are NULL); upsert on `on_conflict`."""
    cols = ", ".join(columns)
    sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))})"
    if on_conflict:
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != on_conflict)
        sql += f" ON CONFLICT({on_conflict}) DO UPDATE SET {updates}"
    conn.executemany(sql, [tuple(r.get(c) for c in columns) for r in rows])
