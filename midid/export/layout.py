"""Where an exported file lands on an MPC or Force drive: one table, one path function.

Paths are ``/``-joined and relative to the drive's mount point, so they are the same on every
host and can be stored as they are in the ``exports`` table. Every component is FAT/exFAT-legal
(see :mod:`midid.stages.sanitize`).

FAT and exFAT compare names case-insensitively, so ``taken`` predicates given to these
functions must too (``Kick.mid`` and ``KICK.mid`` are the same file on the drive).

Profiles:

- ``mpc`` (MPC One / Live / X / Key): the seed design, MIDI parts sorted like sample folders
  under ``SAMPLES/`` so the MPC browser's folder view groups them the way producers expect.
- ``force`` (Akai Force): the Force browser has no ``SAMPLES`` convention and shows MIDI files
  as clips; parts go under ``MIDI/`` with the same sub-folders, progressions stay in
  ``Progressions`` where Pad Perform looks for them on both machines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath

from midid.stages.sanitize import FILENAME_MAX, RESERVED_NAMES, sanitize_dirname, sanitize_filename

__all__ = [
    "CATEGORIES",
    "DEFAULT_ROOT",
    "LAYOUTS",
    "PROGRESSIONS_CATEGORY",
    "export_relpath",
    "progression_relpath",
]

log = logging.getLogger(__name__)

DEFAULT_ROOT = "MPC_Documents"
PROGRESSIONS_CATEGORY = "Progressions"
PROGRESSION_EXT = ".progression"
MIDI_EXT = ".mid"

_MPC = {
    "DrumKicks": "SAMPLES/Drums/Kicks",
    "DrumSnares": "SAMPLES/Drums/Snares",
    "DrumHats": "SAMPLES/Drums/Hats",
    "DrumCymbals": "SAMPLES/Drums/Cymbals",
    "DrumToms": "SAMPLES/Drums/Toms",
    "DrumPerc": "SAMPLES/Drums/Percussion",
    "Drums": "SAMPLES/Drums",
    "Bass": "SAMPLES/Bass",
    "Melody": "SAMPLES/Melody",
    "Chords": "SAMPLES/Chords",
    "Progressions": "Progressions",
    "FX": "SAMPLES/FX",
    "Loops": "SAMPLES/Loops",
}

_FORCE = {
    category: folder.replace("SAMPLES/", "MIDI/", 1) for category, folder in _MPC.items()
}

LAYOUTS: dict[str, dict[str, str]] = {"mpc": _MPC, "force": _FORCE}
CATEGORIES: tuple[str, ...] = tuple(_MPC)


def _never_taken(_relpath: str) -> bool:
    return False


def _category_folder(profile: str, category: str) -> str:
    layout: Mapping[str, str] | None = LAYOUTS.get(profile)
    if layout is None:
        raise ValueError(f"unknown export profile {profile!r}; allowed: {', '.join(LAYOUTS)}")
    folder = layout.get(category)
    if folder is None:
        raise ValueError(
            f"unknown export category {category!r}; allowed: {', '.join(CATEGORIES)}"
        )
    return folder


def _unique(folder: str, stem: str, ext: str, taken: Callable[[str], bool]) -> str:
    """``folder/stem.ext``, or ``folder/stem_2.ext``, ``_3`` … while ``taken`` says so.

    The stem is shortened so the (suffixed) name stays within ``FILENAME_MAX`` characters.
    """
    base = stem[: FILENAME_MAX - len(ext)].rstrip("._-")
    if base.partition(".")[0].upper() in RESERVED_NAMES:
        base += "_"  # the "_" sanitize put after a device name (CON_.mid) stays: Windows refuses CON.mid
    candidate = f"{folder}/{base}{ext}"
    counter = 2
    while taken(candidate):
        suffix = f"_{counter}"
        room = max(FILENAME_MAX - len(ext) - len(suffix), 1)
        candidate = f"{folder}/{stem[:room].rstrip('._-')}{suffix}{ext}"
        counter += 1
    return candidate


def export_relpath(
    profile: str,
    category: str,
    pack: str | None,
    library_name: str,
    root: str = DEFAULT_ROOT,
    taken: Callable[[str], bool] = _never_taken,
) -> str:
    """The drive-relative path for one exported MIDI file, e.g.
    ``MPC_Documents/SAMPLES/Drums/Kicks/Trap_Pack/Kick_01.mid``.

    ``pack`` (the source folder or archive name) becomes a sub-folder of the category folder;
    ``None`` or empty puts the file directly in it. Only the last component of
    ``library_name`` is used (library names may carry the library's folders). ``root`` may be
    ``""`` to export at the top of the drive; its components are sanitized too. When
    ``taken(path)`` is true (case-insensitively, as on FAT) the name gets ``_2``, ``_3`` ….
    Unknown profile or category raises ValueError naming the allowed values.
    """
    folder = _category_folder(profile, category)
    parts = [sanitize_dirname(p) for p in PurePosixPath(root).parts if p not in ("/", ".", "..")]
    parts.extend(folder.split("/"))
    if pack and pack.strip():
        parts.append(sanitize_dirname(pack))
    name = sanitize_filename(PurePosixPath(library_name.replace("\\", "/")).name)
    return _unique("/".join(parts), name[: -len(MIDI_EXT)], MIDI_EXT, taken)


def progression_relpath(
    profile: str,
    library_name: str,
    root: str = DEFAULT_ROOT,
    taken: Callable[[str], bool] = _never_taken,
) -> str:
    """The drive-relative path of the Pad Perform ``.progression`` file made from a MIDI file.

    Progression files go flat into the profile's ``Progressions`` folder, with no pack
    sub-folder: Pad Perform lists that folder's files and is not known to descend into
    sub-folders. The name is the MIDI file's sanitized stem with ``.progression``.
    """
    relpath = export_relpath(profile, PROGRESSIONS_CATEGORY, None, library_name, root)
    folder, _, name = relpath.rpartition("/")
    return _unique(folder, name[: -len(MIDI_EXT)], PROGRESSION_EXT, taken)
