"""A change to what the analysis stores must come with a new `records.ANALYZER_VERSION`.

A library re-analyses the files an older version analysed only when the version goes up
(`db.Library.requeue_stale_analyses`); a change that forgets the bump leaves every file already
in a user's library with the old tempo, key or category, and nothing tells them. So the stored
rows of a fixed set of inputs - the files in tests/data, the parts `split` makes of them and the
generated sample pack (drums, single parts, bass, melodies, chords, progressions) - are
fingerprinted per file and recorded here for the current version.

When this test fails after a change to the analysis (or to symusic, which it reads with):
bump ANALYZER_VERSION in midid/records.py (and say what changed beside it), then record the new
fingerprints printed by ``.venv/bin/python tests/test_analyzer_version.py``. A change to the
inputs themselves (a new file in tests/data, midid/sample.py) needs the new fingerprints only.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from midid.metadata import name_metadata
from midid.records import ANALYZER_VERSION, JSON_COLUMNS
from midid.sample import write_samples
from midid.stages.split import split_midi
from midid.tasks import AnalyzeTask, analyze_batch

DATA = Path(__file__).parent / "data"

# Per input: the first 16 hex digits of the sha256 of its stored row (see _row_text).
FINGERPRINTS: dict[str, str] = {
    'analysis/9_latin-merengue_158_beat_4-4.mid': 'd10391b0d30931f2',
    'archive/14_rock_130_beat_4-4.mid': '65ee29d6c741d814',
    'archive/7_blues-shuffle_134_beat_4-4.mid': '2980fa91c86cbdca',
    'midi/100_neworleans-secondline_94_beat_4-4.mid': 'a3fd741f5e4ebe66',
    'midi/29_latin-samba_116_fill_4-4.mid': 'ef9a601f0c985057',
    'midi/pop909_003.mid': '5e2d465353a88ced',
    'split/pop909_229.mid': '71028fa3b63b1fca',
    'split/pop909_235.mid': 'b6f9179b9976f008',
    'sample/Bass Lines/Bass Am 120bpm.mid': '2535a39a4db87045',
    'sample/Bass Lines/Bass C 100bpm.mid': '87b10f38938f9877',
    'sample/Bass Lines/Bass Dm 85bpm.mid': '9d0ea8802903cfce',
    'sample/Bass Lines/Bass G 120bpm.mid': 'b4aae3758cee2991',
    'sample/Chord Kit/Progression Am 120bpm.mid': 'fba4eeda7f1223f2',
    'sample/Chord Kit/Progression C 100bpm.mid': '35f0c2cbfc0efdef',
    'sample/Chord Kit/Progression Dm 85bpm.mid': 'a91f55da8d0fdcf3',
    'sample/Chord Kit/Progression G 120bpm.mid': 'ab08e35392c07caa',
    'sample/Downloads/copy of Full Loop.mid': '131e00056ab66537',
    'sample/Trap Drums 128 BPM/Full Loop 128bpm.mid': '6e9ce5515fd021a0',
    'sample/Trap Drums 128 BPM/Hats 128.mid': 'd329722588b3dcb4',
    'sample/Trap Drums 128 BPM/Kick Only 128.mid': '889b81ddffc17236',
    'sample/Trap Drums 140 BPM/Full Loop 140bpm.mid': '3fdd28373a88ff70',
    'sample/Trap Drums 140 BPM/Hats 140.mid': '9683621a85382b1f',
    'sample/Trap Drums 140 BPM/Kick Only 140.mid': '63b5bad77ae70971',
    'sample/Trap Drums 90 BPM/Full Loop 90bpm.mid': 'c9e62eb12b41f75f',
    'sample/Trap Drums 90 BPM/Hats 90.mid': '19e52068e654587e',
    'sample/Trap Drums 90 BPM/Kick Only 90.mid': '2e3abfaceb74ad89',
    'sample/Lofi Pack.zip/Lofi Pack/Keys Em 80bpm.mid': '823f90d1b452bd05',
    'sample/Lofi Pack.zip/Lofi Pack/Keys F 80bpm.mid': 'c798877ea1e4c1ba',
    'midi/pop909_003.mid#MELODY': '0c1dca8afb5fd9bd',
    'midi/pop909_003.mid#BRIDGE': '2426cee4d953e02a',
    'midi/pop909_003.mid#PIANO': '69f3506df09fc129',
    'split/pop909_229.mid#MELODY': '201b0ac41719be3e',
    'split/pop909_229.mid#BRIDGE': '10d2fb77e75b870a',
    'split/pop909_229.mid#PIANO': '7164be992132627c',
    'split/pop909_235.mid#MELODY': '6f42c7053a896925',
    'split/pop909_235.mid#BRIDGE': '28db9bd881d563bb',
    'split/pop909_235.mid#PIANO': '171d80bc30512472',
}
FINGERPRINT_VERSION = 1  # the ANALYZER_VERSION the FINGERPRINTS were recorded under


def _inputs(scratch: Path) -> dict[str, bytes]:
    """Name -> bytes of every input, parts under ``<file>#<part name>``."""
    files = {str(p.relative_to(DATA)): p.read_bytes() for p in sorted(DATA.rglob("*.mid"))}
    write_samples(scratch)
    files.update({f"sample/{p.relative_to(scratch)}": p.read_bytes()
                  for p in sorted(scratch.rglob("*.mid"))})
    for pack in sorted(scratch.rglob("*.zip")):
        with zipfile.ZipFile(pack) as z:
            files.update({f"sample/{pack.relative_to(scratch)}/{m}": z.read(m)
                          for m in sorted(z.namelist()) if m.lower().endswith(".mid")})
    for name, data in list(files.items()):
        for part in split_midi(data):
            files[f"{name}#{part.label}"] = part.data
    return files


