"""Hot-plug edge: target matching, mountinfo parsing, and real udev events from loop devices."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pyudev
import pytest
from loopdev import loop_drive, require_loop, settle

from midid.hotplug import (
    BlockDevice,
    HotplugMonitor,
    Mount,
    find_mount,
    is_target,
    list_present,
    mount_device,
    unmount,
    wait_for_mount,
)

RULE = Path(__file__).resolve().parents[1] / "udev" / "99-midid.rules"
RUN_RULES = Path("/run/udev/rules.d")
EVENT_TIMEOUT_S = 15


def _dev(**kw) -> BlockDevice:
    base = dict(
        devnode="/dev/sdz1", uuid="1234-ABCD", label=None, fs_type="vfat", vendor_id=None, model=None
    )
    return BlockDevice(**{**base, **kw})


@pytest.mark.parametrize(
    ("dev", "uuids", "expected"),
    [
        (_dev(label="MPC_TEST"), [], True),
        (_dev(label="mpc one"), [], True),
        (_dev(label="Force-Live"), [], True),
        (_dev(label="akai"), [], True),
        (_dev(label="BACKUP"), [], False),
        (_dev(label=None), [], False),
        (_dev(label="BACKUP", vendor_id="09e8"), [], True),
        (_dev(label="BACKUP", udev_target=True), [], True),
        (_dev(label="BACKUP", uuid="1234-abcd"), ["1234-ABCD"], True),  # listed, other case
        (_dev(label="BACKUP"), ["9999-0000"], False),
        (_dev(label="MPC_TEST", fs_type=None), [], False),  # no file system: never
        (_dev(label=None, fs_type=None, vendor_id="09e8"), ["1234-ABCD"], False),
    ],
)
def test_is_target(dev, uuids, expected):
    assert is_target(dev, uuids=uuids) is expected


def test_custom_label_patterns_replace_the_defaults():
    assert is_target(_dev(label="STUDIO_SD"), [], ["studio*"])
    assert not is_target(_dev(label="MPC_TEST"), [], ["studio*"])


MOUNTINFO = (
    "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "40 22 7:3 /sub /srv/bind rw,relatime shared:5 - ext4 /dev/loop3 rw\n"
    "41 22 7:3 / /media/me/My\\040Drive\\134x rw,nosuid,nodev - ext4 /dev/loop3 rw\n"
    "42 22 7:4 / /media/ro rw,relatime - vfat /dev/loop4 ro,fmask=0022\n"
    "43 22 0:77 / /media/exfat rw,nosuid - fuseblk /dev/loop5 rw,user_id=0\n"
)


def test_find_mount_parses_mountinfo_escapes_and_skips_bind_mounts(tmp_path):
    # A device node of our own with a known device number: no root needed for the parse.
    devnode = "/dev/loop3"
    if not Path(devnode).exists() or os.major(os.stat(devnode).st_rdev) != 7:
        pytest.skip("needs /dev/loop3 as block device 7:3 for the device-number match")
    mount = find_mount(devnode, MOUNTINFO)
    assert mount == Mount(Path("/media/me/My Drive\\x"), False, "ext4")


def test_find_mount_readonly_super_options_and_fuse_source():
    assert find_mount("/dev/loop4", MOUNTINFO) == Mount(Path("/media/ro"), True, "vfat")
    assert find_mount("/dev/loop5", MOUNTINFO) == Mount(Path("/media/exfat"), False, "fuseblk")
    assert find_mount("/dev/nonexistent", MOUNTINFO) is None


# --- real devices -------------------------------------------------------------------------


def _events(monitor_queue: queue.Queue, devnode: str, kind: str) -> BlockDevice:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            got_kind, dev = monitor_queue.get(timeout=0.5)
        except queue.Empty:
            continue
        if got_kind == kind and dev.devnode == devnode:
            return dev
    raise AssertionError(f"no {kind} event for {devnode} within {EVENT_TIMEOUT_S} s")


@pytest.fixture
def monitor():
    require_loop()
    events: queue.Queue = queue.Queue()
    mon = HotplugMonitor(lambda d: events.put(("add", d)), lambda d: events.put(("remove", d)))
    mon.start()
    try:
        yield events
    finally:
        mon.stop()


@pytest.mark.root
def test_monitor_sees_a_plugged_mpc_drive_and_its_removal(tmp_path, monitor):
    with loop_drive(tmp_path, "MPC_TEST", size_mb=8, mount=False) as drive:
        added = _events(monitor, drive.devnode, "add")
        assert added.label == "MPC_TEST" and added.fs_type == "ext4"
        assert added.uuid == drive.uuid
        assert is_target(added, uuids=[])
        devnode = drive.devnode
        drive.detach()
        removed = _events(monitor, devnode, "remove")
        assert not is_target(removed, uuids=[])


@pytest.mark.root
def test_monitor_ignores_a_drive_with_another_label(tmp_path, monitor):
    with loop_drive(tmp_path, "BACKUP", size_mb=8, mount=False) as drive:
        added = _events(monitor, drive.devnode, "add")
        assert added.label == "BACKUP"
        assert not is_target(added, uuids=[])
        assert is_target(added, uuids=[drive.uuid])  # unless its UUID is configured


@pytest.mark.root
def test_list_present_finds_a_drive_plugged_before_start(tmp_path):
    require_loop()
    with loop_drive(tmp_path, "FORCE_SD", size_mb=8, mount=False) as drive:
        present = {d.devnode: d for d in list_present()}
        assert drive.devnode in present
        assert present[drive.devnode].label == "FORCE_SD"
        assert is_target(present[drive.devnode], uuids=[])


@pytest.mark.root
def test_wait_for_mount_sees_an_automounter_and_a_read_only_mount(tmp_path):
    require_loop()
    with loop_drive(tmp_path, "MPC_TEST", size_mb=8, mount=False) as drive:
        assert wait_for_mount(drive.devnode, timeout_s=0.3, poll_s=0.1) is None
        target = tmp_path / "media" / "My MPC"  # a space: \040 in mountinfo
        timer = threading.Timer(0.5, drive.mount, args=(target,), kwargs={"readonly": True})
        timer.start()
        try:
            mount = wait_for_mount(drive.devnode, timeout_s=10, poll_s=0.1)
        finally:
            timer.join()
        assert mount == Mount(target, True, "ext4")


@pytest.mark.root
def test_mount_device_and_unmount(tmp_path):
    require_loop()
    with loop_drive(tmp_path, "MPC_TEST", size_mb=8, mount=False) as drive:
        settle()
        mount = mount_device(drive.devnode, tmp_path / "auto")
        try:
            assert mount.mountpoint == tmp_path / "auto" / "MPC_TEST"
            assert not mount.readonly and mount.fs_type == "ext4"
            assert find_mount(drive.devnode, Path("/proc/self/mountinfo").read_text()) == mount
            (mount.mountpoint / "probe").write_text("x")
        finally:
            unmount(mount)
        assert not mount.mountpoint.exists()
        assert find_mount(drive.devnode, Path("/proc/self/mountinfo").read_text()) is None


@pytest.fixture
def installed_rule():
    require_loop()
    RUN_RULES.mkdir(parents=True, exist_ok=True)
    installed = RUN_RULES / RULE.name
    shutil.copyfile(RULE, installed)
    subprocess.run(["udevadm", "control", "--reload"], check=True)
    try:
        yield installed
    finally:
        installed.unlink(missing_ok=True)
        subprocess.run(["udevadm", "control", "--reload"], check=False)


def _properties(devnode: str, ready: str = "ID_FS_LABEL") -> dict[str, str]:
    """udev's properties of the device once ``ready`` is among them (by default: once its file
    system was probed, which the rule matches on). Right after a burst of plugs and pulls the
    first change event can be handled before the probe or the reloaded rules apply, so the event
    is sent again a few times; the last properties are returned either way."""
    props: dict[str, str] = {}
    for _ in range(10):
        subprocess.run(["udevadm", "trigger", "--action=change", "--settle", devnode], check=True)
        out = subprocess.run(
            ["udevadm", "info", "--query=property", devnode], capture_output=True, text=True, check=True
        ).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        if ready in props:
            break
        time.sleep(0.5)
    return props


@pytest.mark.root
def test_udev_rule_tags_mpc_labels_only(tmp_path, installed_rule):
    with loop_drive(tmp_path, "mpc_live", size_mb=8, mount=False) as mpc:
        props = _properties(mpc.devnode, ready="MIDID_TARGET")
        assert props.get("ID_FS_LABEL") == "mpc_live" and props.get("MIDID_TARGET") == "1", props
        assert ":midid:" in props.get("CURRENT_TAGS", "")
        dev = BlockDevice.from_udev(pyudev.Devices.from_device_file(pyudev.Context(), mpc.devnode))
        assert dev.udev_target
    with loop_drive(tmp_path, "BACKUP", size_mb=8, mount=False) as other:
        props = _properties(other.devnode)
        assert props.get("ID_FS_LABEL") == "BACKUP" and "MIDID_TARGET" not in props
        assert ":midid:" not in props.get("CURRENT_TAGS", "")  # TAGS is sticky per loop device


@pytest.mark.root
def test_a_failing_handler_does_not_stop_the_monitor(tmp_path):
    require_loop()
    events: queue.Queue = queue.Queue()

    def explode(dev: BlockDevice) -> None:
        events.put(("add", dev))
        raise RuntimeError("handler bug")

    mon = HotplugMonitor(explode, lambda d: events.put(("remove", d)))
    mon.start()
    try:
        with loop_drive(tmp_path, "MPC_TEST", size_mb=8, mount=False) as drive:
            devnode = drive.devnode
            _events(events, devnode, "add")
            drive.detach()
            assert _events(events, devnode, "remove").devnode == devnode
    finally:
        mon.stop()
