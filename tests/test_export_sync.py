"""Export end to end: `midictl export --to DIR`, and the daemon syncing real loop-device drives."""

from __future__ import annotations

import json
import stat
import sqlite3
from pathlib import Path

import pytest

from conftest import DATA, write_config
from loopdev import LoopDrive, loop_drive, make_image, require_loop
from midid.export.index import INDEX_NAME
from midid.export.progression import chord_voicings, parse_progression
from test_daemon import Daemon, ctl, status, wait_until

SPLIT = DATA / "split"


@pytest.fixture
def library(tmp_path: Path, sample_midi) -> tuple[Path, Path]:
    """A small analysed library: two Groove files and three POP909 songs split into parts."""
    src = tmp_path / "Pack One"
    src.mkdir()
    for f in [*sample_midi, *SPLIT.glob("*.mid")]:
        (src / f.name).write_bytes(f.read_bytes())
    config = write_config(tmp_path, "[export]\nenabled = true\n")
    done = ctl(config, "import", "--local", "--json", str(src))
    assert done.returncode == 0, done.stderr
    return config, tmp_path


def categorised(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        return dict(conn.execute("SELECT f.hash, a.category FROM files f JOIN analysis a ON a.file_id = f.id"))


def test_one_shot_export_layout_index_progressions_and_incremental(library) -> None:
    config, tmp_path = library
    out = tmp_path / "card"
    plan = ctl(config, "export", "--to", str(out), "--dry-run", "--json")
    assert plan.returncode == 0 and not out.exists()
    planned = [json.loads(line) for line in plan.stdout.splitlines()]
    cats = categorised(tmp_path)
    assert len(planned) == len(cats) == 5 + 9
    done = ctl(config, "export", "--to", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["copied"] == 14 and summary["errors"] == 0 and summary["skipped_already_there"] == 0
    root = out / "MPC_Documents"
    index = json.loads((root / INDEX_NAME).read_text())["files"]
    assert len(index) == 14
    folders = {"Drums": "SAMPLES/Drums/", "DrumSnares": "SAMPLES/Drums/Snares/", "Melody": "SAMPLES/Melody/",
               "Chords": "SAMPLES/Chords/", "Loops": "SAMPLES/Loops/", "Bass": "SAMPLES/Bass/"}
    for entry in index:
        path = root / entry["path"]
        assert path.is_file() and entry["hash"] in cats
        assert entry["path"].startswith(folders[entry["category"]]) and "/Pack_One/" in entry["path"]
        assert not stat.S_IMODE(path.stat().st_mode) & 0o111, "no execute bits"
    for prog in (root / "Progressions").glob("*.progression"):
        pads = parse_progression(prog.read_text())
        source = next(e for e in index if Path(e["path"]).stem == prog.stem)
        with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
            chords = json.loads(conn.execute("SELECT a.chords FROM analysis a JOIN files f ON f.id = a.file_id"
                                             " WHERE f.hash = ?", [source["hash"]]).fetchone()[0])
        assert pads == chord_voicings((root / source["path"]).read_bytes(), chords)[:16]
    assert summary["progressions"] == len(list((root / "Progressions").glob("*.progression")))
    again = json.loads(ctl(config, "export", "--to", str(out), "--json").stdout)
    assert again["copied"] == 0 and again["skipped_already_there"] == 14
    drums_only = ctl(config, "export", "--to", str(tmp_path / "drums"), "--category", "Drums", "--json",
                     "--profile", "force")
    assert json.loads(drums_only.stdout)["copied"] == 1
    assert list((tmp_path / "drums" / "MPC_Documents" / "MIDI" / "Drums").rglob("*.mid"))


def test_one_shot_export_to_a_missing_mount_point_or_of_nothing(library) -> None:
    """A mistyped mount point is refused rather than made on the system disk; an export that
    matches no file writes an empty index (it once failed on the folder it had not made)."""
    config, tmp_path = library
    typo = tmp_path / "media" / "MPC_SDD"
    refused = ctl(config, "export", "--to", str(typo))
    assert refused.returncode == 2 and not (tmp_path / "media").exists()
    assert f"{tmp_path / 'media'} does not exist: mount the drive (or create the folder) first" in refused.stderr
    assert "FX" not in categorised(tmp_path).values()
    empty = ctl(config, "export", "--to", str(tmp_path / "fx"), "--category", "fx", "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout)["copied"] == 0
    assert json.loads((tmp_path / "fx" / "MPC_Documents" / INDEX_NAME).read_text())["files"] == []


def test_one_shot_export_interrupted_before_its_index_copies_nothing_twice(library) -> None:
    """A run stopped after its files were durable but before the index was written (killed,
    card pulled) leaves files the next run cannot find in the index: they are its own copies,
    taken as copied under their own names, never written again as `_2`."""
    config, tmp_path = library
    out = tmp_path / "card"
    first = json.loads(ctl(config, "export", "--to", str(out), "--json").stdout)
    root = out / "MPC_Documents"
    before = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != INDEX_NAME)
    (root / INDEX_NAME).unlink()
    again = json.loads(ctl(config, "export", "--to", str(out), "--json").stdout)
    after = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != INDEX_NAME)
    assert after == before and not any("_2." in p.name for p in after)
    assert again["copied"] == first["copied"] == 14 and again["bytes"] == 0 and again["errors"] == 0
    assert len(json.loads((root / INDEX_NAME).read_text())["files"]) == 14


@pytest.fixture
def drive_daemon(library):
    require_loop()
    config, tmp_path = library
    text = config.read_text().replace("[export]\nenabled = true\n", "")
    config.write_text(text + "[export]\nenabled = true\nmount_wait_s = 3.0\n"
                      "[ray]\nnum_cpus = 2\nobject_store_mb = 100\n[pipeline]\nanalyze_actors = 1\n")
    daemons: list[Daemon] = []

    def start() -> Daemon:
        d = Daemon(tmp_path, config)
        daemons.append(d)
        return d.ready()

    yield config, tmp_path, start
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def device(config: Path, label: str) -> dict:
    for d in status(config)["devices"]:
        if d.get("label") == label:
            return d
    return {}


def test_plugged_drive_is_synced_incrementally_and_user_deletions_respected(drive_daemon, tmp_path) -> None:
    config, lib_tmp, start = drive_daemon
    d = start()
    drive = LoopDrive(make_image(tmp_path / "mpc.img", "MPC_ONE", 32), "MPC_ONE")
    try:
        drive.attach()
        drive.mount(tmp_path / "media" / "MPC_ONE")
        wait_until(lambda: device(config, "MPC_ONE").get("state") == "synced", 60, "first sync")
        root = drive.mountpoint / "MPC_Documents"
        files = sorted(root.rglob("*.mid"))
        assert len(files) == 14
        assert len(json.loads((root / INDEX_NAME).read_text())["files"]) == 14
        assert not list(drive.mountpoint.rglob(".midid-tmp-*"))
        deleted = files[0]
        deleted.unlink()
        (drive.mountpoint / "my_own_song.mid").write_bytes(b"user data")
        drive.umount()
        drive.detach()
        wait_until(lambda: not device(config, "MPC_ONE").get("devnode"), 30, "unplug noticed")
        new = lib_tmp / "Pack Two"
        new.mkdir()
        (new / "extra.mid").write_bytes(next((DATA / "analysis").glob("*.mid")).read_bytes())
        assert ctl(config, "import", "--json", str(new)).returncode == 0
        drive.attach()
        drive.mount(tmp_path / "media" / "MPC_ONE")
        wait_until(lambda: device(config, "MPC_ONE").get("state") == "synced"
                   and device(config, "MPC_ONE").get("devnode"), 60, "second sync")
        root = drive.mountpoint / "MPC_Documents"
        now = sorted(root.rglob("*.mid"))
        assert len(now) == 14 and not deleted.exists(), "a file the user deleted is not silently re-added"
        assert any("Pack_Two" in str(p) for p in now)
        assert (drive.mountpoint / "my_own_song.mid").read_bytes() == b"user data"
        devices = json.loads("[" + ",".join(ctl(config, "devices", "--json").stdout.split()) + "]")
        row = next(r for r in devices if r["label"] == "MPC_ONE")
        assert row["attached"] and row["uuid"] == drive.uuid and row["exported"] == 14
        full = ctl(config, "sync", "MPC_ONE", "--full")
        assert full.returncode == 0, full.stderr
        wait_until(lambda: deleted.exists(), 30, "--full copies the deleted file again")
        # files categorised while the drive is attached arrive within seconds
        third = lib_tmp / "Pack Three"
        third.mkdir()
        (third / "live.mid").write_bytes(next((DATA / "archive").glob("*.mid")).read_bytes())
        assert ctl(config, "import", "--no-wait", str(third)).returncode == 0
        wait_until(lambda: any("Pack_Three" in str(p) for p in root.rglob("*.mid")), 30, "live sync")
    finally:
        drive.cleanup()
    assert d.stop() == 0


def test_unmounted_read_only_full_and_two_profiles(drive_daemon, tmp_path) -> None:
    config, lib_tmp, start = drive_daemon
    for sub in ("a", "b", "c", "d"):
        (tmp_path / sub).mkdir()
    with loop_drive(tmp_path / "a", label="FORCE_X") as force_drive, \
            loop_drive(tmp_path / "b", label="MPC_LIVE") as mpc_drive:
        # both plugged before the daemon starts: found by enumeration at start-up
        text = config.read_text()
        config.write_text(text.replace("mount_wait_s = 3.0\n", "mount_wait_s = 3.0\ndevices = [{ uuid = "
                                       f'"{force_drive.uuid}", name = "My Force", profile = "force" }}]\n'))
        d = start()
        wait_until(lambda: device(config, "FORCE_X").get("state") == "synced"
                   and device(config, "MPC_LIVE").get("state") == "synced", 60, "two drives synced")
        assert len(list(force_drive.mountpoint.rglob("*.mid"))) == len(list(mpc_drive.mountpoint.rglob("*.mid"))) == 14
        assert not (force_drive.mountpoint / "MPC_Documents" / "SAMPLES").exists()
        assert not (mpc_drive.mountpoint / "MPC_Documents" / "MIDI").exists()
        assert list((force_drive.mountpoint / "MPC_Documents" / "MIDI").rglob("*.mid"))
        assert device(config, "FORCE_X")["profile"] == "force" and device(config, "MPC_LIVE")["profile"] == "mpc"
    with loop_drive(tmp_path / "c", label="MPC_NOMOUNT", mount=False):
        wait_until(lambda: device(config, "MPC_NOMOUNT").get("state") == "not mounted", 30, "not mounted")
        assert "export.auto_mount" in device(config, "MPC_NOMOUNT")["message"]
    with loop_drive(tmp_path / "d", label="MPC_RO", readonly=True) as drive:
        wait_until(lambda: device(config, "MPC_RO").get("state") == "read-only", 30, "read-only")
        assert "read-write" in device(config, "MPC_RO")["message"]
        assert not list(drive.mountpoint.rglob("*.mid"))
    assert d.stop() == 0


def test_full_drive_stops_cleanly_and_says_so(drive_daemon, tmp_path) -> None:
    config, lib_tmp, start = drive_daemon
    big = lib_tmp / "Big Pack"
    big.mkdir()
    song = (SPLIT / "pop909_229.mid").read_bytes()
    for i in range(150):
        (big / f"song_{i:03d}.mid").write_bytes(song + b"\x00" * 20_000 + i.to_bytes(2, "big"))
    assert ctl(config, "import", "--local", "--json", str(big)).returncode == 0
    d = start()
    with loop_drive(tmp_path, label="MPC_TINY", size_mb=2) as drive:
        wait_until(lambda: device(config, "MPC_TINY").get("state") == "full", 60, "full")
        message = device(config, "MPC_TINY")["message"]
        assert "not copied: device full (free" in message
        assert not list(drive.mountpoint.rglob(".midid-tmp-*"))
        s = status(config)
        assert any("device full" in e["error"] for e in s["errors"])
        for f in drive.mountpoint.rglob("*.mid"):
            assert f.stat().st_size > 0
    assert d.stop() == 0


def test_drive_pulled_mid_sync_keeps_complete_files_and_next_plug_resumes(drive_daemon, tmp_path) -> None:
    config, lib_tmp, start = drive_daemon
    many = lib_tmp / "Many"
    many.mkdir()
    base = next((DATA / "archive").glob("*.mid")).read_bytes()
    for i in range(1500):
        (many / f"loop_{i:04d}.mid").write_bytes(base + i.to_bytes(2, "big"))
    assert ctl(config, "import", "--local", "--json", str(many)).returncode == 0
    d = start()
    drive = LoopDrive(make_image(tmp_path / "pull.img", "MPC_PULL", 64), "MPC_PULL")
    try:
        drive.attach()
        drive.mount(tmp_path / "media" / "MPC_PULL")
        wait_until(lambda: len(list(drive.mountpoint.rglob("*.mid"))) >= 1, 60, "first files")
        drive.pull()  # every later write fails with EIO, as when the cable goes
        wait_until(lambda: device(config, "MPC_PULL").get("state") == "gone", 60, "pull noticed")
        assert "not copied: device gone" in device(config, "MPC_PULL")["message"]
        drive.cleanup()
        wait_until(lambda: not device(config, "MPC_PULL").get("devnode"), 30, "unplug noticed")
        drive.attach()
        drive.mount(tmp_path / "media" / "MPC_PULL")
        wait_until(lambda: device(config, "MPC_PULL").get("state") == "synced"
                   and device(config, "MPC_PULL").get("devnode"), 120, "resumed sync")
        files = list(drive.mountpoint.rglob("*.mid"))
        assert len(files) == 1500 + 14
        assert not list(drive.mountpoint.rglob(".midid-tmp-*"))
        sizes = {f.stat().st_size for f in files if f.parent.name == "Many"}
        assert sizes == {len(base) + 2}, "no half-written file"
    finally:
        drive.cleanup()
    assert d.stop() == 0


def test_auto_mount_mounts_syncs_and_unmounts(drive_daemon, tmp_path) -> None:
    config, lib_tmp, start = drive_daemon
    mount_root = tmp_path / "automount"
    config.write_text(config.read_text().replace(
        "mount_wait_s = 3.0\n", f'mount_wait_s = 1.0\nauto_mount = true\nmount_root = "{mount_root}"\n'))
    d = start()
    with loop_drive(tmp_path, label="MPC_AUTO", mount=False) as drive:
        wait_until(lambda: device(config, "MPC_AUTO").get("state") == "synced", 60, "auto-mounted sync")
        assert device(config, "MPC_AUTO")["message"] == "unmounted after sync"
        assert not list(mount_root.glob("*/MPC_Documents"))      # unmounted again
        check = LoopDrive(drive.image, "MPC_AUTO", devnode=drive.devnode)
        check.mount(tmp_path / "inspect", readonly=True)
        try:
            assert len(list((tmp_path / "inspect" / "MPC_Documents").rglob("*.mid"))) == 14
        finally:
            check.umount()
    assert d.stop() == 0
