"""The daemon under failure: an unreachable Ray cluster, a library disk that fills up."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from conftest import write_config
from loopdev import loop_drive, require_loop
from test_daemon import Daemon, files_in_db, status, wait_until


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_unreachable_cluster_falls_back_to_a_local_ray(tmp_path: Path, sample_midi) -> None:
    src = tmp_path / "src"
    src.mkdir()
    config = write_config(tmp_path, f'[sources]\nfolders = ["{src}"]\n[watch]\nsettle_s = 0.5\n'
                                    f'[ray]\naddress = "127.0.0.1:{_closed_port()}"\n[export]\nenabled = false\n')
    d = Daemon(tmp_path, config)
    try:
        d.notify.wait_for("READY=1", timeout=240)
        (src / "a.mid").write_bytes(sample_midi[0].read_bytes())
        wait_until(lambda: files_in_db(tmp_path).get("a.mid") == 1, 60, "analysed on the local Ray")
        s = status(config)
        assert any("unreachable" in m and "local Ray" in m for m in s["daemon_messages"])
    finally:
        assert d.stop() == 0


def test_full_library_disk_blocks_with_a_clear_error_and_resumes_when_freed(tmp_path: Path, sample_midi) -> None:
    require_loop(udev=False)
    src = tmp_path / "src"
    src.mkdir()
    with loop_drive(tmp_path, label="LIBDISK", size_mb=8) as disk:
        library = disk.mountpoint / "library"
        filler = disk.mountpoint / "filler.bin"
        free = __import__("shutil").disk_usage(disk.mountpoint).free
        filler.write_bytes(b"\0" * (free - 600_000))
        config = write_config(tmp_path, f'[library]\npath = "{library}"\ndatabase = "{tmp_path}/midid.sqlite3"\n'
                                        f'[sources]\nfolders = ["{src}"]\n[watch]\nsettle_s = 0.5\n'
                                        "[ray]\nnum_cpus = 2\nobject_store_mb = 100\n[export]\nenabled = false\n",
                              name="full.toml")
        text = config.read_text().split("[control]")
        config.write_text(text[0].split("[library]")[0] + "[control]" + text[1])
        base = sample_midi[-1].read_bytes()
        for i in range(80):
            (src / f"big_{i:03d}.mid").write_bytes(base + bytes(20_000) + i.to_bytes(2, "big"))
        d = Daemon(tmp_path, config).ready()
        try:
            wait_until(lambda: "library disk full" in status(config)["daemon"].get("state", ""), 60, "blocked")
            s = status(config)
            assert any("cannot write to the library" in m and "space" in m for m in s["daemon_messages"])
            assert not list(library.rglob("*.midid-tmp*"))
            filler.unlink()
            wait_until(lambda: len(files_in_db(tmp_path)) == 80, 90, "all imported after space was freed")
            assert status(config)["daemon"]["state"] == "running"
            with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
                paths = {r[0] for r in conn.execute("SELECT path FROM files")}
            on_disk = {p.relative_to(library).as_posix() for p in library.rglob("*.mid")}
            assert paths <= on_disk
        finally:
            assert d.stop() == 0
