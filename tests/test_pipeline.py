"""The pipeline engine on real Ray and in-process: split, analyze, rename, crashes, resume."""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import mido
import pytest
import symusic

from conftest import copied, run_or_dump, write_config
from rayhead import (client_server_log, free_port, remove_head, skip_if_client_port_closed,
                     skip_on_client_server_flake, start_head)
from test_analysis import AMBIGUOUS_LEAD, C_MAJOR_SCALE, TPQ, drum_pattern, notes, one_beat_chord_loop, smf
from test_daemon import wait_until, work_left
from midid.analysis import analyze_bytes
from midid.config import Config, load_config
from midid.db import Library
from midid.engine import Engine
from midid.importer import Importer
from midid import runjob
from midid.pool import (CLIENT_SERVER_FAULTS, CRASH_ERROR, ClusterLost, LocalRunner, NoWorkers, RayRunner, _Worker, _join,
                        connection_gist, probe)
from midid.records import ANALYZER_VERSION, JSON_COLUMNS, analysis_row
from midid.runjob import estimate_inputs, run_import

POISON = b"MIDID-TEST-POISON"


def corpus_subset(corpus: Path, dest: Path, n_groove: int = 12, n_pop: int = 4) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    grooves = sorted(corpus.glob("groove/drummer1/session1/*.mid"))[:n_groove]
    songs = sorted(corpus.glob("pop909/0[0-9][0-9]/0*.mid"))[:n_pop]
    for f in grooves + songs:
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def import_and_run(config: Path, src: Path, runner) -> tuple[Library, Engine]:
    cfg = load_config(config)
    lib = Library(cfg.database_path)
    Importer(cfg, lib).run([src])
    engine = Engine(cfg, lib, runner)
    engine.run()
    return lib, engine


def test_a_library_file_gone_before_its_stage_is_recorded_and_the_rest_go_on(tmp_path: Path, sample_midi) -> None:
    src = copied(sample_midi, tmp_path / "src")
    cfg = load_config(write_config(tmp_path))
    lib = Library(cfg.database_path)
    Importer(cfg, lib).run([src])
    gone = lib.db.execute("SELECT path FROM files WHERE name = ?", [sample_midi[0].name]).fetchone()[0]
    (cfg.library_path / gone).unlink()
    engine = Engine(cfg, lib, LocalRunner())
    engine.run()
    errors = dict(lib.db.execute("SELECT path, error FROM files WHERE error IS NOT NULL").fetchall())
    assert list(errors) == [gone]
    assert errors[gone].startswith("library file unreadable: No such file") and "midictl check" in errors[gone]
    assert engine.totals.split_parts > 0  # the song's parts, analysed with the other files
    assert engine.totals.analysed == len(sample_midi) - 1 + engine.totals.split_parts


def test_a_pack_that_states_its_tempo_beats_the_120_placeholder_of_its_files(tmp_path: Path) -> None:
    """"Trap 140bpm/loop.mid" exported at the MIDI default 120 is filed at 140, and so are
    its split parts; a bare "Trap 140" folder leaves the file's 120."""
    placeholder = [mido.MetaMessage("set_tempo", tempo=500_000, time=0)]
    song = smf(placeholder, drum_pattern(4), [mido.Message("program_change", program=33, channel=1, time=0)]
               + notes([(36, TPQ), (43, TPQ)] * 8, channel=1))
    src = tmp_path / "src"
    (src / "Trap 140bpm").mkdir(parents=True)
    (src / "Trap 140").mkdir()
    (src / "Trap 140bpm" / "song.mid").write_bytes(song)
    (src / "Trap 140" / "beat.mid").write_bytes(smf(placeholder, drum_pattern(2)))
    lib, _ = import_and_run(write_config(tmp_path), src, LocalRunner())
    rows = dict(lib.db.execute("SELECT f.path, a.bpm || ' ' || a.bpm_source FROM files f"
                               " JOIN analysis a ON a.file_id = f.id").fetchall())
    assert rows == {"Trap_140bpm/song.mid": "140.0 filename", "Trap_140bpm/song_Drums.mid": "140.0 filename",
                    "Trap_140bpm/song_Bass.mid": "140.0 filename", "Trap_140/beat.mid": "120.0 meta"}


def analysis_rows(lib: Library) -> dict[str, dict]:
    return {r["path"]: r for r in lib.db.query(
        "SELECT f.path, a.* FROM files f JOIN analysis a ON a.file_id = f.id")}


def test_ray_pools_and_in_process_give_the_same_library(tmp_path: Path, corpus: Path, ray_local) -> None:
    src = corpus_subset(corpus, tmp_path / "src")
    lib_local, _ = import_and_run(write_config(tmp_path / "a"), src, LocalRunner())
    runner = RayRunner({"analyze": 2, "split": 1}, max_in_flight=2)
    try:
        lib_ray, engine = import_and_run(write_config(tmp_path / "b"), src, runner)
    finally:
        runner.shutdown()
    local, remote = analysis_rows(lib_local), analysis_rows(lib_ray)
    assert len(local) == 16 + 3 * 4             # 16 originals, 3 parts per POP909 song
    assert local.keys() == remote.keys()
    for path, row in local.items():
        other = remote[path]
        for key in ("bpm", "key_tonic", "key_mode", "category", "chords", "notes", "is_drums"):
            assert row[key] == other[key], (path, key)
    assert engine.totals.split_parts == 12 and engine.totals.analysed == 28
    queued = lib_ray.stage_counts(False)
    assert queued["analyze"]["queued"] == 0 and queued["split"]["queued"] == 0
    assert queued["analyze"]["done"] == 28 and queued["split"]["done"] == 16 + 12


