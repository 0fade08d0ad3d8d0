"""Copy a batch of files onto a drive so that no half-written file is ever left behind.

Durability is paid per batch, not per file (DESIGN.md, Promises): every file of the batch is
written to a temp name (``.midid-tmp-*``) in its target folder, the whole file system is
flushed once (``syncfs``), each temp is renamed into place, and the file system is flushed
again, which makes the renames and new folders durable in one journal commit where an fsync
per touched folder would cost one commit each. A file is reported copied only after that
last step, so a caller may record it.

Every operation goes through folder descriptors opened below ``root`` at the start of the
batch and never follows symlinks: if the drive is lazily unmounted under us, writes keep
going to that drive (or fail), never into the empty mount-point folder on the host's disk.

Files the user put on the drive are never overwritten: the caller plans free names; if the
destination exists with the same bytes the item counts as copied, otherwise it fails as a
collision. Files get mode 0644 where the file system keeps modes (FAT/exFAT take theirs from
the mount options).

What stops a batch (``CopyResult.stopped``): the device filling up (completed files are kept,
the partial one removed), the device going away (EIO/ENODEV/ENOENT/ENXIO: nothing more is
touched; leftover temps are removed by :func:`remove_stale_temps` on the next plug), a
read-only or permission-denied target. A missing or unreadable source file, or a name the
file system refuses, fails only its own item.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["TEMP_PREFIX", "CopyItem", "CopyResult", "copy_batch", "flush", "remove_stale_temps", "stop_reason"]

log = logging.getLogger(__name__)

TEMP_PREFIX = ".midid-tmp-"
FILE_MODE = 0o644
DIR_MODE = 0o755
MB = 1_000_000

FULL = frozenset([errno.ENOSPC, errno.EDQUOT])
GONE = frozenset([errno.EIO, errno.ENODEV, errno.ENOENT, errno.ENXIO, errno.ESTALE, errno.ENOTCONN])
READ_ONLY = frozenset([errno.EROFS])
DENIED = frozenset([errno.EACCES, errno.EPERM])

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class CopyItem:
    """One file to copy: ``src`` on the host, ``dest_rel`` a ``/``-joined path below the root."""

    src: Path
    dest_rel: str


@dataclass
class CopyResult:
    """What a batch did. ``bytes`` counts bytes written (identical files already there: 0)."""

    copied: list[CopyItem] = field(default_factory=list)
    failed: list[tuple[CopyItem, str]] = field(default_factory=list)
    stopped: str | None = None
    bytes: int = 0


@dataclass
class _Staged:
    item: CopyItem
    dir_fd: int
    temp: str
    name: str
    size: int
    renamed: bool = False


class _Stop(Exception):
    """The target cannot take more of this batch; ``kind`` is full, gone or refused."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _syncfs(fd: int) -> None:
    """Flush the whole file system holding ``fd``: one call instead of an fsync per file."""
    if _libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _stop_for(exc: OSError, root: Path, root_fd: int | None, rel: str) -> _Stop | None:
    """The batch-stopping meaning of a target-side error, or None if it concerns one item."""
    code = exc.errno
    if code in FULL:
        free = "unknown"
        if root_fd is not None:
            try:
                st = os.fstatvfs(root_fd)
                free = f"{st.f_bavail * st.f_frsize / MB:.1f}"
            except OSError:
                pass
        return _Stop("full", f"device full (free {free} MB)")
    if code in GONE:
        return _Stop("gone", f"device gone: {os.strerror(code)} writing {rel or root}")
    if code in READ_ONLY:
        return _Stop(
            "refused",
            f"cannot write to {root}: read-only file system. Remount it read-write "
            "(or slide the card's lock switch off) and sync again.",
        )
    if code in DENIED:
        return _Stop(
            "refused",
            f"cannot write to {root / rel}: permission denied. Mount the drive writable for "
            "the user midid runs as (uid=/gid= options for FAT/exFAT) and sync again.",
        )
    return None


