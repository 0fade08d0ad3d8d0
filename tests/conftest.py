"""Shared fixtures: real corpus files, real config files, a real Ray for the whole session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis fails an example that runs over 200 ms. That is a timing assertion, and speed is
# measured in benchmarks/, never asserted by a test: on these shared 2-core machines a first
# call that loads a table (anyascii's data for a rare Unicode block) or a stall of the box has
# taken 620 ms for a name that then sanitized in 0.05 ms.
settings.register_profile("midid", deadline=None)
settings.load_profile("midid")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the machine's /etc/midid or ~/.config/midid by accident."""
    monkeypatch.delenv("MIDID_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture(scope="session", autouse=True)
def _kernels_compiled() -> None:
    """Compile (first run on a machine) or load the numba kernels once, before any test
    times an analysis or a split: the hang detectors must not count a one-off compilation."""
    from midid.tasks import warm_up

    warm_up()


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"needs the shared corpus at {CORPUS} (clone with ../shared beside the repo)")
    return CORPUS


@pytest.fixture
def sample_midi() -> list[Path]:
    """A few real files that ship with the repo: two Groove drum files and a POP909 song."""
    return sorted(p for p in (DATA / "midi").iterdir() if p.suffix == ".mid")


def write_config(tmp_path: Path, extra: str = "", name: str = "midid.toml") -> Path:
    """A config whose library, database and socket live under tmp_path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(
        f'[library]\npath = "{tmp_path}/library"\ndatabase = "{tmp_path}/midid.sqlite3"\n'
        f'[control]\nsocket = "{tmp_path}/midid.sock"\n' + extra
    )
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the session (start-up costs ~2 s; per-test would dominate)."""
    ray = pytest.importorskip("ray")
    from midid.pool import start_ray

    start_ray("", 2, 128)
    yield ray
    ray.shutdown()


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            os.chmod(Path(root) / name, 0o755 if name in dirs else 0o644)
    return dst


def run_or_dump(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` for a midictl or midid command
    that, past ``timeout``, fails with what the process wrote and the stacks of its threads
    (SIGUSR1, which both dump) rather than with nothing but the timeout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout:.0f} s: {' '.join(cmd)}\n{err[-8000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def copied(files: list[Path], folder: Path) -> Path:
    """``folder`` (made if missing) holding a copy of each of ``files``."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    return folder