def test_a_broken_link_to_the_drivers_raylet_is_a_lost_cluster_a_tasks_oserror_is_not(ray_local) -> None:
    """When the raylet of the driver's own node dies, Ray's calls fail with a bare OSError
    ("Broken pipe"); it means the pool is gone (redo the batches elsewhere), not a crash of
    midid. An OSError a task raised comes back wrapped in a RayError and is the task's."""
    import ray

    runner = RayRunner({"analyze": 1, "split": 0}, max_in_flight=1)
    try:
        task_error = ray.exceptions.RayTaskError("run", "Traceback ...", OSError(5, "I/O error")).as_instanceof_cause()
        assert isinstance(task_error, OSError) and not runner._client_gone(task_error)
        assert runner.lost is None
        assert runner._client_gone(OSError("Broken pipe"))  # as ray._raylet.check_status raises it
        assert runner.lost.startswith("the connection to Ray broke")
        with pytest.raises(ClusterLost):
            runner.check()
    finally:
        runner.shutdown()


def test_split_parts_are_library_files_equal_to_their_source_tracks(tmp_path: Path, sample_midi) -> None:
    song = next(p for p in sample_midi if p.name.startswith("pop909"))
    src = tmp_path / "src"
    src.mkdir()
    (src / song.name).write_bytes(song.read_bytes())
    lib, engine = import_and_run(write_config(tmp_path), src, LocalRunner())
    parent = lib.db.execute("SELECT id, path FROM files WHERE parent_id IS NULL").fetchone()
    parts = lib.db.execute("SELECT path, part_index FROM files WHERE parent_id = ? ORDER BY part_index",
                           [parent[0]]).fetchall()
    assert [p[0].rsplit("/", 1)[-1] for p in parts] == ["pop909_003_MELODY.mid", "pop909_003_BRIDGE.mid",
                                                        "pop909_003_PIANO.mid"]
    source = symusic.Score.from_midi(song.read_bytes())
    for (path, index), track in zip(parts, source.tracks):
        part = symusic.Score(str(tmp_path / "library" / path))
        assert len(part.tracks) == 1
        assert part.tracks[0].notes.numpy()["pitch"].tolist() == track.notes.numpy()["pitch"].tolist()
        assert part.tracks[0].notes.numpy()["time"].tolist() == track.notes.numpy()["time"].tolist()
        assert [t.qpm for t in part.tempos] == [t.qpm for t in source.tempos]
    tags = {r[0] for r in lib.db.execute("SELECT tag FROM tags WHERE source = 'split'")}
    assert {"track:MELODY", "track:BRIDGE", "track:PIANO"} <= tags


def test_each_stored_analysis_row_is_the_analysis_of_its_library_file(tmp_path: Path, sample_midi) -> None:
    """The row built in the worker (records.analysis_row) lands in the table as analyze_bytes
    sees the library file with the file's filename priors: every column, lists as JSON."""
    src = copied(sample_midi, tmp_path / "src")
    lib, _ = import_and_run(write_config(tmp_path), src, LocalRunner())
    rows = analysis_rows(lib)
    assert len(rows) == len(sample_midi) + 3  # and the three parts of the POP909 song
    priors = lib.prior_tags([r["file_id"] for r in rows.values()])
    for path, row in rows.items():
        tags = priors.get(row["file_id"], [])
        bpm = next((float(t[4:]) for t in tags if t.startswith("bpm:")), None)
        expected = analyze_bytes((tmp_path / "library" / path).read_bytes(), filename_bpm=bpm,
                                 prior_tags=[t for t in tags if ":" not in t]).to_dict()
        for key, value in expected.items():
            stored = row[key]
            if key in JSON_COLUMNS:
                stored = json.loads(stored)
            elif isinstance(value, bool):
                stored = bool(stored)
            assert stored == value, (path, key)


def test_analysis_row_json_reads_back_as_the_analysis_with_non_ascii_tags(sample_midi) -> None:
    """Folder names in any script become tags: the row's JSON must read back to the same
    strings (orjson keeps them as UTF-8 where json.dumps would escape them)."""
    song = next(p for p in sample_midi if p.name.startswith("pop909"))
    analysis = analyze_bytes(song.read_bytes(), prior_tags=("café", "ベース", 'say "hi"\\'))
    row = analysis_row(7, analysis)
    assert row["file_id"] == 7 and row["is_drums"] == 0
    for key in JSON_COLUMNS:
        assert json.loads(row[key]) == getattr(analysis, key), key
    assert {"café", "ベース", 'say "hi"\\'} <= set(json.loads(row["tags"]))
    assert len(json.loads(row["chords"])) > 10


class PoisonWorker(_Worker):
    """A real actor that dies (as on a native crash) when a batch holds the poisoned file."""

    def run(self, kind, tasks):  # type: ignore[no-untyped-def]
        if any(POISON in t.data for t in tasks):
            os._exit(3)
        return super().run(kind, tasks)


class SlowRestartPoisonWorker(PoisonWorker):
    """A poisoned file's worker whose restart outlasts the back-offs between pings (7.75 s in
    all), as a worker's start did on two cores loaded by the rest of the suite."""

    started = ""  # a marker file, set by the test before the class is shipped to Ray

    def __init__(self) -> None:
        if os.path.exists(self.started):
            time.sleep(12)
        else:
            open(self.started, "w").close()
        super().__init__()


