"""One-shot jobs: `midictl import` without a daemon, or handed over to the running daemon.

Only one process writes a library at a time: the daemon, or one `midictl import`. They take
an exclusive lock on `<database>.lock`, so two imports started together run one after the
other instead of importing the same files twice.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .config import Config
from .db import Library
from .engine import Engine, Runner, StageTotals, ray_runner, runs_on_ray
from .importer import Importer, ImportSummary, LibraryWriteError
from .pool import LocalRunner, NoWorkers

log = logging.getLogger(__name__)


class ImportJobError(RuntimeError):
    """The job cannot run at all (unwritable library, locked database...); says what to do."""


class LibraryBusy(ImportJobError):
    pass


@contextmanager
def writer_lock(cfg: Config, *, wait: bool = True) -> Iterator[None]:
    """Hold the single-writer lock of this library for the duration of the block."""
    path = cfg.database_path.with_name(cfg.database_path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    except OSError as exc:
        raise ImportJobError(f"cannot create {path}: {exc.strerror}; check [library] database and permissions") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LibraryBusy(f"the library {cfg.database_path} is being written by another midid process") from None
            log.warning("another import is writing this library; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def open_library(cfg: Config) -> Library:
    try:
        cfg.library_path.mkdir(parents=True, exist_ok=True)
        probe = cfg.library_path / f".midid-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        lib = Library(cfg.database_path)
    except OSError as exc:
        what = {errno.EACCES: "give your user write access or set [library] path",
                errno.EROFS: "remount it read-write or set [library] path",
                errno.ENOSPC: "free some space or set [library] path"}.get(exc.errno or 0, "set [library] path")
        raise ImportJobError(f"cannot write to the library {cfg.library_path}: {exc.strerror}; {what}") from None
    stale = lib.requeue_stale_analyses()
    if stale:
        log.info("analysing %d file(s) again, after any new ones: an older version of midid analysed them",
                 stale)
    return lib


def run_import(cfg: Config, paths: list[str], *, show_progress: bool = False) -> dict[str, Any]:
    """import → sanitize → split → analyze (→ rename) in this process, to completion."""
    with writer_lock(cfg):
        lib = open_library(cfg)
        try:
            return _run(cfg, lib, paths, show_progress)
        except LibraryWriteError as exc:
            raise ImportJobError(str(exc)) from None
        finally:
            lib.close()


def _run(cfg: Config, lib: Library, paths: list[str], show_progress: bool) -> dict[str, Any]:
    started = time.monotonic()
    # The runner is chosen before the import, and the engine is stepped after every import batch
    # as in the daemon: split and analyze run while later batches are still being imported. Ray's
    # start-up (seconds) runs in this thread while the import runs in another, and the actor
    # pools join the engine from the first import batch after Ray is up.
    queued = lib.stage_counts(cfg.rename.enabled)
    leftover = queued["analyze"]["queued"] + queued["split"]["queued"]
    expected = leftover + estimate_inputs(paths, cfg.pipeline.local_below)
    use_ray = runs_on_ray(cfg, expected)
    log.info("running split and analyze on %s (about %d file(s) expected)",
             "Ray actor pools" if use_ray else "this process", expected)
    engine = Engine(cfg, lib, NoWorkers() if use_ray else LocalRunner())
    step = _Stepper(cfg, engine)
    ready: list[Runner] = []  # the Ray runner, handed from this thread to whichever steps the engine
    cancelled = threading.Event()
    with _progress(show_progress) as bar:
        task = bar.add_task("import", total=None) if bar else None
        stage_task = bar.add_task("analyze", total=None) if bar else None

        def on_stage(t: StageTotals) -> None:
            if bar is not None and stage_task is not None:
                bar.update(stage_task, completed=t.analysed + t.analysis_errors,
                           description=f"analyze {t.analysed:,} done, {t.split_parts:,} parts, {t.analysis_errors:,} err")

        def on_import(s: ImportSummary) -> None:
            if cancelled.is_set():
                raise ImportJobError("cancelled")
            if ready:  # handed over once, so a local Ray that replaced a lost cluster stays
                engine.replace_runner(ready.pop())
            step(0)
            if bar is not None and task is not None:
                bar.update(task, completed=s.seen,
                           description=f"import  {s.imported:,} new, {s.duplicates:,} dup, {s.errors:,} err")
            on_stage(engine.totals)

        try:
            if use_ray:
                summary = _import_while_ray_starts(cfg, lib, paths, on_import, ready, cancelled)
                if ready:
                    engine.replace_runner(ready.pop())
                elif isinstance(engine.runner, NoWorkers):  # parked: its cluster was lost meanwhile
                    _restart_locally(cfg, engine)
            else:
                summary = Importer(cfg, lib).run(paths, progress=on_import)
            if bar is not None and stage_task is not None:
                counts = lib.stage_counts(cfg.rename.enabled)
                remaining = counts["analyze"]["queued"] + counts["split"]["queued"]
                done = engine.totals.analysed + engine.totals.analysis_errors
                bar.update(stage_task, total=done + remaining)
            while step(0.2):
                on_stage(engine.totals)
        finally:
            engine.runner.shutdown()
    totals = engine.totals
    out = summary.to_dict()
    out.update(split_parts=totals.split_parts, analysed=totals.analysed,
               analysis_errors=totals.analysis_errors, elapsed_s=round(time.monotonic() - started, 3))
    if cfg.rename.enabled:
        out["renamed"] = totals.renamed
    return out


def _import_while_ray_starts(cfg: Config, lib: Library, paths: list[str],
                             on_import: Callable[[ImportSummary], None], ready: list[Runner],
                             cancelled: threading.Event) -> ImportSummary:
    """Import in a second thread while this one starts Ray (which wants the main thread).

    Only one thread uses the library at a time: the importing one until it ends (the engine
    too, stepped from `on_import`), then this one. An import cut short by Ctrl-C or an error
    here stops at its next batch boundary, where everything before it is durable.
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["summary"] = Importer(cfg, lib).run(paths, progress=on_import)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = exc

    importer = threading.Thread(target=work, name="midid-import", daemon=True)
    importer.start()
    try:
        ready.append(_start_ray_runner(cfg))
    except BaseException:
        cancelled.set()
        raise
    finally:
        importer.join()
    if "error" in result:
        raise result["error"]
    return result["summary"]


