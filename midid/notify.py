"""systemd notifications (sd_notify) and a watchdog pinger driven by a real liveness check.

The daemon runs as a ``Type=notify`` service. systemd passes ``NOTIFY_SOCKET`` (a path, or
``@name`` for the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` and
``WATCHDOG_PID``. Outside systemd none of these is set and every notification is a no-op, so the
daemon calls them unconditionally.

The watchdog is only worth having if a wedged daemon stops pinging. So pings do not come from a
free-running timer: the main loop calls :meth:`Heartbeat.beat` each time round, and the
:class:`WatchdogPinger` thread sends ``WATCHDOG=1`` only while the last beat is recent.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import systemd.daemon

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify(3) state lines to systemd; each method is a no-op without NOTIFY_SOCKET."""

    def _send(self, state: str) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        if not systemd.daemon.notify(state):
            log.debug("sd_notify(%r) was not delivered", state)

    def ready(self) -> None:
        """Tell systemd start-up is complete (``READY=1``): ``systemctl start`` returns now."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status`` (newlines are flattened)."""
        self._send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        """Tell systemd a clean shutdown has begun (``STOPPING=1``)."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """Tell systemd a config reload has begun; call :meth:`ready` when it is done.

        systemd 253+ (``Type=notify-reload``) wants ``MONOTONIC_USEC`` with ``RELOADING=1`` to
        order the reload against its own clock: CLOCK_MONOTONIC in microseconds.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog(self) -> None:
        """Send one keep-alive (``WATCHDOG=1``); call it only after checking the daemon is alive."""
        self._send("WATCHDOG=1")


def watchdog_interval_s() -> float | None:
    """Seconds between watchdog pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises.

    None when the watchdog is off, or when ``WATCHDOG_PID`` names another process (the variables
    were inherited by a child and are not meant for it).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


class Heartbeat:
    """The main loop's proof of life: ``beat()`` each time round, ``alive()`` asked by another thread."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        """Record that the main loop has just come round (monotonic clock)."""
        self._last = time.monotonic()

    def alive(self, max_age_s: float) -> bool:
        """True if the main loop beat within the last ``max_age_s`` seconds."""
        return time.monotonic() - self._last <= max_age_s


class WatchdogPinger:
    """A thread that sends ``WATCHDOG=1`` every ``interval_s`` while the heartbeat is recent.

    Pings stop as soon as the main loop has not beaten for ``2 * interval_s``, so systemd's
    ``WatchdogSec=`` (twice the interval) kills and restarts a wedged daemon.
    """

    def __init__(self, notifier: Notifier, heartbeat: Heartbeat, interval_s: float) -> None:
        self._notifier = notifier
        self._heartbeat = heartbeat
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="midid-watchdog", daemon=True)

    def start(self) -> None:
        """Start pinging (the first ping is sent at once if the heartbeat is recent)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging and wait for the thread to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        missed = False
        while not self._stop.is_set():
            if self._heartbeat.alive(2 * self._interval_s):
                self._notifier.watchdog()
                missed = False
            elif not missed:
                log.warning(
                    "main loop has not run for %.1f s: withholding watchdog pings", 2 * self._interval_s
                )
                missed = True
            self._stop.wait(self._interval_s)