class WedgedPingPoisonWorker(PoisonWorker):
    """A poisoned file's worker that, once, wedges (say a stopped or deadlocked process) instead
    of answering a ping."""

    wedged = ""  # a marker file, set by the test before the class is shipped to Ray

    def pid(self) -> int:
        if not os.path.exists(self.wedged):
            open(self.wedged, "w").close()
            time.sleep(3600)
        return super().pid()


class GoneWorker(_Worker):
    """A real actor that is gone before any call reaches it (its node going down, a worker
    that cannot run anything): every call ends its process before doing anything."""

    def run(self, kind, tasks):  # type: ignore[no-untyped-def]
        os._exit(3)

    def pid(self) -> int:
        os._exit(3)


class BrokenWorker(_Worker):
    """A real actor that cannot even start (say, a half-saved edit of the analysis code)."""

    def __init__(self) -> None:
        raise NameError("name 'half_saved' is not defined")


class UninstalledWorker(_Worker):
    """A real actor on a node where the code it needs is not installed."""

    def __init__(self) -> None:
        importlib.import_module("midid_not_installed_here")


@pytest.mark.parametrize("worker, says", [
    (GoneWorker, ""),
    (BrokenWorker, "NameError: name 'half_saved' is not defined"),
    (UninstalledWorker, "No module named 'midid_not_installed_here'; every node of the cluster needs midid"),
], ids=["gone-first", "cannot-start", "not-installed"])
def test_workers_gone_before_a_suspect_reaches_them_blame_no_file(ray_local, worker: type, says: str) -> None:
    """A suspect that dies alone is guilty only if its worker was alive when it got there:
    here every worker is gone first, so no task may come back blamed; the pool is lost."""
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runner = RayRunner({"analyze": 1, "split": 0}, max_in_flight=1, worker=worker)
    runner.restart_grace_s = 10.0  # a worker gone for good gets that long to come back
    done = []
    try:
        runner.submit("analyze", ["a", "b", "c", "d"])
        deadline = time.monotonic() + 120
        with pytest.raises(ClusterLost, match="workers stopped answering") as lost:
            while time.monotonic() < deadline:
                done += runner.wait(1.0)
    finally:
        runner.shutdown()
    assert done == []
    assert says in str(lost.value)  # why the workers cannot start reaches the user


def assert_poison_isolated(tmp_path: Path, sample_midi, runner, good: int, batch_size: int) -> None:
    """`good` distinct copies of a Groove file and one poisoned file through the engine on
    `runner` (shut down after): the poisoned file alone is recorded as crashed, every other one
    is analysed."""
    src = tmp_path / "src"
    src.mkdir()
    base = sample_midi[0].read_bytes()
    for i in range(good):
        (src / f"ok{i:02d}.mid").write_bytes(base + i.to_bytes(2, "big"))
    (src / "poison.mid").write_bytes(base + POISON)
    config = write_config(tmp_path, f"[pipeline]\nbatch_size = {batch_size}\n")
    try:
        lib, engine = import_and_run(config, src, runner)
    finally:
        runner.shutdown()
    rows = dict(lib.db.execute("SELECT name, coalesce(error, 'ok') FROM files").fetchall())
    assert rows.pop("poison.mid") == CRASH_ERROR
    assert set(rows.values()) == {"ok"} and len(rows) == good
    assert engine.totals.analysed == good and engine.totals.analysis_errors == 1


@pytest.mark.parametrize("split_actors", [1, 0], ids=["own-split-actor", "split-shares-analyze-actors"])
def test_a_file_that_kills_its_worker_is_isolated_and_the_rest_analysed(tmp_path: Path, sample_midi, ray_local,
                                                                         split_actors: int) -> None:
    # Ray workers cannot import this test module: ship the class by value.
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runner = RayRunner({"analyze": 2, "split": split_actors}, max_in_flight=2, worker=PoisonWorker)
    assert (runner.pools["split"] is runner.pools["analyze"]) == (split_actors == 0)
    assert_poison_isolated(tmp_path, sample_midi, runner, good=40, batch_size=8)


def test_a_worker_slow_to_restart_is_waited_for_not_taken_for_a_lost_cluster(tmp_path: Path, sample_midi,
                                                                             ray_local) -> None:
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    SlowRestartPoisonWorker.started = str(tmp_path / "started")
    runner = RayRunner({"analyze": 1, "split": 0}, max_in_flight=1, worker=SlowRestartPoisonWorker)
    # Small batches: few bisections, so few slow restarts.
    assert_poison_isolated(tmp_path, sample_midi, runner, good=8, batch_size=2)


def test_a_worker_wedged_on_a_ping_is_restarted_and_the_poisoned_file_still_found(tmp_path: Path, sample_midi,
                                                                                 ray_local) -> None:
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    WedgedPingPoisonWorker.wedged = str(tmp_path / "wedged")
    runner = RayRunner({"analyze": 1, "split": 0}, max_in_flight=1, worker=WedgedPingPoisonWorker)
    runner.ping_timeout_s = 3.0
    assert_poison_isolated(tmp_path, sample_midi, runner, good=8, batch_size=2)
    assert os.path.exists(WedgedPingPoisonWorker.wedged)  # a ping did wedge it


