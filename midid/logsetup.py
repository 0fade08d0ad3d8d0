"""Logging set-up: the journal when systemd connected our stderr to it, else short lines on stderr."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys

from .pathtext import path_text

QUIET_LOGGERS = ("ray", "watchdog", "urllib3")
"""Third-party loggers held at WARNING: their INFO chatter drowns the daemon's own."""


def journal_is_stderr() -> bool:
    """True if stderr (fd 2) is the stream systemd connected to the journal.

    systemd sets ``JOURNAL_STREAM=<st_dev>:<st_ino>`` for the service's stdout/stderr; a child
    whose stderr was redirected elsewhere inherits the variable, so compare it with fd 2 itself.
    """
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


class _PathTextFilter(logging.Filter):
    """A log line naming a file whose name is not UTF-8 (a Latin-1 pack) carries it as Python
    reads it, with surrogate escapes: the journal refuses such text (the line is lost, with a
    traceback in its place) and a terminal shows it as ``\\udce9``. The message and any
    traceback are written with ``\\xNN`` instead, as ``midictl status`` and the library show
    the same name; done on the record, because the journal handler sends its fields too."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = path_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = path_text(logging.Formatter().formatException(record.exc_info))
        return True


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once for the daemon or ``midictl`` (replaces earlier handlers).

    Journal records carry ``SYSLOG_IDENTIFIER=midid`` and the level as the journal priority, so
    the message alone is formatted; on stderr each line gets a time, level and logger name.
    """
    handler: logging.Handler
    if journal_is_stderr():
        from systemd.journal import JournalHandler  # here: midictl imports this module and starts in ms

        handler = JournalHandler(SYSLOG_IDENTIFIER="midid")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(_PathTextFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def stacks_on_sigusr1() -> None:
    """``kill -USR1 PID`` writes the stack of every thread to stderr (the journal under
    systemd) and the process goes on: what a report of a hung midid or midictl needs. The
    process's own stderr, not ``sys.stderr``, which a caller may have swapped for a stream
    without a file descriptor (click's test runner does)."""
    stream = sys.__stderr__
    try:
        if stream is not None and stream.fileno() >= 0:
            faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)
    except (OSError, ValueError):  # no stderr at all: nowhere to write stacks to
        pass
