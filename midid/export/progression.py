"""MPC Pad Perform ``.progression`` files made from a MIDI file's own chord voicings.

A ``.progression`` file is JSON::

    {"progression": {"name": "...", "rootNote": "C", "scale": "Chromatic",
                     "recordingOctave": 2,
                     "chords": [{"name": "Am", "role": "Root", "notes": [57, 60, 64]}, ...]}}

Each chord object is one pad; the MPC has 16 pads, so at most 16 chords are written. The
first chord's role is ``"Root"``, the rest ``"Normal"``. ``notes`` are absolute MIDI note
numbers (60 = middle C), played as written: with the ``Chromatic`` scale the MPC does not
re-harmonise them.

The MPC builds its Progressions menu from the JSON ``name`` field, not the file name, and (as
reported by MPC users, see docs/export.md) splits it at the first ``-`` into a menu heading
and an entry. :func:`progression_document` therefore replaces hyphens inside the name with
spaces and only puts one between an explicit ``heading`` and the name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from symusic import Score

__all__ = [
    "MAX_PADS",
    "QUALITIES",
    "Voicing",
    "chord_name",
    "chord_voicings",
    "parse_progression",
    "progression_document",
]

log = logging.getLogger(__name__)

MAX_PADS = 16
RECORDING_OCTAVE = 2
TEMPLATE_ROOT_OCTAVE_BASE = 60  # C4: where a chord with no sounding notes is voiced

# quality -> (semitones above the root, suffix the MPC shows after the root)
QUALITIES: dict[str, tuple[tuple[int, ...], str]] = {
    "maj": ((0, 4, 7), ""),
    "min": ((0, 3, 7), "m"),
    "dim": ((0, 3, 6), "dim"),
    "aug": ((0, 4, 8), "aug"),
    "sus2": ((0, 2, 7), "sus2"),
    "sus4": ((0, 5, 7), "sus4"),
    "maj7": ((0, 4, 7, 11), "maj7"),
    "min7": ((0, 3, 7, 10), "m7"),
    "7": ((0, 4, 7, 10), "7"),
}

_PITCH_CLASSES = {
    "C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6, "Gb": 6,
    "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11,
}  # fmt: skip

MIN_PITCH_CLASSES = 2  # fewer is a single note, not a chord a pad should play
NO_CHORD = frozenset(["N", "X", ""])


@dataclass(frozen=True)
class Voicing:
    """One pad: the chord's display name (``Am``) and its MIDI note numbers, lowest first."""

    name: str
    notes: tuple[int, ...]


@dataclass(frozen=True)
class _Chord:
    name: str
    root: int  # pitch class, 0 = C
    intervals: tuple[int, ...]


def _parse_label(label: str) -> _Chord:
    """``"A:min"`` -> Am. A bass after ``/`` (``C:maj/3``) is ignored: pads hold the chord."""
    root_text, sep, rest = label.partition(":")
    quality = rest.split("/", 1)[0]
    if not sep or root_text not in _PITCH_CLASSES or quality not in QUALITIES:
        raise ValueError(
            f"chord label {label!r} is not root:quality with root one of "
            f"{', '.join(_PITCH_CLASSES)} and quality one of {', '.join(QUALITIES)}"
        )
    intervals, suffix = QUALITIES[quality]
    return _Chord(root_text + suffix, _PITCH_CLASSES[root_text], intervals)


def chord_name(label: str) -> str:
    """The name the MPC shows for a chord label: ``A:min`` -> ``Am``, ``G:7`` -> ``G7``."""
    return _parse_label(label).name