def test_rename_gives_template_names_and_keeps_the_original_searchable(tmp_path: Path, sample_midi) -> None:
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path, '[rename]\nenabled = true\ntemplate = "{bpm}bpm_{key}_{category}"\n')
    lib, engine = import_and_run(config, src, LocalRunner())
    rows = list(lib.db.query("SELECT f.path, f.original_path, f.name, a.bpm, a.category FROM files f"
                             " JOIN analysis a ON a.file_id = f.id WHERE f.parent_id IS NULL"))
    groove = next(r for r in rows if r["name"].startswith("100_neworleans"))
    assert groove["path"].rsplit("/", 1)[-1] == f"94bpm_{groove['category']}.mid"
    assert groove["original_path"].endswith("100_neworleans-secondline_94_beat_4-4.mid")
    for r in rows:
        assert (tmp_path / "library" / r["path"]).is_file()
        assert not (tmp_path / "library" / r["original_path"]).exists()
    hits = lib.db.execute("SELECT rowid FROM search WHERE search MATCH 'neworleans'").fetchall()
    assert hits, "the original name stays searchable"
    assert len({r["path"].casefold() for r in rows}) == len(rows)


def _integrity(tmp_path: Path, expected: int) -> None:
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        originals = conn.execute("SELECT count(*) FROM files WHERE parent_id IS NULL").fetchone()[0]
        analysed = conn.execute("SELECT count(*) FROM analysis").fetchone()[0]
        files = conn.execute("SELECT count(*) FROM files").fetchone()[0]
        paths = {r[0] for r in conn.execute("SELECT path FROM files")}
        dup_analysis = conn.execute("SELECT count(*) - count(DISTINCT file_id) FROM analysis").fetchone()[0]
    assert originals == expected
    assert analysed == files and dup_analysis == 0
    on_disk = {str(p.relative_to(tmp_path / "library")) for p in (tmp_path / "library").rglob("*")
               if p.is_file() and ".midid-staging" not in p.parts}
    assert on_disk == paths
    assert not any((tmp_path / "library" / ".midid-staging").iterdir())


def test_kill_9_at_random_points_then_resume(tmp_path: Path, sample_midi) -> None:
    src = tmp_path / "src"
    src.mkdir()
    song = next(p for p in sample_midi if p.name.startswith("pop909")).read_bytes()
    drums = sample_midi[0].read_bytes()
    n = 1500
    for i in range(n):
        data = song if i % 5 == 0 else drums
        (src / f"f{i:05d}.mid").write_bytes(data + i.to_bytes(4, "big"))
    config = write_config(tmp_path, "[pipeline]\nbatch_size = 64\n")
    cmd = [sys.executable, "-m", "midid.ctl", "--config", str(config), "import", "--local", "--json", str(src)]
    rng = random.Random(1234)
    db = tmp_path / "midid.sqlite3"
    points = int(os.environ.get("MIDID_KILL_POINTS", "4"))  # 20 for the long run (docs/reliability.md)
    killed_running = 0
    for _ in range(points):
        # At a random share of the work left, watched every 10 ms: at a random time (0.3-3 s),
        # 3 of 4 kills came after the import had finished.
        stop_at = int(work_left(db, n) * rng.uniform(0.1, 0.9))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: work_left(db, n) <= stop_at or proc.poll() is not None, 120,
                   "the import to reach the kill point", every=0.01)
        killed_running += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert killed_running >= points // 2 + 1, "the kills must land while the import runs"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["imported"] + summary["duplicates"] == n
    _integrity(tmp_path, n)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_joins_a_ray_cluster_started_with_ray_start_head(tmp_path: Path, sample_midi, scheme: str) -> None:
    """By its GCS address, and as a Ray Client (`ray://`, the client server's port): the
    install must carry what the client needs (`ray[client]`), which plain `ray` does not."""
    port, client_port = free_port(), free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="midid-head-"))  # short: Ray's socket paths below it
    head = start_head(temp_dir, port, num_cpus=2, client_port=client_port)
    try:
        src = copied(sample_midi, tmp_path / "src")
        address = f"ray://127.0.0.1:{client_port}" if scheme else f"127.0.0.1:{port}"
        probe(address, handshake=True)  # a GCS and a Ray Client server both open a gRPC connection
        config = write_config(tmp_path, f'[ray]\naddress = "{address}"\n')
        done = run_or_dump([sys.executable, "-m", "midid.ctl", "-v", "--config", str(config), "import",
                            "--local", "--json", str(src)], timeout=240)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["analysed"] == len(sample_midi) + 3
        skip_on_client_server_flake(done.stderr)
        if scheme and ("cannot join" in done.stderr or "local Ray" in done.stderr):
            skip_if_client_port_closed(client_port, temp_dir)
        assert "cannot join" not in done.stderr and "local Ray" not in done.stderr, (
            f"{done.stderr[-2000:]}\nthe head's Ray Client server:\n{client_server_log(temp_dir)}")
    finally:
        remove_head(head, temp_dir)


class _FlakyRay:
    """Ray's `init` failing as the Ray Client server does when its per-client server dies at
    start (beside the real `ray://` join above, which meets that fault only now and then)."""

    def __init__(self, failures: int, message: str = f"{CLIENT_SERVER_FAULTS[0]}. See ray_client_server_23001.err") -> None:
        self.failures, self.message, self.calls = failures, message, []

    def init(self, **kwargs) -> None:
        self.calls.append("init")
        if self.calls.count("init") <= self.failures:
            raise RuntimeError(self.message)

    def shutdown(self) -> None:
        self.calls.append("shutdown")


