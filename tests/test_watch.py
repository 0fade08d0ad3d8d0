"""SourceWatcher on real folders with real inotify (and real polling when inotify runs out)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from midid.watch import SourceWatcher

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 0.3


class Reports:
    """Collects the watcher's callbacks, with the thread each ran on and the file size seen then."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready: list[Path] = []
        self.ready_calls: list[list[Path]] = []
        self.sizes: dict[Path, int] = {}
        self.ready_at: dict[Path, float] = {}
        self.moved: list[tuple[Path, Path]] = []
        self.deleted: list[Path] = []
        self.threads: set[int] = set()
        self.active = 0
        self.overlapped = False

    def _enter(self) -> None:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.active += 1
            self.overlapped |= self.active > 1

    def _leave(self) -> None:
        with self.lock:
            self.active -= 1

    def on_ready(self, paths: list[Path]) -> None:
        self._enter()
        try:
            now = time.monotonic()
            for p in paths:
                self.sizes[p] = p.stat().st_size if p.exists() else -1
                self.ready_at[p] = now
            with self.lock:
                self.ready.extend(paths)
                self.ready_calls.append(list(paths))
        finally:
            self._leave()

    def on_moved(self, pairs: list[tuple[Path, Path]]) -> None:
        self._enter()
        with self.lock:
            self.moved.extend(pairs)
        self._leave()

    def on_deleted(self, paths: list[Path]) -> None:
        self._enter()
        with self.lock:
            self.deleted.extend(paths)
        self._leave()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "sources"
    root.mkdir()
    return root.resolve()


@pytest.fixture
def watched(tree: Path) -> Iterator[tuple[SourceWatcher, Reports]]:
    reports = Reports()
    watcher = SourceWatcher(
        [tree],
        settle_s=SETTLE_S,
        on_ready=reports.on_ready,
        on_moved=reports.on_moved,
        on_deleted=reports.on_deleted,
        batch_window_s=0.2,
        max_batch=500,
    )
    watcher.start()
    yield watcher, reports
    watcher.stop()


def test_close_after_write_is_ready_once(tree: Path, watched: tuple[SourceWatcher, Reports]) -> None:
    _, reports = watched
    sub = tree / "pack one"
    sub.mkdir()
    target = sub / "Bass Line 120.mid"
    target.write_bytes(b"MThd" + bytes(100))
    assert wait_for(lambda: target in reports.ready)
    time.sleep(SETTLE_S * 3)
    assert reports.ready.count(target) == 1
    assert reports.sizes[target] == 104
    assert threading.get_ident() not in reports.threads


def test_open_writer_is_not_reported_half_way(tree: Path, watched: tuple[SourceWatcher, Reports]) -> None:
    """A writer that keeps the file open: ready only once size and mtime held for settle_s."""
    _, reports = watched
    target = tree / "big archive.zip"
    with target.open("wb") as f:
        for _ in range(8):
            f.write(os.urandom(64 * 1024))
            f.flush()
            time.sleep(SETTLE_S / 3)
            assert target not in reports.ready
        last_write = time.monotonic()
        assert wait_for(lambda: target in reports.ready, timeout=SETTLE_S * 10)
        assert reports.sizes[target] == 8 * 64 * 1024
        assert reports.ready_at[target] - last_write >= SETTLE_S * 0.9


def test_file_renamed_in_from_outside(tmp_path: Path, tree: Path, watched: tuple[SourceWatcher, Reports]) -> None:
    _, reports = watched
    outside = tmp_path / "download.mid.part"
    outside.write_bytes(b"MThd" + bytes(10))
    os.rename(outside, tree / "download.mid")
    assert wait_for(lambda: tree / "download.mid" in reports.ready)
    assert reports.moved == []


def test_flood_is_coalesced(tree: Path, watched: tuple[SourceWatcher, Reports]) -> None:
    """2,000 files extracted into a new folder: every file once, in a few lists of ≤ max_batch."""
    _, reports = watched
    pack = tree / "Extracted Pack"
    pack.mkdir()
    expected = set()
    for i in range(2000):
        p = pack / f"loop {i:04d}.mid"
        p.write_bytes(b"MThd")
        expected.add(p)
    assert wait_for(lambda: len(reports.ready) >= 2000, timeout=30)
    time.sleep(SETTLE_S * 3)
    assert set(reports.ready) == expected
    assert len(reports.ready) == 2000
    assert max(len(c) for c in reports.ready_calls) <= 500
    assert len(reports.ready_calls) <= 40
    assert len(reports.threads) == 1 and not reports.overlapped


def test_folder_moved_in_brings_its_files(tmp_path: Path, tree: Path, watched: tuple[SourceWatcher, Reports]) -> None:
    _, reports = watched
    staging = tmp_path / "staging" / "Drum Kit"
    (staging / "kicks").mkdir(parents=True)
    files = [staging / f"groove {i}.mid" for i in range(20)] + [staging / "kicks" / f"k{i}.mid" for i in range(5)]
    for p in files:
        p.write_bytes(b"MThd")
    shutil.move(str(staging), str(tree / "Drum Kit"))
    expected = {tree / "Drum Kit" / p.relative_to(staging) for p in files}
    assert wait_for(lambda: expected <= set(reports.ready))
    time.sleep(SETTLE_S * 3)
    assert sorted(reports.ready) == sorted(expected)


def test_moves_inside_the_tree_are_pairs(tree: Path, watched: tuple[SourceWatcher, Reports]) -> None:
    _, reports = watched
    (tree / "a").mkdir()
    one, two = tree / "a" / "one.mid", tree / "a" / "two.mid"
    one.write_bytes(b"MThd1")
    two.write_bytes(b"MThd2")
    assert wait_for(lambda: {one, two} <= set(reports.ready))
    os.rename(one, tree / "a" / "uno.mid")
    assert wait_for(lambda: (one, tree / "a" / "uno.mid") in reports.moved)
    os.rename(tree / "a", tree / "b")
    expected = {(tree / "a" / "uno.mid", tree / "b" / "uno.mid"), (two, tree / "b" / "two.mid")}
    assert wait_for(lambda: expected <= set(reports.moved))
    time.sleep(SETTLE_S * 3)
    assert len(reports.moved) == 3
    assert len(reports.ready) == 2
    assert reports.deleted == []


def test_deletes_and_moves_out(tmp_path: Path, tree: Path, watched: tuple[SourceWatcher, Reports]) -> None:
    _, reports = watched
    (tree / "sub").mkdir()
    doomed, leaving, inner = tree / "doomed.mid", tree / "leaving.mid", tree / "sub" / "inner.mid"
    for p in (doomed, leaving, inner):
        p.write_bytes(b"MThd")
    assert wait_for(lambda: {doomed, leaving, inner} <= set(reports.ready))
    doomed.unlink()
    shutil.move(str(leaving), str(tmp_path / "leaving.mid"))
    shutil.move(str(tree / "sub"), str(tmp_path / "sub"))
    assert wait_for(lambda: {doomed, leaving, tree / "sub"} <= set(reports.deleted))
    assert reports.moved == []


def test_symlinks_not_followed_unless_asked(tmp_path: Path, tree: Path) -> None:
    real = tmp_path / "elsewhere.mid"
    real.write_bytes(b"MThd")
    results = {}
    for follow in (False, True):
        reports = Reports()
        root = tree / f"follow-{follow}"
        root.mkdir()
        watcher = SourceWatcher(
            [root], settle_s=SETTLE_S, on_ready=reports.on_ready, on_moved=reports.on_moved,
            on_deleted=reports.on_deleted, batch_window_s=0.2, follow_symlinks=follow,
        )
        watcher.start()
        try:
            (root / "link.mid").symlink_to(real)
            (root / "plain.mid").write_bytes(b"MThd")
            assert wait_for(lambda: root / "plain.mid" in reports.ready)
            time.sleep(SETTLE_S * 3)
            results[follow] = set(reports.ready)
        finally:
            watcher.stop()
    assert results[False] == {tree / "follow-False" / "plain.mid"}
    assert results[True] == {tree / "follow-True" / "plain.mid", tree / "follow-True" / "link.mid"}


def test_set_folders_and_a_failing_callback(tmp_path: Path, tree: Path) -> None:
    second = (tmp_path / "second").resolve()
    second.mkdir()
    calls: list[list[Path]] = []

    def flaky(paths: list[Path]) -> None:
        calls.append(paths)
        if len(calls) == 1:
            raise RuntimeError("the database is busy")

    watcher = SourceWatcher([tree], settle_s=SETTLE_S, on_ready=flaky, on_moved=lambda _: None,
                            on_deleted=lambda _: None, batch_window_s=0.2)
    watcher.start()
    try:
        (tree / "first.mid").write_bytes(b"MThd")
        assert wait_for(lambda: len(calls) == 1)
        watcher.set_folders([second])
        (tree / "ignored.mid").write_bytes(b"MThd")
        (second / "wanted.mid").write_bytes(b"MThd")
        assert wait_for(lambda: any(second / "wanted.mid" in c for c in calls))
        time.sleep(SETTLE_S * 3)
        assert not any(tree / "ignored.mid" in c for c in calls)
    finally:
        watcher.stop()


_LIMITED = textwrap.dedent(
    """
    import json, logging, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from midid.watch import SourceWatcher
    big, small, late, limit = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
    records = []
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().addHandler(type("H", (logging.Handler,), {"emit": lambda s, r: records.append(r.getMessage())})())
    # Only this user namespace's limit changes; the rest of the machine keeps its own.
    Path("/proc/sys/user/max_inotify_watches").write_text(limit)
    ready = []
    w = SourceWatcher([small, late], settle_s=0.3, on_ready=ready.extend, on_moved=lambda _: None,
                      on_deleted=lambda _: None, batch_window_s=0.2)
    w.start()
    before = sorted(str(p) for p in w.polling)
    w.set_folders([small, late, big])
    after_big = sorted(str(p) for p in w.polling)
    for i in range(45):  # the late tree grows past the limit while watched
        d = late / f"new{i}"
        d.mkdir()
        (d / "x.mid").write_bytes(b"MThd")
    deep = big / "d59" / "deep.mid"
    deep.write_bytes(b"MThd")
    deadline = time.monotonic() + 20
    want = {deep, late / "new44" / "x.mid"}
    while time.monotonic() < deadline and not want <= set(ready):
        time.sleep(0.1)
    w.stop()
    print(json.dumps({"before": before, "after_big": after_big, "final": sorted(str(p) for p in w.polling),
                      "ready": sorted(str(p) for p in ready), "warnings": records}))
    """
)


