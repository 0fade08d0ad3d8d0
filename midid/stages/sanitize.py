"""Library names that the Akai MPC browser, FAT32/exFAT and ext4 all accept, and a shell too.

Rules, applied in this order to one path component:

1. non-ASCII text is folded to ASCII with ``anyascii`` (``Café Beat`` -> ``Cafe Beat``);
2. whitespace (spaces, tabs, newlines) becomes ``_``;
3. characters FAT refuses (``<>:"/\\|?*``), control characters, quotes and backticks are
   removed (``Don't`` -> ``Dont``);
4. every other character outside ``A-Z a-z 0-9 . _ -`` (shell-hostile ones such as
   ``$ ; & ! ( ) { } [ ] # % ~ @ ^ = + ,``) becomes ``_``;
5. runs of ``_`` collapse to one, a ``-`` with ``_`` around it collapses to ``-``
   (``Artist_-_Song`` -> ``Artist-Song``), a run of ``.`` with ``_`` or ``-`` around it
   collapses to ``.`` (``final_.mid`` -> ``final.mid``);
6. leading and trailing ``. _ -`` are stripped (FAT refuses trailing dots and spaces, a
   leading ``-`` reads as an option to shell tools, a leading dot hides the file);
7. Windows-reserved device names (CON, PRN, AUX, NUL, COM1-9, LPT1-9, also before any
   extension) get a ``_`` appended to their first part: ``CON.mid`` -> ``CON_.mid``;
8. an empty result becomes ``untitled``.

Length: a file name is at most 64 characters including ``.mid``, a folder name at most 48.
FAT allows 255 UTF-16 units per component, but the MPC browser shows roughly 30-40
characters of a name and the whole path has to stay well under the 260-character limit some
tools still impose; 64 keeps names whole on screen in list view while leaving room for the
collision suffix. Library paths keep only the last 4 folder levels for the same reason
(4 * 49 + 64 = 260 worst case, typically far less).

All functions are pure: whether a name is taken is asked of a predicate the caller supplies.
"""

from __future__ import annotations

import functools

import re
from collections.abc import Callable, Sequence

from anyascii import anyascii

__all__ = [
    "DIRNAME_MAX",
    "FILENAME_MAX",
    "MAX_FOLDER_LEVELS",
    "clean_component",
    "library_relpath",
    "sanitize_dirname",
    "sanitize_filename",
]

FILENAME_MAX = 64  # characters, including the ".mid" extension
DIRNAME_MAX = 48  # characters
MAX_FOLDER_LEVELS = 4
MIDI_EXT = ".mid"
UNTITLED = "untitled"
SUFFIX_MIN_HASH = 6  # hash characters in the first collision suffix

# Extensions that mean "this is a MIDI file"; they all become ".mid".
MIDI_EXTENSIONS = (".mid", ".midi", ".kar", ".rmi", ".smf")

# Archive extensions stripped from folder names made from archives; longest first so
# ".tar.gz" wins over ".gz".
ARCHIVE_EXTENSIONS = (
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tar.lz", ".tar.lzma",
    ".zip", ".7z", ".rar", ".tar", ".tgz", ".tbz", ".tbz2", ".txz", ".tzst",
    ".gz", ".bz2", ".xz", ".zst", ".lzh", ".lha", ".cab", ".iso",
)  # fmt: skip

RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)