def test_a_join_whose_client_server_fails_to_start_is_tried_once_more(caplog) -> None:
    once = _FlakyRay(failures=1)
    with caplog.at_level(logging.WARNING, logger="midid.pool"):
        _join(once, "ray://head:10001", {})
    assert once.calls == ["init", "shutdown", "init"]
    assert "failed to start a server for midid" in caplog.text and "joining again" in caplog.text
    assert CLIENT_SERVER_FAULTS[0] not in caplog.text, "a retry that worked is not the skipped tests' flake"
    twice = _FlakyRay(failures=2)
    with pytest.raises(RuntimeError, match=CLIENT_SERVER_FAULTS[0]):
        _join(twice, "ray://head:10001", {})
    assert twice.calls == ["init", "shutdown", "init"]  # two tries, then the caller falls back
    zombie = _FlakyRay(failures=1, message=(
        "Initialization failure from server:\nTraceback (most recent call last):\n"
        '  File "/x/ray/util/client/server/proxier.py", line 396, in start_specific_server\n'
        "    cmd = psutil_proc.cmdline()\n"
        "psutil.ZombieProcess: PID still exists but it's a zombie (pid=26544)\n"))
    _join(zombie, "ray://head:10001", {})
    assert zombie.calls == ["init", "shutdown", "init"]  # found dead as it was being started
    slow = _FlakyRay(failures=1, message=f"{CLIENT_SERVER_FAULTS[2]}! Check `ray_client_server.err`")
    _join(slow, "ray://head:10001", {})
    assert slow.calls == ["init", "shutdown", "init"]  # the server started but never answered
    other = _FlakyRay(failures=1, message="authentication failed")
    with pytest.raises(RuntimeError, match="authentication"):
        _join(other, "ray://head:10001", {})
    assert other.calls == ["init"]  # only that Ray fault is retried


class _InactiveRpcError(Exception):
    """gRPC's error type by name, with the text a real one had in a full test run."""


def test_a_broken_ray_client_connection_is_told_in_one_line() -> None:
    """The texts of the errors a lost Ray Client session raised here; `midictl status` shows
    gRPC's details, not its five-line repr."""
    grpc_repr = ('<{kind} of RPC that terminated with:\n\tstatus = StatusCode.NOT_FOUND\n\tdetails = "{details}"\n'
                 '\tdebug_error_string = "NOT_FOUND:{details}"\n>')
    in_wait = _InactiveRpcError(grpc_repr.format(kind="_InactiveRpcError", details="Failed to serialize response!"))
    assert connection_gist(in_wait) == "_InactiveRpcError: Failed to serialize response!"
    after = ConnectionError("Request can't be sent because the Ray client has already been disconnected due to "
                            "an error. Last exception: " + grpc_repr.format(
                                kind="_MultiThreadedRendezvous",
                                details="Attempted to reconnect a session that has already been cleaned up"))
    assert connection_gist(after) == "ConnectionError: Attempted to reconnect a session that has already been cleaned up"
    assert connection_gist(ConnectionError("Client is shutting down.")) == "Client is shutting down."
    assert connection_gist(ConnectionError()) == "ConnectionError"


def test_files_an_older_analysis_analysed_are_analysed_again_once(tmp_path: Path, sample_midi, caplog) -> None:
    src = copied(sample_midi, tmp_path / "src")
    (src / "ivory.mid").write_bytes(one_beat_chord_loop())  # Chords by analyser 0, Progressions by 1
    config = write_config(tmp_path)
    first = run_import(load_config(config), [str(src)])
    total = first["analysed"]
    assert total == len(sample_midi) + 1 + first["split_parts"]
    db = sqlite3.connect(tmp_path / "midid.sqlite3")
    chord_id, = db.execute("SELECT id FROM files WHERE name = 'ivory.mid'").fetchone()
    row = lambda: db.execute("SELECT bars, category, analyzer FROM analysis WHERE file_id = ?",  # noqa: E731
                             [chord_id]).fetchone()
    tags = lambda: set(db.execute("SELECT tag, source FROM tags WHERE file_id = ?", [chord_id]))  # noqa: E731
    assert row() == (8, "Progressions", ANALYZER_VERSION)
    # The library as the analysis before version 1 left it, the other files' rows included.
    with db:
        db.execute("UPDATE analysis SET analyzer = 0")
        db.execute("UPDATE analysis SET bars = 32, category = 'Chords' WHERE file_id = ?", [chord_id])
        db.execute("DELETE FROM tags WHERE file_id = ? AND tag = 'progressions'", [chord_id])
        db.execute("INSERT INTO tags(file_id, tag, source) VALUES (?, 'chords', 'analysis')", [chord_id])
    before = dict(db.execute("SELECT id, analysed_at FROM files"))
    other_tags = lambda: set(db.execute("SELECT * FROM tags WHERE source != 'analysis'"))  # noqa: E731
    kept = other_tags()
    assert kept  # the file names' words
    with caplog.at_level(logging.INFO, logger="midid.runjob"):
        again = run_import(load_config(config), [str(src)])
    assert f"analysing {total} file(s) again" in caplog.text
    assert again["imported"] == 0 and again["analysed"] == total and again["analysis_errors"] == 0
    assert row() == (8, "Progressions", ANALYZER_VERSION)
    assert ("chords", "analysis") not in tags() and ("progressions", "analysis") in tags()
    assert other_tags() == kept
    after = dict(db.execute("SELECT id, analysed_at FROM files"))
    assert all(after[f] > before[f] for f in before)  # new rows reach the drives' sync cursor
    assert db.execute("SELECT count(*) FROM analysis WHERE analyzer != ?", [ANALYZER_VERSION]).fetchone() == (0,)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="midid.runjob"):
        assert run_import(load_config(config), [str(src)])["analysed"] == 0
    assert "again" not in caplog.text


