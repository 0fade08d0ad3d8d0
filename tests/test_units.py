"""The systemd units: `systemd-analyze verify` accepts them, and the settings midid relies on are there.

`verify` insists that ExecStart= names an existing executable. The units point at where an
installed midid lives (/usr/local/bin/midid; ~/.local/share/midid/venv/bin/midid), which does
not exist on a build machine, so each test verifies a copy: the system unit with ExecStart=
pointing at a stub script in tmp_path, the user unit with HOME set to a tmp_path home holding
the stub (so the unit is verified exactly as shipped, %h and all). Any warning that names the
unit (an unknown key, a bad value) fails the test, since `verify` still exits 0 for those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
SYSTEM_UNIT = UNITS / "midid.service"
USER_UNIT = UNITS / "midid-user.service"


def _parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """Unit sections as {section: {key: [values...]}}; keys repeat in units, so keep them all."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _stub(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def _verify(args: list[str], unit: Path, env: dict[str, str] | None = None) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    out = subprocess.run(
        ["systemd-analyze", *args, "verify", str(unit)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if unit.name in line or str(unit) in line]
    assert out.returncode == 0, out.stdout + out.stderr
    assert complaints == []


def test_system_unit_verifies(tmp_path: Path) -> None:
    stub = _stub(tmp_path / "bin" / "midid")
    text = SYSTEM_UNIT.read_text()
    assert "ExecStart=/usr/local/bin/midid\n" in text
    unit = tmp_path / "midid.service"
    unit.write_text(text.replace("ExecStart=/usr/local/bin/midid\n", f"ExecStart={stub}\n"))
    _verify([], unit)


def test_user_unit_verifies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _stub(home / ".local/share/midid/venv/bin/midid")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "midid.service"
    shutil.copy(USER_UNIT, unit)
    _verify(["--user"], unit, {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)})


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a typo'd key (which verify only warns about) fails it."""
    stub = _stub(tmp_path / "bin" / "midid")
    text = SYSTEM_UNIT.read_text().replace("ExecStart=/usr/local/bin/midid\n", f"ExecStart={stub}\n")
    unit = tmp_path / "midid.service"
    unit.write_text(text.replace("WatchdogSec=30", "WatchdogSecs=30"))
    with pytest.raises(AssertionError, match="WatchdogSecs"):
        _verify([], unit)


def test_system_unit_settings() -> None:
    unit = _parse(SYSTEM_UNIT)
    service = {k: v[-1] for k, v in unit["Service"].items()}
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/usr/local/bin/midid",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "30",
        "TimeoutStopSec": "30",
        "Restart": "on-failure",
        "User": "midid",
        "Group": "midid",
        "StateDirectory": "midid",
        "ConfigurationDirectory": "midid",
        "RuntimeDirectory": "midid",
        "RuntimeDirectoryMode": "0750",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "read-only",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "no",
        "CapabilityBoundingSet": "",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    writable = service["ReadWritePaths"].split()
    assert {"/var/lib/midid", "-/media", "-/run/media", "-/mnt"} <= set(writable)
    assert "MIDID_CONFIG=/etc/midid/midid.toml" in unit["Service"]["Environment"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_user_unit_settings() -> None:
    unit = _parse(USER_UNIT)
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["Type"] == "notify"
    assert service["WatchdogSec"] == "30"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "User" not in service  # a user unit runs as its user
    assert "MIDID_CONFIG=%E/midid/midid.toml" in unit["Service"]["Environment"]
    assert unit["Install"]["WantedBy"] == ["default.target"]
