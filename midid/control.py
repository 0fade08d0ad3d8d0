"""The daemon's control socket: JSON lines over a Unix stream socket, and its client.

One connection carries one request: the client sends one JSON object on one line (``{"cmd":
"status", ...}``) and reads one JSON object per line until the server closes the connection.
Most requests get exactly one reply line; a handler may instead return an iterator of dicts (for
``midictl import --wait`` progress), which is streamed one line per item.

Who may talk to the daemon is decided twice: the socket file is mode 0660 and owned by the
control group (the kernel refuses ``connect`` to others), and each connection's peer
credentials (SO_PEERCRED) are checked against root, the daemon's own user and the members of
that group, in case the file mode was loosened by hand.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import pwd
import socket
import socketserver
import stat
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
"""Longest request line accepted; control messages are small, a longer line is a client bug."""

REQUEST_READ_TIMEOUT_S = 30.0
"""How long a connection may sit idle before sending its request line."""

Handler = Callable[[dict], "dict | Iterator[dict]"]


class DaemonNotRunning(ConnectionError):
    """No daemon listens on the control socket (no socket file, or connection refused)."""


def _permission_message(group: str) -> str:
    return f"permission denied: add your user to group {group}"


def _socket_group_gid(group: str) -> int:
    """The gid the socket file gets: ``group`` when it exists, else the daemon's own gid."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        log.info("group %s does not exist; the control socket keeps the daemon's group", group)
        return os.getgid()


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket, from SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_allowed(uid: int, gid: int, socket_gid: int) -> bool:
    """True for root, the daemon's own user, and members of the socket's group.

    Membership counts the primary and supplementary groups from the user database
    (``os.getgrouplist``), as well as the peer's effective gid.
    """
    if uid in (0, os.getuid()) or gid == socket_gid:
        return True
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return socket_gid in os.getgrouplist(user.pw_name, user.pw_gid)


def _is_listening(path: Path) -> bool:
    """True if something accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def _remove_stale_socket(path: Path) -> None:
    """Delete a socket file left by a dead daemon; refuse to touch a live one or a non-socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; remove it or set control.socket")
    if _is_listening(path):
        raise RuntimeError(f"another daemon is already listening on {path}")
    log.info("removing stale control socket %s", path)
    path.unlink()


def _encode(reply: Mapping) -> bytes:
    """One JSON line, ASCII-escaped: a path whose name is not UTF-8 reaches Python with
    surrogate escapes, which survive as ``\\udcXX`` escapes and come back as the same path."""
    return json.dumps(reply, default=str).encode() + b"\n"


def _error(text: str) -> dict:
    return {"ok": False, "error": text}


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, handler: Handler, socket_gid: int, group: str) -> None:
        self.handler = handler
        self.socket_gid = socket_gid
        self.group = group
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(str(path), _Connection)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a connection's unexpected failure (socketserver would print it to stderr)."""
        log.exception("control connection failed")

    def cut_connections(self) -> None:
        """Shut down every open connection, so streaming handlers end at their next write."""
        with self.connections_lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the client