def test_inotify_exhaustion_falls_back_to_polling(tmp_path: Path) -> None:
    """Run in a user namespace whose own inotify watch limit is 40: big trees are polled."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-U", "-r", "true"]).returncode != 0:
        pytest.skip("needs unshare(1) and unprivileged user namespaces to lower the inotify limit safely")
    big, small, late = tmp_path / "big", tmp_path / "small", tmp_path / "late"
    for i in range(60):
        (big / f"d{i}").mkdir(parents=True)
    (small / "s").mkdir(parents=True)
    late.mkdir()
    out = subprocess.run(
        ["unshare", "-U", "-r", sys.executable, "-c", _LIMITED, str(REPO), str(big), str(small), str(late), "40"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    result = json.loads(out.stdout)
    assert result["before"] == []  # small trees fit: inotify
    assert result["after_big"] == [str(big)]  # 61 folders > 40 watches: polled
    assert result["final"] == sorted([str(big), str(late)])  # late outgrew the limit while watched
    assert str(big / "d59" / "deep.mid") in result["ready"]
    assert {str(late / f"new{i}" / "x.mid") for i in range(45)} <= set(result["ready"])
    warning = next(w for w in result["warnings"] if str(big) in w)
    assert "inotify watches limit reached" in warning
    assert "sysctl fs.inotify.max_user_watches=524288" in warning
    assert "/etc/sysctl.d/" in warning


def test_deleted_source_folder_is_reported_and_can_return(tmp_path: Path) -> None:
    root = (tmp_path / "usb stick").resolve()
    root.mkdir()
    reports = Reports()
    watcher = SourceWatcher([root], settle_s=SETTLE_S, on_ready=reports.on_ready, on_moved=reports.on_moved,
                            on_deleted=reports.on_deleted, batch_window_s=0.2)
    watcher.start()
    try:
        (root / "a.mid").write_bytes(b"MThd")
        assert wait_for(lambda: root / "a.mid" in reports.ready)
        shutil.rmtree(root)
        assert wait_for(lambda: root in reports.deleted)
        root.mkdir()
        watcher.set_folders([root])  # what a config reload does
        (root / "b.mid").write_bytes(b"MThd")
        assert wait_for(lambda: root / "b.mid" in reports.ready)
    finally:
        watcher.stop()


_CHILD = textwrap.dedent(
    """
    import faulthandler, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from midid.watch import SourceWatcher
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks if we hang
    def on_ready(paths):
        print("\\n".join(map(str, paths)), flush=True)
    w = SourceWatcher([Path(sys.argv[2])], settle_s=0.3, on_ready=on_ready, on_moved=lambda _: None,
                      on_deleted=lambda _: None, batch_window_s=0.2)
    w.start()
    print("STARTED", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    w.stop()
    """
)


def test_kernel_queue_overflow_is_recovered(tree: Path) -> None:
    """The watcher is frozen (SIGSTOP) while 7,000 files arrive: more events than the kernel
    queues (fs.inotify.max_queued_events, 16,384 by default), so events are dropped; every file
    must still be reported."""
    max_queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    count = max_queued // 3 + 1500  # three events per file: create, modify, close-after-write
    if count > 50_000:
        pytest.skip(f"fs.inotify.max_queued_events={max_queued} is too large to overflow quickly")
    pack = tree / "pack"
    pack.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(REPO), str(tree)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "STARTED"
        reader = threading.Thread(target=lambda: seen.update(line.strip() for line in child.stdout), daemon=True)
        reader.start()
        os.kill(child.pid, signal.SIGSTOP)
        try:
            for i in range(count):
                (pack / f"f{i}.mid").write_bytes(b"MThd")
        finally:
            os.kill(child.pid, signal.SIGCONT)
        expected = {str(pack / f"f{i}.mid") for i in range(count)}
        reported = wait_for(lambda: expected <= seen, timeout=30)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGUSR1)  # the child's thread stacks, to stderr
            time.sleep(1)
            child.kill()
            child.wait()
    assert child.stderr is not None
    log = child.stderr.read()
    assert child.returncode == 0, f"the watcher did not stop (exit {child.returncode}); its log:\n{log}"
    assert reported, f"{len(expected - seen)} of {count} files never reported; the watcher's log:\n{log}"
    assert "inotify event queue overflowed: rescanning" in log
