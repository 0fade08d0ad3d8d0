"""Crashes and concurrency against the real daemon and the real `midictl`.

- kill -9 of the daemon at seeded random points of a large watched-folder import, then a
  restart: the database is intact, every source file is in the library exactly once, every
  library file has exactly one analysis row, no temp file is left, and the library folder and
  the database agree. Six points in the normal suite; `MIDID_KILL_POINTS=20` for the long run.
- a reader holding a read transaction open (and `midictl find` in a loop) during a heavy
  import does not stall it, and the WAL stops growing once the reader lets go;
- two `midictl import --local` started together on one library do not double-import.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from conftest import DATA, write_config
from test_daemon import Daemon, wait_until, work_left

MIDICTL = [sys.executable, "-m", "midid.ctl"]
KILL_POINTS = int(os.environ.get("MIDID_KILL_POINTS", "6"))
KILL_SEED = int(os.environ.get("MIDID_KILL_SEED", "7"))


def _payloads() -> list[bytes]:
    return [p.read_bytes() for p in sorted((DATA / "midi").glob("*.mid"))]


def drop_files(folder: Path, first: int, count: int) -> list[Path]:
    """`count` distinct real MIDI files (a 4-byte serial after the last track keeps them apart;
    readers ignore bytes after the declared tracks). Every fifth is a multi-track POP909 song."""
    payloads = _payloads()
    song = next(p for p in payloads if b"MELODY" in p or p.count(b"MTrk") > 2)
    drums = [p for p in payloads if p is not song]
    out = []
    for i in range(first, first + count):
        data = song if i % 5 == 0 else drums[i % len(drums)]
        path = folder / f"drop_{i:06d}.mid"
        tmp = folder / f".drop_{i:06d}.part"
        tmp.write_bytes(data + i.to_bytes(4, "big"))
        os.replace(tmp, path)  # arrive complete, as a browser's download does
        out.append(path)
    return out


def daemon_config(tmp_path: Path, src: Path, extra: str = "") -> Path:
    return write_config(tmp_path, f'[sources]\nfolders = ["{src}"]\n[watch]\nsettle_s = 0.3\n'
                                  "[ray]\nnum_cpus = 2\nobject_store_mb = 100\n"
                                  "[pipeline]\nanalyze_actors = 1\nbatch_size = 64\n"
                                  "[export]\nenabled = false\n" + extra)


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM sources WHERE kind = 'file'),"
            " (SELECT count(*) FROM files WHERE analysed_at IS NULL AND error IS NULL),"
            " (SELECT count(*) FROM files WHERE split_at IS NULL AND parent_id IS NULL AND error IS NULL)"
        ).fetchone()
    return {"sources": row[0], "analyse_queue": row[1], "split_queue": row[2]}


def assert_library_consistent(tmp_path: Path, sources: list[Path]) -> None:
    """The crash promises: intact database, each source once, one analysis row per file, no
    temp files, folder and database in agreement."""
    db, library = tmp_path / "midid.sqlite3", tmp_path / "library"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        disk_paths = [r[0] for r in conn.execute("SELECT disk_path FROM sources WHERE kind = 'file'")]
        originals = conn.execute("SELECT count(*), count(DISTINCT hash) FROM files WHERE parent_id IS NULL").fetchone()
        files = conn.execute("SELECT count(*) FROM files").fetchone()[0]
        per_file = conn.execute(
            "SELECT f.id, count(a.file_id) FROM files f LEFT JOIN analysis a ON a.file_id = f.id"
            " GROUP BY f.id HAVING count(a.file_id) != 1").fetchall()
        errors = conn.execute("SELECT path, error FROM files WHERE error IS NOT NULL OR split_error IS NOT NULL"
                              ).fetchall()
        paths = [r[0] for r in conn.execute("SELECT path FROM files")]
        split_sources = conn.execute("SELECT count(*) FROM sources WHERE kind = 'split'").fetchone()[0]
    assert sorted(disk_paths) == sorted(str(p) for p in sources), "each source file exactly once"
    assert originals == (len(sources), len(sources))
    assert errors == [] and per_file == [], (errors[:5], per_file[:5])
    songs = sum(1 for p in sources if int(p.stem.rsplit("_", 1)[1]) % 5 == 0)
    # The songs differ only after their tracks, so their parts are three library files (the
    # first song's), each with one split source per song.
    assert split_sources == 3 * songs, "every multi-track song split into its three parts, once"
    on_disk = sorted(str(p.relative_to(library)) for p in library.rglob("*")
                     if p.is_file() and ".midid-staging" not in p.parts)
    assert on_disk == sorted(paths) and len(paths) == files
    staging = library / ".midid-staging"
    assert not staging.exists() or not any(staging.iterdir())


def _start(tmp_path: Path, config: Path) -> Daemon:
    return Daemon(tmp_path, config).ready()


def test_kill_9_of_the_daemon_at_random_points_loses_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    config = daemon_config(tmp_path, src)
    db = tmp_path / "midid.sqlite3"
    sources: list[Path] = []
    rng = random.Random(KILL_SEED)
    killed_with_work_left = 0
    for point in range(KILL_POINTS):
        # Half the runs find their new files by the catch-up scan (and may die while starting),
        # half through the watcher.
        if point % 2 == 0:
            sources += drop_files(src, len(sources), 600 if point == 0 else 200)
            d = Daemon(tmp_path, config)
        else:
            d = _start(tmp_path, config)
            sources += drop_files(src, len(sources), 200)
        # The kill comes at a random point of the work left, watched every 10 ms: a kill at a
        # random time came after the work was done whenever the daemon was fast enough.
        stop_at = int(work_left(db, len(sources)) * rng.uniform(0.1, 0.9))
        wait_until(lambda: work_left(db, len(sources)) <= stop_at, 120, "the work to reach the kill point", every=0.01)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.notify.close()
        d.log.close()
        killed_with_work_left += work_left(db, len(sources)) > 0
    assert killed_with_work_left >= KILL_POINTS // 2, "the kills must land in the middle of the work"
    d = _start(tmp_path, config)
    try:
        wait_until(lambda: (lambda c: c["sources"] == len(sources) and not c["analyse_queue"]
                            and not c["split_queue"])(counts(tmp_path / "midid.sqlite3")), 240, "the import to finish")
    finally:
        assert d.stop() == 0
    assert_library_consistent(tmp_path, sources)
    check = subprocess.run([*MIDICTL, "--config", str(config), "check", "--json"], capture_output=True, text=True,
                           timeout=120)
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert check.returncode == 0 and report["ok"] and report["files"] > len(sources), report


def _wal_size(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_reader_holding_a_transaction_does_not_stall_the_import_and_the_wal_stays_bounded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    config = daemon_config(tmp_path, src)
    db = tmp_path / "midid.sqlite3"
    d = _start(tmp_path, config)
    try:
        first = drop_files(src, 0, 50)
        wait_until(lambda: counts(db)["sources"] == len(first), 60, "a first import")
        reader = sqlite3.connect(db, timeout=30, isolation_level=None)
        reader.execute("BEGIN")
        seen_by_reader = reader.execute("SELECT count(*) FROM files").fetchone()[0]
        finds: list[subprocess.CompletedProcess] = []
        stop = threading.Event()

        def find_loop() -> None:
            while not stop.is_set():
                finds.append(subprocess.run([*MIDICTL, "--config", str(config), "find", "--text", "drop", "--json",
                                             "--limit", "100000"], capture_output=True, text=True, timeout=60))

        finder = threading.Thread(target=find_loop)
        finder.start()
        heavy = drop_files(src, len(first), 600)
        try:
            wait_until(lambda: (lambda c: c["sources"] == len(first) + len(heavy) and not c["analyse_queue"])(
                counts(db)), 240, "the import to go on while a reader holds its snapshot")
            # The reader still sees its snapshot: the writer never waited for it.
            assert reader.execute("SELECT count(*) FROM files").fetchone()[0] == seen_by_reader
        finally:
            stop.set()
            finder.join()
        wal_while_held = _wal_size(db)
        reader.execute("COMMIT")
        reader.close()
        assert finds and all(f.returncode == 0 for f in finds), [f.stderr for f in finds if f.returncode][:2]
        found = [len(f.stdout.splitlines()) for f in finds]
        assert found[-1] >= len(first), found
        # While the reader held its snapshot no checkpoint could pass it, so the WAL grew with
        # the import. With the reader gone it is checkpointed and reused from its start: the
        # same amount of work again adds little (short readers, like this test's polling, can
        # delay a restart now and then, so "little", not "nothing").
        more = drop_files(src, len(first) + len(heavy), len(heavy))
        wait_until(lambda: (lambda c: c["sources"] == len(first) + len(heavy) + len(more)
                            and not c["analyse_queue"])(counts(db)), 240, "the import after the reader left")
        wal_after = _wal_size(db)
    finally:
        assert d.stop() == 0
    assert wal_while_held > 0
    assert wal_after - wal_while_held < wal_while_held / 4, (wal_after, wal_while_held)


def test_two_local_imports_at_once_do_not_double_import(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sources = drop_files(src, 0, 400)
    config = write_config(tmp_path)
    cmd = [*MIDICTL, "--config", str(config), "import", "--local", "--json", str(src)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1000:] for _, err in results]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert sorted(s["imported"] for s in summaries) == [0, len(sources)]
    assert sorted(s["duplicates"] for s in summaries) == [0, len(sources)]
    assert_library_consistent(tmp_path, sources)
