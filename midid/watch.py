"""Source-folder watching: turns file-system events into "these files are complete and ready".

An event only means "this path may be ready". A file is reported ready when it is complete:

- on close-after-write (inotify ``IN_CLOSE_WRITE``, watchdog's ``FileClosedEvent``), the usual
  end of a copy or a download; or
- when its size and mtime have not changed for ``settle_s`` seconds, for writers that keep the
  file open, for files that arrive by rename (no close is seen), for folders created or moved in
  (their existing files are scanned), and for trees watched by polling.

So an archive still being copied is never reported half-way. Reports are coalesced: callbacks
get lists, at most ``max_batch`` long, gathered for at most ``batch_window_s`` (sooner when the
file system has gone quiet for :data:`QUIET_S`), so a pack extracted as 10,000 files costs a
handful of calls, not 10,000. Callbacks run on one worker thread, never concurrently.

What callers must know about the reports:

- ``on_moved`` pairs are (old path, new path) of files moved inside a watched tree, in the
  order they happened (apply them in order: A→B then B→C). A folder move is expanded to its
  files. A move whose source was never reported ready (still settling) arrives instead as
  ``on_deleted([old])`` plus a later ``on_ready([new])``; a pair whose old path the caller does
  not know should be treated as a new file at the new path.
- ``on_deleted`` paths may be folders (deleted, or moved out of the tree): everything the
  caller has under such a path is gone. Moves out of a tree are deletions; moves in are new.
- Symbolic links inside a tree are neither reported nor followed unless ``follow_symlinks``.
  The configured folders themselves are resolved, so reported paths are under the resolved
  (real) folder paths.

- A path may be reported ready more than once over time (rewritten, or found again by a
  rescan); callers skip files whose path, size and mtime they already have.

inotify needs one watch per directory. When the per-user limit is exhausted (``ENOSPC``) —
or inotify instances are (``EMFILE``) — that tree falls back to polling with a WARNING saying
how to raise the limit, and is listed in :attr:`SourceWatcher.polling`. watchdog silently skips
sub-folders it cannot watch, so after scheduling a tree the watcher probes whether one more
watch can still be added, and after new folders appear in it, it checks in
``/proc/self/fdinfo`` that each one is really watched; if not, the tree is polled instead.

When the kernel's event queue overflows (a flood faster than it is read), events are lost; the
watcher then rescans its inotify trees for files changed in the last
:data:`OVERFLOW_LOOKBACK_S` seconds.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

QUIET_S = 0.1
"""A non-empty batch is delivered once no new report has joined it for this long (seconds):
a single dropped file is not held for the whole batch window."""

COVERAGE_CHECK_S = 0.5
"""Least interval between checks that new folders in an inotify tree got their watches."""

OVERFLOW_LOOKBACK_S = 600.0
"""After the kernel's inotify event queue overflowed, files changed (ctime) this many seconds
before are scanned again: the lost events are recent, but exactly when they began is unknown."""

POLL_INTERVAL_MIN_S = 2.0
"""Shortest interval between full scans of a polled tree; each scan stats every file in it."""

SYSCTL_FIX = (
    "raise it with `sudo sysctl fs.inotify.{key}={value}` and keep it across reboots with "
    "`echo fs.inotify.{key}={value} | sudo tee /etc/sysctl.d/60-midid-inotify.conf`"
)

_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
"""Only these reach the watcher; inotify is not even asked for opens, reads and attribute changes
(the pipeline's own reads of the files would otherwise flood it)."""

_IN_CLOEXEC = 0o2000000
_IN_ONLYDIR = 0x01000000
_IN_DELETE_SELF = 0x00000400
_libc = ctypes.CDLL(None, use_errno=True)


def inotify_headroom(path: Path) -> int:
    """0 if one more inotify watch (on ``path``) can be added, else the errno that refused it.

    Uses a fresh inotify instance, closed at once; its own instance failing (``EMFILE``) is
    returned too, so callers can tell the two limits apart.
    """
    fd = _libc.inotify_init1(_IN_CLOEXEC)
    if fd < 0:
        return ctypes.get_errno()
    try:
        wd = _libc.inotify_add_watch(fd, os.fsencode(path), _IN_ONLYDIR | _IN_DELETE_SELF)
        return 0 if wd >= 0 else ctypes.get_errno()
    finally:
        os.close(fd)


def watched_inodes() -> set[int]:
    """Inode numbers of everything this process's inotify instances watch, from /proc/self/fdinfo."""
    inodes: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("inotify wd:"):
                        inodes.add(int(line.split(" ino:", 1)[1].split(None, 1)[0], 16))
        except OSError:
            continue  # closed meanwhile
    return inodes


@dataclass(frozen=True)
class _Folder:
    path: Path
    st_ino: int


def _folders_under(folders: Iterable[Path], follow_symlinks: bool) -> list[_Folder]:
    """The given folders and every folder below them that still exists and can be read."""
    found: list[_Folder] = []
    stack = list(folders)
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            with os.scandir(folder) as entries:
                stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=follow_symlinks))
        except OSError:
            continue  # gone or unreadable: inotify could not watch it either way
        found.append(_Folder(folder, st.st_ino))
    return found


