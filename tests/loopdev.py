"""Real drives for tests: file-system images attached with losetup, mounted like an automounter.

Needs root, /dev/loop-control, losetup, mkfs.ext4, mount and a running udevd (started here with
``systemd-udevd --daemon`` if it is not; it is left running, as other tests may share it).
:func:`require_loop` skips the calling test with the reason when any of that is missing.
Every drive is unmounted and detached in teardown, also when the test fails.

Use in a test module::

    from loopdev import LoopDrive, loop_drive, require_loop
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

UDEVD_PATHS = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
TOOLS = ("losetup", "mkfs.ext4", "mount", "umount", "udevadm", "blkid")
# EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32); NOLOGFLUSH: stop at once, like a pulled cable.
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 0x2


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def _udevd_running() -> bool:
    return _run("udevadm", "control", "--ping", "--timeout=2", check=False).returncode == 0


def require_loop(udev: bool = True) -> None:
    """Skip the test unless loop devices (and, with ``udev``, a udevd) can be used here."""
    if os.geteuid() != 0:
        pytest.skip("needs root to attach and mount loop devices")
    if not Path("/dev/loop-control").exists():
        pytest.skip("no /dev/loop-control: loop devices are not available")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    if udev and not _udevd_running():
        udevd = next((p for p in UDEVD_PATHS if Path(p).exists()), None)
        if udevd is None:
            pytest.skip("udevd is not running and systemd-udevd is not installed")
        _run(udevd, "--daemon", check=False)
        if not _udevd_running():
            pytest.skip("could not start systemd-udevd")


def make_image(path: Path, label: str, size_mb: int) -> Path:
    """An ext4 image of ``size_mb`` MB labelled ``label`` (no reserved blocks)."""
    with path.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    _run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", label, str(path))
    return path


def settle() -> None:
    _run("udevadm", "settle", "--timeout=10", check=False)


@dataclass
class LoopDrive:
    """One image file, possibly attached as ``devnode`` and mounted at ``mountpoint``."""

    image: Path
    label: str
    devnode: str | None = None
    mountpoint: Path | None = None

    @property
    def uuid(self) -> str:
        return _run("blkid", "-s", "UUID", "-o", "value", str(self.image)).stdout.strip()

    def attach(self) -> str:
        """Attach the image to a free loop device (waiting for an old binding to go first)."""
        deadline = time.monotonic() + 15
        while _run("losetup", "-j", str(self.image)).stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.image} is still attached to a loop device")
            time.sleep(0.1)
        self.devnode = _run("losetup", "-f", "--show", str(self.image)).stdout.strip()
        return self.devnode

    def mount(self, mountpoint: Path, readonly: bool = False) -> Path:
        """Mount as a desktop automounter would (nosuid,nodev; ``ro`` if asked)."""
        assert self.devnode, "attach first"
        mountpoint.mkdir(parents=True, exist_ok=True)
        options = "ro,nosuid,nodev" if readonly else "nosuid,nodev"
        _run("mount", "-o", options, self.devnode, str(mountpoint))
        self.mountpoint = mountpoint
        return mountpoint

    def umount(self, lazy: bool = False) -> None:
        if self.mountpoint is not None:
            _run("umount", *(["-l"] if lazy else []), str(self.mountpoint))
            self.mountpoint = None

    def detach(self) -> None:
        if self.devnode is not None:
            _run("losetup", "-d", self.devnode, check=False)
            self.devnode = None

    def pull(self) -> None:
        """Make the mounted file system fail every operation with EIO, as when the cable goes.

        There is no device-mapper here to swap in an error target, so this uses ext4's
        shutdown ioctl (what xfstests' "godown" uses to simulate sudden device loss).
        """
        assert self.mountpoint is not None
        fd = os.open(self.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, EXT4_GOING_FLAGS_NOLOGFLUSH.to_bytes(4, "little"))
        finally:
            os.close(fd)

    def wait_unbound(self, timeout_s: float = 15) -> None:
        """Wait until no loop device refers to the image (udev's probes can hold a detach back)."""
        deadline = time.monotonic() + timeout_s
        while _run("losetup", "-j", str(self.image)).stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.image} is still attached to a loop device")
            time.sleep(0.1)

    def read_detached(self, dest: Path) -> Path:
        """Copy every file of the unplugged drive into ``dest``, without attaching it again.

        Attaching would be a plug that the daemon under test sees. The journal is replayed
        first (``e2fsck -p``, as the next mount would), so ``dest`` shows what the drive will
        hold when plugged in again; a read-only ``e2fsck -n`` after it must find the file
        system consistent. ``debugfs rdump`` keeps names and contents, including dot files.
        """
        assert self.devnode is None, "detach first"
        self.wait_unbound()
        replay = _run("e2fsck", "-f", "-p", str(self.image), check=False)
        if replay.returncode > 1:  # 1: the journal was replayed (or a safe fix was made)
            raise AssertionError(f"e2fsck could not replay {self.image}: {replay.stdout}{replay.stderr}")
        check = _run("e2fsck", "-f", "-n", str(self.image), check=False)
        if check.returncode != 0:
            raise AssertionError(f"{self.image} is inconsistent after the replay: {check.stdout}")
        dest.mkdir(parents=True)
        _run("debugfs", "-R", f"rdump / {dest}", str(self.image))
        return dest

    def free_detached(self) -> int:
        """Bytes free for files on the unplugged drive (from its superblock)."""
        fields = dict(
            line.split(":", 1)
            for line in _run("dumpe2fs", "-h", str(self.image)).stdout.splitlines()
            if ":" in line
        )
        return int(fields["Free blocks"]) * int(fields["Block size"])

    def put_detached(self, files: dict[str, Path]) -> None:
        """Write host files into the unplugged drive (``{path on the drive: host file}``), as
        a user's own files already there before midid sees the drive; folders are made."""
        assert self.devnode is None, "detach first"
        folders = sorted({str(Path(rel).parent) for rel in files} - {"."})
        made = {p for f in folders for p in [*Path(f).parents, Path(f)] if str(p) != "."}
        lines = [f"mkdir {p}" for p in sorted(made, key=lambda p: len(p.parts))]
        lines += [f"write {src} {rel}" for rel, src in files.items()]
        script = self.image.with_suffix(".debugfs")
        script.write_text("\n".join(lines) + "\n")
        _run("debugfs", "-w", "-f", str(script), str(self.image))
        script.unlink()

    def cleanup(self) -> None:
        """Unmount (lazily if busy) and detach; never raises."""
        if self.mountpoint is not None:
            if _run("umount", str(self.mountpoint), check=False).returncode != 0:
                _run("umount", "-l", str(self.mountpoint), check=False)
            self.mountpoint = None
        self.detach()


@contextlib.contextmanager
def loop_drive(
    tmp_path: Path,
    label: str = "MPC_TEST",
    size_mb: int = 32,
    mount: bool = True,
    readonly: bool = False,
) -> Iterator[LoopDrive]:
    """An attached (and by default mounted, at ``tmp_path/media/<label>``) ext4 drive."""
    drive = LoopDrive(make_image(tmp_path / f"{label}.img", label, size_mb), label)
    try:
        drive.attach()
        settle()
        if mount:
            drive.mount(tmp_path / "media" / label, readonly=readonly)
        yield drive
    finally:
        drive.cleanup()
