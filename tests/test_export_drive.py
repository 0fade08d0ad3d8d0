"""copy_batch onto real loop-device drives: normal, full, pulled, lazily unmounted, read-only."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from loopdev import loop_drive, require_loop

from midid.export.copy import TEMP_PREFIX, CopyItem, copy_batch, remove_stale_temps
from midid.export.index import INDEX_NAME, write_index
from midid.export.layout import export_relpath
from midid.hotplug import find_mount

pytestmark = pytest.mark.root

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def _needs_loop():
    require_loop(udev=False)


def _corpus(count: int, kind: str = "pop909") -> list[Path]:
    files = sorted((CORPUS / kind).rglob("*.mid"))[:count]
    if len(files) < count:
        pytest.skip(f"needs {count} files from {CORPUS / kind}")
    return files


def _items(files: list[Path], category: str = "Chords") -> list[CopyItem]:
    taken: set[str] = set()
    items = []
    for path in files:
        rel = export_relpath(
            "mpc", category, path.parent.name, path.name, taken=lambda p: p.casefold() in taken
        )
        taken.add(rel.casefold())
        items.append(CopyItem(path, rel))
    return items


def _assert_no_half_files(root: Path, items: list[CopyItem]) -> set[str]:
    """Every exported path on the drive holds its whole source; returns those present."""
    present = set()
    for item in items:
        dest = root / item.dest_rel
        if dest.exists():
            assert dest.read_bytes() == item.src.read_bytes(), f"half or wrong file {dest}"
            present.add(item.dest_rel)
    return present


def _temps(root: Path) -> list[Path]:
    return list(root.rglob(f"{TEMP_PREFIX}*"))


def test_copy_onto_a_mounted_drive_then_replug_copies_nothing_new(tmp_path):
    items = _items(_corpus(60, "groove"), "Drums")
    with loop_drive(tmp_path, "MPC_TEST", size_mb=32) as drive:
        first = copy_batch(items, drive.mountpoint)
        assert first.stopped is None and first.failed == []
        assert len(first.copied) == len(items)
        write_index(drive.mountpoint, [
            {"path": i.dest_rel, "hash": "h", "category": "Drums", "bpm": None, "key": None,
             "tags": [], "source": i.src.name, "exported_at": "2026-11-27T10:00:00Z"} for i in items
        ])  # fmt: skip
        mountpoint = drive.mountpoint
        drive.umount()
        drive.mount(mountpoint)  # re-plug: everything durable and whole
        assert _assert_no_half_files(mountpoint, items) == {i.dest_rel for i in items}
        assert (mountpoint / INDEX_NAME).exists()
        again = copy_batch(items, mountpoint)
        assert len(again.copied) == len(items) and again.bytes == 0
        assert _temps(mountpoint) == []


def test_full_drive_stops_cleanly(tmp_path):
    items = _items(_corpus(250))
    total = sum(i.src.stat().st_size for i in items)
    with loop_drive(tmp_path, "MPC_TINY", size_mb=2) as drive:
        assert total > 2 * 1024 * 1024, "the batch must not fit"
        result = copy_batch(items, drive.mountpoint)
        assert result.stopped and result.stopped.startswith("device full (free ")
        assert result.stopped.endswith(" MB)")
        assert 0 < len(result.copied) < len(items)
        assert result.failed == []
        assert _temps(drive.mountpoint) == []
        present = _assert_no_half_files(drive.mountpoint, items)
        assert present == {i.dest_rel for i in result.copied}


def _feed_after(fifo: Path, data: bytes, damage) -> threading.Thread:
    """Block copy_batch on ``fifo`` (a source mid-batch) until ``damage()`` has run, then feed it.

    Opening a FIFO for writing returns only once copy_batch opened it for reading, so the
    damage lands deterministically after the files before it were staged.
    """

    def run() -> None:
        with open(fifo, "wb") as pipe:  # returns once copy_batch opened it for reading
            damage()
            pipe.write(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_drive_pulled_mid_batch_stops_and_leaves_no_half_file(tmp_path):
    files = _corpus(80)
    items = _items(files)
    fifo = tmp_path / "blocking.mid"
    os.mkfifo(fifo)
    middle = CopyItem(fifo, items[40].dest_rel.replace(".mid", "_fifo.mid"))
    batch = items[:40] + [middle] + items[40:]
    with loop_drive(tmp_path, "MPC_TEST", size_mb=32) as drive:
        mountpoint = drive.mountpoint
        writer = _feed_after(fifo, files[0].read_bytes(), drive.pull)
        result = copy_batch(batch, mountpoint)
        writer.join(10)
        assert result.stopped and result.stopped.startswith("device gone: ")
        assert result.copied == [] and result.bytes == 0
        drive.umount()
        drive.mount(mountpoint)  # plugged in again: the journal replays
        remove_stale_temps(mountpoint)
        assert _temps(mountpoint) == []
        _assert_no_half_files(mountpoint, items)
        resumed = copy_batch(items, mountpoint)  # next plug resumes
        assert resumed.stopped is None and len(resumed.copied) == len(items)


def test_lazy_unmount_mid_batch_never_writes_to_the_host(tmp_path):
    files = _corpus(40)
    items = _items(files)
    fifo = tmp_path / "blocking.mid"
    os.mkfifo(fifo)
    middle = CopyItem(fifo, "MPC_Documents/late.mid")
    batch = items[:20] + [middle] + items[20:]
    with loop_drive(tmp_path, "MPC_TEST", size_mb=32) as drive:
        mountpoint, devnode = drive.mountpoint, drive.devnode

        def yank() -> None:
            drive.umount(lazy=True)
            drive.detach()  # busy: the kernel detaches when the last user goes

        writer = _feed_after(fifo, files[0].read_bytes(), yank)
        result = copy_batch(batch, mountpoint)
        writer.join(10)
        assert list(mountpoint.iterdir()) == [], "wrote into the host's mount-point folder"
        assert find_mount(devnode, Path("/proc/self/mountinfo").read_text()) is None
        drive.attach()
        drive.mount(mountpoint)
        remove_stale_temps(mountpoint)
        assert _temps(mountpoint) == []
        present = _assert_no_half_files(mountpoint, items)
        copied = {i.dest_rel for i in result.copied}
        assert copied - {middle.dest_rel} <= present
        if middle in result.copied:
            assert (mountpoint / middle.dest_rel).read_bytes() == files[0].read_bytes()


def test_read_only_mount_stops_with_advice(tmp_path):
    items = _items(_corpus(3))
    with loop_drive(tmp_path, "MPC_TEST", size_mb=8, readonly=True) as drive:
        mount = find_mount(drive.devnode, Path("/proc/self/mountinfo").read_text())
        assert mount is not None and mount.readonly
        result = copy_batch(items, drive.mountpoint)
        assert result.stopped and "read-only" in result.stopped and "Remount" in result.stopped
        assert result.copied == []
        assert list(drive.mountpoint.rglob("*.mid")) == []