def test_new_files_are_analysed_before_the_files_an_older_analysis_did(tmp_path: Path, sample_midi,
                                                                          monkeypatch) -> None:
    base = sample_midi[0].read_bytes()
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, offset in ((old, 0), (new, 100)):
        folder.mkdir()
        for i in range(6):
            (folder / f"g{offset + i}.mid").write_bytes(base + (offset + i).to_bytes(4, "big"))
    config = write_config(tmp_path, "[pipeline]\nbatch_size = 2\n")
    cfg = load_config(config)
    lib, _ = import_and_run(config, old, LocalRunner())
    lib.db.execute("UPDATE analysis SET analyzer = 0")  # as an older midid left them
    lib.db.conn.commit()
    Importer(cfg, lib).run([new])
    assert lib.requeue_stale_analyses() == 6
    assert lib.stage_counts(rename_enabled=False)["analyze"]["queued"] == 12
    ids = lambda folder: {r[0] for r in lib.db.execute(  # noqa: E731
        "SELECT file_id FROM sources WHERE disk_path LIKE ?", [f"{folder}/%"])}
    committed: list[int] = []
    commit = lib.commit_analysis
    monkeypatch.setattr(lib, "commit_analysis", lambda rows, errors: (
        committed.extend(r["file_id"] for r in rows), commit(rows, errors)))
    Engine(cfg, lib, LocalRunner()).run()
    assert set(committed[:6]) == ids(new) and set(committed[6:]) == ids(old) and len(committed) == 12
    assert lib.db.execute("SELECT DISTINCT analyzer FROM analysis").fetchall() == [(ANALYZER_VERSION,)]
    assert lib.stage_counts(rename_enabled=False)["analyze"]["queued"] == 0


def test_work_left_for_one_import_counts_its_files_and_their_parts_only(tmp_path: Path, sample_midi) -> None:
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path)
    run_import(load_config(config), [str(src)])
    lib = Library(tmp_path / "midid.sqlite3")
    song, = lib.db.execute("SELECT id FROM files WHERE split_parts > 0").fetchone()
    part, = lib.db.execute("SELECT min(id) FROM files WHERE parent_id = ?", [song]).fetchone()
    assert part > song  # parts come after the import's own ids
    left = lambda rename=False: lib.work_left_for(song, song, rename)  # noqa: E731
    assert not left() and left(rename=True)  # renamed_at is only set by the rename stage
    for change, expected in [
        ("UPDATE files SET analysed_at = NULL WHERE id = :part", True),  # a part to analyse
        ("UPDATE files SET error = 'x' WHERE id = :part", False),  # ... that failed
        ("UPDATE files SET split_at = NULL WHERE id = :song", True),  # the song to split
        ("UPDATE files SET split_at = 1 WHERE id = :song", False),
        ("UPDATE files SET analysed_at = NULL WHERE id != :song AND parent_id IS NULL", False),  # others
    ]:
        lib.db.execute(change, {"part": part, "song": song})
        assert left() is expected, change
    lib.close()


