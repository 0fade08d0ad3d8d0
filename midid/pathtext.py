"""On-disk paths as text the library database can hold.

Linux file names are bytes. Python reads a name that is not UTF-8 - a Latin-1 "é" from an old
Windows pack, copied as is - with surrogate escapes, which no UTF-8 text column (nor a
terminal, nor JSON written as UTF-8) accepts. Such a name is stored with each of its bad bytes
written ``\\xNN``, as ``ls -b`` and Python's repr show them: the same text for the same name
each time, so a row written at import matches the watcher's later events for that file, and
a user can still tell which file it is. Files are always opened by their real path, never by
this text.
"""

from __future__ import annotations

import os
import re

_ESCAPED = re.compile(rb"\\x([0-9a-f]{2})")
_HIGH_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")  # the only bytes path_text escapes are >= 0x80


def path_text(path: str | os.PathLike[str]) -> str:
    """``path`` unchanged when it is valid text, else with its undecodable bytes as ``\\xNN``."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def readable(text: str) -> str:
    """``text`` with each ``\\xNN`` read as the Windows-1252 letter it most likely was (``é``
    for ``\\xe9``): the library file made from such a name is ``Cafe/melodie.mid``, as the
    MPC shows it, not ``Cafxe9/mxe9lodie.mid``. For names only, never to find a file."""
    if "\\x" not in text:
        return text
    return _HIGH_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]).decode("cp1252", "replace"), text)


def disk_path(text: str) -> str:
    """The path on disk that :func:`path_text` wrote as ``text``: ``text`` itself when it
    exists (a name may hold a literal ``\\x41``), else with its ``\\xNN`` read back as bytes."""
    if "\\x" not in text or os.path.lexists(text):
        return text
    return os.fsdecode(_ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8")))
