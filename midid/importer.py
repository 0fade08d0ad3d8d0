"""The import stage's edge: from scanned MIDI bytes to durable library files and rows.

`scan` (pure walking of folders and archives) yields what it found; this module hashes,
deduplicates against the library and within the batch, names each new file with the sanitize
stage, writes the batch durably and commits its rows in one transaction. Duplicates become
aliases in `sources`; nothing found is ever dropped from the accounting.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from .config import Config
from .db import Library
from .durable import BatchWriter, clear_staging
from .hashing import content_hash
from .metadata import bpm_stated_tag, bpm_tag, key_tag, name_metadata
from .pathtext import path_text, readable
from .scan import Failed, FoundMidi, Limits, Skipped, scan
from .stages.sanitize import library_relpath

log = logging.getLogger(__name__)

_ARCHIVE_EXT = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tbz2", ".txz", ".zip", ".7z", ".rar", ".tar")


@dataclass
class ImportSummary:
    seen: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"seen": self.seen, "imported": self.imported, "duplicates": self.duplicates,
                "skipped": self.skipped, "errors": self.errors, "elapsed_s": round(self.elapsed_s, 3),
                "failed": list(self.failed)}

    def add(self, other: "ImportSummary") -> None:
        for name in ("seen", "imported", "duplicates", "skipped", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed.extend(other.failed)


def limits_from(cfg: Config) -> Limits:
    c = cfg.import_
    return Limits(max_depth=c.max_archive_depth, max_extracted_bytes=c.max_extracted_bytes,
                  max_members=c.max_members, max_ratio=c.max_ratio, max_midi_bytes=c.max_midi_bytes)


def archive_stem(name: str) -> str:
    lower = name.lower()
    for ext in _ARCHIVE_EXT:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def placement(origin_path: str, members: tuple[str, ...], roots: Iterable[Path]
              ) -> tuple[list[str], list[str], list[str], str]:
    """Where a found file sits, as the user sees it: (folders, archives, all folder levels, file name).

    Folders are taken relative to the import root it came from (the root folder's own name
    is the pack when files lie directly in it); each archive becomes a folder named after it,
    and folders inside archives follow.
    """
    disk = Path(origin_path)
    inner: list[str] = [disk.name]
    outer = disk.parent.name  # the folder holding it when nothing better is known
    root_set = roots if isinstance(roots, (set, frozenset)) else set(roots)
    for parent in disk.parents:  # nearest enclosing root; O(depth), not O(roots)
        if parent in root_set:
            inner = list(disk.relative_to(parent).parts)
            outer = parent.name
            break
    if not members:
        folders = inner[:-1] or [outer]
        return folders, [], folders, inner[-1]
    # An archive is a pack of its own: the import root's name does not go in front of it.
    disk_folders = inner[:-1]
    archives = [archive_stem(inner[-1])]
    levels = [*disk_folders, archives[0]]
    for member in members[:-1]:
        parts = [p for p in PurePosixPath(member.replace("\\", "/")).parts if p not in ("", "/")]
        levels += parts[:-1]
        archives.append(archive_stem(parts[-1]) if parts else "archive")
        levels.append(archives[-1])
    last = [p for p in PurePosixPath(members[-1].replace("\\", "/")).parts if p not in ("", "/")]
    levels += last[:-1]
    # "Pack.zip" holding a "Pack/" folder is one level to a user, not two.
    levels = [lv for i, lv in enumerate(levels) if i == 0 or lv != levels[i - 1]]
    name = last[-1] if last else "untitled.mid"
    folders = [lv for lv in levels if lv not in archives]
    return folders, archives, levels, name


@dataclass
class _Pending:
    item: FoundMidi
    digest: str
    levels: list[str]
    folders: list[str]
    archives: list[str]
    name: str


class Importer:
    """Runs the import stage into one library; the caller owns the Library (one writer)."""

    def __init__(self, cfg: Config, library: Library, *, batch_size: int | None = None) -> None:
        self.cfg = cfg
        self.lib = library
        self.root = cfg.library_path
        # Import batches are larger than compute batches: each one pays two syncfs passes.
        self.batch_size = batch_size or 4 * cfg.pipeline.batch_size
        self.root.mkdir(parents=True, exist_ok=True)
        clear_staging(self.root)

    def run(self, paths: Iterable[str | os.PathLike[str]], *, catch_up: bool = False,
            progress: Callable[[ImportSummary], None] | None = None,
            folders: Iterable[str | os.PathLike[str]] = ()) -> ImportSummary:
        """Import everything under `paths`; `catch_up` skips files unchanged since the last scan.

        `folders` are source folders the paths may lie in (the daemon's watched folders): a
        file is placed relative to the nearest of them, so its pack keeps its name.
        """
        started = time.monotonic()
        self._run_started = time.time()
        inputs = [Path(p).resolve() for p in paths]
        roots = {Path(path_text(r)) for r in set(inputs) | {Path(f).resolve() for f in folders}}
        total = ImportSummary()
        unchanged = self.lib.unchanged if catch_up else None
        items = scan([str(r) for r in inputs], limits_from(self.cfg), unchanged=unchanged,
                     follow_symlinks=self.cfg.sources.follow_symlinks)
        self._carry: dict[str, dict[str, object]] = {}
        batches = _batched(items, self.batch_size)
        batch = next(batches, None)
        while batch is not None:
            following = next(batches, None)
            total.add(self._commit_batch(batch, roots, last=following is None))
            batch = following
            total.elapsed_s = time.monotonic() - started
            if progress:
                progress(total)
        total.elapsed_s = time.monotonic() - started
        return total

    def _commit_batch(self, batch: list[FoundMidi | Skipped | Failed], roots: set[Path], *,
                      last: bool) -> ImportSummary:
        """Write and commit one batch. The on-disk file the batch ends in may continue in the
        next batch (an archive's members), so it is marked scanned only with that next batch:
        a crash in between must not let the catch-up scan skip its remaining members."""
        out = ImportSummary(seen=len(batch))
        now = time.time()
        found: list[_Pending] = []
        failures: list[dict[str, object]] = []
        scanned, self._carry = self._carry, {}
        for item in batch:
            origin = item.origin
            stored = path_text(origin.path)
            if isinstance(item, FoundMidi):
                folders, archives, levels, name = placement(stored, origin.members, roots)
                found.append(_Pending(item, content_hash(item.data), levels, folders, archives, name))
                scanned[stored] = {"disk_path": stored, "size": item.size, "mtime": item.mtime,
                                   "seen_at": now, "outcome": "midi"}
            elif isinstance(item, Skipped):
                out.skipped += 1
                if not origin.members and item.reason != "unchanged":
                    self._note_scanned(scanned, origin.path, now, "skipped")
            else:
                out.errors += 1
                out.failed.append({"path": origin.display(), "error": item.error})
                failures.append({"origin": origin.display(), "stage": "import", "error": item.error, "at": now})
                if not origin.members:
                    self._note_scanned(scanned, origin.path, now, "failed")
        known = self.lib.known_hashes(p.digest for p in found)
        writer = BatchWriter(self.root)
        files: list[dict[str, object]] = []
        sources: list[dict[str, object]] = []
        tags: list[dict[str, object]] = []
        aliases: list[tuple[int, str, str]] = []
        taken_in_batch: set[str] = set()
        new_ids: dict[str, int] = {}
        next_id = self.lib.next_file_id()
        moved: list[Path] = []
        met_again: dict[int, FoundMidi] = {}
        try:
            for p in found:
                origin = p.item.origin
                file_id = known.get(p.digest) or new_ids.get(p.digest)
                if file_id is None:
                    file_id = next_id
                    next_id += 1
                    new_ids[p.digest] = file_id
                    relpath = library_relpath(
                        _bounded([readable(level) for level in p.levels]), readable(p.name), p.digest,
                        lambda rel: rel.casefold() in taken_in_batch or self.lib.path_taken(rel))
                    taken_in_batch.add(relpath.casefold())
                    self._stage(writer, relpath, p.item)
                    meta = name_metadata(readable(p.name), folders=[readable(f) for f in p.folders],
                                         archives=[readable(a) for a in p.archives])
                    files.append({
                        "id": file_id, "hash": p.digest, "size": len(p.item.data), "path": relpath,
                        "name": p.name, "pack": p.levels[0] if p.levels else "", "format": _smf_format(p.item.data),
                        "tracks": _smf_tracks(p.item.data), "added_at": now, "sanitized_at": now,
                    })
                    tags += [{"file_id": file_id, "tag": t.tag, "source": t.source} for t in meta.tags]
                    for word, source in ((meta.key_tonic and key_tag(meta.key_tonic, meta.key_mode or "major"), "filename"),
                                         (meta.bpm and bpm_tag(meta.bpm), "filename"),
                                         (meta.bpm and meta.bpm_stated and bpm_stated_tag(meta.bpm), "filename")):
                        if word:
                            tags.append({"file_id": file_id, "tag": word, "source": source})
                    out.imported += 1
                else:
                    out.duplicates += 1
                    aliases.append((file_id, p.name, p.levels[0] if p.levels else ""))
                    if p.digest in known:
                        met_again.setdefault(file_id, p.item)
                sources.append({"file_id": file_id, "origin": origin.display(), "disk_path": path_text(origin.path),
                                "kind": "archive" if origin.members else "file", "size": p.item.size,
                                "mtime": p.item.mtime, "seen_at": now, "missing": 0})
                if self.cfg.sources.mode == "move" and not origin.members:
                    moved.append(Path(origin.path))
            restored = self._restore_missing(writer, met_again)
            writer.publish()
        except OSError as exc:
            writer.discard()
            raise LibraryWriteError(self.root, exc) from exc
        open_path = path_text(batch[-1].origin.path)
        if not last and open_path in scanned:
            self._carry[open_path] = scanned.pop(open_path)
        self.lib.commit_import(files, sources, tags, list(scanned.values()), failures, aliases=aliases,
                               run_started=self._run_started, restored=restored)
        if restored:
            log.warning("%d library file(s) were missing from %s (deleted by hand, or a restore without "
                        "them); written again from the same files met in this import", len(restored), self.root)
        for source in moved:
            try:
                source.unlink()
            except OSError as exc:
                log.warning("imported %s but could not remove it (mode = move): %s", source, exc.strerror)
        return out

    def _restore_missing(self, writer: BatchWriter, met_again: dict[int, FoundMidi]) -> list[int]:
        """Library files met again whose copy is gone from the library folder, written again from
        these bytes (theirs, by content hash). Without it a re-import - what `check --repair`
        advises for a file no source could restore - counted them as duplicates and left them
        missing, and with `mode = "move"` removed the one copy left: the source."""
        if not met_again:
            return []
        restored = []
        for file_id, relpath in self.lib.paths_of(list(met_again)).items():
            if not os.path.lexists(self.root / relpath):
                self._stage(writer, relpath, met_again[file_id])
                restored.append(file_id)
        return restored

    def _stage(self, writer: BatchWriter, relpath: str, item: FoundMidi) -> None:
        on_disk = not item.origin.members and self.cfg.sources.mode in ("hardlink", "move")
        if on_disk and midi_payload_is_whole(item):
            writer.add_link_or_copy(relpath, Path(item.origin.path))
        else:
            writer.add_bytes(relpath, item.data)

    @staticmethod
    def _note_scanned(scanned: dict[str, dict[str, object]], path: str, now: float, outcome: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        stored = path_text(path)
        scanned[stored] = {"disk_path": stored, "size": st.st_size, "mtime": st.st_mtime, "seen_at": now,
                           "outcome": outcome}


class LibraryWriteError(RuntimeError):
    """The library folder cannot be written: the run cannot proceed, and the user must act."""

    def __init__(self, root: Path, exc: OSError) -> None:
        hint = {28: "free some space or move [library] path to a larger disk",
                30: "remount it read-write or set [library] path",
                13: "give the midid user write access or set [library] path"}.get(exc.errno or 0,
                                                                                  "check the disk and [library] path")
        super().__init__(f"cannot write to the library {root}: {exc.strerror}. {hint[0].upper() + hint[1:]}.")
        self.errno = exc.errno


def _bounded(levels: list[str], keep: int = 4) -> list[str]:
    """At most `keep` folder levels: the pack (first) and the innermost ones, which say most."""
    return levels if len(levels) <= keep else [levels[0], *levels[-(keep - 1):]]


def midi_payload_is_whole(item: FoundMidi) -> bool:
    """True when the found bytes are the whole on-disk file (not an RMID-wrapped payload)."""
    return item.size == len(item.data)


def _smf_format(data: bytes) -> int | None:
    return int.from_bytes(data[8:10], "big") if len(data) >= 14 else None


def _smf_tracks(data: bytes) -> int | None:
    return int.from_bytes(data[10:12], "big") if len(data) >= 14 else None


def _batched(items: Iterable[FoundMidi | Skipped | Failed], size: int) -> Iterator[list[FoundMidi | Skipped | Failed]]:
    batch: list[FoundMidi | Skipped | Failed] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