def _limit_warning(root: Path, err: int, interval_s: float) -> str:
    if err == errno.EMFILE:
        what, fix = "instances", SYSCTL_FIX.format(key="max_user_instances", value=1024)
    else:
        what, fix = "watches", SYSCTL_FIX.format(key="max_user_watches", value=524288)
    return (
        f"inotify {what} limit reached while watching {root}: polling it every {interval_s:g} s "
        f"instead (slower to notice files, more disk reads); {fix}, then restart midid"
    )


def _outermost(folders: Iterable[Path]) -> list[Path]:
    """Resolved folders with those inside another one dropped (their events would arrive twice)."""
    resolved = sorted({Path(f).resolve() for f in folders})
    kept: list[Path] = []
    for folder in resolved:
        if not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
    return kept


@dataclass
class _Candidate:
    """A file that may be ready: its last seen size/mtime and when anything last happened to it."""

    size: int
    mtime_ns: int
    last_event: float
    due: float


class _Forward(FileSystemEventHandler):
    """Puts each event of one tree on the watcher's queue; the observer thread does nothing else."""

    def __init__(self, root: Path, sink: queue.SimpleQueue) -> None:
        self._root = root
        self._sink = sink

    def dispatch(self, event: FileSystemEvent) -> None:
        self._sink.put((self._root, event))


_STOP = object()
_OVERFLOW = object()

_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
_OVERFLOW_MESSAGE = "Inotify queue overflowed"


class _OverflowAlarm(logging.Handler):
    """Turns watchdog's "queue overflowed" WARNING into a rescan request.

    When the kernel's event queue (``fs.inotify.max_queued_events``) overflows, events are lost;
    watchdog re-adds its watches but tells its handlers nothing, and only logs this warning.
    """

    def __init__(self, sink: queue.SimpleQueue) -> None:
        super().__init__(logging.WARNING)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith(_OVERFLOW_MESSAGE):
            self._sink.put(_OVERFLOW)


