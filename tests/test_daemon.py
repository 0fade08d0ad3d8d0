"""The real daemon as a subprocess: systemd notify protocol, watched folders, control socket."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from conftest import DATA, copied, write_config
from notifysock import NotifySocket
from midid.config import load_config
from midid.pathtext import path_text
from midid.runjob import run_import

MIDICTL = [sys.executable, "-m", "midid.ctl"]


class Daemon:
    def __init__(self, tmp_path: Path, config: Path, watchdog_usec: int = 4_000_000) -> None:
        self.tmp_path, self.config = tmp_path, config
        self.notify = NotifySocket(tmp_path / f"notify-{time.monotonic_ns()}.sock")
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC=str(watchdog_usec))
        env.pop("WATCHDOG_PID", None)
        self.log = open(tmp_path / "daemon.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "midid.daemon", "--config", str(config)],
                                     stdout=self.log, stderr=self.log, env=env)

    def ready(self) -> "Daemon":
        """Waits as long as the unit's `TimeoutStartSec` (120 s): a `ray://` join may take two
        tries of Ray Client's 30-40 s fault before the daemon falls back to a local Ray."""
        try:
            self.notify.wait_for("READY=1", timeout=120, proc=self.proc)
        except AssertionError:
            raise AssertionError((self.tmp_path / "daemon.log").read_text()[-3000:]) from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.notify.close()
        self.log.close()
        return code


@pytest.fixture
def daemon_env(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    config = write_config(tmp_path, f'[sources]\nfolders = ["{src}"]\n[watch]\nsettle_s = 0.5\n'
                                    "[ray]\nnum_cpus = 2\nobject_store_mb = 100\n[pipeline]\nanalyze_actors = 1\n"
                                    "[export]\nenabled = false\n")
    started: list[Daemon] = []

    def start(**kw) -> Daemon:
        d = Daemon(tmp_path, config, **kw)
        started.append(d)
        return d.ready()

    yield tmp_path, src, config, start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def ctl(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*MIDICTL, "--config", str(config), *args], capture_output=True, text=True, timeout=timeout)