def test_one_shot_import_runs_the_stages_while_it_still_imports(tmp_path: Path, sample_midi) -> None:
    """The engine is stepped after every import batch (as in the daemon), so split and analyze
    start before the import ends and Ray's start-up hides behind it. In-process here, where one
    step does one batch, which makes the interleaving deterministic."""
    src = tmp_path / "src"
    src.mkdir()
    base = sample_midi[0].read_bytes()
    n = 600
    for i in range(n):
        (src / f"g{i:04d}.mid").write_bytes(base + i.to_bytes(4, "big"))
    config = write_config(tmp_path, "[pipeline]\nbatch_size = 16\n")  # import batches of 64
    summary = run_import(load_config(config), [str(src)])
    assert summary["imported"] == n and summary["analysed"] == n
    with sqlite3.connect(tmp_path / "midid.sqlite3") as db:
        last_import, = db.execute("SELECT max(at) FROM progress WHERE stage = 'import'").fetchone()
        split_during_import, = db.execute(
            "SELECT sum(count) FROM progress WHERE stage = 'split' AND at < ?", (last_import,)).fetchone()
    import_batches = -(-n // 64)
    assert split_during_import == 16 * (import_batches - 1)


def test_a_one_shot_import_on_a_local_ray_says_nothing_of_ray_s_token(tmp_path: Path, sample_midi) -> None:
    """Ray turns token authentication on for each new local Ray and warns so, with how to opt
    out: midid keeps it on, and a user who configured no cluster has nothing to do about it."""
    src = copied(sample_midi, tmp_path / "src")
    config = write_config(tmp_path, "[pipeline]\nlocal_below = 1\n")
    done = run_or_dump([sys.executable, "-m", "midid.ctl", "-v", "--config", str(config), "import",
                        "--local", "--json", str(src)], timeout=240)
    assert done.returncode == 0, done.stderr
    assert "started a local Ray" in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["analysed"] == len(sample_midi) + 3
    assert "Token authentication" not in done.stderr and "RAY_AUTH_MODE" not in done.stderr


def test_the_runner_estimate_counts_files_and_archives_and_stops_at_the_limit(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i in range(30):
        (tmp_path / "a" / "b" / f"{i}.mid").write_bytes(b"MThd")
    (tmp_path / "a" / "pack.zip").write_bytes(bytes(40 * 4096))
    (tmp_path / "loop").symlink_to(tmp_path / "a")  # a symlinked folder is not walked twice
    assert estimate_inputs([str(tmp_path)], 10_000) == 30 + 40
    assert estimate_inputs([str(tmp_path / "a" / "pack.zip"), str(tmp_path / "a" / "b" / "0.mid")], 10_000) == 41
    assert estimate_inputs([str(tmp_path)], 50) == 50
    assert estimate_inputs([str(tmp_path / "missing")], 50) == 1


class _LostRunner:
    """A runner whose cluster is gone, for the one-shot job and the daemon's back-off (beside the
    real head-kill tests in test_daemon_faults.py)."""

    name = "lost"

    def capacity(self, kind: str) -> int:
        raise ClusterLost("no Ray cluster answers at 127.0.0.1:1")

    def pending(self) -> int:
        return 3

    def shutdown(self) -> None:
        self.shut = True


def test_a_cluster_lost_while_the_import_thread_steps_parks_the_engine_for_the_main_thread(tmp_path: Path) -> None:
    """Ray may only be started from the main thread: the importing thread parks the engine."""
    cfg = load_config(write_config(tmp_path))
    lost = _LostRunner()
    engine = Engine(cfg, Library(cfg.database_path), lost)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(runjob._Stepper(cfg, engine)(0)))
    worker.start()
    worker.join(30)
    assert result == [True] and lost.shut
    assert isinstance(engine.runner, NoWorkers)
    assert engine.runner.capacity("analyze") == 0 and engine.runner.pending() == 0


def test_a_job_that_keeps_losing_its_workers_stops_with_an_error_instead_of_looping(tmp_path: Path) -> None:
    """Workers that cannot start lose every Ray they are given: after MAX_RAY_LOSSES
    replacements the one-shot job stops and says what to do (stepped off the main thread, so
    no Ray is started here; the real losses are in test_daemon_faults.py and above)."""
    cfg = load_config(write_config(tmp_path))
    engine = Engine(cfg, Library(cfg.database_path), _LostRunner())
    step = runjob._Stepper(cfg, engine)
    outcome: list[object] = []

    def run() -> None:
        try:
            for _ in range(runjob.MAX_RAY_LOSSES + 1):
                engine.replace_runner(_LostRunner())
                outcome.append(step(0))
        except runjob.ImportJobError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    assert outcome[:-1] == [True] * runjob.MAX_RAY_LOSSES
    assert isinstance(outcome[-1], runjob.ImportJobError)
    assert "resumes" in str(outcome[-1]) and isinstance(engine.runner, NoWorkers)


def reopened_as_left_by(lib: Library, config: Path, version: int, *statements: str) -> tuple[Config, Library]:
    """`lib` turned back into what a schema-`version` midid left (`statements`), closed, and
    opened again by this midid, which migrates it."""
    with lib.db.atomic():
        for statement in statements:
            lib.db.execute(statement)
        lib.db.execute(f"PRAGMA user_version = {version}")
    lib.close()
    cfg = load_config(config)
    return cfg, Library(cfg.database_path)


def test_files_a_schema_3_midid_filed_at_the_120_placeholder_are_analysed_again(tmp_path: Path) -> None:
    """Migration 4: a "Trap 140bpm" pack imported before stated tempos counted (no
    `bpm-stated` tag, analysis at 120) gets the tag and is analysed again, parts included;
    a bare-number pack and files at other tempos are left alone."""
    placeholder = [mido.MetaMessage("set_tempo", tempo=500_000, time=0)]
    src = tmp_path / "src"
    for folder in ("Trap 140bpm", "Trap 140", "Lofi 90bpm"):
        (src / folder).mkdir(parents=True)
    song = smf(placeholder, drum_pattern(4), [mido.Message("program_change", program=33, channel=1, time=0)]
               + notes([(36, TPQ), (43, TPQ)] * 8, channel=1))
    (src / "Trap 140bpm" / "song.mid").write_bytes(song)
    (src / "Trap 140" / "beat.mid").write_bytes(smf(placeholder, drum_pattern(2)))
    (src / "Lofi 90bpm" / "keys.mid").write_bytes(
        smf([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90), time=0)], drum_pattern(3)))
    with zipfile.ZipFile(src / "Drill 150bpm.zip", "w") as pack:  # stated by the archive's name
        pack.writestr("Drums/loop.mid", smf(placeholder, drum_pattern(5)))
    config = write_config(tmp_path)
    lib, _ = import_and_run(config, src, LocalRunner())
    # What a schema-3 midid left: no stated tags, the placeholder taken as the tempo.
    cfg, migrated = reopened_as_left_by(lib, config, 3, "DELETE FROM tags WHERE tag LIKE 'bpm-stated:%'",
                                        "UPDATE analysis SET bpm = 120.0, bpm_source = 'meta'"
                                        " WHERE bpm_source = 'filename'")
    queued = {name for _, _, name in migrated.reanalyse_queue(100)}
    assert queued == {"song.mid", "song_Drums.mid", "song_Bass.mid", "loop.mid"}
    tags = {(name, tag) for name, tag in migrated.db.execute(
        "SELECT f.name, t.tag FROM tags t JOIN files f ON f.id = t.file_id WHERE t.tag LIKE 'bpm-stated:%'")}
    assert tags == {("song.mid", "bpm-stated:140"), ("song_Drums.mid", "bpm-stated:140"),
                    ("song_Bass.mid", "bpm-stated:140"), ("loop.mid", "bpm-stated:150")}  # not "Lofi 90bpm": at 90
    Engine(cfg, migrated, LocalRunner()).run()
    rows = dict(migrated.db.execute("SELECT f.name, a.bpm || ' ' || a.bpm_source FROM files f"
                                    " JOIN analysis a ON a.file_id = f.id").fetchall())
    assert rows == {"song.mid": "140.0 filename", "song_Drums.mid": "140.0 filename",
                    "song_Bass.mid": "140.0 filename", "beat.mid": "120.0 meta", "keys.mid": "90.0 meta",
                    "loop.mid": "150.0 filename"}


