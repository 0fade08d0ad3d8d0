"""The compute of the CPU-heavy stages, batch in, records out.

These are what a Ray actor runs (and what the in-process runner runs for small jobs): plain
functions over bytes that never touch the database or the library folder, so a pool can live
on another machine of a Ray cluster with no shared file system.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .analysis import AnalysisError, analyze_bytes
from .analysis import warm_up as warm_up_analysis
from .records import analysis_row
from .smf import note_channels
from .stages.split import Part, SplitError, split_midi


@dataclass(frozen=True)
class SplitTask:
    file_id: int
    data: bytes


@dataclass(frozen=True)
class SplitOutcome:
    file_id: int
    parts: list[Part]
    error: str | None = None


@dataclass(frozen=True)
class AnalyzeTask:
    file_id: int
    data: bytes
    filename_bpm: float | None
    prior_tags: tuple[str, ...]
    filename_bpm_stated: bool = False  # written "140bpm", not a bare number (metadata.NameMeta)
    filename_key: tuple[str, str] | None = None  # (tonic, mode) a name states: the key's prior


@dataclass(frozen=True)
class AnalyzeOutcome:
    """``row`` is the file's `analysis` table row (see :mod:`.records`), None on error."""

    file_id: int
    row: dict[str, Any] | None
    error: str | None = None


def warm_up() -> None:
    """Load (or compile, once per machine) every kernel a batch may need - the analysis's and
    the split's type-0 channel walk - so a worker's first batch does not pay for it."""
    warm_up_analysis()
    note_channels(b"\x00\xff\x2f\x00")


def split_batch(tasks: Sequence[SplitTask]) -> list[SplitOutcome]:
    out = []
    for task in tasks:
        try:
            out.append(SplitOutcome(task.file_id, split_midi(task.data)))
        except SplitError as exc:
            out.append(SplitOutcome(task.file_id, [], _one_line(exc)))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop its batch
            out.append(SplitOutcome(task.file_id, [], f"split failed: {type(exc).__name__}: {_one_line(exc)}"))
    return out


def analyze_batch(tasks: Sequence[AnalyzeTask]) -> list[AnalyzeOutcome]:
    out = []
    for task in tasks:
        try:
            result = analyze_bytes(task.data, filename_bpm=task.filename_bpm, prior_tags=task.prior_tags,
                                   filename_bpm_stated=task.filename_bpm_stated, filename_key=task.filename_key)
            out.append(AnalyzeOutcome(task.file_id, analysis_row(task.file_id, result)))
        except AnalysisError as exc:
            out.append(AnalyzeOutcome(task.file_id, None, _one_line(exc)))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop its batch
            out.append(AnalyzeOutcome(task.file_id, None, f"analysis failed: {type(exc).__name__}: {_one_line(exc)}"))
    return out


def run_batch(kind: str, tasks: Sequence[Any]) -> list[Any]:
    """Dispatch by stage name; the one entry point actors expose."""
    if kind == "split":
        return split_batch(tasks)
    if kind == "analyze":
        return analyze_batch(tasks)
    raise ValueError(f"unknown stage {kind!r}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
