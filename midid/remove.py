"""`midictl remove`: take files out of the library - a pack a producer does not want on the MPC.

The library keeps its copy when a source is deleted (the library is the collection), and
`midictl check --repair` restores a library file deleted by hand from its source, so without
this there is no way to drop anything. Removing deletes the files first, then their rows in one
transaction: after a crash in between, the rows are still there to find, and running the same
`midictl remove` again finishes it (a folder's leftovers go with the folder).

Sources are never touched. Their catch-up records stay, so the start-up scan and `midictl
rescan` find them unchanged and do not bring the files back; importing them again by hand (or
dropping them into a watched folder again) does. With `[sources] mode = "move"` the library
file was the source: it is gone for good.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .db import Library
from .durable import STAGING
from .pathtext import path_text


class RemoveError(Exception):
    """A path that cannot be removed from the library; the message says why."""


@dataclass
class RemoveSummary:
    removed: list[str] = field(default_factory=list)  # library paths, parts included
    parts: int = 0
    dry_run: bool = False
    kept: int = 0  # files a source path named that stay: imported from elsewhere too

    def to_dict(self) -> dict[str, object]:
        return {"removed": self.removed, "files": len(self.removed), "parts": self.parts,
                "kept": self.kept, "dry_run": self.dry_run}


def targets(lib: Library, root: Path, given: str, cwd: Path) -> tuple[list[str], int]:
    """The library paths one argument of `midictl remove` names, and how many files it names
    that stay.

    An argument is a library file or folder - absolute (what `find --paths` prints) or
    relative to the library (what `find` shows), or to the current folder inside it - or a
    source a pack was imported from: a folder or archive (on disk or deleted since), given as
    the user knows it. A source names the library files imported from it, except those also
    imported from elsewhere (a loop two packs share stays with the other pack): they are
    counted as kept."""
    root = Path(os.path.abspath(root))
    if os.path.isabs(given):
        absolute = Path(os.path.abspath(given))
    else:
        absolute = Path(os.path.abspath(root / given))
        if not absolute.is_relative_to(root) or not (
                os.path.lexists(absolute) or lib.files_under(absolute.relative_to(root).as_posix())):
            absolute = Path(os.path.abspath(cwd / given))
    if absolute == root:
        raise RemoveError(f"{given} is the whole library; to start over, stop midid and delete the "
                          "library folder and its database")
    if absolute.is_relative_to(root):
        rel = absolute.relative_to(root).as_posix()
        if rel.split("/", 1)[0] == STAGING:
            raise RemoveError(f"{given} is midid's staging folder, not part of the library")
        return [rel], 0
    removed, kept = lib.files_from_source(path_text(absolute.resolve()))
    if not removed and not kept:
        raise RemoveError(f"{given} is neither in the library folder {root} nor a source midid imported"
                          " files from: give a path as `midictl find` shows it")
    return removed, kept


def remove_from_library(lib: Library, root: Path, relpaths: list[str], *, dry_run: bool = False) -> RemoveSummary:
    """Remove the files at or under ``relpaths`` (and their split parts) from the library."""
    rows, missing = [], []
    for rel in relpaths:
        found = lib.files_under(rel)
        if not found and not os.path.lexists(root / rel):
            missing.append(rel)
        rows += found
    if missing:
        raise RemoveError(f"nothing in the library at {', '.join(missing)} (`midictl find` shows library paths)")
    rows = sorted({row[0]: row for row in rows}.values())  # a file named twice (a folder and a file in it)
    summary = RemoveSummary([p for _, p, _ in rows], sum(part for _, _, part in rows), dry_run)
    if dry_run:
        return summary
    for rel in summary.removed:
        try:
            (root / rel).unlink()
        except FileNotFoundError:  # gone already: a removal cut short
            pass
    for rel in relpaths:  # what no row names: leftovers of a crash or of a hand edit
        target = root / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()
    lib.remove_files([i for i, _, _ in rows])
    _prune_empty_folders(root, {(root / p).parent for p in summary.removed} | {(root / r).parent for r in relpaths})
    return summary


def _prune_empty_folders(root: Path, folders: set[Path]) -> None:
    """Remove folders left empty, up to (not including) the library root."""
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone with a deeper one
                if folder.exists():
                    break
            folder = folder.parent
