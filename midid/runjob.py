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
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .config import Config
from .db import Library
from .engine import Engine, StageTotals, make_runner
from .importer import Importer, ImportSummary, LibraryWriteError

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
        return Library(cfg.database_path)
    except OSError as exc:
        what = {errno.EACCES: "give your user write access or set [library] path",
                errno.EROFS: "remount it read-write or set [library] path",
                errno.ENOSPC: "free some space or set [library] path"}.get(exc.errno or 0, "set [library] path")
        raise ImportJobError(f"cannot write to the library {cfg.library_path}: {exc.strerror}; {what}") from None


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
    with _progress(show_progress) as bar:
        task = bar.add_task("import", total=None) if bar else None

        def on_import(s: ImportSummary) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=s.seen,
                           description=f"import  {s.imported:,} new, {s.duplicates:,} dup, {s.errors:,} err")

        summary = Importer(cfg, lib).run(paths, progress=on_import)
        queued = lib.stage_counts(cfg.rename.enabled)
        todo = queued["analyze"]["queued"] + queued["split"]["queued"]
        runner = make_runner(cfg, expected_files=todo)
        log.info("running split and analyze on %s for %d queued file(s)", runner.name, todo)
        engine = Engine(cfg, lib, runner)
        stage_task = bar.add_task("analyze", total=todo) if bar else None

        def on_stage(t: StageTotals) -> None:
            if bar is not None and stage_task is not None:
                bar.update(stage_task, completed=t.analysed + t.analysis_errors,
                           total=max(todo, t.analysed + t.analysis_errors),
                           description=f"analyze {t.analysed:,} done, {t.split_parts:,} parts, {t.analysis_errors:,} err")

        try:
            totals = engine.run(progress=on_stage)
        finally:
            runner.shutdown()
    out = summary.to_dict()
    out.update(split_parts=totals.split_parts, analysed=totals.analysed,
               analysis_errors=totals.analysis_errors, elapsed_s=round(time.monotonic() - started, 3))
    if cfg.rename.enabled:
        out["renamed"] = totals.renamed
    return out


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

    sock = Path(cfg.control.socket)
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
