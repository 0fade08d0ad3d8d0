"""Hot-plug sync in the daemon: MPC/Force drives get every newly categorised file.

The udev monitor thread only reports plugs; this manager's `step()` runs on the daemon's main
loop and does one small piece of work at a time for each attached drive: wait for its mount
(or mount it when configured), then copy a batch of pending files and record them in the
`exports` table — so files categorised while a drive is attached reach it within seconds, and
a pulled drive costs at most one batch, which the next plug finishes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import Config, DeviceEntry
from .db import Library
from .export.copy import remove_stale_temps, stop_reason
from .export.index import write_index
from .exporter import ExportSummary, PlanItem, candidates, copy_items, index_entry, plan_onto
from .hotplug import BlockDevice, HotplugMonitor, Mount, find_mount, is_target, list_present, mount_device, unmount

log = logging.getLogger(__name__)

SYNC_BATCH = 200
UNCLEAN = ("gone", "error", "syncing")  # states a visit can end in without finishing


@dataclass
class Attached:
    dev: BlockDevice
    key: str  # file-system UUID, or the device node when the file system has none
    profile: str
    subfolder: str
    plugged_at: float
    state: str = "waiting for mount"
    message: str = ""
    mount: Mount | None = None
    auto_mounted: bool = False
    cursor: tuple[float, int] = (0.0, 0)  # (analysed_at, id) of the last file already considered
    full: bool = False
    pending: int = 0
    copied: int = 0
    last_sync: float | None = None
    checked_gone: bool = False
    parked: bool = False  # auto-mounted drive unmounted after its sync
    previous_state: str | None = None  # how the drive's last visit ended (from the database)
    failed: set[int] = field(default_factory=set)  # file ids that failed this visit: not retried until replug
    stop_until_replug: bool = field(default=False)


class DeviceManager:
    """Tracks export drives and syncs them from the daemon's main loop (`step`)."""

    def __init__(self, cfg: Config, post: Callable[[Callable[[], None]], None]) -> None:
        self.cfg = cfg
        self.post = post
        self.attached: dict[str, Attached] = {}
        self.monitor: HotplugMonitor | None = None

    # ---- edges (other threads post work to the main loop) ------------------------------

    def start(self) -> None:
        if not self.cfg.export.enabled:
            return
        try:
            self.monitor = HotplugMonitor(lambda d: self.post(lambda: self.plugged(d)),
                                          lambda d: self.post(lambda: self.unplugged(d)))
            self.monitor.start()
        except Exception as exc:  # noqa: BLE001 - no udev (containers): export by command still works
            log.warning("cannot watch for drives (%s); `midictl export --to DIR` still works", exc)
            self.monitor = None
        self.scan_present()

    def scan_present(self) -> None:
        """Drives plugged before we started (or before a reload) count as just plugged."""
        try:
            for dev in list_present():
                self.plugged(dev)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot list block devices: %s", exc)

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        for att in list(self.attached.values()):
            if att.auto_mounted and att.mount is not None:
                self._unmount(att)

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        if cfg.export.enabled and self.monitor is None:
            self.start()
        else:
            self.scan_present()

    def request_sync(self, device: str | None, full: bool) -> dict[str, Any]:
        """`midictl sync [DEVICE] [--full]`: restart the sync of one or all attached drives."""
        matches = [a for a in self.attached.values()
                   if device in (None, a.key, a.dev.label, a.dev.devnode)]
        if not matches:
            return {"ok": False, "error": f"no attached export drive matches {device!r}" if device
                    else "no export drive is attached"}

        def restart() -> None:
            for att in matches:
                att.cursor, att.full, att.checked_gone, att.stop_until_replug = (0.0, 0), full, False, False
                if att.state not in ("waiting for mount", "not mounted"):
                    att.state = "syncing"
        self.post(restart)
        return {"ok": True, "devices": [a.key for a in matches]}

    # ---- main loop -----------------------------------------------------------------------

    def _entry_for(self, dev: BlockDevice) -> DeviceEntry | None:
        for entry in self.cfg.export.devices:
            if dev.uuid and entry.uuid.casefold() == dev.uuid.casefold():
                return entry
        return None

    def plugged(self, dev: BlockDevice) -> None:
        if not self.cfg.export.enabled:
            return
        if not is_target(dev, [d.uuid for d in self.cfg.export.devices], self.cfg.export.label_patterns):
            return
        key = dev.uuid or dev.devnode
        if key in self.attached:
            return
        entry = self._entry_for(dev)
        att = Attached(dev, key, (entry and entry.profile) or self.cfg.export.profile,
                       (entry and entry.subfolder) or "", time.monotonic())
        self.attached[key] = att
        log.info("export drive plugged: %s (%s, label %s)", dev.devnode, key, dev.label)

    def unplugged(self, dev: BlockDevice) -> None:
        for key, att in list(self.attached.items()):
            if att.dev.devnode == dev.devnode and (dev.uuid is None or dev.uuid == att.dev.uuid):
                log.info("export drive removed: %s (%s)", dev.devnode, key)
                del self.attached[key]

    def step(self, lib: Library) -> bool:
        """Advance every attached drive by one small piece of work; True if anything was done."""
        busy = False
        for att in list(self.attached.values()):
            try:
                busy = self._advance(lib, att) or busy
            except OSError as exc:
                # Outside a batch too (the index, a folder): a full or pulled drive stops the
                # sync until it is plugged in again, and says so, like a stopped batch.
                reason = stop_reason(exc, att.mount.mountpoint) if att.mount is not None else None
                if reason:
                    self._stopped(lib, att, ExportSummary(stopped=reason))
                    continue
                att.state, att.message = "error", f"{exc.strerror or exc}: check the drive"
                log.warning("sync to %s failed: %s", att.dev.devnode, exc)
        return busy

    def _advance(self, lib: Library, att: Attached) -> bool:
        if att.parked:
            # Auto-mounted, synced and unmounted: mount again only when there is new work.
            if not self._pending(lib, att):
                return False
            att.parked, att.plugged_at = False, time.monotonic() - self.cfg.export.mount_wait_s
        if att.mount is None:
            return self._await_mount(lib, att)
        if att.stop_until_replug or att.mount.readonly:
            return False
        if not os.path.ismount(att.mount.mountpoint):
            att.state, att.message, att.mount = "waiting for mount", "the drive was unmounted", None
            return False
        target = att.mount.mountpoint / att.subfolder if att.subfolder else att.mount.mountpoint
        if not att.checked_gone:
            self._prepare(lib, att, target)
            return True
        rows = self._pending(lib, att)
        if rows is None:
            return True
        if not rows:
            if att.state == "syncing":
                att.state, att.message, att.last_sync = "synced", "", time.time()
                self._record_device(lib, att)
                self._finish_sync(lib, att, target)
            return False
        att.state = "syncing"
        base = target / self.cfg.export.root if self.cfg.export.root else target
        base.mkdir(parents=True, exist_ok=True)
        items = self._plan(lib, att, target, rows)
        summary = copy_items(self.cfg.library_path, base, items, profile=att.profile, root="", batch_size=SYNC_BATCH,
                             on_batch=lambda done, s: self._record(lib, att, done))
        att.copied += summary.copied
        by_dest = {i.dest_rel: i.file_id for i in items}
        att.failed.update(by_dest[f["path"]] for f in summary.failed if f["path"] in by_dest)
        if summary.stopped:
            self._stopped(lib, att, summary)
        return True

    def _await_mount(self, lib: Library, att: Attached) -> bool:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        mount = find_mount(att.dev.devnode, mountinfo)
        waited = time.monotonic() - att.plugged_at
        if mount is None and waited >= self.cfg.export.mount_wait_s:
            if self.cfg.export.auto_mount and att.state != "not mounted":
                try:
                    mount = mount_device(att.dev.devnode, Path(self.cfg.export.mount_root).expanduser())
                    att.auto_mounted = True
                except (OSError, RuntimeError, ValueError) as exc:
                    att.state, att.message = "not mounted", f"auto-mount failed: {exc}"
                    log.warning("cannot mount %s: %s", att.dev.devnode, exc)
                    return False
            elif att.state != "not mounted":
                att.state = "not mounted"
                att.message = (f"not mounted after {self.cfg.export.mount_wait_s:.0f} s; mount it, or set "
                               "export.auto_mount = true")
                log.warning("export drive %s (%s) is %s", att.dev.devnode, att.dev.label, att.message)
                self._record_device(lib, att)
        if mount is None:
            return False
        att.mount = mount
        if mount.readonly:
            att.state = "read-only"
            att.message = f"{mount.mountpoint} is mounted read-only: remount it read-write to sync"
            log.warning("not writing to %s: %s", att.dev.devnode, att.message)
        else:
            att.state, att.message = "syncing", ""
            log.info("export drive %s mounted at %s; syncing", att.dev.devnode, mount.mountpoint)
        self._record_device(lib, att)
        return True

    def _prepare(self, lib: Library, att: Attached, target: Path) -> None:
        """On each plug: clear stale temps, and note files the user deleted from the drive."""
        base = target / self.cfg.export.root if self.cfg.export.root else target
        if base.is_dir():
            remove_stale_temps(base)
        rows = lib.db.execute("SELECT file_id, path FROM exports WHERE device_uuid = ? AND gone = 0",
                              [att.key]).fetchall()
        gone = [(att.key, fid) for fid, rel in rows if not (base / rel).exists()]
        if gone and att.previous_state in UNCLEAN:
            # The last visit ended with the drive pulled: what is missing was lost then, not
            # deleted by the user, so it is copied again.
            with lib.db.atomic():
                lib.db.conn.executemany("DELETE FROM exports WHERE device_uuid = ? AND file_id = ?", gone)
            log.info("%d file(s) lost when %s was pulled will be copied again", len(gone), att.dev.label or att.key)
            gone = []
        if gone:
            with lib.db.atomic():
                lib.db.conn.executemany("UPDATE exports SET gone = 1 WHERE device_uuid = ? AND file_id = ?", gone)
            log.info("%d file(s) exported earlier were deleted on %s; not copying them again "
                     "(use `midictl sync --full`)", len(gone), att.dev.label or att.key)
        if att.full:
            with lib.db.atomic():
                lib.db.execute("DELETE FROM exports WHERE device_uuid = ? AND gone = 1", [att.key])
        att.checked_gone = True

    def _pending(self, lib: Library, att: Attached, max_pages: int = 20) -> list[dict[str, Any]] | None:
        """The next rows this drive lacks; [] when up to date, None when not known yet (more
        pages to look at next step — the main loop must not stall on a huge library)."""
        for _ in range(max_pages):
            rows = candidates(lib, self.cfg.export.categories, after=att.cursor, limit=SYNC_BATCH * 5)
            if not rows:
                att.pending = 0
                return []
            ids = [r["id"] for r in rows]
            marks = ",".join("?" * len(ids))
            there = dict(lib.db.execute(
                f"SELECT file_id, category FROM exports WHERE device_uuid = ? AND file_id IN ({marks})",
                [att.key, *ids]).fetchall())
            todo = [r for r in rows if (r["id"] not in there or there[r["id"]] != r["category"])
                    and r["id"] not in att.failed]
            if todo:
                att.pending = len(todo)
                return todo
            att.cursor = (rows[-1]["analysed_at"], rows[-1]["id"])
        return None

    def _plan(self, lib: Library, att: Attached, target: Path, rows: list[dict[str, Any]]) -> list[PlanItem]:
        base = target / self.cfg.export.root if self.cfg.export.root else target
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        known = {p.casefold() for (p,) in lib.db.execute(
            f"SELECT path FROM exports WHERE device_uuid = ? AND file_id NOT IN ({marks})", [att.key, *ids])}
        return plan_onto(rows, profile=att.profile, library_root=self.cfg.library_path, base=base, known=known)

    def _record(self, lib: Library, att: Attached, done: list[PlanItem]) -> None:
        """Rows only for files that are complete on the drive (copy_batch's `copied`)."""
        now = time.time()
        with lib.db.atomic():
            lib.db["exports"].upsert_all(
                ({"device_uuid": att.key, "file_id": i.file_id, "path": i.dest_rel, "hash": i.hash,
                  "category": i.category, "exported_at": now, "gone": 0} for i in done),
                pk=("device_uuid", "file_id"))
            if done:
                lib.db.execute("INSERT INTO progress(stage, at, count, failed) VALUES ('export', ?, ?, 0)",
                               [now, len(done)])

    def _stopped(self, lib: Library, att: Attached, summary: ExportSummary) -> None:
        reason = summary.stopped or ""
        att.stop_until_replug = True
        if reason.startswith("device full"):
            att.state = "full"
        elif reason.startswith("device gone"):
            att.state = "gone"
        else:
            att.state = "error"
        att.message = f"{summary.not_copied} file(s) not copied: {reason}"
        log.warning("sync to %s stopped: %s", att.dev.label or att.key, att.message)
        with lib.db.atomic():
            lib.db["failures"].upsert({"origin": f"device:{att.key}", "stage": "export", "error": att.message,
                                       "at": time.time()}, pk=("origin", "stage"))
        self._record_device(lib, att)

    def _finish_sync(self, lib: Library, att: Attached, target: Path) -> None:
        base = target / self.cfg.export.root if self.cfg.export.root else target
        entries = []
        for row in lib.db.query(
                "SELECT e.path, e.hash, e.category, e.exported_at, a.bpm, a.key_tonic, a.key_mode, a.tags,"
                " f.pack, f.name FROM exports e JOIN files f ON f.id = e.file_id"
                " LEFT JOIN analysis a ON a.file_id = e.file_id WHERE e.device_uuid = ? AND e.gone = 0",
                [att.key]):
            key = f"{row['key_tonic']}:{'min' if row['key_mode'] == 'minor' else 'maj'}" if row["key_tonic"] else None
            item = PlanItem(0, Path(), row["path"], row["hash"], row["category"], row["bpm"], key,
                            _loads(row["tags"]), row["pack"] or row["name"], [], row["name"])
            entries.append(index_entry(item, row["exported_at"]))
        if entries:
            base.mkdir(parents=True, exist_ok=True)
            write_index(base, sorted(entries, key=lambda e: e["path"]))
        with lib.db.atomic():
            lib.db.execute("DELETE FROM failures WHERE origin = ? AND stage = 'export'", [f"device:{att.key}"])
        log.info("synced %s: %d file(s) copied this visit", att.dev.label or att.key, att.copied)
        if att.auto_mounted:
            self._unmount(att)
            self._record_device(lib, att)

    def _unmount(self, att: Attached) -> None:
        try:
            unmount(att.mount)  # type: ignore[arg-type]
            att.mount, att.auto_mounted, att.parked = None, False, True
            att.state, att.message = "synced", "unmounted after sync"
        except (OSError, RuntimeError) as exc:
            log.warning("cannot unmount %s: %s", att.dev.devnode, exc)

    def _record_device(self, lib: Library, att: Attached) -> None:
        now = time.time()
        if att.previous_state is None:
            row = lib.db.execute("SELECT state FROM devices WHERE uuid = ?", [att.key]).fetchone()
            att.previous_state = row[0] if row else "new"
        with lib.db.atomic():
            lib.db["devices"].upsert({
                "uuid": att.key, "label": att.dev.label, "name": (self._entry_for(att.dev) or DeviceEntry()).name,
                "profile": att.profile, "last_seen": now, "last_sync": att.last_sync,
                "mountpoint": str(att.mount.mountpoint) if att.mount else None,
                "state": att.state, "message": att.message}, pk="uuid")
            lib.db.execute("UPDATE devices SET first_seen = coalesce(first_seen, ?) WHERE uuid = ?", [now, att.key])

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"uuid": a.key, "label": a.dev.label, "devnode": a.dev.devnode, "profile": a.profile,
                 "mounted": a.mount is not None, "mountpoint": str(a.mount.mountpoint) if a.mount else None,
                 "state": a.state, "message": a.message, "pending": a.pending, "copied": a.copied,
                 "last_sync": a.last_sync, "free_mb": _free_mb(a.mount)} for a in self.attached.values()]


def _free_mb(mount: Mount | None) -> float | None:
    if mount is None:
        return None
    try:
        return round(shutil.disk_usage(mount.mountpoint).free / 1e6, 1)
    except OSError:
        return None


def _loads(text: str | None) -> list[str]:
    import json

    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []
