"""The control socket with real sockets, real concurrent clients and a real unprivileged user."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midid.control import ControlServer, DaemonNotRunning, request, request_stream

REPO = Path(__file__).resolve().parents[1]


def _ticks() -> Iterator[dict]:
    """A progress stream that never ends by itself, like following a long import."""
    tick = 0
    while True:
        yield {"ok": True, "tick": tick}
        tick += 1
        time.sleep(0.05)


def _handler(msg: dict) -> dict | Iterator[dict]:
    """A small stand-in for the daemon's dispatcher, exercising each reply shape."""
    cmd = msg["cmd"]
    if cmd == "echo":
        return {"ok": True, "echo": msg.get("value")}
    if cmd == "slow":
        time.sleep(msg["seconds"])
        return {"ok": True, "slept": msg["seconds"]}
    if cmd == "boom":
        raise ValueError("the handler broke")
    if cmd == "progress":
        return ({"ok": True, "done": i, "total": msg["n"]} for i in range(1, msg["n"] + 1))
    if cmd == "forever":
        return _ticks()
    if cmd == "bad-stream":
        return iter([{"ok": True, "done": 1}, "not a dict"])
    return {"ok": False, "error": f"unknown command {cmd!r}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    srv = ControlServer(tmp_path / "run" / "midid.sock", _handler, group="no-such-group-midid")
    srv.start()
    yield srv
    srv.stop()


def _raw_exchange(path: Path, payload: bytes) -> list[dict]:
    """Send raw bytes (possibly not JSON) and return every reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_request_reply_and_socket_mode(server: ControlServer) -> None:
    assert request(server.path, {"cmd": "echo", "value": "ünïcode ✓"}) == {"ok": True, "echo": "ünïcode ✓"}
    latin1 = os.fsdecode(b"/packs/Caf\xe9 Pack")  # a path that is not UTF-8, as Python holds it
    assert request(server.path, {"cmd": "echo", "value": latin1}) == {"ok": True, "echo": latin1}
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == os.getgid()  # the named group does not exist: the daemon's own gid
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o750  # created by start()


def test_streamed_progress(server: ControlServer) -> None:
    replies = list(request_stream(server.path, {"cmd": "progress", "n": 5}))
    assert [r["done"] for r in replies] == [1, 2, 3, 4, 5]
    assert all(r["total"] == 5 for r in replies)


def test_two_clients_at_once(server: ControlServer) -> None:
    """A slow request does not hold up another client: connections have their own threads."""
    results: dict[str, float] = {}

    def slow() -> None:
        request(server.path, {"cmd": "slow", "seconds": 1.0})
        results["slow_done"] = time.monotonic()

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    assert request(server.path, {"cmd": "echo", "value": 2})["echo"] == 2
    results["fast_done"] = time.monotonic()
    t.join()
    assert results["fast_done"] < results["slow_done"]


@pytest.mark.parametrize(
    ("payload", "error_part"),
    [
        (b"{not json\n", "not JSON"),
        (b"[1, 2]\n", "string \"cmd\""),
        (b'{"cmd": 3}\n', "string \"cmd\""),
        (b"\xff\xfe\n", "not JSON"),
    ],
)
def test_bad_requests_get_error_replies(server: ControlServer, payload: bytes, error_part: str) -> None:
    (reply,) = _raw_exchange(server.path, payload)
    assert reply["ok"] is False
    assert error_part in reply["error"]
    assert request(server.path, {"cmd": "echo", "value": 1})["ok"] is True


def test_handler_exception_is_an_error_reply_and_server_goes_on(server: ControlServer) -> None:
    reply = request(server.path, {"cmd": "boom"})
    assert reply["ok"] is False
    assert "ValueError: the handler broke" in reply["error"]
    replies = list(request_stream(server.path, {"cmd": "bad-stream"}))
    assert replies[0] == {"ok": True, "done": 1}
    assert replies[1]["ok"] is False and "not a dict" in replies[1]["error"]
    assert request(server.path, {"cmd": "echo", "value": "still here"})["echo"] == "still here"


def test_stop_ends_running_streams(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / "midid.sock", _handler, group="no-such-group-midid")
    srv.start()
    ticks: list[dict] = []
    ended = threading.Event()

    def follow() -> None:
        try:
            for reply in request_stream(srv.path, {"cmd": "forever"}, timeout=10):
                ticks.append(reply)
        except OSError:
            pass  # a reset is as good as an end of stream
        ended.set()

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)
    srv.stop()
    assert ended.wait(5), "the stream outlived the server"
    t.join()
    assert len(ticks) >= 2
    assert not srv.path.exists()


def test_no_daemon(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning):
        request(tmp_path / "absent.sock", {"cmd": "status"})
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "dead.sock"))
    dead.close()  # bound, never listening: the file a crashed daemon leaves behind
    with pytest.raises(DaemonNotRunning):
        request(tmp_path / "dead.sock", {"cmd": "status"})


def test_stale_socket_replaced_live_one_kept(tmp_path: Path) -> None:
    path = tmp_path / "midid.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    first = ControlServer(path, _handler, group="no-such-group-midid")
    first.start()
    try:
        assert request(path, {"cmd": "echo", "value": 1})["ok"] is True
        with pytest.raises(RuntimeError, match="already listening"):
            ControlServer(path, _handler).start()
        assert request(path, {"cmd": "echo", "value": 2})["echo"] == 2
    finally:
        first.stop()
    assert not path.exists()
    path.write_text("a user's file")
    with pytest.raises(FileExistsError):
        ControlServer(path, _handler).start()
    assert path.read_text() == "a user's file"


_CLIENT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from midid.control import request
    try:
        print(json.dumps(request(sys.argv[2], {"cmd": "echo", "value": "hi"})))
    except PermissionError as exc:
        print(json.dumps({"ok": False, "error": str(exc), "kernel": True}))
    """
)


def _run_as(user: str, sock: Path, extra_groups: list[int]) -> dict:
    """Run the client as ``user`` with exactly ``extra_groups`` as supplementary groups."""
    out = subprocess.run(
        ["/usr/bin/python3", "-c", _CLIENT, str(REPO), str(sock)],
        user=user,
        group=pwd.getpwnam(user).pw_gid,
        extra_groups=extra_groups,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def unprivileged_user() -> Iterator[tuple[str, str]]:
    """A throw-away system user and a control group, removed afterwards."""
    if os.geteuid() != 0 or not (shutil.which("useradd") and Path("/usr/bin/python3").exists()):
        pytest.skip("needs root, useradd and /usr/bin/python3 to test a real unprivileged client")
    if not all(os.access(p, os.R_OK | os.X_OK) for p in (REPO, REPO / "midid")):
        pytest.skip("the repository must be readable by other users for the unprivileged client")
    suffix = str(os.getpid())
    user, group = f"midid-test-nobody-{suffix}", f"midid-test-ctl-{suffix}"
    subprocess.run(["groupadd", "--system", group], check=True)
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
        try:
            yield user, group
        finally:
            subprocess.run(["userdel", user], check=True)
    finally:
        subprocess.run(["groupdel", group], check=True)


def test_unprivileged_user_refused_until_in_group(unprivileged_user: tuple[str, str]) -> None:
    user, group = unprivileged_user
    sock_dir = Path(tempfile.mkdtemp(prefix="midid-ctl-", dir="/tmp"))
    try:
        sock_dir.chmod(0o755)  # others may reach the socket; its own mode decides
        srv = ControlServer(sock_dir / "midid.sock", _handler, group=group)
        srv.start()
        try:
            assert os.stat(srv.path).st_gid == grp.getgrnam(group).gr_gid
            refused = _run_as(user, srv.path, [])
            assert refused["ok"] is False and refused.get("kernel") is True
            assert f"add your user to group {group}" in refused["error"]

            # With the file mode loosened by hand, SO_PEERCRED still refuses the stranger.
            os.chmod(srv.path, 0o666)
            refused = _run_as(user, srv.path, [])
            assert refused == {"ok": False, "error": f"permission denied: add your user to group {group}"}
            os.chmod(srv.path, 0o660)

            subprocess.run(["gpasswd", "--add", user, group], check=True, capture_output=True)
            pw = pwd.getpwnam(user)
            allowed = _run_as(user, srv.path, os.getgrouplist(user, pw.pw_gid))
            assert allowed == {"ok": True, "echo": "hi"}
        finally:
            srv.stop()
    finally:
        shutil.rmtree(sock_dir)


def test_a_reply_sent_before_the_request_was_read_is_still_read(tmp_path: Path) -> None:
    """The daemon refuses a peer (wrong user) without reading its request and closes; a client
    still sending then gets EPIPE, and must read the refusal rather than crash on the pipe (seen
    when the refusal won the race on a loaded machine). A request larger than the socket's
    buffer makes the order certain here."""
    path = tmp_path / "refusing.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen()

    def refuse() -> None:
        conn, _ = srv.accept()
        conn.sendall(b'{"ok": false, "error": "refused"}\n')
        conn.close()

    t = threading.Thread(target=refuse)
    t.start()
    try:
        assert request(path, {"cmd": "echo", "value": "x" * 4_000_000}) == {"ok": False, "error": "refused"}
    finally:
        t.join()
        srv.close()
