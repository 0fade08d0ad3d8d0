"""Analyse files by path for ``midictl analyze``: one JSON-ready row per path, and a table.

This is the only part of midid.analysis that touches the file system. Every path yields
exactly one row, in input order; a file that cannot be read or analysed gets ``ok: false``
and a one-line ``error`` instead of raising, so one bad file never hides the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import fields
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..metadata import name_metadata
from ..sniff import SNIFF_BYTES, midi_payload, sniff_kind
from .analyze import analyze_bytes
from .model import Analysis, AnalysisError

log = logging.getLogger(__name__)

ANALYSIS_KEYS = tuple(f.name for f in fields(Analysis))
MAX_FILE_BYTES = 64 * 1024 * 1024  # no MIDI file is this big; refuse rather than read it


def analyze_paths(paths: Iterable[str]) -> Iterator[dict]:
    """Yield ``{"path", "ok", "error", **Analysis}`` per path, in order (nulls when not ok)."""
    for path in paths:
        try:
            analysis = _analyze_path(path)
        except (OSError, AnalysisError) as err:
            log.debug("cannot analyse %s: %s", path, err)
            yield _failed(path, _one_line(err))
        except Exception as err:  # a bug must not cost the other files their lines
            log.warning("analysis of %s failed unexpectedly", path, exc_info=True)
            yield _failed(path, "internal error: " + _one_line(err))
        else:
            yield {"path": path, "ok": True, "error": None, **analysis.to_dict()}


def _failed(path: str, error: str) -> dict:
    return {"path": path, "ok": False, "error": error, **dict.fromkeys(ANALYSIS_KEYS)}


_IMPORT_HINT = "`midictl import` reads folders and archives"


def _analyze_path(path: str) -> Analysis:
    p = Path(path)
    if p.is_dir():
        raise AnalysisError(f"a folder: `midictl analyze` takes MIDI files ({_IMPORT_HINT})")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise AnalysisError(f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    raw = p.read_bytes()
    data = midi_payload(raw)
    if data is None:
        if sniff_kind(raw[:SNIFF_BYTES]) == "archive":
            raise AnalysisError(f"an archive, not a MIDI file ({_IMPORT_HINT})")
        raise AnalysisError("not a MIDI file (no MThd header)")
    meta = name_metadata(p.name, folders=p.parent.parts[-2:])
    return analyze_bytes(data, filename_bpm=meta.bpm, prior_tags=[t.tag for t in meta.tags],
                         filename_bpm_stated=meta.bpm_stated,
                         filename_key=(meta.key_tonic, meta.key_mode or "major") if meta.key_tonic else None)


def _one_line(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"cannot read the file: {err.strerror}"
    text = str(err) if isinstance(err, AnalysisError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__


def render_table(rows: list[dict]) -> Table:
    """A readable table of analysis rows (as yielded by :func:`analyze_paths`)."""
    table = Table(box=None)  # borders would take a fifth of an 80-column terminal
    # Short values (a category, "120 (estimate)", "C# minor") are never broken inside a word on
    # a narrow terminal; the file name, drum parts and progression (or an error) wrap instead.
    for name, justify, no_wrap in (
        ("file", "left", False), ("category", "left", True), ("bpm", "right", True),
        ("key", "left", False), ("sig", "left", True), ("bars", "right", True),
        ("notes", "right", True), ("drums", "left", False), ("progression", "left", False),
    ):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=no_wrap,
                         min_width=len("C# minor") if name == "key" else None)
    for row in rows:
        name = escape(Path(row["path"]).name)  # "[free] kick.mid": brackets are not markup
        if not row["ok"]:
            table.add_row(name, "[red]error[/red]", *[""] * 6, f"[red]{escape(row['error'])}[/red]")
            continue
        bpm = f"{row['bpm']:g}" + ("" if row["bpm_source"] == "meta" else f" ({row['bpm_source']})")
        key = f"{row['key_tonic']} {row['key_mode']}" if row["key_tonic"] else "-"
        parts = ", ".join(f"{p} {s:.0%}" for p, s in row["drum_parts"].items() if s >= 0.05)
        table.add_row(
            name, row["category"], bpm, key, row["time_signature"], str(row["bars"]),
            str(row["notes"]), parts or "-", " ".join(row["progression"]),
        )
    return table