def _row_text(row: dict[str, Any]) -> str:
    """The stored row as canonical text. Floats are rounded coarser than they are stored (bpm
    to 0.1, shares and confidences to 0.01), so a last-digit difference of another numpy or
    CPU does not count as a change; a different tempo, key, chord, category or count does."""
    def coarse(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 1) if abs(value) >= 20 else round(value, 2)
        if isinstance(value, list):
            return [coarse(v) for v in value]
        if isinstance(value, dict):
            return {k: coarse(v) for k, v in value.items()}
        return value

    record = {k: json.loads(v) if k in JSON_COLUMNS and v is not None else v
              for k, v in row.items() if k not in ("file_id", "analyzer")}
    return json.dumps(coarse(record), sort_keys=True)


def fingerprints(scratch: Path) -> dict[str, str]:
    """Name -> fingerprint of its stored row (or of its error), analysed as the pipeline does:
    the file-name BPM and tags come from the name and its folders."""
    inputs = _inputs(scratch)
    tasks = []
    for i, (name, data) in enumerate(inputs.items()):
        path = Path(name.split("#")[0])
        meta = name_metadata(path.name, folders=path.parts[:-1])
        tasks.append(AnalyzeTask(i, data, meta.bpm, tuple(t.tag for t in meta.tags)))
    out = {}
    for name, outcome in zip(inputs, analyze_batch(tasks), strict=True):
        text = _row_text(outcome.row) if outcome.row is not None else f"error: {outcome.error}"
        out[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def test_a_change_to_stored_analyses_bumps_the_analyzer_version(tmp_path: Path) -> None:
    assert FINGERPRINT_VERSION == ANALYZER_VERSION, (
        f"ANALYZER_VERSION is {ANALYZER_VERSION}: record the fingerprints of this version here "
        "(run this file with python)")
    now = fingerprints(tmp_path)
    assert len(now) >= 30, "the inputs shrank: tests/data or the sample pack lost files"
    changed = sorted(name for name in now.keys() | FINGERPRINTS.keys()
                     if now.get(name) != FINGERPRINTS.get(name))
    assert not changed, (
        f"the stored analysis of {len(changed)} input(s) changed ({', '.join(changed[:5])}...):"
        " bump ANALYZER_VERSION in midid/records.py so libraries re-analyse their files, then"
        " record the new fingerprints (run this file with python); see the module docstring")


def test_the_fingerprint_sees_a_changed_tempo_key_or_category(tmp_path: Path) -> None:
    """The coarse rounding must not hide what a user searches by."""
    [outcome] = analyze_batch([AnalyzeTask(0, (DATA / "midi" / "pop909_003.mid").read_bytes(), None, ())])
    row = outcome.row
    assert row is not None
    base = _row_text(row)
    for key, value in (("bpm", row["bpm"] + 1.0), ("key_tonic", "F#"), ("category", "FX"),
                       ("bpm_estimate", (row["bpm_estimate"] or 100.0) * 1.04)):
        assert _row_text({**row, key: value}) != base, key
    assert _row_text({**row, "key_confidence": row["key_confidence"] + 1e-6}) == base


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        printed = fingerprints(Path(scratch))
    print(f"FINGERPRINT_VERSION = {ANALYZER_VERSION}")
    print("FINGERPRINTS: dict[str, str] = {")
    for name, value in printed.items():
        print(f"    {name!r}: {value!r},")
    print("}")
