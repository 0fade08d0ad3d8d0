"""copy_batch and remove_stale_temps on a plain folder (real files, tmp_path)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from midid.export.copy import TEMP_PREFIX, CopyItem, copy_batch, remove_stale_temps

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _sources(tmp_path: Path, count: int = 5) -> list[Path]:
    """Real MIDI files from the corpus when present, else made-up bytes of similar size."""
    groove = sorted((CORPUS / "groove").rglob("*.mid"))[:count] if CORPUS.exists() else []
    if len(groove) < count:
        pytest.skip(f"corpus not found at {CORPUS}")
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i, path in enumerate(groove):
        dest = src / f"{i}_{path.name}"
        dest.write_bytes(path.read_bytes())
        dest.chmod(0o755)  # execute bits must not reach the drive
        paths.append(dest)
    return paths


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*")]


def test_copies_into_nested_folders_with_mode_0644(tmp_path):
    sources = _sources(tmp_path)
    root = tmp_path / "drive"
    root.mkdir()
    items = [
        CopyItem(p, f"MPC_Documents/SAMPLES/Drums/pack{i % 2}/{p.name}")
        for i, p in enumerate(sources)
    ]
    old = os.umask(0o077)
    try:
        result = copy_batch(items, root)
    finally:
        os.umask(old)
    assert result.stopped is None and result.failed == []
    assert result.copied == items
    assert result.bytes == sum(p.stat().st_size for p in sources)
    for item in items:
        dest = root / item.dest_rel
        assert dest.read_bytes() == item.src.read_bytes()
        assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert _temps(root) == []


def test_identical_file_counts_as_copied_and_a_different_one_is_never_overwritten(tmp_path):
    first, second = _sources(tmp_path, 2)
    root = tmp_path / "drive"
    (root / "d").mkdir(parents=True)
    (root / "d" / "same.mid").write_bytes(first.read_bytes())
    (root / "d" / "users.mid").write_bytes(b"the user's own file")
    same, clash = CopyItem(first, "d/same.mid"), CopyItem(second, "d/users.mid")
    result = copy_batch([same, clash], root)
    assert result.copied == [same] and result.bytes == 0
    assert [item for item, _ in result.failed] == [clash]
    assert "other content" in result.failed[0][1]
    assert (root / "d" / "users.mid").read_bytes() == b"the user's own file"
    assert result.stopped is None


def test_missing_source_fails_alone(tmp_path):
    sources = _sources(tmp_path, 3)
    sources[1].unlink()
    root = tmp_path / "drive"
    root.mkdir()
    items = [CopyItem(p, f"x/{p.name}") for p in sources]
    result = copy_batch(items, root)
    assert result.copied == [items[0], items[2]]
    assert [i for i, _ in result.failed] == [items[1]]
    assert "cannot read source" in result.failed[0][1]
    assert not (root / items[1].dest_rel).exists()


@pytest.mark.parametrize(
    "dest", ["../escape.mid", "/abs.mid", "a/../../b.mid", f"a/{TEMP_PREFIX}x", ""]
)
def test_unsafe_destinations_fail(tmp_path, dest):
    src = _sources(tmp_path, 1)[0]
    root = tmp_path / "drive"
    root.mkdir()
    result = copy_batch([CopyItem(src, dest)], root)
    assert result.copied == [] and len(result.failed) == 1
    assert not (tmp_path / "escape.mid").exists() and not Path("/abs.mid").exists()


def test_symlinked_folder_on_the_drive_is_not_followed(tmp_path):
    src = _sources(tmp_path, 1)[0]
    root, outside = tmp_path / "drive", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "SAMPLES").symlink_to(outside)
    result = copy_batch([CopyItem(src, "SAMPLES/a.mid")], root)
    assert result.copied == [] and len(result.failed) == 1
    assert list(outside.iterdir()) == []


def test_missing_root_stops_the_batch(tmp_path):
    src = _sources(tmp_path, 1)[0]
    result = copy_batch([CopyItem(src, "a.mid")], tmp_path / "not-mounted")
    assert result.stopped and "device gone" in result.stopped
    assert result.copied == [] and result.failed == []


def test_remove_stale_temps_removes_only_temps(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    temps = [tmp_path / f"{TEMP_PREFIX}1", tmp_path / "a" / "b" / f"{TEMP_PREFIX}2"]
    for t in temps:
        t.write_bytes(b"half")
    keep = [tmp_path / "a" / "user.mid", tmp_path / "a" / "midid-tmp-not-ours"]
    for k in keep:
        k.write_bytes(b"keep")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()
    assert remove_stale_temps(tmp_path) == 2
    assert not any(t.exists() for t in temps)
    assert all(k.exists() for k in keep) and (tmp_path / f"{TEMP_PREFIX}dir").is_dir()
    assert remove_stale_temps(tmp_path) == 0
