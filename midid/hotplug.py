"""The hot-plug edge: which block devices are MPC/Force drives, when they appear, where mounted.

Thin by design (STYLE.md 6): udev events become :class:`BlockDevice` records handed to two
callbacks; deciding what to sync is the daemon's job. Works with or without
``udev/99-midid.rules``: the rule only adds ``MIDID_TARGET=1``, label patterns are also
matched here.

Event mapping: a USB stick or card reader sends ``add``/``remove``; a loop device or a card
inserted into a reader that stays plugged sends ``change`` (media appeared or vanished). So
``add`` and ``change``-with-a-file-system call ``on_add``, ``remove`` and
``change``-without-one call ``on_remove``. The same device can thus be reported more than once;
callers must treat both callbacks as idempotent (key on ``devnode``/``uuid``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyudev

from midid.stages.sanitize import sanitize_dirname

__all__ = [
    "AKAI_VENDOR_ID",
    "DEFAULT_LABEL_PATTERNS",
    "BlockDevice",
    "HotplugMonitor",
    "Mount",
    "find_mount",
    "is_target",
    "list_present",
    "mount_device",
    "unmount",
    "wait_for_mount",
]

log = logging.getLogger(__name__)

AKAI_VENDOR_ID = "09e8"
DEFAULT_LABEL_PATTERNS = ("MPC*", "FORCE*", "AKAI*")
UDEV_PROPERTY = "MIDID_TARGET"
MOUNTINFO = Path("/proc/self/mountinfo")
MOUNT_OPTIONS = "nosuid,nodev,noexec"
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class BlockDevice:
    """A block device (disk or partition) as udev describes it.

    ``fs_type`` is set only for a mountable file system (``ID_FS_USAGE=filesystem``): swap,
    LUKS and RAID members have none. ``udev_target`` is the ``MIDID_TARGET`` property set by
    ``udev/99-midid.rules``, False when the rule is not installed.
    """

    devnode: str
    uuid: str | None
    label: str | None
    fs_type: str | None
    vendor_id: str | None
    model: str | None
    udev_target: bool = False

    @classmethod
    def from_udev(cls, device: pyudev.Device) -> BlockDevice:
        props = device.properties
        usage = props.get("ID_FS_USAGE")
        return cls(
            devnode=device.device_node or props.get("DEVNAME", ""),
            uuid=props.get("ID_FS_UUID") or None,
            label=props.get("ID_FS_LABEL") or None,
            fs_type=(props.get("ID_FS_TYPE") or None) if usage == "filesystem" else None,
            vendor_id=(props.get("ID_VENDOR_ID") or "").lower() or None,
            model=props.get("ID_MODEL") or None,
            udev_target=props.get(UDEV_PROPERTY) == "1",
        )


@dataclass(frozen=True)
class Mount:
    """Where a device's file system is mounted (the whole file system, not a bind sub-folder)."""

    mountpoint: Path
    readonly: bool
    fs_type: str


def is_target(
    dev: BlockDevice,
    uuids: Collection[str],
    label_patterns: Sequence[str] = DEFAULT_LABEL_PATTERNS,
) -> bool:
    """Whether midid should export to this device.

    True for a file system whose UUID is listed (compared case-insensitively, as blkid prints
    FAT serials in upper case), whose label matches a pattern (fnmatch, case-insensitive), that
    sits on an Akai USB device, or that the udev rule tagged. Never without a file system.
    """
    if dev.fs_type is None:
        return False
    if dev.uuid and dev.uuid.casefold() in {u.casefold() for u in uuids}:
        return True
    label = (dev.label or "").casefold()
    if label and any(fnmatch.fnmatchcase(label, p.casefold()) for p in label_patterns):
        return True
    return dev.vendor_id == AKAI_VENDOR_ID or dev.udev_target


def list_present(context: pyudev.Context | None = None) -> list[BlockDevice]:
    """Every block device udev knows now, for the start-up and config-reload scan."""
    ctx = context or pyudev.Context()
    return [BlockDevice.from_udev(d) for d in ctx.list_devices(subsystem="block")]


