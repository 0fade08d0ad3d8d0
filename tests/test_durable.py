"""BatchWriter: files written by the background writer are all there after publish, and a write
that fails there surfaces at publish with nothing half-published."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from midid.durable import _CHUNK, STAGING, BatchWriter


def test_publish_puts_every_staged_file_in_place(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path)
    n = 3 * _CHUNK + 5  # several hand-overs plus a partial one left for publish
    for i in range(n):
        writer.add_bytes(f"pack/{i % 3}/f{i}.mid", bytes([i % 256]) * (i + 1))
    writer.publish()
    for i in range(n):
        assert (tmp_path / f"pack/{i % 3}/f{i}.mid").read_bytes() == bytes([i % 256]) * (i + 1)
    assert not any((tmp_path / STAGING).iterdir())


def test_a_failed_background_write_raises_at_publish_and_discard_cleans_up(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path)
    shutil.rmtree(tmp_path / STAGING)  # every create in the writer thread now fails
    for i in range(_CHUNK + 3):
        writer.add_bytes(f"f{i}.mid", b"MThd")
    with pytest.raises(OSError) as raised:
        writer.publish()
    assert raised.value.errno == errno.ENOENT
    writer.discard()
    assert not list(tmp_path.rglob("*.mid"))


def test_a_full_disk_in_the_writer_thread_publishes_nothing_truncated(tmp_path: Path) -> None:
    """The dangerous failure: the file was created but its bytes did not fit (ENOSPC)."""
    root = tmp_path / "small"
    root.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        writer = BatchWriter(root)
        for i in range(8):
            writer.add_bytes(f"f{i}.mid", b"x" * 100_000)
        with pytest.raises(OSError) as raised:
            writer.publish()
        assert raised.value.errno == errno.ENOSPC
        writer.discard()
        assert not list(root.rglob("*.mid")) and not any((root / STAGING).iterdir())
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_discard_waits_for_writes_in_flight(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path)
    for i in range(4 * _CHUNK):
        writer.add_bytes(f"f{i}.mid", b"x" * 10_000)
    writer.discard()  # without waiting, files created after their unlink would be left behind
    assert not any((tmp_path / STAGING).iterdir())
    assert not list(tmp_path.rglob("*.mid"))