def flush(root: Path) -> None:
    """Make every write below ``root`` durable with one ``syncfs``: for files written outside
    :func:`copy_batch` (``.progression`` files), whose renames must not be lost once recorded."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _syncfs(fd)
    finally:
        os.close(fd)


def stop_reason(exc: OSError, root: Path, rel: str = "") -> str | None:
    """Why a failed write of ``rel`` below ``root`` stops the whole sync (``device full (free
    X MB)``, ``device gone: ...``, read-only, denied), or None if it concerns that file only.

    For writes made outside :func:`copy_batch` (``.progression`` files), worded as it words them.
    """
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        root_fd = None
    try:
        stop = _stop_for(exc, root, root_fd, rel)
    finally:
        if root_fd is not None:
            os.close(root_fd)
    return stop.reason if stop else None


def _split(dest_rel: str) -> tuple[tuple[str, ...], str]:
    """Folder components and file name of a safe relative path; ValueError if unsafe."""
    path = PurePosixPath(dest_rel)
    parts = path.parts
    if (
        not parts
        or path.is_absolute()
        or any(p in ("", ".", "..") for p in parts)
        or parts[-1].startswith(TEMP_PREFIX)
    ):
        raise ValueError(f"unsafe destination path {dest_rel!r}")
    return parts[:-1], parts[-1]


class _Folders:
    """Folder descriptors below the root, created on demand, never through symlinks."""

    def __init__(self, root_fd: int) -> None:
        self.fds: dict[tuple[str, ...], int] = {(): root_fd}

    def get(self, parts: tuple[str, ...]) -> int:
        for depth in range(1, len(parts) + 1):
            key = parts[:depth]
            if key in self.fds:
                continue
            parent = self.fds[key[:-1]]
            try:
                os.mkdir(key[-1], DIR_MODE, dir_fd=parent)
            except FileExistsError:
                pass
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            self.fds[key] = os.open(key[-1], flags, dir_fd=parent)
        return self.fds[parts]

    def close(self) -> None:
        for key, fd in self.fds.items():
            if key:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _existing(dir_fd: int, name: str) -> bytes | None:
    """The bytes of ``name`` if it exists in the folder, else None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        log.debug("could not remove temp %s: %s", name, exc)


def _write_temp(dir_fd: int, data: bytes) -> str:
    """Write ``data`` to a new temp file in the folder; on any error the temp is removed."""
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, FILE_MODE, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_mode & 0o7777 != FILE_MODE:  # the umask took bits away
            try:
                os.fchmod(fd, FILE_MODE)
            except PermissionError:
                log.debug("file system keeps no modes; mode comes from the mount options")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink_quietly(temp, dir_fd)
        raise
    os.close(fd)
    return temp


def copy_batch(items: Sequence[CopyItem], root: Path) -> CopyResult:
    """Copy ``items`` below ``root`` atomically per file and durably per batch.

    Items that are neither copied nor failed when ``stopped`` is set were not attempted or
    were rolled back; the caller retries them later.
    """
    result = CopyResult()
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        stop = _stop_for(exc, root, None, "")
        result.stopped = stop.reason if stop else f"cannot open {root}: {exc.strerror}"
        log.warning("export to %s not started: %s", root, result.stopped)
        return result
    folders = _Folders(root_fd)
    staged: list[_Staged] = []
    try:
        for item in items:
            _stage(item, folders, root, root_fd, staged, result)
        _finish(staged, root, root_fd, result)
    except _Stop as stop:
        result.stopped = stop.reason
        if stop.kind == "full":
            _finish_after_full(staged, root, root_fd, result)
        elif stop.kind == "refused":
            for st in staged:
                _unlink_quietly(st.temp, st.dir_fd)
        log.warning("export to %s stopped: %s", root, stop.reason)
    finally:
        folders.close()
        os.close(root_fd)
    log.debug(
        "batch to %s: %d copied, %d failed, %d bytes",
        root, len(result.copied), len(result.failed), result.bytes,
    )  # fmt: skip
    return result