class HotplugMonitor:
    """Calls ``on_add``/``on_remove`` with a :class:`BlockDevice` from a udev monitor thread.

    Callbacks run on the monitor's thread and must return quickly (hand work to the daemon's
    loop); an exception in one is logged and the monitor keeps running.
    """

    def __init__(
        self,
        on_add: Callable[[BlockDevice], None],
        on_remove: Callable[[BlockDevice], None],
        context: pyudev.Context | None = None,
    ) -> None:
        self._on_add = on_add
        self._on_remove = on_remove
        self._monitor = pyudev.Monitor.from_netlink(context or pyudev.Context())
        self._monitor.filter_by("block")
        self._observer = pyudev.MonitorObserver(
            self._monitor, callback=self._handle, name="midid-hotplug", daemon=True
        )

    def _handle(self, device: pyudev.Device) -> None:
        action = device.action
        try:
            dev = BlockDevice.from_udev(device)
            if action == "add" or (action == "change" and dev.fs_type is not None):
                self._on_add(dev)
            elif action == "remove" or action == "change":
                self._on_remove(dev)
        except Exception:
            log.exception("hot-plug handler failed for %s %s", action, device.device_node)

    def start(self) -> None:
        """Start listening; events from before this call are not replayed (use list_present)."""
        self._observer.start()

    def stop(self) -> None:
        """Stop listening and join the monitor thread."""
        self._observer.stop()


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` space, ``\\011`` tab, ``\\134`` backslash)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def find_mount(devnode: str, mountinfo: str) -> Mount | None:
    """Where ``devnode`` is mounted according to ``mountinfo`` (/proc/self/mountinfo text).

    Matches the device number (``major:minor``, from ``os.stat(devnode).st_rdev``) or, for
    FUSE file systems such as exfat-fuse that show an anonymous device number, the mount source.
    Bind mounts of a sub-folder are skipped: only a mount of the file system's root is a drive.
    """
    try:
        rdev = os.stat(devnode).st_rdev
        number = f"{os.major(rdev)}:{os.minor(rdev)}"
    except OSError:
        number = None
    real = os.path.realpath(devnode)
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3 or sep < 6:
            continue
        fs_type, source, super_opts = fields[sep + 1], _unescape(fields[sep + 2]), fields[sep + 3:]
        matches = fields[2] == number or source in (devnode, real)
        if not matches or _unescape(fields[3]) != "/":
            continue
        options = set(fields[5].split(",")) | set(",".join(super_opts).split(","))
        return Mount(Path(_unescape(fields[4])), "ro" in options, fs_type)
    return None


def wait_for_mount(devnode: str, timeout_s: float, poll_s: float = 0.2) -> Mount | None:
    """Poll /proc/self/mountinfo until ``devnode`` is mounted (by udisks, a desktop, fstab).

    Returns None after ``timeout_s`` seconds without a mount.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        mount = find_mount(devnode, MOUNTINFO.read_text())
        if mount is not None or time.monotonic() >= deadline:
            return mount
        time.sleep(poll_s)


def _label_of(devnode: str) -> str | None:
    try:
        device = pyudev.Devices.from_device_file(pyudev.Context(), devnode)
    except (pyudev.DeviceNotFoundError, OSError, ValueError):
        return None
    return device.properties.get("ID_FS_LABEL") or None


def mount_device(devnode: str, mount_root: Path) -> Mount:
    """Mount ``devnode`` at ``mount_root/<label>`` (for ``auto_mount = true``).

    The folder is the sanitized file-system label (the device name without one), with
    ``_2``, ``_3`` … if that folder is in use. Mounted ``nosuid,nodev,noexec``. Needs root
    (or CAP_SYS_ADMIN). Raises OSError with mount's message on failure.
    """
    base = sanitize_dirname(_label_of(devnode) or Path(devnode).name)
    mount_root.mkdir(parents=True, exist_ok=True)
    target = mount_root / base
    counter = 2
    while target.exists() and (target.is_mount() or any(target.iterdir())):
        target = mount_root / f"{base}_{counter}"
        counter += 1
    target.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-o", MOUNT_OPTIONS, "--", devnode, str(target)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    mount = find_mount(devnode, MOUNTINFO.read_text()) if done.returncode == 0 else None
    if mount is None:
        target.rmdir()
        raise OSError(f"cannot mount {devnode} at {target}: {done.stderr.strip() or 'not mounted'}")
    log.info("mounted %s at %s", devnode, mount.mountpoint)
    return mount


def unmount(mount: Mount) -> None:
    """Unmount a file system :func:`mount_device` mounted and remove its folder.

    Raises OSError with umount's message (e.g. target busy) on failure.
    """
    done = subprocess.run(
        ["umount", "--", str(mount.mountpoint)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise OSError(f"cannot unmount {mount.mountpoint}: {done.stderr.strip()}")
    try:
        mount.mountpoint.rmdir()
    except OSError as exc:
        log.debug("left folder %s: %s", mount.mountpoint, exc)
    log.info("unmounted %s", mount.mountpoint)
