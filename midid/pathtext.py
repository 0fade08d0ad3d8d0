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


def path_text(path: str | os.PathLike[str]) -> str:
    """``path`` unchanged when it is valid text, else with its undecodable bytes as ``\\xNN``."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text
