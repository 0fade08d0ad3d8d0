"""Export drives pulled mid-copy and filled up, ten times each, through the running daemon.

Issue 7, item 5: nothing lost, nothing half-written, and the sync resumes on the next plug —
not once but round after round. The daemon runs as in production (``test_daemon.Daemon``) and
learns of every plug and pull from real udev events for a real loop-device ext4 drive; the test
plays the user who mounts the drive (as a desktop automounter would), pulls it (``pull()``:
ext4's shutdown ioctl, every later operation fails with EIO), unmounts and detaches it, and plugs
it in again. Between plugs the drive is read from its image (journal replayed as the next mount
would, files dumped by debugfs): attaching it to look would itself be a plug the daemon sees.

The drives' labels match only this module's ``label_patterns``, so daemons of other tests
running on the machine at the same time (default patterns ``MPC*`` ...) leave them alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import CORPUS, copy_tree, write_config
from loopdev import LoopDrive, make_image, require_loop
from midid.export.copy import TEMP_PREFIX
from midid.export.index import INDEX_NAME
from midid.export.progression import parse_progression
from test_daemon import Daemon, ctl, status, wait_until

pytestmark = pytest.mark.root

log = logging.getLogger(__name__)

ROUNDS = 10
PULL_LABEL = "RPT_PULL"
FULL_LABEL = "RPT_FULL"
ROOT = "MPC_Documents"
FILLER_CHUNK = 64 * 1024
OFFLINE_TOOLS = ("e2fsck", "debugfs", "dumpe2fs")


@dataclass(frozen=True)
class LibraryFile:
    path: Path
    digest: str
    size: int


@dataclass
class Env:
    config: Path
    tmp: Path
    daemon: Daemon

    @property
    def database(self) -> Path:
        return self.tmp / "midid.sqlite3"


@pytest.fixture(scope="module")
def exporting(tmp_path_factory: pytest.TempPathFactory):
    """The whole corpus imported and analysed (1,784 library files, 397 of them chord parts
    that also get a ``.progression``), and one daemon for both tests: a local Ray takes
    ~20 s to start on a loaded two-core machine, which the tests need for their rounds."""
    require_loop()
    missing = [t for t in OFFLINE_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"reading an unplugged drive needs {', '.join(missing)} (e2fsprogs)")
    if not CORPUS.is_dir():
        pytest.skip(f"needs the shared corpus at {CORPUS}")
    tmp = tmp_path_factory.mktemp("export_repeat")
    src = tmp / "src"
    copy_tree(CORPUS / "pop909", src / "POP909")
    copy_tree(CORPUS / "groove", src / "Groove")
    config = write_config(
        tmp,
        "[ray]\nnum_cpus = 2\nobject_store_mb = 100\n[pipeline]\nanalyze_actors = 1\n"
        '[export]\nenabled = true\nmount_wait_s = 60.0\nlabel_patterns = ["RPT_*"]\n',
    )
    done = ctl(config, "import", "--local", "--json", str(src), timeout=300)
    assert done.returncode == 0, done.stderr
    daemon = Daemon(tmp, config)
    try:
        # What an uninterrupted export writes (made while Ray starts): each drive must end up
        # holding exactly this.
        reference = ctl(config, "export", "--to", str(tmp / "reference"), "--json", timeout=300)
        assert reference.returncode == 0, reference.stderr
        yield Env(config, tmp, daemon.ready())
    finally:
        if daemon.proc.poll() is None:
            assert daemon.stop() == 0
        else:
            daemon.notify.close()


def _read(database: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def _categorised(env: Env) -> dict[int, LibraryFile]:
    """Every file the daemon must export, by file id, read from the library folder itself."""
    library = env.tmp / "library"
    rows = _read(env.database, "SELECT f.id, f.path FROM files f JOIN analysis a ON a.file_id = f.id"
                               " WHERE a.category IS NOT NULL AND f.error IS NULL")
    found = {}
    for file_id, rel in rows:
        data = (library / rel).read_bytes()
        found[file_id] = LibraryFile(library / rel, hashlib.sha256(data).hexdigest(), len(data))
    return found


def _exports(env: Env, uuid: str) -> dict[str, int]:
    """The daemon's record of what is on the drive: path below the export root -> file id."""
    return dict(_read(env.database, "SELECT path, file_id FROM exports WHERE device_uuid = ? AND gone = 0",
                      (uuid,)))