def _stage(
    item: CopyItem,
    folders: _Folders,
    root: Path,
    root_fd: int,
    staged: list[_Staged],
    result: CopyResult,
) -> None:
    """Write one item to its temp name, or settle it (already there, failed); may raise _Stop."""
    try:
        parts, name = _split(item.dest_rel)
    except ValueError as exc:
        result.failed.append((item, str(exc)))
        return
    try:
        data = item.src.read_bytes()
    except OSError as exc:
        result.failed.append((item, f"cannot read source {item.src}: {exc.strerror or exc}"))
        return
    try:
        dir_fd = folders.get(parts)
        there = _existing(dir_fd, name)
        if there is None:
            staged.append(_Staged(item, dir_fd, _write_temp(dir_fd, data), name, len(data)))
        elif there == data:
            result.copied.append(item)
        else:
            clash = f"{item.dest_rel} exists with other content; not overwritten"
            result.failed.append((item, clash))
    except OSError as exc:
        stop = _stop_for(exc, root, root_fd, item.dest_rel)
        if stop is not None:
            raise stop from exc
        result.failed.append((item, f"cannot write {item.dest_rel}: {exc.strerror or exc}"))


def _finish(staged: list[_Staged], root: Path, root_fd: int, result: CopyResult) -> None:
    """Flush the temps, rename them into place, flush again; then report them copied."""
    if not staged:
        return
    rel = staged[0].item.dest_rel
    try:
        _syncfs(root_fd)
        renamed: list[_Staged] = []
        for st in staged:
            if st.renamed:  # by an earlier attempt (see _finish_after_full)
                renamed.append(st)
                continue
            if _exists(st.dir_fd, st.name):  # appeared since staging: not ours
                _unlink_quietly(st.temp, st.dir_fd)
                clash = f"{st.item.dest_rel} appeared meanwhile; not overwritten"
                result.failed.append((st.item, clash))
                continue
            rel = st.item.dest_rel
            os.rename(st.temp, st.name, src_dir_fd=st.dir_fd, dst_dir_fd=st.dir_fd)
            st.renamed = True
            renamed.append(st)
        _syncfs(root_fd)  # the renames and new folders: one commit instead of one per folder
    except OSError as exc:
        stop = _stop_for(exc, root, root_fd, rel)
        raise (stop or _Stop("gone", f"device gone: {exc.strerror or exc}")) from exc
    staged.clear()
    result.copied.extend(st.item for st in renamed)
    result.bytes += sum(st.size for st in renamed)


def _finish_after_full(
    staged: list[_Staged], root: Path, root_fd: int, result: CopyResult
) -> None:
    """Keep the files written before the device filled up.

    Renaming them can itself need room (a folder growing by a block), so the newest temps are
    given up one at a time until the renames fit; on any other failure every temp goes.
    """
    while staged:
        try:
            _finish(staged, root, root_fd, result)
            return
        except _Stop as stop:
            waiting = [st for st in staged if not st.renamed]
            if stop.kind != "full" or not waiting:
                log.warning("could not keep completed files on %s: %s", root, stop.reason)
                for st in staged:
                    _unlink_quietly(st.temp, st.dir_fd)
                return
            staged.remove(waiting[-1])
            _unlink_quietly(waiting[-1].temp, waiting[-1].dir_fd)


def remove_stale_temps(root: Path) -> int:
    """Delete ``.midid-tmp-*`` files left below ``root`` by an interrupted batch; returns how many.

    Only regular files with that prefix are touched; symlinks are not followed.
    """
    removed = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if name.startswith(TEMP_PREFIX) and path.is_file() and not path.is_symlink():
                try:
                    path.unlink()
                    removed += 1
                except OSError as exc:
                    log.warning("cannot remove stale temp %s: %s", path, exc)
    if removed:
        log.info("removed %d stale temp files below %s", removed, root)
    return removed