def _start_ray_runner(cfg: Config) -> Runner:
    address = cfg.ray.address
    try:
        return ray_runner(cfg, address)
    except Exception as exc:
        if not address:
            raise
        log.error("cannot join the Ray cluster at %s (%s); running on a local Ray. Check the cluster "
                  "or `midictl config set ray.address ...`", address, exc)
        return ray_runner(cfg, "")


# Rays lost in one job before it gives up: a cluster that goes away costs one, but workers
# that cannot start or keep dying at once would cost one every few seconds for ever.
MAX_RAY_LOSSES = 3


class _Stepper:
    """Steps the engine; a Ray that goes away mid-job is replaced by a local one (nothing is
    lost: the batches that were on it are handed out again from the queue), up to
    MAX_RAY_LOSSES times in one job, after which the job stops with an error saying what to do.

    Ray must be started from the main thread, so when the cluster is lost while the importing
    thread steps the engine, the engine is parked (it takes no work) until the import is done
    and the main thread starts the local Ray.
    """

    def __init__(self, cfg: Config, engine: Engine) -> None:
        self.cfg, self.engine, self.losses = cfg, engine, 0

    def __call__(self, wait_s: float) -> bool:
        from .pool import ClusterLost

        engine = self.engine
        try:
            return engine.step(wait_s)
        except ClusterLost as exc:
            self.losses += 1
            in_flight = engine.runner.pending()
            engine.runner.shutdown()
            engine.replace_runner(NoWorkers())
            if self.losses > MAX_RAY_LOSSES:
                raise ImportJobError(
                    f"the analysis workers were lost {self.losses} times in this job (last: {exc}); "
                    "nothing is lost and the next `midictl import` resumes where this one stopped. "
                    "If it happens again, look for the workers' error above (a broken install "
                    "stops them at start-up) and check the machine's memory") from None
            log.error("lost the Ray cluster (%s) with %d batch(es) in flight; continuing on a local Ray, "
                      "the batches will be redone", exc, in_flight)
            if threading.current_thread() is threading.main_thread():
                _restart_locally(self.cfg, engine)
            return True


def _restart_locally(cfg: Config, engine: Engine) -> None:
    import ray

    ray.shutdown()
    engine.replace_runner(ray_runner(cfg, ""))


def estimate_inputs(paths: list[str], limit: int) -> int:
    """About how many MIDI files `paths` hold, counted only up to `limit`.

    It only chooses the runner (in-process below `[pipeline] local_below`, Ray from there), so a
    walk of names and sizes is enough: a plain file counts one, a file named like an archive
    one per `_ARCHIVE_BYTES_PER_FILE` of its size. The walk stops at `limit`, so a huge source
    costs no more than a small one.
    """
    count = 0
    folders: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            folders.append(path)
        else:
            count += _weight(path, lambda: os.path.getsize(path) if os.path.isfile(path) else 0)
    while folders and count < limit:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.is_file():
                        count += _weight(entry.name, lambda: entry.stat().st_size)
        except OSError:
            continue  # the import itself reports what it cannot read
    return min(count, limit)


def _weight(name: str, size: Callable[[], int]) -> int:
    """One, or one per `_ARCHIVE_BYTES_PER_FILE` for an archive (only archives pay a stat)."""
    return max(1, size() // _ARCHIVE_BYTES_PER_FILE) if name.lower().endswith(_ARCHIVE_SUFFIXES) else 1


# A zipped MIDI file takes 1-4 KB; counting 4 KB keeps the estimate on the low side.
_ARCHIVE_BYTES_PER_FILE = 4096
_ARCHIVE_SUFFIXES = (".zip", ".7z", ".rar", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".lzh", ".cab", ".iso")


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.speed}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    with bar:
        yield bar


def daemon_import(cfg: Config, paths: list[str], *, wait: bool, show_progress: bool) -> dict[str, Any] | None:
    """Hand the paths to a running daemon; None when no daemon listens (run locally then)."""
    from .control import DaemonNotRunning, request, request_stream

    sock = cfg.socket_path
    try:
        if not wait:
            reply = request(sock, {"cmd": "import", "paths": paths, "wait": False})
            if not reply.get("ok"):
                raise ImportJobError(f"the daemon refused the import: {reply.get('error')}")
            return {"queued": True, "paths": paths}
        final: dict[str, Any] | None = None
        with _progress(show_progress) as bar:
            task = bar.add_task("daemon import", total=None) if bar else None
            for message in request_stream(sock, {"cmd": "import", "paths": paths, "wait": True}, timeout=60):
                if not message.get("ok", True):
                    raise ImportJobError(f"the daemon refused the import: {message.get('error')}")
                if "summary" in message:
                    final = message["summary"]
                elif bar is not None and task is not None:
                    bar.update(task, completed=message.get("seen", 0), description=message.get("stage", "import"))
        if final is None:
            raise ImportJobError("the daemon stopped before the import finished; see `midictl status`")
        return final
    except DaemonNotRunning:
        return None
