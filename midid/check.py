"""`midictl check`: do the library folder and the database agree — and repair them if asked.

After a power loss (SQLite in WAL mode with synchronous=NORMAL may lose the last committed
transactions, never its integrity), a full disk or someone editing the library folder by hand,
the two can disagree: a row whose file is gone, a file with no row, leftovers in the staging
folder. Verification only reads; repair needs the library's writer lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import Library
from .durable import STAGING, BatchWriter, clear_staging
from .hashing import content_hash
from .sniff import midi_payload
from .stages.split import SplitError, split_midi


UNRECOVERABLE = "library file missing and no source has the same bytes; re-import it"
UNRECOVERABLE_PART = ("library file missing and neither its parent nor a source of the parent has its bytes; "
                      "re-import the parent, then run `midictl check --repair`")


@dataclass
class CheckReport:
    integrity: str = "ok"
    files: int = 0
    missing: list[str] = field(default_factory=list)  # rows whose library file is gone
    orphans: list[str] = field(default_factory=list)  # library files without a row
    changed: list[str] = field(default_factory=list)  # size differs from the row
    unanalysed: int = 0  # files neither analysed nor failed (queued work, not damage)
    duplicate_analysis: int = 0
    staging: int = 0
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.integrity == "ok" and not self.missing and not self.orphans and not self.changed
                and not self.duplicate_analysis and not self.staging)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "integrity": self.integrity, "files": self.files, "missing": self.missing,
                "orphans": self.orphans, "changed": self.changed, "unanalysed": self.unanalysed,
                "duplicate_analysis": self.duplicate_analysis, "staging": self.staging, "repaired": self.repaired}


def check_library(lib: Library, root: Path) -> CheckReport:
    """Compare rows and files; read-only."""
    report = CheckReport()
    report.integrity = "; ".join(r[0] for r in lib.db.execute("PRAGMA integrity_check").fetchall())
    rows = {path: size for path, size in lib.db.execute("SELECT path, size FROM files")}
    report.files = len(rows)
    on_disk: dict[str, int] = {}
    for folder, dirs, names in os.walk(root):
        if Path(folder) == root and STAGING in dirs:
            dirs.remove(STAGING)
        for name in names:
            path = Path(folder, name)
            on_disk[path.relative_to(root).as_posix()] = path.lstat().st_size
    staging = root / STAGING
    report.staging = sum(1 for _ in staging.iterdir()) if staging.is_dir() else 0
    report.missing = sorted(p for p in rows if p not in on_disk)
    report.orphans = sorted(p for p in on_disk if p not in rows and not p.startswith(".midid-probe"))
    report.changed = sorted(p for p, size in rows.items() if p in on_disk and on_disk[p] != size)
    report.unanalysed = int(lib.db.execute(
        "SELECT count(*) FROM files WHERE analysed_at IS NULL AND error IS NULL").fetchone()[0])
    report.duplicate_analysis = int(lib.db.execute(
        "SELECT count(*) - count(DISTINCT file_id) FROM analysis").fetchone()[0])
    return report


def repair_library(lib: Library, root: Path, report: CheckReport) -> CheckReport:
    """Make folder and database agree again, losing nothing that can be recovered.

    - staging leftovers: removed (they were never committed);
    - a missing or changed file: restored from a source that still has the same bytes (a split
      part: cut again from its parent's library file or sources), else the row is marked with
      an error saying so;
    - an orphan file: if its bytes are already in the library it is a stray copy and is removed,
      otherwise it is adopted as a new library file (queued for analysis).
    """
    repaired = {"staging": clear_staging(root), "restored": 0, "unrecoverable": 0, "adopted": 0,
                "removed_copies": 0}
    writer = BatchWriter(root)
    restored: list[int] = []
    for path in report.missing + report.changed:
        file_id, digest, parent_id = lib.db.execute(
            "SELECT id, hash, parent_id FROM files WHERE path = ?", [path]).fetchone()
        data = _from_sources(lib, file_id, digest)
        if data is None and parent_id is not None:
            data = _from_parent(lib, root, parent_id, digest)
        if data is None:
            with lib.db.atomic():
                lib.db.execute("UPDATE files SET error = ?, error_stage = 'check' WHERE id = ?",
                               [UNRECOVERABLE if parent_id is None else UNRECOVERABLE_PART, file_id])
            repaired["unrecoverable"] += 1
            continue
        writer.add_bytes(path, data)
        restored.append(file_id)
    adopted: list[dict[str, Any]] = []
    stray: list[Path] = []
    next_id = lib.next_file_id()
    for path in report.orphans:
        data = (root / path).read_bytes()
        digest = content_hash(data)
        if lib.known_hashes([digest]) or any(a["hash"] == digest for a in adopted):
            stray.append(root / path)
            continue
        adopted.append({"id": next_id, "hash": digest, "size": len(data), "path": path, "name": Path(path).name,
                        "pack": path.split("/", 1)[0] if "/" in path else "", "added_at": os.path.getmtime(root / path),
                        "sanitized_at": os.path.getmtime(root / path)})
        next_id += 1
    writer.publish()
    lib.commit_import(adopted, [], [], [], [], restored=restored)
    for path in stray:
        path.unlink()
    repaired.update(restored=len(restored), adopted=len(adopted), removed_copies=len(stray))
    report.repaired = repaired
    return report


def _from_sources(lib: Library, file_id: int, digest: str) -> bytes | None:
    """The file's bytes from any on-disk source that still holds them unchanged."""
    for (disk_path,) in lib.db.execute(
            "SELECT disk_path FROM sources WHERE file_id = ? AND kind = 'file' AND missing = 0", [file_id]):
        try:
            data = Path(disk_path).read_bytes()
        except OSError:
            continue
        data = midi_payload(data) or data
        if content_hash(data) == digest:
            return data
    return None


def _from_parent(lib: Library, root: Path, parent_id: int, digest: str) -> bytes | None:
    """A split part's bytes, cut again from its parent (its library file, else a source with
    the parent's bytes): the split copies track chunks verbatim, so the same part comes out
    byte for byte and its hash says which one it is."""
    row = lib.db.execute("SELECT path, hash FROM files WHERE id = ?", [parent_id]).fetchone()
    if row is None:
        return None
    parent_path, parent_hash = row
    try:
        parent = (root / parent_path).read_bytes()
    except OSError:
        parent = b""
    if content_hash(parent) != parent_hash:
        parent = _from_sources(lib, parent_id, parent_hash)
        if parent is None:
            return None
    try:
        parts = split_midi(parent)
    except SplitError:
        return None
    return next((part.data for part in parts if content_hash(part.data) == digest), None)