def _live(env: Env, label: str) -> dict:
    """The drive as the running daemon reports it now; {} when it is not attached."""
    s = status(env.config)
    assert s["daemon"]["running"] and s["daemon"]["pid"] == env.daemon.proc.pid, "the daemon is not answering"
    return next((d for d in s["devices"] if d.get("label") == label and d.get("devnode")), {})


def _tree(base: Path) -> dict[str, str]:
    """Digest of every MIDI and ``.progression`` file below ``base``, by relative path."""
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in base.rglob("*") if p.suffix in (".mid", ".progression")}


def _wait_for_temps(root: Path, other_than: set[str], what: str, timeout: float = 60) -> set[str]:
    """Poll fast (a batch of 200 small files is written in a fraction of a second) until temp
    files other than ``other_than`` exist below ``root``; all temps there at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        temps = _temps(root)
        if temps - other_than:
            return temps
        time.sleep(0.005)
    raise AssertionError(f"{what}: no batch being written within {timeout} s")


def _wait_for_batch(env: Env, uuid: str, recorded: int, what: str, timeout: float = 60) -> None:
    """Poll fast until the daemon has recorded more than ``recorded`` files for the drive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _read(env.database, "SELECT count(*) FROM exports WHERE device_uuid = ? AND gone = 0",
                 (uuid,))[0][0] > recorded:
            return
        time.sleep(0.005)
    raise AssertionError(f"{what}: no batch recorded within {timeout} s")


def _temps(root: Path) -> set[str]:
    return {str(Path(folder, name).relative_to(root))
            for folder, _dirs, files in os.walk(root) for name in files if name.startswith(TEMP_PREFIX)}


def _check_drive(drive_root: Path, recorded: dict[str, int], library: dict[int, LibraryFile]) -> list[str]:
    """No half-written file: every MIDI file below the export root is byte-equal to a library
    file, every file the database records is there with its own bytes, no library file is
    there twice, and every ``.progression`` parses. Returns the MIDI files' digests."""
    base = drive_root / ROOT
    known = {f.digest for f in library.values()}
    digests = []
    for path in base.rglob("*.mid") if base.is_dir() else []:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in known, f"half-written or foreign file on the drive: {path.relative_to(drive_root)}"
        digests.append(digest)
    twice = [d for d, n in Counter(digests).items() if n > 1]
    assert not twice, f"{len(twice)} library file(s) on the drive more than once"
    for rel, file_id in recorded.items():
        path = base / rel
        assert path.is_file(), f"recorded as exported but not on the drive: {rel}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == library[file_id].digest, f"wrong bytes: {rel}"
    progressions = list((base / "Progressions").glob("*.progression")) if base.is_dir() else []
    for path in progressions:
        parse_progression(path.read_text())
    contents = Counter(p.read_bytes() for p in progressions)
    assert all(n == 1 for n in contents.values()), "a .progression file written twice"
    return digests


def _wait_state(env: Env, label: str, state: str, timeout: float, what: str) -> dict:
    """Wait until the daemon reports the attached drive in ``state``; its report."""
    deadline = time.monotonic() + timeout
    dev: dict = {}
    while time.monotonic() < deadline:
        dev = _live(env, label)
        if dev.get("state") == state:
            return dev
        time.sleep(0.2)
    raise AssertionError(f"{what}: {label} not {state!r} within {timeout} s; last report {dev}")


def _wait_stopped(env: Env, label: str, what: str, timeout: float = 30) -> dict:
    """Wait until the daemon reports the attached drive's sync stopped by a pull: ``gone``
    (EIO), or ``error`` saying the file system turned read-only."""
    deadline = time.monotonic() + timeout
    dev: dict = {}
    while time.monotonic() < deadline:
        dev = _live(env, label)
        message = dev.get("message", "")
        if (dev.get("state") == "gone" and "not copied: device gone" in message) or (
                dev.get("state") == "error" and "not copied: cannot write" in message and "read-only" in message):
            return dev
        time.sleep(0.2)
    raise AssertionError(f"{what}: {label} not stopped within {timeout} s; last report {dev}")


def _wait_unplugged(env: Env, label: str) -> None:
    wait_until(lambda: not _live(env, label), 30, f"the daemon to notice {label} unplugged")


def _final_checks(env: Env, drive: LoopDrive, library: dict[int, LibraryFile], uuid: str) -> None:
    """After the last plug: every categorised file exactly once, index = table = drive."""
    assert drive.mountpoint is not None
    recorded = _exports(env, uuid)
    digests = _check_drive(drive.mountpoint, recorded, library)
    assert Counter(digests) == Counter(f.digest for f in library.values()), "a categorised file is missing"
    assert sorted(recorded.values()) == sorted(library), "the exports table lists each file once"
    assert not _temps(drive.mountpoint), "temp files left after the sync"
    base = drive.mountpoint / ROOT
    index = json.loads((base / INDEX_NAME).read_text())["files"]
    assert {e["path"] for e in index} == set(recorded)
    hashes = dict(_read(env.database, "SELECT id, hash FROM files"))
    assert all(hashes[recorded[e["path"]]] == e["hash"] for e in index), "index hash differs from the library"
    assert {str(p.relative_to(base)) for p in base.rglob("*.mid")} == set(recorded)
    reference = _tree(env.tmp / "reference" / ROOT)
    on_drive = _tree(base)
    assert sorted(set(reference) ^ set(on_drive)) == [], "the drive differs from an uninterrupted export"
    assert on_drive == reference, "a file's bytes differ from an uninterrupted export"


def _plug(drive: LoopDrive, mountpoint: Path) -> None:
    drive.attach()
    drive.mount(mountpoint)


def test_drive_pulled_mid_copy_ten_times_then_completes(exporting: Env, tmp_path: Path) -> None:
    env = exporting
    library = _categorised(env)
    drive = LoopDrive(make_image(tmp_path / "pull.img", PULL_LABEL, 64), PULL_LABEL)
    uuid = drive.uuid
    mountpoint = tmp_path / "media" / PULL_LABEL
    stale: set[str] = set()  # temps the last pull left on the drive
    counts = [0]
    stale_seen = 0
    reasons: Counter[str] = Counter()
    try:
        for round_no in range(1, ROUNDS + 1):
            _plug(drive, mountpoint)
            if round_no % 3 == 0:
                # Every third round lets a batch of this visit be recorded first, so progress
                # accumulates across pulls; the others pull in the visit's first batch.
                _wait_for_batch(env, uuid, counts[-1], f"round {round_no}")
            # Temps other than the last pull's mean a batch is being written: pull now. By then
            # the plug's clean-up has run, so none of the last pull's temps may be left.
            temps = _wait_for_temps(mountpoint, stale, f"round {round_no}")
            drive.pull()
            assert not temps & stale, "temps of the last pull not removed at the plug"
            fresh = temps - stale
            # EIO is a pulled drive; the kernel may also have turned the file system read-only
            # on the journal abort first, as it does for a real drive's I/O errors.
            dev = _wait_stopped(env, PULL_LABEL, f"round {round_no}: the pull noticed")
            reasons[dev["state"]] += 1
            drive.cleanup()
            recorded = _exports(env, uuid)
            dump = drive.read_detached(tmp_path / f"dump{round_no}")
            _check_drive(dump, recorded, library)
            stale = _temps(dump)
            stale_seen += len(stale)
            shutil.rmtree(dump)
            assert len(recorded) >= counts[-1] and (len(recorded) > counts[-1] or round_no % 3)
            counts.append(len(recorded))
            log.info("pull round %d: %d exported (+%d), %d temp(s) being written at the pull, %d left on the "
                     "drive", round_no, len(recorded), counts[-1] - counts[-2], len(fresh), len(stale))
            _wait_unplugged(env, PULL_LABEL)
        _plug(drive, mountpoint)
        _wait_state(env, PULL_LABEL, "synced", 120, "the last plug")
        assert not stale & _temps(mountpoint)
        _final_checks(env, drive, library, uuid)
        log.info("pull: %d files in %d rounds %s, then %d to finish; %d stale temp(s) seen; stopped as %s",
                 len(library), ROUNDS, counts[1:], len(library) - counts[-1], stale_seen, dict(reasons))
        assert counts[-1] < len(library), "the last pull must still have been mid-sync"
    finally:
        drive.cleanup()
    _wait_unplugged(env, PULL_LABEL)