def status(config: Path) -> dict:
    done = ctl(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition", every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def work_left(db: Path, sources: int) -> int:
    """Of `sources` source files: those not yet imported, and library files still to split or
    analyse (all of them while the database is not made yet)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            imported, queued = conn.execute(
                "SELECT (SELECT count(*) FROM sources WHERE kind = 'file'),"
                " (SELECT count(*) FROM files WHERE error IS NULL AND (analysed_at IS NULL"
                "  OR (split_at IS NULL AND parent_id IS NULL)))").fetchone()
    except sqlite3.OperationalError:
        return sources
    return sources - imported + queued


def analysed_again_left(db: Path) -> int:
    """Files an older analysis did that still wait to be analysed again."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute("SELECT count(*) FROM files WHERE reanalyse = 1").fetchone()[0]


def files_in_db(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        return dict(conn.execute("SELECT name, analysed_at IS NOT NULL FROM files WHERE parent_id IS NULL"))


def test_notify_protocol_watch_import_status_and_clean_stop(daemon_env, sample_midi) -> None:
    tmp_path, src, config, start = daemon_env
    d = start()
    pings_before = sum(1 for m in d.notify.messages if m == "WATCHDOG=1")
    copied(sample_midi, src)
    wait_until(lambda: len(files_in_db(tmp_path)) == 3 and all(files_in_db(tmp_path).values()), 60, "imports")
    line = d.notify.wait_for("STATUS=analysed 6/6", timeout=30)
    assert "0 error(s)" in line
    wait_until(lambda: sum(1 for m in d.notify.messages if m == "WATCHDOG=1") >= pings_before + 2, 10, "pings")
    s = status(config)
    assert s["daemon"]["running"] and s["daemon"]["pid"] == d.proc.pid and s["daemon"]["version"]
    assert s["stages"]["analyze"]["done"] == 6 and s["stages"]["split"]["done"] >= 3
    assert set(s["stages"]) == {"import", "sanitize", "split", "analyze", "rename", "export"}
    assert s["sources"][0]["path"] == str(src) and s["sources"][0]["watching"]
    # One Ray for the daemon's life, its pool as configured (analyze_actors = 1).
    assert s["compute"]["runner"] == "ray" and s["compute"]["ray"] == "local"
    assert s["compute"]["workers"] == {"analyze": 1} and list(s["compute"]["nodes"].values()) == [1]
    assert s["compute"]["rejoin_in_s"] is None  # no cluster configured: nothing to rejoin
    assert "compute: 1 Ray worker (analyze 1) on 1 node of a local Ray" in ctl(config, "status").stdout
    # SIGUSR1: every thread's stack in the log (for a hang report), and the daemon goes on.
    d.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "midid/daemon.py" in (tmp_path / "daemon.log").read_text(), 10, "the stacks")
    assert "Thread 0x" in (tmp_path / "daemon.log").read_text() and status(config)["daemon"]["running"]
    assert d.stop() == 0
    assert "STOPPING=1" in d.notify.messages
    assert not (tmp_path / "midid.sock").exists()
    s = status(config)
    assert s["daemon"]["running"] is False and s["stages"]["analyze"]["done"] == 6
    assert s["compute"] is None


def test_midictl_import_hands_over_and_follows_to_the_end(daemon_env, sample_midi) -> None:
    tmp_path, src, config, start = daemon_env
    d = start()
    other = copied(sample_midi, tmp_path / "elsewhere")
    results: list[subprocess.CompletedProcess] = []
    threads = [threading.Thread(target=lambda: results.append(ctl(config, "import", "--json", str(other))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summaries = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert sorted(s["imported"] for s in summaries) == [0, 3]
    assert sorted(s["duplicates"] for s in summaries) == [0, 3]
    first = next(s for s in summaries if s["imported"] == 3)
    assert first["split_parts"] == 3 and first["analysed"] == 6 and first["analysis_errors"] == 0
    assert len(files_in_db(tmp_path)) == 3
    assert d.stop() == 0


def test_a_followed_import_ends_with_its_own_files_not_with_the_back_catalogue(tmp_path: Path, sample_midi) -> None:
    """After an upgrade the daemon analyses the whole library again (every row says an older
    analysis wrote it); an import handed over meanwhile returns once its own file is done."""
    config = write_config(tmp_path, "[ray]\nnum_cpus = 2\nobject_store_mb = 100\n[pipeline]\nanalyze_actors = 1\n"
                                    "batch_size = 1\nmax_in_flight = 1\nlocal_below = 100000\n"
                                    "[watch]\nenabled = false\n[export]\nenabled = false\n")
    old = tmp_path / "old"
    old.mkdir()
    base = sample_midi[0].read_bytes()
    for i in range(2000):
        (old / f"g{i:04d}.mid").write_bytes(base + i.to_bytes(4, "big"))
    assert run_import(load_config(config), [str(old)])["analysed"] == 2000
    db = tmp_path / "midid.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE analysis SET analyzer = 0")
    new = tmp_path / "new"
    new.mkdir()
    (new / "fresh.mid").write_bytes(base + b"fresh")
    d = Daemon(tmp_path, config)
    try:
        d.ready()
        result = ctl(config, "import", "--json", str(new))
        still_queued = analysed_again_left(db)
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert (summary["imported"], summary["analysed"], summary["analysis_errors"]) == (1, 1, 0)
        assert still_queued > 0, "the import waited for the library's re-analysis"
        wait_until(lambda: work_left(db, 2001) == 0 and not analysed_again_left(db), timeout=180, what="re-analysis")
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_sighup_and_config_set_reload_without_restart(daemon_env, sample_midi) -> None:
    tmp_path, src, config, start = daemon_env
    d = start()
    second = tmp_path / "second"
    second.mkdir()
    (second / "late.mid").write_bytes(sample_midi[0].read_bytes())
    done = ctl(config, "config", "set", "sources.folders", json.dumps([str(src), str(second)]))
    assert done.returncode == 0, done.stderr
    d.notify.wait_for("RELOADING=1", timeout=20)
    wait_until(lambda: "late.mid" in files_in_db(tmp_path), 30, "catch-up of the new folder")
    (second / "live.mid").write_bytes(sample_midi[1].read_bytes())
    wait_until(lambda: "live.mid" in files_in_db(tmp_path), 30, "the new folder to be watched")
    mark = len(d.notify.messages)
    d.proc.send_signal(signal.SIGHUP)
    d.notify.wait_for("RELOADING=1", after=mark, timeout=20)
    d.notify.wait_for("READY=1", after=mark, timeout=20)
    bad = ctl(config, "config", "set", "watch.settle_s", "-3")
    assert bad.returncode == 2 and "watch.settle_s" in bad.stderr
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_restart_catches_up_and_kill_9_resumes(daemon_env, sample_midi) -> None:
    tmp_path, src, config, start = daemon_env
    (src / "before.mid").write_bytes(sample_midi[0].read_bytes())
    d = start()
    wait_until(lambda: files_in_db(tmp_path).get("before.mid") == 1, 60, "first import")
    assert d.stop() == 0
    base = sample_midi[1].read_bytes()
    for i in range(300):
        (src / f"while_down_{i:03d}.mid").write_bytes(base + i.to_bytes(2, "big"))
    d = start()
    wait_until(lambda: len(files_in_db(tmp_path)) >= 50, 60, "catch-up to start", every=0.01)
    d.proc.kill()
    d.proc.wait()
    d.notify.close()
    left = files_in_db(tmp_path)
    assert len(left) < 301 or not all(left.values()), "the kill must come before the catch-up is done"
    d = start()
    wait_until(lambda: len(files_in_db(tmp_path)) == 301 and all(files_in_db(tmp_path).values()), 120,
               "everything imported and analysed after kill -9")
    assert d.stop() == 0
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM sources").fetchone()[0] == 301
        unchanged = conn.execute("SELECT count(*) FROM scanned WHERE outcome = 'midi'").fetchone()[0]
    assert unchanged == 301
    staging = tmp_path / "library" / ".midid-staging"
    assert not staging.exists() or not any(staging.iterdir())


@pytest.mark.parametrize(("name", "new_name"), [(b"a.mid", b"moved.mid"), (b"caf\xe9.mid", b"d\xe9plac\xe9.mid")],
                         ids=["utf8", "latin1"])
def test_moves_and_deletes_update_sources(daemon_env, sample_midi, name: bytes, new_name: bytes) -> None:
    """Also for a name that is not UTF-8 (stored with its bad bytes as \\xNN): the watcher's
    events must find the rows the import wrote."""
    tmp_path, src, config, start = daemon_env
    (src / "sub").mkdir()
    first, moved = Path(os.fsdecode(name)), src / os.fsdecode(new_name)
    (src / "sub" / first).write_bytes(sample_midi[0].read_bytes())
    d = start()
    wait_until(lambda: path_text(first) in files_in_db(tmp_path), 60, "import")
    (src / "sub" / first).rename(moved)

    def source_rows() -> list[tuple]:
        with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
            return conn.execute("SELECT disk_path, missing FROM sources").fetchall()

    wait_until(lambda: source_rows() == [(path_text(moved), 0)], 30, "move recorded")
    moved.unlink()
    wait_until(lambda: source_rows() == [(path_text(moved), 1)], 30, "delete recorded")
    assert len(list((tmp_path / "library").rglob("*.mid"))) == 1, "the library copy stays"
    # A file that failed to import is listed while it is there, under its name as it moves.
    broken = src / os.fsdecode(name.replace(b".mid", b".zip"))
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 10)
    wait_until(lambda: [e["path"] for e in status(config)["errors"]] == [path_text(broken)], 30, "the failure")
    broken.rename(moved.with_suffix(".zip"))
    wait_until(lambda: [e["path"] for e in status(config)["errors"]] == [path_text(moved.with_suffix(".zip"))],
               30, "the failure under the new name")
    moved.with_suffix(".zip").unlink()
    wait_until(lambda: status(config)["errors"] == [], 30, "the failure forgotten with its file")
    assert d.stop() == 0


def test_pause_resume_rescan_and_retry_failed(tmp_path: Path, sample_midi, monkeypatch) -> None:
    """The commands a user steers the daemon with, each shown to do what it says: nothing is
    imported while paused; a file the watcher cannot see (watching off) arrives on `rescan`;
    a file an older midid failed on is analysed on `retry-failed`. The source folder is
    written as a desktop user would, under ``~``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    src = tmp_path / "src"
    src.mkdir()
    config = write_config(tmp_path, '[sources]\nfolders = ["~/src"]\n[watch]\nenabled = false\n'
                                    "[ray]\nnum_cpus = 2\nobject_store_mb = 100\n[pipeline]\nanalyze_actors = 1\n"
                                    "[export]\nenabled = false\n")
    assert run_import(load_config(config), [str(copied(sample_midi[:1], tmp_path / "first"))])["analysed"] == 1
    db = tmp_path / "midid.sqlite3"
    # Files an older midid failed to import: one still on disk, one gone since.
    unread_file = tmp_path / "old" / "older.mid"
    unread_file.parent.mkdir()
    unread_file.write_bytes(sample_midi[2].read_bytes() + b"older")  # not the file rescanned below
    with sqlite3.connect(db) as conn:
        (failed_id,) = conn.execute("SELECT id FROM files").fetchone()
        conn.execute("DELETE FROM analysis WHERE file_id = ?", [failed_id])
        conn.execute("UPDATE files SET error = 'analysis crashed (an older midid)', error_stage = 'analyze',"
                     " analysed_at = NULL WHERE id = ?", [failed_id])
        for path in (unread_file, tmp_path / "gone.zip"):
            conn.execute("INSERT INTO failures(origin, stage, error, at) VALUES (?, 'import', ?, 1)",
                         [str(path), f"could not read {path.name} (an older midid)"])
            conn.execute("INSERT INTO scanned(disk_path, size, mtime, seen_at, outcome) VALUES (?, 1, 1, 1, 'failed')",
                         [str(path)])
    d = Daemon(tmp_path, config)
    try:
        d.ready()
        s = status(config)
        assert s["stages"]["analyze"]["failed"] == 1 and s["stages"]["import"]["failed"] == 2
        assert sorted(e["error"] for e in s["errors"]) == sorted([
            "analysis crashed (an older midid)", "could not read older.mid (an older midid)",
            "could not read gone.zip (an older midid)"])
        assert "midictl retry-failed" in ctl(config, "status").stdout
        assert s["sources"] == [{"path": str(src), "watching": False, "polling": False}]

        assert ctl(config, "pause").returncode == 0
        wait_until(lambda: status(config)["daemon"]["state"] == "paused", 10, "paused")
        later = copied(sample_midi[1:2], tmp_path / "later")
        done = ctl(config, "import", "--no-wait", str(later))
        assert done.returncode == 0, done.stderr
        time.sleep(3)
        assert sample_midi[1].name not in files_in_db(tmp_path), "imported while paused"
        assert ctl(config, "resume").returncode == 0
        wait_until(lambda: files_in_db(tmp_path).get(sample_midi[1].name), 60, "the import after resume")
        assert status(config)["daemon"]["state"] == "running"

        (src / "unwatched.mid").write_bytes(sample_midi[2].read_bytes())
        time.sleep(2)
        assert "unwatched.mid" not in files_in_db(tmp_path)
        assert ctl(config, "rescan").stdout.strip() == "rescan queued"
        wait_until(lambda: files_in_db(tmp_path).get("unwatched.mid"), 60, "the rescan")

        assert ctl(config, "retry-failed").stdout.strip() == "failed files queued again"
        wait_until(lambda: status(config)["stages"]["analyze"]["failed"] == 0, 60, "the retry")
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT f.error, f.analysed_at IS NOT NULL, a.category FROM files f"
                               " LEFT JOIN analysis a ON a.file_id = f.id WHERE f.id = ?", [failed_id]).fetchone()
        assert row[0] is None and row[1] and row[2]
        wait_until(lambda: files_in_db(tmp_path).get("older.mid"), 60, "the new import of what failed")
        s = status(config)
        assert s["errors"] == [] and s["stages"]["import"]["failed"] == 0
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_remove_while_the_daemon_runs_and_a_rescan_leaves_it_out(daemon_env) -> None:
    """`midictl remove` hands the removal to the running daemon (the one writer); its sources
    stay, and neither the watcher nor `rescan` brings the pack back."""
    tmp_path, src, config, start = daemon_env
    d = start()
    (src / "Bad Pack").mkdir()
    (src / "Good").mkdir()
    (src / "Bad Pack" / "song.mid").write_bytes((DATA / "split" / "pop909_229.mid").read_bytes())
    (src / "Bad Pack" / "fill.mid").write_bytes((DATA / "midi" / "29_latin-samba_116_fill_4-4.mid").read_bytes())
    (src / "Good" / "beat.mid").write_bytes((DATA / "midi" / "100_neworleans-secondline_94_beat_4-4.mid").read_bytes())
    db = tmp_path / "midid.sqlite3"
    wait_until(lambda: work_left(db, 3) == 0, 120, "the three files imported, split and analysed")
    done = ctl(config, "remove", "Bad_Pack")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("removed 5 file(s), 3 of them split parts;")
    assert set(files_in_db(tmp_path)) == {"beat.mid"}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT count(*) FROM files").fetchone() == (1,)
    assert not (tmp_path / "library" / "Bad_Pack").exists()
    assert sorted(p.name for p in (src / "Bad Pack").iterdir()) == ["fill.mid", "song.mid"]
    assert ctl(config, "rescan").returncode == 0
    (src / "Good" / "later.mid").write_bytes((DATA / "analysis" / "9_latin-merengue_158_beat_4-4.mid").read_bytes())
    wait_until(lambda: files_in_db(tmp_path).get("later.mid"), 120, "a file dropped after the rescan")
    assert set(files_in_db(tmp_path)) == {"beat.mid", "later.mid"}, "the rescan brought removed files back"
    gone = ctl(config, "remove", "Bad_Pack")
    assert gone.returncode == 2 and "Bad_Pack is neither in the library folder" in gone.stderr
    assert d.proc.poll() is None and status(config)["daemon"]["running"]
    assert d.stop() == 0
