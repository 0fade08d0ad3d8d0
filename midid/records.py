"""An analysis as the library stores it: one row of the `analysis` table.

The row is built where the analysis runs (a pool worker) rather than in the process that owns
the database: turning chord lists into JSON cost that single process about 50 us per file,
and a row of short strings pickles in a sixth of the time of the nested record. orjson writes
the JSON: for a song's hundred chords it takes 4 us where the standard library's compact
``json.dumps`` takes 39 (the same text for these plain lists; non-ASCII tags are kept as UTF-8
rather than ``\\u`` escapes, which every JSON reader reads back the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # the database edge imports this module and must not load the analysis stack
    from .analysis import Analysis

# The version of the analysis that wrote a row. Bump it with any change to midid/analysis that
# alters a stored field: a library re-analyses, in the background, every file an older version
# analysed (`db.Library.requeue_stale_analyses`), so an upgrade reaches the files already there.
# tests/test_analyzer_version.py fails when the stored analysis of its inputs changes under the
# same version.
# 1: a one-beat time signature (1/4 ...) counts as none (bars, category).
ANALYZER_VERSION = 1

ANALYSIS_COLUMNS: dict[str, Any] = {
    "file_id": int, "parser": str, "bpm": float, "bpm_source": str, "bpm_estimate": float,
    "tempo_changes": int, "time_signature": str, "duration_s": float, "bars": float,
    "key_tonic": str, "key_mode": str, "key_confidence": float, "is_drums": int,
    "drum_parts": str, "chords": str, "progression": str, "notes": int, "tracks": int,
    "channels": str, "programs": str, "pitch_min": int, "pitch_max": int, "polyphony": float,
    "category": str, "tags": str, "analyzer": int,
}
JSON_COLUMNS = ("drum_parts", "chords", "progression", "channels", "programs", "tags")


def analysis_row(file_id: int, analysis: Analysis) -> dict[str, Any]:
    """The `analysis` row of one file: lists and dicts as compact JSON, booleans as 0/1."""
    record = analysis.to_dict()
    row = {k: record.get(k) for k in ANALYSIS_COLUMNS}
    row["file_id"] = file_id
    row["analyzer"] = ANALYZER_VERSION
    for key in JSON_COLUMNS:
        if row[key] is not None:
            row[key] = orjson.dumps(row[key]).decode()
    row["is_drums"] = int(bool(row["is_drums"]))
    return row
