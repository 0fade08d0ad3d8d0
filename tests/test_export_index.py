"""midid_index.json is complete, valid JSON and replaced atomically."""

from __future__ import annotations

import json

import pytest

from midid.export.copy import TEMP_PREFIX
from midid.export.index import INDEX_NAME, write_index


def _entry(path: str, **extra) -> dict:
    return {
        "path": path, "hash": "ab" * 16, "category": "DrumKicks", "bpm": 92.0, "key": None,
        "tags": ["funk"], "source": "groove/drummer1", "exported_at": "2026-11-27T10:00:00Z",
        **extra,
    }  # fmt: skip


def test_index_holds_every_entry_and_replaces_the_old_one(tmp_path):
    write_index(tmp_path, [_entry("MPC_Documents/a.mid")])
    entries = [_entry(f"MPC_Documents/SAMPLES/Drums/Kicks/p/ünï {i}.mid") for i in range(3)]
    write_index(tmp_path, entries)
    doc = json.loads((tmp_path / INDEX_NAME).read_text(encoding="utf-8"))
    assert doc["files"] == entries
    assert doc["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [INDEX_NAME]
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


@pytest.mark.parametrize(
    "bad", [{"path": "a.mid"}, _entry("/abs.mid"), _entry("../up.mid")]
)
def test_malformed_entries_are_refused_and_the_old_index_stays(tmp_path, bad):
    write_index(tmp_path, [_entry("ok.mid")])
    with pytest.raises(ValueError):
        write_index(tmp_path, [_entry("fine.mid"), bad])
    assert json.loads((tmp_path / INDEX_NAME).read_text())["files"] == [_entry("ok.mid")]
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))
