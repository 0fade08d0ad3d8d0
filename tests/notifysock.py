"""A NOTIFY_SOCKET as systemd gives a Type=notify service: a datagram socket whose messages
(READY=1, STATUS=..., WATCHDOG=1) a thread collects. The daemon tests and benchmarks/daemon.py
both start the real daemon with one."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            self.messages.extend(data.decode().splitlines())

    def wait_for(self, prefix: str, timeout: float = 90.0, after: int = 0,
                 proc: subprocess.Popen[bytes] | None = None) -> str:
        """The first message from index `after` on that starts with `prefix`; fails at once
        when `proc` (the daemon) exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.messages[after:]:
                if line.startswith(prefix):
                    return line
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {proc.returncode} before {prefix!r}")
            time.sleep(0.02)
        raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.messages[-20:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
