"""The analysis record and its error type."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


class AnalysisError(ValueError):
    """Nothing musical could be read from the bytes; the message is a one-line reason."""


@dataclass(frozen=True)
class Analysis:
    """What midid knows about one MIDI file; field names are the JSON keys of ``midictl analyze``.

    Units: ``bpm`` quarter notes per minute; ``duration_s`` seconds through the tempo map;
    ``bars`` whole bars of the first time signature; chord ``beat`` counts quarter notes from the
    start of the file. ``channels`` counts note-bearing voices (track x channel x program);
    ``tracks`` counts MTrk chunks; ``programs`` are 0-based GM programs of melodic voices.
    Key fields are None for files without pitched notes.
    """

    bpm: float
    bpm_source: str  # "meta" | "filename" | "estimate" | "default"
    bpm_estimate: float | None
    tempo_changes: int
    time_signature: str
    duration_s: float
    bars: int
    key_tonic: str | None
    key_mode: str | None
    key_confidence: float | None
    is_drums: bool
    drum_parts: dict[str, float]
    chords: list[dict[str, float | str]]
    progression: list[str]
    notes: int
    tracks: int
    channels: int
    programs: list[int]
    pitch_min: int | None
    pitch_max: int | None
    polyphony: float
    category: str
    tags: list[str] = field(default_factory=list)
    parser: str = "symusic"  # "symusic" | "mido"

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (every value is a builtin type).

        Field by field rather than `dataclasses.asdict`, whose recursive deep copy cost more
        than a tenth of a worker's time; the lists and dicts held here are plain already.
        """
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(Analysis))
