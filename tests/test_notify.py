"""sd_notify messages on a real datagram socket, the liveness-checked watchdog, and log routing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from midid.notify import Heartbeat, Notifier, WatchdogPinger, watchdog_interval_s


def _receive_all(sock: socket.socket, wait_s: float) -> list[str]:
    """Datagrams that arrive within the next ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    got = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in tmp_path standing in for systemd, with NOTIFY_SOCKET naming it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_each_state_line_reaches_the_socket(notify_socket: socket.socket) -> None:
    n = Notifier()
    n.ready()
    n.status("analysed 1,204/3,000\n2 errors")
    n.stopping()
    n.watchdog()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = _receive_all(notify_socket, 0.5)
    assert got[:4] == ["READY=1", "STATUS=analysed 1,204/3,000 2 errors", "STOPPING=1", "WATCHDOG=1"]
    reload_lines = dict(line.split("=", 1) for line in got[4].splitlines())
    assert reload_lines["RELOADING"] == "1"
    assert before <= int(reload_lines["MONOTONIC_USEC"]) <= after
    assert len(got) == 5


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"midid-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready()
        assert _receive_all(sock, 0.5) == ["READY=1"]
    finally:
        sock.close()


def test_no_notify_socket_is_a_silent_no_op(notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET")
    n = Notifier()
    n.ready()
    n.status("x")
    n.watchdog()
    assert _receive_all(notify_socket, 0.2) == []


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", "self", 15.0),
        ("30000000", None, 15.0),
        ("30000000", "1", None),
        (None, None, None),
        ("0", "self", None),
        ("junk", "self", None),
    ],
)
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None) -> None:
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval_s() == expected


def test_pings_follow_the_main_loop(notify_socket: socket.socket) -> None:
    """Pings arrive while the loop beats and stop within 2 intervals once it wedges."""
    interval = 0.05
    heartbeat = Heartbeat()
    wedged = threading.Event()
    quit_loop = threading.Event()

    def main_loop() -> None:
        while not quit_loop.is_set():
            if not wedged.is_set():
                heartbeat.beat()
            time.sleep(0.01)

    loop = threading.Thread(target=main_loop)
    loop.start()
    pinger = WatchdogPinger(Notifier(), heartbeat, interval)
    pinger.start()
    try:
        beating = _receive_all(notify_socket, 0.5)
        assert beating.count("WATCHDOG=1") >= 4
        assert set(beating) == {"WATCHDOG=1"}
        wedged.set()
        _receive_all(notify_socket, 4 * interval)  # pings sent before the beat went stale
        assert _receive_all(notify_socket, 0.5) == []
        wedged.clear()
        assert "WATCHDOG=1" in _receive_all(notify_socket, 0.5)
    finally:
        pinger.stop()
        quit_loop.set()
        loop.join()
    assert _receive_all(notify_socket, 3 * interval) == []


_LOG_PROBE = textwrap.dedent(
    """
    import json, logging, os, sys
    from midid.logsetup import setup_logging
    if sys.argv[1] == "match":
        st = os.fstat(2)
        os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    else:
        os.environ["JOURNAL_STREAM"] = "1:1"
    setup_logging("DEBUG")
    logging.getLogger("midid.test").info("imported 3 files")
    logging.getLogger("ray.worker").info("ray chatter")
    logging.getLogger("midid.test").info("imported %s", os.fsdecode(b"/packs/Caf\\xe9.mid"))
    print(json.dumps({
        "handler": type(logging.getLogger().handlers[0]).__name__,
        "ray_level": logging.getLogger("ray").level,
        "root_level": logging.getLogger().level,
    }))
    """
)


def _run_log_probe(tmp_path: Path, mode: str, prefix: list[str] | None = None, code: str = _LOG_PROBE) -> tuple[dict, str]:
    import json

    stderr_path = tmp_path / f"stderr-{mode}"
    with stderr_path.open("w") as stderr:
        out = subprocess.run(
            [*(prefix or []), sys.executable, "-c", code, mode],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
            timeout=60,
        ).stdout
    return json.loads(out.splitlines()[-1]), stderr_path.read_text()


def test_stderr_logging_when_not_under_journal(tmp_path: Path) -> None:
    result, stderr = _run_log_probe(tmp_path, "nomatch")
    assert result["handler"] == "StreamHandler"
    assert result["ray_level"] == 30
    assert result["root_level"] == 10
    assert "INFO    midid.test: imported 3 files" in stderr
    assert "ray chatter" not in stderr
    assert "midid.test: imported /packs/Caf\\xe9.mid" in stderr


_JOURNAL_PROBE = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    # Private mount namespace: a tmpfs over /run holds our own journal socket.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.makedirs("/run/systemd/journal")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/run/systemd/journal/socket")
    sock.settimeout(2)
    st = os.fstat(2)
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    import logging
    from midid.logsetup import setup_logging
    setup_logging("INFO")
    logging.getLogger("midid.test").warning("synced 37 files to MPC One")
    # A Latin-1 name as Python reads it from disk (surrogate escapes).
    logging.getLogger("midid.test").info("imported %s", os.fsdecode(b"/packs/Caf\\xe9/m\\xe9lodie.mid"))
    try:
        raise ValueError("cannot split " + os.fsdecode(b"/packs/Caf\\xe9.mid"))
    except ValueError:
        logging.getLogger("midid.test").exception("split failed")
    # Journal native protocol: KEY=value lines; a value with a newline is KEY, then its
    # length as 8 bytes little-endian, then the bytes.
    def fields_of(datagram):
        fields, at = {}, 0
        while at < len(datagram):
            end = datagram.index(b"\\n", at)
            line = datagram[at:end]
            if b"=" in line:
                key, value = line.split(b"=", 1)
                at = end + 1
            else:
                key, size = line, int.from_bytes(datagram[end + 1:end + 9], "little")
                value, at = datagram[end + 9:end + 9 + size], end + 10 + size
            fields[key.decode()] = value.decode()
        return fields
    messages = [fields_of(sock.recv(65536)) for _ in range(3)]
    print(json.dumps({"handler": type(logging.getLogger().handlers[0]).__name__,
                      "fields": messages[0], "latin1": messages[1], "traceback": messages[2]}))
    """
)


def test_journal_logging_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the probe its own /run/systemd/journal/socket")
    result, _ = _run_log_probe(tmp_path, "journal", ["unshare", "-m", "--propagation", "private"], _JOURNAL_PROBE)
    assert result["handler"] == "JournalHandler"
    fields = result["fields"]
    assert fields["SYSLOG_IDENTIFIER"] == "midid"
    assert fields["MESSAGE"] == "synced 37 files to MPC One"
    assert fields["PRIORITY"] == "4"
    assert fields["LOGGER"] == "midid.test"
    assert result["latin1"]["MESSAGE"] == "imported /packs/Caf\\xe9/m\\xe9lodie.mid"
    assert "ValueError: cannot split /packs/Caf\\xe9.mid" in result["traceback"]["EXCEPTION_TEXT"]
