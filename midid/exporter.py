"""The export stage: categorised library files into the folder layout an MPC or Force browses.

Two callers share it. `midictl export --to DIR` is stateless towards the database (it only
reads, so it works beside a running daemon): what is already on the target is learnt from the
target's own `midid_index.json`. The daemon's device sync keys what is where by file-system
UUID in the `exports` table, so each plug copies only what is new, and a file the user
deleted on the drive is not silently copied again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .db import Library
from .export.copy import TEMP_PREFIX, CopyItem, copy_batch, flush, remove_stale_temps, stop_reason
from .export.index import INDEX_NAME, write_index
from .export.layout import export_relpath, progression_relpath
from .export.progression import chord_voicings, progression_document

log = logging.getLogger(__name__)

PROGRESSION_MIN_CHORDS = 3  # a Chords file with fewer distinct chords is not a progression


@dataclass
class PlanItem:
    file_id: int
    src: Path
    dest_rel: str
    hash: str
    category: str
    bpm: float | None
    key: str | None
    tags: list[str]
    source: str
    chords: list[dict[str, Any]]
    name: str


@dataclass
class ExportSummary:
    copied: int = 0
    skipped_already_there: int = 0
    bytes: int = 0
    errors: int = 0
    progressions: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    stopped: str | None = None
    not_copied: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"copied": self.copied, "skipped_already_there": self.skipped_already_there, "bytes": self.bytes,
                "errors": self.errors, "progressions": self.progressions, "failed": self.failed,
                "stopped": self.stopped, "not_copied": self.not_copied}


def candidates(lib: Library, categories: Iterable[str], *, after: tuple[float, int] = (0.0, 0),
               limit: int | None = None) -> list[dict[str, Any]]:
    """Categorised files in the chosen categories, in (analysed_at, id) order after `after`.

    The cursor is a pair because a whole batch is committed with one analysed_at: paging by
    the time alone would skip the rest of a batch cut by a page boundary.
    """
    cats = list(categories)
    marks = ",".join("?" * len(cats))
    sql = ("SELECT f.id, f.path, f.name, f.pack, f.hash, f.analysed_at, a.category, a.bpm, a.key_tonic,"
           " a.key_mode, a.tags, a.chords, a.progression FROM files f JOIN analysis a ON a.file_id = f.id"
           f" WHERE a.category IN ({marks}) AND (f.analysed_at > ? OR (f.analysed_at = ? AND f.id > ?))"
           " AND f.error IS NULL ORDER BY f.analysed_at, f.id")
    args: list[Any] = [*cats, after[0], after[0], after[1]]
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    return list(lib.db.query(sql, args))


def plan(rows: list[dict[str, Any]], *, profile: str, root: str, taken: Callable[[str], bool]) -> list[PlanItem]:
    """Destination paths for rows (`src` relative to the library), collision-safe against
    `taken` and each other."""
    planned: set[str] = set()
    items = []
    for row in rows:
        dest = export_relpath(profile, row["category"], row["pack"], row["path"], root=root,
                              taken=lambda p: p.casefold() in planned or taken(p))
        planned.add(dest.casefold())
        key = f"{row['key_tonic']}:{'min' if row['key_mode'] == 'minor' else 'maj'}" if row["key_tonic"] else None
        items.append(PlanItem(row["id"], Path(row["path"]), dest, row["hash"], row["category"], row["bpm"],
                              key, json.loads(row["tags"] or "[]"), row["pack"] or row["name"],
                              json.loads(row["chords"] or "[]"), row["name"]))
    return items


def wants_progression(item: PlanItem) -> bool:
    labels = {c["label"] for c in item.chords if c.get("label") not in ("N", "X", None)}
    return item.category == "Progressions" or (item.category == "Chords" and len(labels) >= PROGRESSION_MIN_CHORDS)


def copy_items(library_root: Path, target: Path, items: list[PlanItem], *, profile: str, root: str,
               batch_size: int = 200, on_batch: Callable[[list[PlanItem], ExportSummary], None] | None = None
               ) -> ExportSummary:
    """Copy planned items in durable batches, then their `.progression` files; stop on a full or
    vanished drive keeping what is complete.

    An item that wants a `.progression` counts as done (and reaches `on_batch`) only once that
    is durable too. When the drive fills up or goes while they are written, such items of the
    batch are complete on the drive but not reported: the next sync finds each file (and any
    `.progression` already written) at its path and takes it as copied.
    """
    summary = ExportSummary()
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        result = copy_batch([CopyItem(library_root / i.src, i.dest_rel) for i in chunk], target)
        copied = {c.dest_rel for c in result.copied}
        done = [i for i in chunk if i.dest_rel in copied]
        stopped = result.stopped
        wanting = [i for i in done if wants_progression(i)]
        rel = ""
        try:
            for item in wanting:
                rel = item.dest_rel
                summary.progressions += _write_progression(library_root / item.src, target, item, profile, root)
            if wanting:
                flush(target)
        except OSError as exc:
            stopped = stop_reason(exc, target, rel)
            if stopped is None:
                raise
            done = [i for i in done if not wants_progression(i)]
        summary.copied += len(done)
        summary.bytes += result.bytes
        for item, reason in result.failed:
            summary.errors += 1
            summary.failed.append({"path": item.dest_rel, "error": reason})
        if on_batch:
            on_batch(done, summary)
        if stopped:
            summary.stopped = stopped
            summary.not_copied = len(items) - start - len(done) - len(result.failed)
            break
    return summary


def plan_onto(rows: list[dict[str, Any]], *, profile: str, library_root: Path, base: Path,
              known: set[str]) -> list[PlanItem]:
    """Plan rows onto a folder that may hold files already (`known`: casefolded paths taken).

    A path is taken when something other than this row's own complete copy is there. Its own
    copy is what a sync or export left when it stopped between making the file durable and
    recording it (drive pulled mid-batch, process killed): copy_batch then counts it as copied
    under its own name instead of writing it again as ``_2``. One row at a time, since whether
    a path is free depends on the row's bytes.
    """
    items = []
    for row in rows:
        src = library_root / row["path"]
        [item] = plan([row], profile=profile, root="",
                      taken=lambda p, src=src: p.casefold() in known or _occupied(base / p, src))
        known.add(item.dest_rel.casefold())
        items.append(item)
    return items


def _occupied(path: Path, src: Path) -> bool:
    """Whether ``path`` holds anything but a complete copy of ``src``."""
    try:
        there = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        return (not stat.S_ISREG(there.st_mode) or there.st_size != src.stat().st_size
                or path.read_bytes() != src.read_bytes())
    except OSError:
        return True


def _write_progression(src: Path, target: Path, item: PlanItem, profile: str, root: str) -> int:
    try:
        voicings = chord_voicings(src.read_bytes(), item.chords)
        doc = progression_document(Path(item.name).stem, voicings, heading=item.source)
    except (OSError, ValueError) as exc:
        log.info("no .progression for %s: %s", item.dest_rel, exc)
        return 0
    body = json.dumps(doc, indent=1).encode()
    rel = progression_relpath(profile, item.dest_rel, root=root, taken=lambda p: _holds_other(target / p, body))
    _atomic_write(target / rel, body)
    return 1


def _holds_other(path: Path, body: bytes) -> bool:
    """Whether ``path`` exists with other content than ``body``: the same document written by a
    sync that stopped before recording its file is replaced in place, not written again as `_2`."""
    try:
        return path.read_bytes() != body
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        return True


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):  # a full drive must not keep a partial file; a gone one cannot
            tmp.unlink(missing_ok=True)
        raise


def index_entry(item: PlanItem, exported_at: float) -> dict[str, Any]:
    return {"path": item.dest_rel, "hash": item.hash, "category": item.category, "bpm": item.bpm,
            "key": item.key, "tags": item.tags, "source": item.source,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exported_at))}


def read_index(root: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((root / INDEX_NAME).read_text())
        return [e for e in data.get("files", []) if isinstance(e, dict) and "path" in e]
    except (OSError, ValueError, AttributeError):
        return []


def export_to_folder(lib: Library, library_root: Path, target: Path, *, profile: str, root: str,
                     categories: Iterable[str], dry_run: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> tuple[ExportSummary, list[PlanItem]]:
    """One-shot export into any folder; files already there (per its index) are skipped."""
    base = target / root if root else target
    previous = {e["hash"]: e for e in read_index(base)}
    rows = candidates(lib, categories)
    summary = ExportSummary()
    todo_rows = []
    for row in rows:
        entry = previous.get(row["hash"])
        if entry and (base / entry["path"]).is_file():
            summary.skipped_already_there += 1
        else:
            todo_rows.append(row)
    known = {e["path"].casefold() for e in previous.values()}
    items = plan_onto(todo_rows, profile=profile, library_root=library_root, base=base, known=known)
    if dry_run:
        return summary, items
    # The target itself only when its parent is there: a mistyped mount point
    # (/media/me/MPC_SDD) must not fill the system disk with a copy meant for a card.
    target.mkdir(exist_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    if items:
        remove_stale_temps(base)
    total = len(items)

    def on_batch(done: list[PlanItem], s: ExportSummary) -> None:
        now = time.time()
        for item in done:
            previous[item.hash] = index_entry(item, now)
        if progress:
            progress(s.copied + s.errors, total)

    copied = copy_items(library_root, base, items, profile=profile, root="", on_batch=on_batch)
    copied.skipped_already_there = summary.skipped_already_there
    if items or not (base / INDEX_NAME).exists():
        write_index(base, sorted(previous.values(), key=lambda e: e["path"]))
    return copied, items
