"""`midid`: the systemd Type=notify service that keeps the library up to date by itself.

One main loop owns every side effect that matters — the database, the library folder, Ray —
and does one small thing at a time: take queued import work (from the watcher, the catch-up
scan, `midictl import`), import it in batches, step the pipeline engine, sync attached devices,
report progress. Other threads (watcher, control socket, udev monitor, watchdog pinger) only
put requests on the main loop's queue or read snapshots it publishes.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import shutil
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import __version__
from .config import Config, ConfigError, load_config
from .db import Library
from .engine import Engine, ray_runner
from .importer import Importer, ImportSummary, LibraryWriteError
from .logsetup import setup_logging, stacks_on_sigusr1
from .notify import Heartbeat, Notifier, WatchdogPinger, watchdog_interval_s
from .pathtext import disk_path, path_text
from .pool import NoWorkers
from .remove import RemoveError, remove_from_library
from .runjob import ImportJobError, open_library, writer_lock

log = logging.getLogger(__name__)


@dataclass
class ImportJob:
    """Import work for the main loop; `midictl import --wait` follows it to the end."""

    paths: list[str]
    catch_up: bool = False
    follow: bool = False
    summary: ImportSummary = field(default_factory=ImportSummary)
    file_ids: tuple[int, int] | None = None  # first and last new file id
    imported: bool = False
    finished: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str | None = None


REMOVE_TIMEOUT_S = 300.0  # `midictl remove` waits this long for the main loop (a big import job runs first)
MIN_FREE_BYTES = 64 * 1024 * 1024  # resume writing the library once this much is free again,
MIN_GAIN_BYTES = 1024 * 1024  # or once this much more is free than when writing stopped
FOLLOW_CHECK_S = 2.0  # how often a followed import looks whether its own files are done
# Stopping one Ray and starting another takes 5-30 s on a loaded two-core machine, beyond
# WatchdogSec=30 with the rest of the loop; longer than this and something is wrong.
RAY_RESTART_LIMIT_S = 120.0
REJOIN_HINT = ("midid joins the cluster again once it answers (tried every [ray] rejoin_s); "
               "`systemctl reload midid` tries at once.")
MAX_REJOIN_S = 600.0  # the longest wait between rejoin tries of a cluster that answers but cannot be joined
# A Ray lost this soon after its workers started counts as one more quick loss in a row, and
# new workers wait RAY_RETRY_S[n - 1] after the n-th (the last repeats): a cluster that goes
# away is replaced at once, but workers that cannot start are not restarted every few seconds
# for ever.
QUICK_LOSS_S = 60.0
RAY_RETRY_S = (0.0, 30.0, 60.0, 120.0, 300.0)
PARTIAL = (".part", ".crdownload", ".download", ".partial", ".tmp", ".!qb", ".opdownload")


class _Stopping(Exception):
    """SIGTERM arrived in the middle of an import; committed batches stay, the rest is redone."""


class Daemon:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.cfg = load_config(config_path)
        self.notifier = Notifier()
        self.heartbeat = Heartbeat()
        self.started = time.monotonic()
        self.requests: queue.Queue[Callable[[], None]] = queue.Queue()
        self.jobs: list[ImportJob] = []
        self.followers: list[ImportJob] = []
        self._followers_checked = 0.0
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.paused = False
        self.messages: list[str] = []
        self.snapshot: dict[str, Any] = {}
        self.snapshot_lock = threading.Lock()
        self.lib: Library | None = None
        self.engine: Engine | None = None
        self.watcher: Any = None
        self.control: Any = None
        self.devices: Any = None
        self._last_import_status = 0.0
        self.ray_address = ""  # the Ray the workers run on: the configured cluster, or "" (a local one)
        self._ray_started_at = 0.0  # when the workers in use were started (monotonic)
        self._quick_losses = 0  # Rays lost in a row, each within QUICK_LOSS_S of its start
        self._ray_retry_at: float | None = None  # new workers due then (monotonic), none meanwhile
        self._rejoin_at: float | None = None  # on a fallback local Ray: next try of the cluster
        self._rejoin_every = 0.0
        self.blocked: str | None = None  # why writing the library is stopped (disk full)
        self._last_space_check = 0.0
        self._free_at_block = 0

    # ---- life cycle ----------------------------------------------------------------------

    def run(self) -> int:
        with writer_lock(self.cfg):
            self.lib = open_library(self.cfg)
            runner = self._start_runner()
            self._install_signal_handlers()
            self.engine = Engine(self.cfg, self.lib, runner)
            self.importer = Importer(self.cfg, self.lib)
            self._start_edges()
            if self.cfg.sources.folders:
                self.jobs.append(ImportJob(self._existing_folders(self.cfg), catch_up=True))
            self.heartbeat.beat()
            pinger = self._start_pinger()
            self.notifier.ready()
            log.info("midid %s ready: library %s, %d source folder(s)", __version__, self.cfg.library_path,
                     len(self.cfg.sources.folders))
            try:
                self._loop()
            finally:
                self.notifier.stopping()
                log.info("stopping")
                if pinger:
                    pinger.stop()
                self._stop_edges()
                self.engine.stop()
                self.engine.runner.shutdown()  # the one in use: a lost Ray replaces it
                for job in self.jobs + self.followers:
                    job.error = "the daemon stopped; the work resumes when it starts again"
                    job.finished.set()
                self.lib.close()
        return 0

    def _install_signal_handlers(self) -> None:
        """Ours, after every Ray start: a Ray driver's set-up installs handlers of its own."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    def _start_runner(self) -> Any:
        """Ray actor pools; when the configured cluster cannot be joined, a local Ray instead."""
        address = self.cfg.ray.address
        try:
            return self._ray_runner(address)
        except Exception as exc:  # noqa: BLE001 - any failure to join means: run locally
            if not address:
                raise
            first_line = (str(exc).splitlines() or [""])[0]
            why = ("is unreachable" if isinstance(exc, ConnectionError) or not first_line
                   else f"cannot run midid's workers: {first_line}")
            self._message(f"Ray cluster at {address} {why} ({type(exc).__name__}); running on a "
                          f"local Ray. {REJOIN_HINT}")
            log.error("cannot join the Ray cluster at %s (%s); using a local Ray", address, exc)
            return self._ray_runner("")

    def _ray_runner(self, address: str) -> Any:
        """Join the Ray at `address` ("" starts a local one), put the actor pools on it, and
        remember which Ray the workers are on."""
        runner = ray_runner(self.cfg, address)
        self.ray_address = address
        self._ray_started_at = time.monotonic()
        return runner

    def _start_pinger(self) -> WatchdogPinger | None:
        interval = watchdog_interval_s()
        if interval is None:
            return None
        pinger = WatchdogPinger(self.notifier, self.heartbeat, interval)
        pinger.start()
        return pinger

    def _start_edges(self) -> None:
        from .control import ControlServer
        from .watch import SourceWatcher

        self.control = ControlServer(self.cfg.socket_path, self.handle, group=self.cfg.control.group)
        self.control.start()
        if self.cfg.watch.enabled:
            self.watcher = SourceWatcher(
                self.cfg.source_folders, settle_s=self.cfg.watch.settle_s,
                on_ready=lambda paths: self.requests.put(lambda: self._queue_paths(paths)),
                on_moved=lambda pairs: self.requests.put(lambda: self._moved(pairs)),
                on_deleted=lambda paths: self.requests.put(lambda: self._deleted(paths)),
                follow_symlinks=self.cfg.sources.follow_symlinks)
            self.watcher.start()
        self._start_devices()

    def _start_devices(self) -> None:
        from .devices import DeviceManager

        self.devices = DeviceManager(self.cfg, self.requests.put)
        self.devices.start()

    def _stop_edges(self) -> None:
        for edge in (self.devices, self.watcher, self.control):
            if edge is not None:
                try:
                    edge.stop()
                except Exception:  # noqa: BLE001 - stopping must go on for the others
                    log.exception("error while stopping %s", type(edge).__name__)

    # ---- main loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        assert self.engine is not None and self.lib is not None
        last_status = 0.0
        last_prune = time.monotonic()
        while not self.stopping.is_set():
            self.heartbeat.beat()
            self._watch_ray()
            self._drain_requests()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            busy = False
            if self.blocked and time.monotonic() - self._last_space_check > 10:
                self._check_space()
            if not self.paused and not self.blocked:
                try:
                    busy = self._import_some()
                    busy = self.engine.step(0.05 if busy else 0.2) or busy
                except (LibraryWriteError, sqlite3.OperationalError) as exc:
                    self._library_full(exc)
                except Exception as exc:  # noqa: BLE001 - Ray failures are recovered, others re-raised
                    if not _is_ray_failure(exc):
                        raise
                    self._recover_ray(exc)
                if self.devices is not None:
                    busy = self.devices.step(self.lib) or busy
            self._finish_jobs(busy)
            now = time.monotonic()
            if now - last_status > 2.0:
                self._publish_status()
                last_status = now
            if now - last_prune > 60:
                self.lib.prune_progress()
                self.lib.checkpoint()
                last_prune = now
            if not busy:
                try:
                    self.requests.get(timeout=0.2)()
                except queue.Empty:
                    pass

    def _drain_requests(self) -> None:
        while True:
            try:
                action = self.requests.get_nowait()
            except queue.Empty:
                return
            action()

    def _import_some(self) -> bool:
        """Import one queued job (its batches commit as they go); True if there was work."""
        if not self.jobs:
            return False
        job = self.jobs.pop(0)
        first = self.lib.next_file_id()  # type: ignore[union-attr]
        try:
            job.summary = self.importer.run(job.paths, catch_up=job.catch_up, progress=self._import_progress,
                                            folders=self.cfg.source_folders)
        except _Stopping:
            job.error = "the daemon stopped during this import; start it again and repeat the import"
            job.finished.set()
            return False
        except (LibraryWriteError, sqlite3.OperationalError):
            self.jobs.insert(0, job)  # nothing is lost: the job runs again once there is space
            raise
        job.file_ids = (first, self.lib.next_file_id() - 1)  # type: ignore[union-attr]
        job.imported = True
        if job.summary.imported or job.summary.errors:
            log.info("imported %d new file(s) (%d duplicate(s), %d error(s)) from %d path(s)",
                     job.summary.imported, job.summary.duplicates, job.summary.errors, len(job.paths))
        if job.follow:
            self.followers.append(job)
        else:
            job.finished.set()
        return True

    def _import_progress(self, summary: ImportSummary) -> None:
        """Between import batches: prove liveness, and let SIGTERM cut a long import short."""
        self.heartbeat.beat()
        if self.stopping.is_set():
            raise _Stopping()
        # A flood is imported in many batches: keep the workers fed in between. A lost Ray is
        # replaced here too, or the rest of this import would wait for the next rescan.
        try:
            self.engine.step(0)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - Ray failures are recovered, others re-raised
            if not _is_ray_failure(exc):
                raise
            self._recover_ray(exc)
        if time.monotonic() - self._last_import_status > 2.0:
            self._last_import_status = time.monotonic()
            self.notifier.status(f"importing: {summary.seen:,} seen, {summary.imported:,} new")

    def _finish_jobs(self, busy: bool) -> None:
        """A followed import is finished once its own files and their parts are through the
        pipeline, or when the pipeline has nothing left at all: other work (a flood in a
        watched folder, files an older analysis did) does not hold it up. While the pipeline
        is busy its files are looked at every FOLLOW_CHECK_S, not on every turn of the loop."""
        if not self.followers:
            return
        now = time.monotonic()
        if busy and now - self._followers_checked < FOLLOW_CHECK_S:
            return
        self._followers_checked = now
        rename = self.cfg.rename.enabled
        for job in list(self.followers):
            if busy and self.lib.work_left_for(*(job.file_ids or (0, -1)), rename):  # type: ignore[union-attr]
                continue
            job.result = self._job_result(job)
            job.finished.set()
            self.followers.remove(job)

    def _job_result(self, job: ImportJob) -> dict[str, Any]:
        out = job.summary.to_dict()
        lo, hi = job.file_ids or (0, -1)
        q = lambda sql: int(self.lib.db.execute(sql, {"lo": lo, "hi": hi}).fetchone()[0] or 0)  # type: ignore[union-attr]  # noqa: E731
        owned = "(id BETWEEN :lo AND :hi OR parent_id BETWEEN :lo AND :hi)"
        out["split_parts"] = q("SELECT count(*) FROM files WHERE parent_id BETWEEN :lo AND :hi")
        out["analysed"] = q(f"SELECT count(*) FROM files WHERE {owned} AND analysed_at IS NOT NULL")
        out["analysis_errors"] = q(f"SELECT count(*) FROM files WHERE {owned} AND error_stage = 'analyze'")
        return out

    def _queue_paths(self, paths: list[Path]) -> None:
        """Watcher batches become import jobs; browsers' partial downloads wait for their rename."""
        wanted = [str(p) for p in paths if not p.name.startswith(".") and not p.name.lower().endswith(PARTIAL)]
        if wanted:
            self.jobs.append(ImportJob(wanted))

    def _moved(self, pairs: list[tuple[Path, Path]]) -> None:
        """A file moved inside a watched tree: its source rows follow it."""
        assert self.lib is not None
        unknown: list[Path] = []
        with self.lib.db.atomic():
            for old_path, new_path in pairs:
                old, new = path_text(old_path), path_text(new_path)
                rows = self.lib.db.execute("SELECT id, origin FROM sources WHERE disk_path = ?", [old]).fetchall()
                for sid, origin in rows:
                    self.lib.db.execute(
                        "UPDATE OR REPLACE sources SET disk_path = ?, origin = ?, missing = 0 WHERE id = ?",
                        [new, new + origin[len(old):], sid])
                self.lib.db.execute("UPDATE OR REPLACE scanned SET disk_path = ? WHERE disk_path = ?", [new, old])
                # Its import failures follow it too (a file that failed is imported again
                # under its new name below, and that run replaces them).
                self.lib.move_import_failures(old, new)
                if not rows:
                    unknown.append(new_path)  # e.g. a download renamed from x.zip.part to x.zip
        self._queue_paths(unknown)

    def _deleted(self, paths: list[Path]) -> None:
        """A source vanished: mark it missing; the library copy stays."""
        assert self.lib is not None
        # A path may be a folder deleted or moved out of the tree: everything under it goes too.
        texts = [path_text(p) for p in paths]
        args = [(t, t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%") for t in texts]
        with self.lib.db.atomic():
            self.lib.db.conn.executemany(
                "UPDATE sources SET missing = 1 WHERE disk_path = ? OR disk_path LIKE ? ESCAPE '\\'", args)
            self.lib.db.conn.executemany(
                "DELETE FROM scanned WHERE disk_path = ? OR disk_path LIKE ? ESCAPE '\\'", args)
        self.lib.forget_import_failures(texts)

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            cfg = load_config(self.config_path)
        except ConfigError as exc:
            self._message(f"config reload failed, keeping the old config: {exc}")
            log.error("config reload failed, keeping the old config: %s", exc)
            self.notifier.ready()
            return
        old_folders = {str(f.resolve()) for f in self.cfg.source_folders}
        self.cfg = cfg
        self.engine.cfg = cfg  # type: ignore[union-attr]
        self.importer.cfg = cfg
        if self.watcher is not None:
            self.watcher.set_folders(cfg.source_folders)
        new = [f for f in self._existing_folders(cfg) if f not in old_folders]
        if new:
            self.jobs.append(ImportJob(new, catch_up=True))
        if self.devices is not None:
            self.devices.reload(cfg)
        self.engine.rewind()  # type: ignore[union-attr]
        self._rejoin_at = None  # the next rejoin try, if one is due, follows the new rejoin_s
        if cfg.ray.address != self.ray_address:
            self._switch_ray()
        log.info("configuration reloaded")
        self.notifier.ready()

    @staticmethod
    def _existing_folders(cfg: Config) -> list[str]:
        """Source folders as the watcher reports them (resolved), so paths match the rows."""
        return [str(f.resolve()) for f in cfg.source_folders if f.exists()]

    def _message(self, text: str) -> None:
        if text not in self.messages:
            self.messages = (self.messages + [text])[-10:]

    def _publish_status(self) -> None:
        assert self.lib is not None
        stages = self.lib.stage_counts(self.cfg.rename.enabled)
        a = stages["analyze"]
        devices = self.devices.snapshot() if self.devices is not None else []
        errors = a["failed"] + stages["import"]["failed"]
        text = (f"analysed {a['done']:,}/{a['done'] + a['queued']:,}, {errors:,} error(s), "
                f"{sum(1 for d in devices if d.get('mounted')):,} device(s)")
        if self.jobs:
            text += f", {len(self.jobs)} import job(s) queued"
        if self.paused:
            text += ", paused"
        if self.blocked:
            text += ", library disk full"
        self.notifier.status(text)
        sources = [{"path": str(f), "watching": bool(self.watcher) and f.exists(),
                    "polling": bool(self.watcher) and f.resolve() in getattr(self.watcher, "polling", set())}
                   for f in self.cfg.source_folders]
        with self.snapshot_lock:
            self.snapshot = {"sources": sources, "devices": devices, "status_line": text,
                             "queued": {"import": sum(len(j.paths) for j in self.jobs)},
                             "compute": self._compute()}

    def _compute(self) -> dict[str, Any]:
        """Where the stages run: the runner, the Ray ("local" or the cluster's address), the
        actors of each stage's own pool and how many sit on each node (short node ids)."""
        runner = self.engine.runner if self.engine is not None else None
        placement = runner.placement if runner is not None else {}
        nodes = Counter(node[:8] for actors in placement.values() for node in actors)
        rejoin = None if self._rejoin_at is None else max(0.0, round(self._rejoin_at - time.monotonic(), 1))
        return {"runner": runner.name if runner is not None else "none",
                "ray": (self.ray_address or "local") if placement else None,
                "workers": {kind: len(actors) for kind, actors in placement.items()},
                "nodes": dict(nodes),
                # On a local Ray standing in for the configured cluster: seconds to the next try.
                "rejoin_in_s": rejoin}

    # ---- control socket (runs on control threads: only queue work, read snapshots) ------

    def handle(self, msg: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        cmd = msg.get("cmd")
        if cmd == "status":
            with self.snapshot_lock:
                snap = dict(self.snapshot)
            return {"ok": True, "daemon": {"running": True, "pid": os.getpid(),
                                           "uptime_s": round(time.monotonic() - self.started, 1),
                                           "version": __version__,
                                           "state": "blocked: library disk full" if self.blocked
                                           else "paused" if self.paused else "running"},
                    "sources": snap.get("sources", []), "devices": snap.get("devices", []),
                    "queued": snap.get("queued", {}), "compute": snap.get("compute"),
                    "messages": list(self.messages)}
        if cmd == "import":
            paths = msg.get("paths")
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
                return {"ok": False, "error": "import needs a non-empty list of paths"}
            job = ImportJob(paths, follow=bool(msg.get("wait")))
            self.requests.put(lambda: self.jobs.append(job))
            if not msg.get("wait"):
                return {"ok": True, "queued": len(paths)}
            return self._follow(job)
        if cmd == "remove":
            paths = msg.get("paths")
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
                return {"ok": False, "error": "remove needs a non-empty list of library paths"}
            done: Future[dict[str, Any]] = Future()
            self.requests.put(lambda: done.set_result(self._remove(paths)))
            try:
                return done.result(timeout=REMOVE_TIMEOUT_S)
            except FutureTimeout:
                return {"ok": False, "error": "the daemon is still busy; the removal runs when it gets to it"}
        simple: dict[str, Callable[[], None]] = {
            "rescan": lambda: self.jobs.append(ImportJob(self._existing_folders(self.cfg), catch_up=True)),
            "pause": lambda: setattr(self, "paused", True),
            "resume": self._resume,
            "retry-failed": self._retry_failed,
            "reload": self.reload_requested.set,
        }
        if cmd in simple:
            self.requests.put(simple[cmd])
            return {"ok": True}
        if cmd == "sync":
            if self.devices is None:
                return {"ok": False, "error": "device sync is not running"}
            return self.devices.request_sync(msg.get("device"), full=bool(msg.get("full")))
        return {"ok": False, "error": f"unknown command {cmd!r}; known: status, import, remove, rescan, pause, "
                                      "resume, retry-failed, reload, sync"}

    def _remove(self, relpaths: list[str]) -> dict[str, Any]:
        """`midictl remove`, between two steps of the main loop: no import batch or device sync is
        half done, and a split or analysis still in flight for a removed file is dropped when it
        comes back (the engine commits results only for files that still exist)."""
        assert self.lib is not None
        try:
            summary = remove_from_library(self.lib, self.cfg.library_path, relpaths)
        except RemoveError as exc:
            return {"ok": False, "error": str(exc)}
        except (OSError, sqlite3.Error) as exc:  # a file or the database refused: say so, keep running
            log.error("remove %s: %s", ", ".join(relpaths), exc)
            return {"ok": False, "error": f"could not remove every file: {exc}; run the same `midictl remove` again"}
        log.info("removed %d file(s) from the library (%s)", len(summary.removed), ", ".join(relpaths))
        return {"ok": True, **summary.to_dict()}

    def _resume(self) -> None:
        self.paused = False
        if self.blocked:
            self._check_space(force=True)

    def _library_full(self, exc: Exception) -> None:
        """The library's disk is full or unwritable: stop writing, say what to do, retry later."""
        if isinstance(exc, sqlite3.OperationalError) and "full" not in str(exc) and "readonly" not in str(exc):
            raise exc
        text = str(exc) if isinstance(exc, LibraryWriteError) else (
            f"cannot write the library database {self.cfg.database_path}: {exc}. "
            "Free some space or move [library] database to a larger disk.")
        self.blocked = text
        self._free_at_block = self._free_bytes() or 0
        self._message(text)
        log.error("%s Waiting for space; the import resumes by itself.", text)
        self._last_space_check = time.monotonic()

    def _free_bytes(self) -> int | None:
        try:
            return min(shutil.disk_usage(self.cfg.library_path).free,
                       shutil.disk_usage(self.cfg.database_path.parent).free)
        except OSError:
            return None

    def _check_space(self, force: bool = False) -> None:
        """Resume once space was freed: plenty of it, or clearly more than when writing stopped."""
        self._last_space_check = time.monotonic()
        free = self._free_bytes()
        if free is None:
            return
        if free < MIN_FREE_BYTES and free < self._free_at_block + MIN_GAIN_BYTES and not force:
            return
        log.info("library disk has %.0f MB free again; resuming", free / 1e6)
        self.messages = [m for m in self.messages if m != self.blocked]
        self.blocked = None
        self.engine.rewind()  # type: ignore[union-attr]
        self.jobs.append(ImportJob(self._existing_folders(self.cfg), catch_up=True))

    def _watch_ray(self) -> None:
        """Notice a Ray that went away even while idle or paused, before Ray's own timeout ends us;
        start the new workers that were held back (see `_recover_ray`) when they are due."""
        from .pool import ClusterLost

        if self._ray_retry_at is not None:
            if time.monotonic() >= self._ray_retry_at:
                log.info("starting new workers after the back-off")
                self._restart_ray()
            return
        try:
            self.engine.runner.check()  # type: ignore[union-attr]
        except ClusterLost as exc:
            self._recover_ray(exc)
            return
        self._maybe_rejoin()

    def _maybe_rejoin(self) -> None:
        """On a local Ray that stands in for the configured cluster, try the cluster every
        `[ray] rejoin_s` (a quick probe; a join only once it answers), so a cluster that comes
        back, or a join that failed on a passing fault, is picked up without a reload."""
        from .pool import probe

        address = self.cfg.ray.address
        if not address or self.ray_address or not self.cfg.ray.rejoin_s:
            self._rejoin_at = None
            return
        now = time.monotonic()
        if self._rejoin_at is None:
            self._rejoin_every = self.cfg.ray.rejoin_s
            self._rejoin_at = now + self._rejoin_every
            return
        if now < self._rejoin_at:
            return
        if address != "auto":
            try:
                probe(address, timeout_s=2.0, handshake=True)
            except ConnectionError as exc:
                log.info("Ray cluster at %s still unreachable (%s); next try in %.0f s", address, exc,
                         self._rejoin_every)
                self._rejoin_at = now + self._rejoin_every
                return
        log.info("Ray cluster at %s answers; moving the workers back to it", address)
        self._switch_ray()
        if not self.ray_address:  # it answers but could not be joined: wait longer each time
            self._rejoin_every = min(self._rejoin_every * 2, MAX_REJOIN_S)
            self._rejoin_at = time.monotonic() + self._rejoin_every

    def _recover_ray(self, exc: Exception) -> None:
        """The Ray under the workers went away: join the configured one again, else a local Ray.

        Nothing is lost and no file is blamed: the batches that were in flight went down with
        their workers, so the engine forgets them and the SQLite queue hands their files out again.
        """
        assert self.engine is not None
        lost = f"the Ray cluster at {self.ray_address}" if self.ray_address else "the local Ray"
        in_flight = self.engine.runner.pending()
        now = time.monotonic()
        self._quick_losses = self._quick_losses + 1 if now - self._ray_started_at < QUICK_LOSS_S else 1
        delay = RAY_RETRY_S[min(self._quick_losses, len(RAY_RETRY_S)) - 1]
        log.error("lost %s (%s: %s) with %d batch(es) in flight; starting new workers%s, the batches will be redone",
                  lost, type(exc).__name__, exc, in_flight, f" in {delay:.0f} s" if delay else "")
        if delay:
            self._drop_workers()
            self.engine.replace_runner(NoWorkers())
            self._ray_retry_at = now + delay
            self._message(
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: lost {lost} ({exc}), {self._quick_losses} times in a "
                f"row within {QUICK_LOSS_S:.0f} s of starting its workers; new workers start in {delay:.0f} s "
                "and nothing is lost. If it goes on, the journal says why the workers die (a broken "
                "install stops them at start-up); fix it and reload midid (`systemctl reload midid`).")
            return
        self._restart_ray()
        now = f"rejoined the cluster at {self.ray_address}" if self.ray_address else "running on a local Ray"
        text = (f"{time.strftime('%Y-%m-%d %H:%M:%S')}: lost {lost} ({exc}); {now}, and the {in_flight} "
                "batch(es) that were in flight are redone, nothing is lost.")
        if self.cfg.ray.address and not self.ray_address:
            text += f" {REJOIN_HINT}"
        self._message(text)

    def _switch_ray(self) -> None:
        """On reload: move to the Ray the config names (a cluster back after a fallback, a new address).

        An unreachable cluster is found by a quick probe first, so the working Ray is kept then.
        """
        from .pool import probe

        address = self.cfg.ray.address
        if address and address != "auto":
            try:
                probe(address, handshake=True)
            except ConnectionError as exc:
                self._message(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: Ray cluster at {address} is still "
                              f"unreachable ({exc}); staying on the local Ray.")
                log.error("Ray cluster at %s is still unreachable (%s); staying on the local Ray", address, exc)
                return
        log.info("moving the workers to %s", f"the Ray cluster at {address}" if address else "a local Ray")
        failed = self._restart_ray()
        if failed is not None:
            text = (f"could not join the Ray cluster at {address} ({type(failed).__name__}: "
                    f"{_gist(failed)}); running on a local Ray. The journal has Ray's whole "
                    f"error. {REJOIN_HINT}")
        elif address:
            text = f"joined the Ray cluster at {address}."
        else:
            text = "running on a local Ray."
        self._message(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {text}")

    def _restart_ray(self) -> Exception | None:
        """Drop the workers and this process's Ray; join the configured one, else start a local
        one. Returns why the configured cluster could not be joined (None when it was, or when
        none is configured)."""
        import ray

        assert self.engine is not None
        self._ray_retry_at = None
        with self._busy_on_purpose(RAY_RESTART_LIMIT_S):
            self._drop_workers()
            ray.shutdown()
            address = self.cfg.ray.address
            failed: Exception | None = None
            try:
                runner = self._ray_runner(address)
            except Exception as exc:  # noqa: BLE001 - any failure to join means: run locally
                if not address:
                    raise
                log.error("cannot join the Ray cluster at %s (%s); using a local Ray", address, exc)
                failed = exc
                runner = self._ray_runner("")
        self._install_signal_handlers()
        self.engine.replace_runner(runner)
        return failed

    def _drop_workers(self) -> None:
        assert self.engine is not None
        try:
            self.engine.runner.shutdown()
        except Exception:  # noqa: BLE001 - the old runner may be half dead
            log.debug("old runner did not shut down cleanly", exc_info=True)

    @contextmanager
    def _busy_on_purpose(self, limit_s: float) -> Iterator[None]:
        """Beat the heartbeat through a slow step known to end, so the watchdog does not restart
        a daemon that is working; past `limit_s` the beats stop and the watchdog decides again."""
        done = threading.Event()
        until = time.monotonic() + limit_s

        def beat() -> None:
            while not done.wait(1.0) and time.monotonic() < until:
                self.heartbeat.beat()

        beater = threading.Thread(target=beat, name="midid-busy", daemon=True)
        beater.start()
        try:
            yield
        finally:
            done.set()
            beater.join()

    def _retry_failed(self) -> None:
        """Split and analysis again for files that failed them, and a new import of the
        on-disk files that failed to import (a new midid may read what an older one could not;
        each run replaces their old failures). Failures of files gone from disk are dropped."""
        assert self.lib is not None and self.engine is not None
        count = self.lib.retry_failed()
        self.engine.rewind()
        present: list[str] = []
        gone: list[str] = []
        for text in self.lib.import_failure_paths():
            path = disk_path(text)
            if os.path.lexists(path):
                present.append(path)
            else:
                gone.append(text)
        self.lib.forget_import_failures(gone)
        if present:
            self.jobs.append(ImportJob(present))
        log.info("retrying %d file(s) that failed split or analysis and importing %d file(s) again",
                 count, len(present))

    def _follow(self, job: ImportJob) -> Iterator[dict[str, Any]]:
        while not job.finished.wait(0.5):
            yield {"ok": True, "stage": "analyze" if job.imported else "import", "seen": job.summary.seen}
        if job.error:
            yield {"ok": False, "error": job.error}
        else:
            yield {"ok": True, "summary": job.result or job.summary.to_dict()}


def _is_ray_failure(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("ray") or isinstance(exc, (ConnectionError, TimeoutError))


def _gist(exc: BaseException) -> str:
    """The line of an error a user can act on: Ray's join errors carry a server-side traceback
    whose last line is the reason ("RuntimeError: Starting Ray client server failed ...")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="midid", description="midid library daemon (runs in the foreground)")
    parser.add_argument("--config", help="config file (else $MIDID_CONFIG, /etc/midid/midid.toml, ~/.config/...)")
    parser.add_argument("--version", action="version", version=f"midid {__version__}")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"midid: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging(cfg.log.level)
    stacks_on_sigusr1()
    try:
        code = Daemon(args.config).run()
    except ImportJobError as exc:
        log.error("%s", exc)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