_WHITESPACE = re.compile(r"\s+")
_REMOVED = re.compile(r"[<>:\"/\\|?*'`\x00-\x1f\x7f]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_UNDERSCORES = re.compile(r"_{2,}")
_DASH = re.compile(r"_*-[-_]*")
_DOTS = re.compile(r"[_-]*\.[._-]*")
_EDGE = "._- "
_HASH_CHARS = re.compile(r"[^0-9a-z]")


def clean_component(text: str, max_len: int) -> str:
    """Apply rules 1-6 and truncate to ``max_len`` characters; may return ``""``.

    Used for whole names and for pieces of names (such as split-part labels).
    """
    text = anyascii(text)
    text = _WHITESPACE.sub("_", text)
    text = _REMOVED.sub("", text)
    text = _UNSAFE.sub("_", text)
    text = _UNDERSCORES.sub("_", text)
    text = _DASH.sub("-", text)
    text = _DOTS.sub(".", text)
    text = text.strip(_EDGE)
    return text[:max_len].rstrip(_EDGE)


def _finish(stem: str, max_len: int) -> str:
    """Apply rules 7-8 to a cleaned stem and bound its length to ``max_len``."""
    if not stem:
        return UNTITLED
    head, dot, rest = stem.partition(".")
    if head.upper() in RESERVED_NAMES:
        # Appending after the head keeps it readable; the bound can only cut the tail.
        stem = (head + "_" + dot + rest)[:max_len].rstrip(". ")
    return stem


def _clean_stem(name: str, suffixes: Sequence[str], max_len: int) -> str:
    """Strip any of ``suffixes`` (case-insensitive) and clean ``name`` until no suffix is left.

    Repeating makes the result idempotent: ``Pack.7z.zip`` and ``Pack.zip.`` (a suffix that
    only shows once the trailing dot is cleaned away) both end as ``Pack``. Cleaning is itself
    idempotent, so a cleaned stem without a suffix is final and is not cleaned again.
    """
    stem, ends = name, tuple(suffixes)
    lowered = stem.lower()
    while True:
        for suffix in ends:
            if lowered.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        stem = clean_component(stem, max_len)
        lowered = stem.lower()
        if not lowered.endswith(ends):
            return stem


def sanitize_filename(name: str) -> str:
    """Make one library file name; the result always ends in ``.mid``.

    Any MIDI extension (``.midi``, ``.MID``, ``.kar``, ``.rmi``, ``.smf``; repeated ones too)
    is replaced; a name without one keeps its whole text as the stem
    (``song.v2`` -> ``song.v2.mid``).
    """
    max_stem = FILENAME_MAX - len(MIDI_EXT)
    return _finish(_clean_stem(name, MIDI_EXTENSIONS, max_stem), max_stem) + MIDI_EXT


@functools.lru_cache(maxsize=8192)
def sanitize_dirname(name: str) -> str:
    """Make one library folder name; archive extensions go (``Trap Pack.zip`` -> ``Trap_Pack``)."""
    return _finish(_clean_stem(name, ARCHIVE_EXTENSIONS, DIRNAME_MAX), DIRNAME_MAX)


def _suffixed(filename: str, suffix: str) -> str:
    """Insert ``_suffix`` before ``.mid``, shortening the stem to stay within the bound."""
    stem = filename[: -len(MIDI_EXT)]
    room = FILENAME_MAX - len(MIDI_EXT) - len(suffix) - 1
    stem = stem[:room].rstrip(_EDGE)
    return f"{stem}_{suffix}{MIDI_EXT}"


def library_relpath(
    folders: Sequence[str],
    filename: str,
    content_hash: str,
    taken: Callable[[str], bool],
) -> str:
    """The ``/``-joined library path for a file, unique according to ``taken``.

    ``folders`` are the source folder (and archive) names from outermost to innermost; empty
    ones and ``.``/``..`` are skipped and only the last 4 are kept. When ``taken(path)`` is
    true the file name gets a suffix from ``content_hash`` (6 characters, then more while
    still taken), so a given file lands on the same name whatever the import order.
    ``taken`` is expected to compare case-insensitively (FAT is); this function only calls it.
    """
    kept = [f for f in folders if f.strip() not in ("", ".", "..")]
    dirs = [sanitize_dirname(f) for f in kept][-MAX_FOLDER_LEVELS:]
    name = sanitize_filename(filename)
    prefix = "".join(d + "/" for d in dirs)
    if not taken(prefix + name):
        return prefix + name
    digest = _HASH_CHARS.sub("", content_hash.lower()) or "0"
    for length in range(SUFFIX_MIN_HASH, len(digest) + 1):
        candidate = prefix + _suffixed(name, digest[:length])
        if not taken(candidate):
            return candidate
    counter = 2
    while True:
        candidate = prefix + _suffixed(name, f"{digest[:SUFFIX_MIN_HASH]}_{counter}")
        if not taken(candidate):
            return candidate
        counter += 1