def test_a_key_a_pack_names_reaches_the_file_and_its_parts_and_older_libraries_catch_up(tmp_path: Path) -> None:
    """The import's `key:` tag is the analysis's key prior for the file and its split parts
    (same notes as C major, named A minor: filed as A minor). Migration 5: a library analysed
    before the prior queues exactly the files whose key differs from their name's."""
    src = tmp_path / "src"
    (src / "Dark Keys Am").mkdir(parents=True)
    lead = notes(AMBIGUOUS_LEAD, channel=0)
    low = notes([(p - 12, d) for p, d in AMBIGUOUS_LEAD], channel=1)
    (src / "Dark Keys Am" / "duo.mid").write_bytes(smf(lead, low))
    (src / "Dark Keys Am" / "plain Cmaj.mid").write_bytes(smf(notes(AMBIGUOUS_LEAD)))  # its own name wins
    (src / "unnamed.mid").write_bytes(smf(notes(AMBIGUOUS_LEAD, vel=90)))
    config = write_config(tmp_path)
    lib, _ = import_and_run(config, src, LocalRunner())
    keys = dict(lib.db.execute("SELECT f.name, a.key_tonic || a.key_mode FROM files f"
                               " JOIN analysis a ON a.file_id = f.id").fetchall())
    assert keys == {"duo.mid": "Aminor", "duo_ch1.mid": "Aminor", "duo_ch2.mid": "Aminor",
                    "plain Cmaj.mid": "Cmajor", "unnamed.mid": "Cmajor"}
    # What a schema-4 midid left: the notes' key alone.
    cfg, migrated = reopened_as_left_by(lib, config, 4, "UPDATE analysis SET key_tonic = 'C', key_mode = 'major'")
    assert {name for _, _, name in migrated.reanalyse_queue(100)} == {"duo.mid", "duo_ch1.mid", "duo_ch2.mid"}
    Engine(cfg, migrated, LocalRunner()).run()
    assert dict(migrated.db.execute("SELECT f.name, a.key_tonic || a.key_mode FROM files f"
                                    " JOIN analysis a ON a.file_id = f.id").fetchall()) == keys


def test_a_file_analysed_again_is_renamed_again_from_its_new_analysis(tmp_path: Path) -> None:
    """With `[rename]` on, a name made from the old analysis ("Cmaj_lead.mid", from before the
    key prior) follows the new one once the file is analysed again (migration 5 here)."""
    src = tmp_path / "src"
    (src / "Dark Keys Am").mkdir(parents=True)
    (src / "Dark Keys Am" / "lead.mid").write_bytes(smf(notes(AMBIGUOUS_LEAD)))
    (src / "other.mid").write_bytes(smf(notes(C_MAJOR_SCALE)))
    config = write_config(tmp_path, '[rename]\nenabled = true\ntemplate = "{key}_{name}"\n')
    lib, _ = import_and_run(config, src, LocalRunner())
    paths = dict(lib.db.execute("SELECT name, path FROM files").fetchall())
    assert paths == {"lead.mid": "Dark_Keys_Am/Amin_lead.mid", "other.mid": "src/Cmaj_other.mid"}
    # What a schema-4 midid left: C major, and the name made from it.
    root = tmp_path / "library"
    (root / paths["lead.mid"]).rename(root / "Dark_Keys_Am/Cmaj_lead.mid")
    renamed_at = dict(lib.db.execute("SELECT name, renamed_at FROM files").fetchall())
    cfg, migrated = reopened_as_left_by(
        lib, config, 4, "UPDATE analysis SET key_tonic = 'C', key_mode = 'major'",
        "UPDATE files SET path = 'Dark_Keys_Am/Cmaj_lead.mid' WHERE name = 'lead.mid'")
    Engine(cfg, migrated, LocalRunner()).run()
    rows = {name: (path, at) for name, path, at in migrated.db.execute("SELECT name, path, renamed_at FROM files")}
    assert rows["lead.mid"][0] == "Dark_Keys_Am/Amin_lead.mid" and rows["lead.mid"][1] > renamed_at["lead.mid"]
    assert rows["other.mid"] == ("src/Cmaj_other.mid", renamed_at["other.mid"])  # not analysed again: untouched
    assert sorted(p.name for p in (root / "Dark_Keys_Am").iterdir()) == ["Amin_lead.mid"]