class _Connection(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.request)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.request)
        try:
            super().finish()
        except OSError:
            pass  # the peer is gone; nothing left to flush

    def handle(self) -> None:
        sock: socket.socket = self.request
        _, uid, gid = _peer_credentials(sock)
        if not peer_allowed(uid, gid, self.server.socket_gid):
            log.warning("refused control connection from uid %d", uid)
            self._send(_error(_permission_message(self.server.group)))
            return
        sock.settimeout(REQUEST_READ_TIMEOUT_S)
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
        except TimeoutError:
            return
        sock.settimeout(None)
        if not line:
            return
        if not line.endswith(b"\n") and len(line) >= MAX_REQUEST_BYTES:
            self._send(_error(f"bad request: longer than {MAX_REQUEST_BYTES} bytes"))
            return
        try:
            msg = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._send(_error(f"bad request: not JSON ({exc})"))
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
            self._send(_error('bad request: expected a JSON object with a string "cmd"'))
            return
        self._dispatch(msg)

    def _dispatch(self, msg: dict) -> None:
        try:
            reply = self.server.handler(msg)
            if isinstance(reply, Mapping):
                self._send(reply)
                return
            if not isinstance(reply, Iterator):
                raise TypeError(f"handler returned {type(reply).__name__}, not a dict or an iterator")
            try:
                for item in reply:
                    if not isinstance(item, Mapping):
                        raise TypeError(f"handler streamed {type(item).__name__}, not a dict")
                    if not self._send(item):
                        break  # the client left or the server is stopping: stop producing
            finally:
                close = getattr(reply, "close", None)
                if close is not None:
                    close()  # run the generator's own clean-up now, not at garbage collection
        except Exception as exc:
            log.exception("control request %r failed", msg.get("cmd"))
            self._send(_error(f"internal error in {msg['cmd']!r}: {type(exc).__name__}: {exc}"))

    def _send(self, reply: Mapping) -> bool:
        """Write one reply line; False if the connection is gone."""
        try:
            self.wfile.write(_encode(reply))
            self.wfile.flush()
        except OSError as exc:
            log.debug("control connection ended before a reply was sent: %s", exc)
            return False
        return True


class ControlServer:
    """Serves ``handler`` on a Unix socket at ``path``, one thread per connection.

    ``handler`` receives the request dict (always with a string ``"cmd"``) and returns a reply
    dict, or an iterator of dicts to stream. It runs on connection threads, possibly several at
    once, so it must be thread-safe. An exception in it becomes an error reply; the server goes on.
    """

    def __init__(self, path: Path, handler: Handler, *, group: str = "midid") -> None:
        self.path = Path(path)
        self._handler = handler
        self._group = group
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Create the socket (mode 0660, the control group) and serve on a background thread.

        A missing parent folder is created (mode 0750); under systemd it is ``RuntimeDirectory=``.
        """
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        _remove_stale_socket(self.path)
        socket_gid = _socket_group_gid(self._group)
        self._server = _Server(self.path, self._handler, socket_gid, self._group)
        os.chmod(self.path, 0o660)
        try:
            os.chown(self.path, -1, socket_gid)
        except PermissionError:
            log.warning(
                "cannot give %s to group %s: run the daemon as a member of it", self.path, self._group
            )
        self._thread = threading.Thread(target=self._server.serve_forever, name="midid-control", daemon=True)
        self._thread.start()
        log.info("control socket listening on %s", self.path)

    def stop(self) -> None:
        """Stop accepting connections and remove the socket file (running streams are cut off)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.cut_connections()
        if self._thread is not None:
            self._thread.join()
        self.path.unlink(missing_ok=True)
        self._server = None


def _connect(path: Path, timeout: float) -> socket.socket:
    """Connect to the daemon, turning "not there" and "not allowed" into errors a user can act on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonNotRunning(f"midid is not running (nothing listens on {path})") from exc
    except PermissionError as exc:
        sock.close()
        try:
            group = grp.getgrgid(os.stat(path).st_gid).gr_name
        except (KeyError, OSError):
            group = "midid"
        raise PermissionError(f"{_permission_message(group)} (cannot connect to {path})") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def request_stream(path: Path, msg: dict, timeout: float = 5.0) -> Iterator[dict]:
    """Send one request and yield each reply line as a dict until the daemon closes the connection.

    ``timeout`` bounds the connect and each wait for the next line (seconds), not the whole stream.
    """
    sock = _connect(Path(path), timeout)
    with sock, sock.makefile("rb") as lines:
        try:
            sock.sendall(_encode(msg))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered without reading (a refusal) and closed: its reply waits below
        try:
            for line in lines:
                yield json.loads(line)
        except ConnectionResetError:
            return  # closed with our request unread and nothing (more) to say


def request(path: Path, msg: dict, timeout: float = 5.0) -> dict:
    """Send one request and return the daemon's (first) reply."""
    for reply in request_stream(path, msg, timeout):
        return reply
    raise ConnectionError(f"midid closed the control connection without replying to {msg.get('cmd')!r}")