def _notes(score: Score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, end (quarter notes) and pitch of every note on non-drum tracks."""
    arrays = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not arrays:
        empty = np.zeros(0)
        return empty, empty, empty.astype(np.int64)
    start = np.concatenate([a["time"] for a in arrays]).astype(np.float64)
    end = start + np.concatenate([a["duration"] for a in arrays]).astype(np.float64)
    pitch = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)
    return start, end, pitch


def _template(chord: _Chord) -> tuple[int, ...]:
    base = TEMPLATE_ROOT_OCTAVE_BASE + chord.root
    return tuple(base + i for i in chord.intervals)


def chord_voicings(data: bytes, chords: Sequence[dict]) -> list[Voicing]:
    """The notes actually played for each distinct chord of a file, in order of first appearance.

    ``data`` is the SMF; ``chords`` are the analysis segments ``{"beat": float, "label": str}``
    with ``beat`` in quarter notes from the file start (not bars, not seconds); a segment lasts
    until the next one starts, the last until the file ends. ``N``/``X`` (no chord) segments are
    skipped. A voicing is every pitch on a non-drum track that sounds for at least a quarter of
    the segment (or half a beat, whichever is shorter) and belongs to the chord, so melody
    passing notes and tails of the previous chord stay out. A label is voiced from its first
    segment whose notes cover at least two of its pitch classes; a label with no such segment
    gets a root-position voicing from middle C.
    """
    score = Score.from_midi(data, ttype="quarter")
    start, end, pitch = _notes(score)
    segments = sorted(
        ((float(c["beat"]), str(c["label"])) for c in chords), key=lambda seg: seg[0]
    )
    file_end = max(float(score.end()), segments[-1][0] if segments else 0.0)
    distinct: dict[str, _Chord] = {}  # insertion order = order of first appearance
    found: dict[str, tuple[int, ...]] = {}
    for index, (beat, label) in enumerate(segments):
        if label in NO_CHORD:
            continue
        parsed = _parse_label(label)
        chord = distinct.setdefault(parsed.name, parsed)
        seg_end = segments[index + 1][0] if index + 1 < len(segments) else file_end
        if chord.name in found or seg_end <= beat:
            continue
        overlap = np.minimum(end, seg_end) - np.maximum(start, beat)
        chord_tone = np.isin(pitch % 12, [(chord.root + i) % 12 for i in chord.intervals])
        min_overlap = min(0.25 * (seg_end - beat), 0.5)
        notes = sorted({int(p) for p in pitch[(overlap >= min_overlap) & chord_tone]})
        if len({n % 12 for n in notes}) >= MIN_PITCH_CLASSES:
            found[chord.name] = tuple(notes)
    missing = [name for name in distinct if name not in found]
    if missing:
        log.debug("no sounding notes for %s; using root-position voicings", ", ".join(missing))
    return [Voicing(name, found.get(name) or _template(c)) for name, c in distinct.items()]


def _menu_text(text: str) -> str:
    return " ".join(text.replace("-", " ").split())


def progression_document(
    name: str, voicings: Iterable[Voicing], heading: str | None = None
) -> dict:
    """The ``.progression`` JSON object for ``voicings`` (first 16 kept, first one the Root pad).

    ``name`` is what the MPC lists; hyphens in it become spaces so the MPC does not split it
    into a bogus heading. With ``heading`` (e.g. the pack name) the entry is filed under that
    heading in the Progressions menu (``"heading-name"``). Raises ValueError with no voicings.
    """
    pads = list(voicings)
    if not pads:
        raise ValueError(f"progression {name!r} has no chords")
    if len(pads) > MAX_PADS:
        log.info("progression %r has %d chords; keeping the first %d", name, len(pads), MAX_PADS)
        pads = pads[:MAX_PADS]
    title = _menu_text(name) or "untitled"
    if heading is not None and _menu_text(heading):
        title = f"{_menu_text(heading)}-{title}"
    return {
        "progression": {
            "name": title,
            "rootNote": "C",
            "scale": "Chromatic",
            "recordingOctave": RECORDING_OCTAVE,
            "chords": [
                {"name": v.name, "role": "Root" if i == 0 else "Normal", "notes": list(v.notes)}
                for i, v in enumerate(pads)
            ],
        }
    }


def parse_progression(text: str) -> list[Voicing]:
    """The pads of a ``.progression`` file, in pad order. Raises ValueError if malformed."""
    try:
        chords = json.loads(text)["progression"]["chords"]
        voicings = [Voicing(str(c["name"]), tuple(int(n) for n in c["notes"])) for c in chords]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a .progression document: {exc}") from exc
    bad = [v for v in voicings if not v.notes or any(not 0 <= n <= 127 for n in v.notes)]
    if bad:
        raise ValueError(f"chords with no or out-of-range notes: {', '.join(v.name for v in bad)}")
    return voicings
