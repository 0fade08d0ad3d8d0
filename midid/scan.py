"""Find every MIDI file under some paths: files, folders, archives, archives in archives.

The import stage's first step. Each regular file on disk and each file entry inside an
archive yields exactly one result — FoundMidi, Skipped or Failed — so nothing is lost or
counted twice; archives yield their contents instead of themselves (see `midid.archive`).
Folders are walked depth-first in sorted name order, so two scans of the same tree yield
the same sequence.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator

from midid.archive import (
    Failed,
    FoundMidi,
    Item,
    Limits,
    Origin,
    Skipped,
    VANISHED,
    walk_archive,
)
from midid.sniff import SNIFF_BYTES, midi_payload, sniff_kind

__all__ = ["Failed", "FoundMidi", "Item", "Limits", "Origin", "Skipped", "scan"]

log = logging.getLogger(__name__)

Unchanged = Callable[[str, int, float], bool]
"""`unchanged(path, size_bytes, mtime_seconds)`: True when the library already has this file."""


def scan(paths: Iterable[str], limits: Limits = Limits(), *,
         unchanged: Unchanged | None = None,
         follow_symlinks: bool = False) -> Iterator[Item]:
    """Yield one FoundMidi, Skipped or Failed per file and per archive member under `paths`.

    `paths` may mix files, folders and archives; relative paths are made absolute. A
    symbolic link — one of `paths` itself or one met in a folder — is reported as Skipped
    and not followed unless `follow_symlinks`; resolve configured roots beforehand if
    they may be links. When `unchanged` returns True for an on-disk file it is Skipped
    with reason "unchanged" without being opened. Files that vanish or cannot be read
    mid-scan yield Failed and the scan goes on.
    """
    visited: set[tuple[int, int]] = set()
    for path in paths:
        yield from _scan_path(os.path.abspath(path), limits, unchanged, follow_symlinks, visited)


def _scan_path(path: str, limits: Limits, unchanged: Unchanged | None,
               follow_symlinks: bool, visited: set[tuple[int, int]]) -> Iterator[Item]:
    origin = Origin(path)
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            if not follow_symlinks:
                yield Skipped(origin, "symbolic link not followed")
                return
            info = os.stat(path)
    except FileNotFoundError:
        yield Failed(origin, VANISHED)
        return
    except OSError as error:
        yield Failed(origin, _unreadable(error))
        return
    if stat.S_ISDIR(info.st_mode):
        yield from _scan_folder(path, info, limits, unchanged, follow_symlinks, visited)
    elif stat.S_ISREG(info.st_mode):
        yield from _scan_file(origin, info, limits, unchanged)
    else:
        yield Skipped(origin, "not a regular file (device, fifo or socket)")


def _scan_folder(path: str, info: os.stat_result, limits: Limits,
                 unchanged: Unchanged | None, follow_symlinks: bool,
                 visited: set[tuple[int, int]]) -> Iterator[Item]:
    """Children in sorted order; a folder reached twice (through links) is walked once."""
    key = (info.st_dev, info.st_ino)
    if key in visited:
        yield Skipped(Origin(path), "folder already scanned (reached again through a link)")
        return
    visited.add(key)
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        yield Failed(Origin(path), VANISHED)
        return
    except OSError as error:
        yield Failed(Origin(path), _unreadable(error))
        return
    for name in names:
        yield from _scan_path(os.path.join(path, name), limits, unchanged, follow_symlinks,
                              visited)


def _scan_file(origin: Origin, info: os.stat_result, limits: Limits,
               unchanged: Unchanged | None) -> Iterator[Item]:
    if unchanged is not None and unchanged(origin.path, info.st_size, info.st_mtime):
        yield Skipped(origin, "unchanged")
        return
    try:
        with open(origin.path, "rb") as file:
            head = file.read(SNIFF_BYTES)
            kind = sniff_kind(head)
            if kind == "midi":
                if info.st_size > limits.max_midi_bytes:
                    yield Failed(origin, f"refused: MIDI file larger than "
                                         f"{limits.max_midi_bytes:,} bytes (Limits.max_midi_bytes)")
                    return
                # Sized from stat: a read of the whole limit allocates that much for every
                # small file. One byte more than expected tells that the file is growing.
                data = head + file.read(max(0, info.st_size + 1 - len(head)))
                if len(data) > info.st_size:
                    data += file.read(max(0, limits.max_midi_bytes + 1 - len(data)))
    except FileNotFoundError:
        yield Failed(origin, VANISHED)
        return
    except OSError as error:
        yield Failed(origin, _unreadable(error))
        return
    if kind == "archive":
        yield from walk_archive(origin.path, limits, info.st_size, info.st_mtime)
    elif kind == "other":
        yield Skipped(origin, "not MIDI")
    elif len(data) > limits.max_midi_bytes:
        yield Failed(origin, f"refused: MIDI file grew past {limits.max_midi_bytes:,} bytes "
                             "while being read (Limits.max_midi_bytes)")
    else:
        payload = midi_payload(data)
        if payload is None:
            yield Skipped(origin, "not MIDI: RIFF RMID file without a MIDI data chunk")
        else:
            yield FoundMidi(origin, payload, info.st_size, info.st_mtime)


def _unreadable(error: OSError) -> str:
    return f"cannot read: {error.strerror or error}; check the file's permissions"