class SourceWatcher:
    """Watches source folders recursively and reports complete files, moves and deletions in batches.

    ``settle_s``: seconds a file's size and mtime must stay unchanged when no close-after-write
    is seen. ``batch_window_s``: longest a report waits for others to join its batch.
    """

    def __init__(
        self,
        folders: Sequence[Path],
        *,
        settle_s: float,
        on_ready: Callable[[list[Path]], None],
        on_moved: Callable[[list[tuple[Path, Path]]], None],
        on_deleted: Callable[[list[Path]], None],
        batch_window_s: float = 0.5,
        max_batch: int = 5000,
        follow_symlinks: bool = False,
    ) -> None:
        self.settle_s = settle_s
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.follow_symlinks = follow_symlinks
        self.polling: set[Path] = set()
        """Trees watched by polling because inotify ran out of watches or instances."""
        self._on_ready = on_ready
        self._on_moved = on_moved
        self._on_deleted = on_deleted
        self._folders = _outermost(folders)
        self._poll_interval_s = max(POLL_INTERVAL_MIN_S, settle_s)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.RLock()
        self._watches: dict[Path, tuple[BaseObserver, ObservedWatch]] = {}
        self._inotify: InotifyObserver | None
        try:
            self._inotify = InotifyObserver()
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            self._inotify = None  # no inotify instance to be had: every tree is polled
        self._poller = PollingObserver(timeout=self._poll_interval_s)
        self._worker = threading.Thread(target=self._run, name="midid-watch", daemon=True)
        # Worker-thread state: candidates settling, and the batch being gathered.
        self._pending: dict[Path, _Candidate] = {}
        self._due: list[tuple[float, Path]] = []
        self._ready: dict[Path, None] = {}
        self._moved: dict[Path, Path] = {}
        self._deleted: dict[Path, None] = {}
        self._batch_started = 0.0
        self._batch_touched = 0.0
        self._grown: dict[Path, list[Path]] = {}
        self._next_coverage_check = 0.0
        self._overflow_alarm = _OverflowAlarm(self._events)

    # -- control, from the caller's thread ---------------------------------------------------

    def start(self) -> None:
        """Start the observers and the worker, then watch every folder (missing ones are skipped)."""
        overflow_log = logging.getLogger(_OVERFLOW_LOGGER)
        if not overflow_log.isEnabledFor(logging.WARNING):
            overflow_log.setLevel(logging.WARNING)  # the alarm needs this one warning
        overflow_log.addHandler(self._overflow_alarm)
        if self._inotify is not None:
            self._inotify.start()
        self._poller.start()
        self._worker.start()
        self.set_folders(self._folders)

    def stop(self) -> None:
        """Stop watching; reports already complete are delivered, files still settling are not."""
        observers = [o for o in (self._inotify, self._poller) if o is not None]
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join()
        logging.getLogger(_OVERFLOW_LOGGER).removeHandler(self._overflow_alarm)
        self._events.put(_STOP)
        self._worker.join()

    def set_folders(self, folders: Sequence[Path]) -> None:
        """Watch exactly ``folders`` from now on (a config reload): new ones added, gone ones dropped."""
        wanted = _outermost(folders)
        with self._lock:
            self._folders = wanted
            for root in [r for r in self._watches if r not in wanted]:
                observer, watch = self._watches.pop(root)
                observer.unschedule(watch)
                self.polling.discard(root)
                log.info("stopped watching %s", root)
            for root in wanted:
                if root not in self._watches:
                    self._schedule(root)

    def _schedule(self, root: Path) -> None:
        if not root.is_dir():
            log.warning("source folder %s does not exist or is not a folder; not watching it", root)
            return
        if self._inotify is None:
            self._poll(root, errno.EMFILE)
            return
        try:
            watch = self._inotify.schedule(
                _Forward(root, self._events),
                str(root),
                recursive=True,
                event_filter=_EVENT_FILTER,
                follow_symlink=self.follow_symlinks,
            )
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            self._poll(root, exc.errno)
            return
        self._watches[root] = (self._inotify, watch)
        err = inotify_headroom(root)
        if err == errno.ENOSPC:
            self._switch_to_polling(root, err)
        else:
            log.info("watching %s", root)

    def _poll(self, root: Path, err: int) -> None:
        log.warning(_limit_warning(root, err, self._poll_interval_s))
        watch = self._poller.schedule(
            _Forward(root, self._events), str(root), recursive=True, event_filter=_EVENT_FILTER
        )
        self._watches[root] = (self._poller, watch)
        self.polling.add(root)

    def _forget(self, root: Path) -> None:
        """Drop a watched folder that was itself deleted; a later ``set_folders`` may watch it again."""
        log.warning("source folder %s was deleted or moved away; no longer watching it", root)
        with self._lock:
            entry = self._watches.pop(root, None)
            if entry is not None:
                entry[0].unschedule(entry[1])
            self.polling.discard(root)

    def _switch_to_polling(self, root: Path, err: int) -> None:
        """Replace a tree's inotify watch by polling (its partial watches are released first)."""
        with self._lock:
            observer, watch = self._watches.pop(root)
            observer.unschedule(watch)
            self._poll(root, err)

    # -- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            now = time.monotonic()
            try:
                items = [self._events.get(timeout=max(0.0, self._next_wakeup(now) - now))]
            except queue.Empty:
                items = []
            while len(items) < 10_000:
                try:
                    items.append(self._events.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is _STOP:
                    stopping = True
                elif item is _OVERFLOW:
                    self._rescan_recent()
                else:
                    self._handle(*item)
            self._check_new_dirs()
            now = time.monotonic()
            self._settle(now)
            self._flush(now, force=stopping)

    def _next_wakeup(self, now: float) -> float:
        wake = now + 1.0
        if self._due:
            wake = min(wake, self._due[0][0])
        if self._ready or self._moved or self._deleted:
            wake = min(wake, self._batch_started + self.batch_window_s, self._batch_touched + QUIET_S)
        if self._grown:
            wake = min(wake, self._next_coverage_check)
        return wake

    def _handle(self, root: Path, event: FileSystemEvent) -> None:
        if event.is_synthetic or root not in self._watches:
            return  # folder moves and creations are expanded here, by walking them
        src = Path(os.fsdecode(event.src_path))
        if isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            self._touch(src)
        elif isinstance(event, FileClosedEvent):
            self._closed(src)
        elif isinstance(event, (FileDeletedEvent, DirDeletedEvent)):
            self._gone(src, is_dir=event.is_directory)
            if src == root:
                self._forget(root)
        elif isinstance(event, FileMovedEvent):
            self._moved_file(src, Path(os.fsdecode(event.dest_path)))
        elif isinstance(event, DirMovedEvent):
            dest = Path(os.fsdecode(event.dest_path))
            for path in self._walk(dest):
                self._moved_file(src / path.relative_to(dest), path)
        elif isinstance(event, DirCreatedEvent):
            for path in self._walk(src):
                self._touch(path)
            if root not in self.polling:
                self._grown.setdefault(root, []).append(src)

    def _rescan_recent(self) -> None:
        """Find the files whose events the kernel dropped: those changed lately in inotify trees."""
        cutoff = time.time() - OVERFLOW_LOOKBACK_S
        trees = [root for root in self._watches if root not in self.polling]
        log.warning(
            "inotify event queue overflowed: rescanning files changed in the last %d min under %s "
            "(moves and deletions meanwhile need `midictl rescan`); a larger "
            "fs.inotify.max_queued_events makes this rarer",
            OVERFLOW_LOOKBACK_S // 60, ", ".join(map(str, trees)),
        )
        for root in trees:
            for path in self._walk(root, changed_since=cutoff):
                self._touch(path)

    def _walk(self, folder: Path, changed_since: float | None = None) -> list[Path]:
        """Files under ``folder``, following symlinked folders only if asked (each real folder once).

        With ``changed_since`` (epoch seconds), only files whose ctime is that recent: ctime
        also moves on renames and on copies that keep the mtime (``cp -p``).
        """
        files: list[Path] = []
        seen: set[tuple[int, int]] = set()
        stack = [folder]
        while stack:
            current = stack.pop()
            try:
                st = current.stat()
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                with os.scandir(current) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=self.follow_symlinks):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=self.follow_symlinks) and (
                            changed_since is None
                            or entry.stat(follow_symlinks=self.follow_symlinks).st_ctime >= changed_since
                        ):
                            files.append(Path(entry.path))
            except OSError as exc:
                log.debug("cannot scan %s: %s", current, exc)
        return files

    def _stat(self, path: Path) -> os.stat_result | None:
        """The file's stat if it is a regular file we may report, else None."""
        try:
            st = path.stat() if self.follow_symlinks else path.lstat()
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def _touch(self, path: Path) -> None:
        now = time.monotonic()
        self._ready.pop(path, None)  # written again: wait for it to be complete again
        cand = self._pending.get(path)
        if cand is not None:
            cand.last_event = now
            return
        st = self._stat(path)
        if st is None:
            return
        due = now + self.settle_s
        self._pending[path] = _Candidate(st.st_size, st.st_mtime_ns, now, due)
        heapq.heappush(self._due, (due, path))

    def _closed(self, path: Path) -> None:
        if self._pending.pop(path, None) is None and self._stat(path) is None:
            return
        self._add_ready(path)

    def _gone(self, path: Path, *, is_dir: bool) -> None:
        self._pending.pop(path, None)
        self._ready.pop(path, None)
        if is_dir:
            for table in (self._pending, self._ready):
                for inner in [p for p in table if p.is_relative_to(path)]:
                    del table[inner]
        self._note_batch()
        self._deleted[path] = None

    def _moved_file(self, src: Path, dest: Path) -> None:
        self._note_batch()
        self._deleted.pop(dest, None)
        cand = self._pending.pop(src, None)
        if cand is not None:
            self._pending[dest] = cand
            heapq.heappush(self._due, (cand.due, dest))
            self._deleted[src] = None
        elif src in self._ready:
            del self._ready[src]
            self._deleted[src] = None
            self._ready[dest] = None
        elif self._stat(dest) is not None:
            self._moved[src] = dest

    def _add_ready(self, path: Path) -> None:
        self._note_batch()
        self._deleted.pop(path, None)
        self._ready[path] = None

    def _note_batch(self) -> None:
        """Call before adding a report: times the batch window and the quiet gap."""
        now = time.monotonic()
        if not (self._ready or self._moved or self._deleted):
            self._batch_started = now
        self._batch_touched = now

    def _settle(self, now: float) -> None:
        """Report candidates whose size and mtime held still for settle_s; re-check the others later."""
        while self._due and self._due[0][0] <= now:
            due, path = heapq.heappop(self._due)
            cand = self._pending.get(path)
            if cand is None or cand.due != due:
                continue  # reported, gone, or re-queued under a later time
            if now - cand.last_event < self.settle_s:
                cand.due = cand.last_event + self.settle_s
                heapq.heappush(self._due, (cand.due, path))
                continue
            st = self._stat(path)
            if st is None:
                del self._pending[path]
            elif (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                cand.size, cand.mtime_ns, cand.last_event = st.st_size, st.st_mtime_ns, now
                cand.due = now + self.settle_s
                heapq.heappush(self._due, (cand.due, path))
            else:
                del self._pending[path]
                self._add_ready(path)

    def _check_new_dirs(self) -> None:
        """After folders appeared in an inotify tree, check that watchdog really watches each one.

        watchdog skips a sub-folder it cannot watch without a word, and a failed add leaves the
        limit looking free again, so the check reads which inodes this process's inotify
        instances watch (``/proc/self/fdinfo``). A new folder left unwatched turns the tree over
        to polling, and the folders of this round are scanned again: files written into them
        before the first poll are in the poller's baseline, so no event would report them.
        At most every :data:`COVERAGE_CHECK_S` seconds.
        """
        now = time.monotonic()
        if not self._grown or now < self._next_coverage_check:
            return
        self._next_coverage_check = now + COVERAGE_CHECK_S
        grown, self._grown = self._grown, {}
        watched = watched_inodes()
        for root, dirs in grown.items():
            if root in self.polling or root not in self._watches:
                continue
            unwatched = [d for d in _folders_under(dirs, self.follow_symlinks) if d.st_ino not in watched]
            if not unwatched:
                continue
            log.debug("%d new folders under %s are not watched, e.g. %s", len(unwatched), root, unwatched[0].path)
            self._switch_to_polling(root, inotify_headroom(root) or errno.ENOSPC)
            for folder in dirs:
                for path in self._walk(folder):
                    self._touch(path)

    def _flush(self, now: float, *, force: bool) -> None:
        size = len(self._ready) + len(self._moved) + len(self._deleted)
        if size == 0:
            return
        if not (
            force
            or size >= self.max_batch
            or now - self._batch_started >= self.batch_window_s
            or now - self._batch_touched >= QUIET_S
        ):
            return
        moved, self._moved = list(self._moved.items()), {}
        deleted, self._deleted = list(self._deleted), {}
        ready, self._ready = list(self._ready), {}
        for start in range(0, len(moved), self.max_batch):
            self._deliver(self._on_moved, moved[start : start + self.max_batch])
        for start in range(0, len(deleted), self.max_batch):
            self._deliver(self._on_deleted, deleted[start : start + self.max_batch])
        for start in range(0, len(ready), self.max_batch):
            self._deliver(self._on_ready, ready[start : start + self.max_batch])

    @staticmethod
    def _deliver(callback: Callable[[list], None], items: list) -> None:
        try:
            callback(items)
        except Exception:
            log.exception("watch callback %s failed on %d paths", getattr(callback, "__name__", callback), len(items))
