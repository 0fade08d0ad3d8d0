"""Putting files into a folder durably, a batch at a time.

The promise is: never a half-written file where a user or the database can see it, and a row
only after its file is durable. Paying an fsync per small file caps a pipeline at a few
hundred files per second, so a batch is written to temporary names in one staging folder on the
same file system, made durable with one `syncfs`, renamed into place, and the renames made
durable with a second `syncfs`. A crash leaves at most files in the staging folder, which the
next start removes.

Creating a small file is kernel work (inode, directory entry, page cache) that costs 20 us on a
warm ext4 and, measured on this project's 2-core VMs, 200-900 us for the first thousands of
files created soon after many were deleted. That was most of the import driver's CPU
time. The driver is single-threaded Python, so the files of a batch are written by one
background thread (the system calls release the GIL) while the driver goes on preparing the
rest of the batch; `publish` waits for them, so nothing changes in what is durable when.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import logging
import os
import shutil
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STAGING = ".midid-staging"
_CHUNK = 32  # files handed to the writer thread at once: a hand-over costs about one file
_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the file system holding `path` (one call for a whole batch)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


@dataclass
class Staged:
    tmp: Path
    dest: Path


def _writer_pool() -> ThreadPoolExecutor:
    """The one writer thread of this process (started on first use, lives with the process)."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(1, thread_name_prefix="midid-write")
        return _writer


def _write_new(items: list[tuple[Path, bytes]]) -> None:
    for path, data in items:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


@dataclass
class BatchWriter:
    """Stages files for one batch under `root`, then publishes them all durably at once."""

    root: Path
    staged: list[Staged] = field(default_factory=list)
    _queued: list[tuple[Path, bytes]] = field(default_factory=list)
    _writing: list[Future[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.staging = self.root / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)
        self._prefix = uuid.uuid4().hex[:12] + "-"
        self._counter = itertools.count()

    def _tmp(self) -> Path:
        return self.staging / f"{self._prefix}{next(self._counter)}"

    def add_bytes(self, relpath: str, data: bytes) -> None:
        """Stage a file with these bytes; written in the background, checked by `publish`."""
        tmp = self._tmp()
        self.staged.append(Staged(tmp, self.root / relpath))
        self._queued.append((tmp, data))
        if len(self._queued) >= _CHUNK:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._queued:
            self._writing.append(_writer_pool().submit(_write_new, self._queued))
            self._queued = []

    def _wait(self) -> list[BaseException]:
        """Hand over what is queued and wait for every staged write; the errors among them."""
        self._hand_over()
        writing, self._writing = self._writing, []
        return [exc for exc in (f.exception() for f in writing) if exc is not None]

    def add_link_or_copy(self, relpath: str, source: Path) -> None:
        """A hard link to the source when the file system allows, else a copy (same bytes)."""
        tmp = self._tmp()
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copyfile(source, tmp)
        self.staged.append(Staged(tmp, self.root / relpath))

    def publish(self) -> None:
        """Durable data, then atomic renames, then durable directory entries."""
        if not self.staged:
            return
        errors = self._wait()
        if errors:
            raise errors[0]  # ENOSPC, EROFS...: nothing of the batch is published
        syncfs(self.root)
        made: set[Path] = set()
        for item in self.staged:
            if item.dest.parent not in made:
                item.dest.parent.mkdir(parents=True, exist_ok=True)
                made.add(item.dest.parent)
            os.replace(item.tmp, item.dest)
        syncfs(self.root)
        self.staged.clear()

    def discard(self) -> None:
        self._queued = []
        self._wait()  # a write still running must not outlive its unlink
        for item in self.staged:
            try:
                item.tmp.unlink()
            except FileNotFoundError:
                pass
        self.staged.clear()


def clear_staging(root: Path) -> int:
    """Remove what a crash left in the staging folder; returns how many files went."""
    staging = root / STAGING
    if not staging.is_dir():
        return 0
    count = 0
    for entry in staging.iterdir():
        entry.unlink()
        count += 1
    if count:
        log.info("removed %d unfinished file(s) left by an interrupted run in %s", count, staging)
    return count