def _fill(drive: LoopDrive, tmp_path: Path, leave: int) -> list[str]:
    """The user's own files, filling the unplugged drive up to ``leave`` bytes; their paths."""
    chunk = tmp_path / "chunk.bin"
    chunk.write_bytes(os.urandom(FILLER_CHUNK))  # random: debugfs would store zeros as holes
    count = (drive.free_detached() - leave) // (FILLER_CHUNK + 1024)  # + an extent block, roughly
    files = {f"My_Samples/fill_{i:04d}.wav": chunk for i in range(count)}
    drive.put_detached(files)
    return sorted(files)


def test_full_drive_ten_times_then_completes(exporting: Env, tmp_path: Path) -> None:
    env = exporting
    library = _categorised(env)
    need = sum(f.size for f in library.values())
    size_mb = int(need * 1.6 / 2**20) + 8  # room for the library once the user's files go
    drive = LoopDrive(make_image(tmp_path / "full.img", FULL_LABEL, size_mb), FULL_LABEL)
    uuid = drive.uuid
    filler = _fill(drive, tmp_path, leave=need // 12)
    mountpoint = tmp_path / "media" / FULL_LABEL
    counts = [0]
    full_message = re.compile(r"\d+ file\(s\) not copied: device full \(free \d+\.\d MB\)")
    try:
        for round_no in range(1, ROUNDS + 1):
            _plug(drive, mountpoint)
            dev = _wait_state(env, FULL_LABEL, "full", 60, f"round {round_no}")
            assert full_message.fullmatch(dev["message"]), dev["message"]
            assert any("device full (free" in e["error"] for e in status(env.config)["errors"])
            rows = [json.loads(line) for line in ctl(env.config, "devices", "--json").stdout.splitlines()]
            assert next(r for r in rows if r["uuid"] == uuid)["state"] == "full"
            recorded = _exports(env, uuid)
            _check_drive(mountpoint, recorded, library)
            assert not _temps(mountpoint), "a temp file left on the full drive"
            # Files complete on the drive but unrecorded are allowed: those whose .progression
            # did not fit. The next plug takes them as copied (the final checks: exactly once).
            on_drive = {str(p.relative_to(mountpoint / ROOT)) for p in (mountpoint / ROOT).rglob("*.mid")}
            assert set(recorded) <= on_drive
            unrecorded = len(on_drive) - len(recorded)
            assert len(recorded) > counts[-1], f"round {round_no} made no progress"
            counts.append(len(recorded))
            # The user frees some space (never all that is missing, until the last round).
            missing = sum(f.size for fid, f in library.items() if fid not in set(recorded.values()))
            target = missing // (ROUNDS - round_no + 1) if round_no < ROUNDS else len(filler) * FILLER_CHUNK
            freed = 0
            while filler and freed < target:
                (mountpoint / filler.pop()).unlink()
                freed += FILLER_CHUNK
            log.info("full round %d: %d exported (+%d), %d complete but unrecorded, %s; freed %d KB", round_no,
                     len(recorded), counts[-1] - counts[-2], unrecorded, dev["message"], freed // 1024)
            drive.cleanup()
            _wait_unplugged(env, FULL_LABEL)
        _plug(drive, mountpoint)
        _wait_state(env, FULL_LABEL, "synced", 120, "the last plug")
        _final_checks(env, drive, library, uuid)
        assert not any("device full" in e["error"] for e in status(env.config)["errors"])
    finally:
        drive.cleanup()
    _wait_unplugged(env, FULL_LABEL)
