"""``<root>/midid_index.json``: what midid exported to a drive, readable without midid.

One entry per exported file. The file is replaced whole and atomically (temp name, fsync,
rename, fsync of the folder), so a pulled drive holds either the old index or the new one.
Its temp name uses the copy temp prefix, so :func:`midid.export.copy.remove_stale_temps`
also cleans up after an interrupted write.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from midid.export.copy import FILE_MODE, TEMP_PREFIX

__all__ = ["INDEX_NAME", "INDEX_VERSION", "ENTRY_KEYS", "write_index"]

log = logging.getLogger(__name__)

INDEX_NAME = "midid_index.json"
INDEX_VERSION = 1
ENTRY_KEYS = ("path", "hash", "category", "bpm", "key", "tags", "source", "exported_at")


def _check(entries: Sequence[dict]) -> None:
    for number, entry in enumerate(entries):
        missing = [k for k in ENTRY_KEYS if k not in entry]
        if missing:
            where = f"index entry {number} ({entry.get('path')!r})"
            raise ValueError(f"{where} lacks {', '.join(missing)}")
        path = str(entry["path"])
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"index entry {number}: path {path!r} must be relative to the root")


def write_index(root: Path, entries: list[dict]) -> None:
    """Atomically write the index of ``entries`` to ``<root>/midid_index.json``.

    Each entry has ``path`` (``/``-joined, relative to ``root``), ``hash`` (the library's
    content hash), ``category``, ``bpm`` (float or None), ``key`` (e.g. ``"A:min"`` or None),
    ``tags`` (list of str), ``source`` (original file or pack name) and ``exported_at`` (ISO
    8601 UTC text); extra keys are kept. Raises ValueError for a malformed entry, OSError from
    the drive.
    """
    _check(entries)
    body = json.dumps(
        {"version": INDEX_VERSION, "files": entries}, ensure_ascii=False, indent=1, sort_keys=True
    ).encode()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, FILE_MODE, dir_fd=root_fd)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, INDEX_NAME, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        os.fsync(root_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=root_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(root_fd)
    log.debug("wrote %s with %d entries", root / INDEX_NAME, len(entries))
