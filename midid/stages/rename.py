"""File names rendered from analysis results: ``{bpm}bpm_{key}_{tags}`` -> ``128bpm_Cmaj_bass.mid``.

Placeholders: ``bpm`` (rounded to an int), ``key`` (tonic and mode as ``Cmaj``/``Amin``;
sharps are written as their flat equivalents, ``F#m`` -> ``Gbmin``, because ``#`` is
shell-hostile), ``tags`` (the first 3, joined with ``_``), ``category``, ``name`` (the
original file stem) and ``pack``. Format specs (``{bpm:03d}``) and conversions are not
supported: a template is plain text with bare placeholders.

A missing or empty value renders as nothing, and so does the text glued to it up to the
nearest ``_``, ``-`` or ``.``: ``{bpm}bpm_{key}`` without a bpm gives ``Cmaj``, not
``bpm_Cmaj``. The result always goes through :func:`sanitize_filename`.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence

from midid.stages.sanitize import MIDI_EXTENSIONS, sanitize_filename

__all__ = ["PLACEHOLDERS", "format_key", "render_name", "validate_template"]

PLACEHOLDERS = ("bpm", "key", "tags", "category", "name", "pack")
MAX_TAGS = 3

_FLAT_OF = {"C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab", "A#": "Bb",
            "E#": "F", "B#": "C", "Cb": "B", "Fb": "E"}  # fmt: skip
_PITCH_CLASSES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_MODES = {"": "maj", "M": "maj", "maj": "maj", "major": "maj",
          "m": "min", "min": "min", "minor": "min"}  # fmt: skip
_KEY = re.compile(r"\s*([A-Ga-g])\s*([#b♯♭]?)\s*:?\s*([A-Za-z]*)\s*")
_SEPARATORS = "_-."


def _parse(template: str) -> list[tuple[str, str | None]]:
    """Split a template into (literal, placeholder-or-None) pairs, validating placeholders."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid name template {template!r}: {exc}") from exc
    allowed = ", ".join(PLACEHOLDERS)
    out = []
    for literal, field, spec, conversion in pieces:
        if field is not None:
            if field not in PLACEHOLDERS:
                raise ValueError(
                    f"unknown placeholder {{{field}}} in name template {template!r}; "
                    f"allowed: {allowed}"
                )
            if spec or conversion:
                raise ValueError(
                    f"placeholder {{{field}}} in name template {template!r} has a format "
                    f"spec or conversion; write bare placeholders such as {{{field}}}"
                )
        out.append((literal, field))
    return out


def validate_template(template: str) -> None:
    """Raise ``ValueError`` naming the bad placeholder and the allowed ones, else return."""
    _parse(template)


def format_key(tonic: object, mode: object = "") -> str:
    """Format a key as ``Cmaj``/``Amin``; ``""`` when the tonic is unknown or unreadable.

    ``tonic`` is a note name (``"F#"``, ``"Bb"``), a pitch class int 0-11 (0 = C), or a whole
    key in one string (``"Am"``, ``"Gb:maj"``, ``"C major"``), in which case ``mode`` may be
    empty. Unknown modes keep their first three letters (``dorian`` -> ``dor``).
    """
    if isinstance(tonic, bool) or tonic is None:
        return ""
    if isinstance(tonic, int):
        note, rest = _PITCH_CLASSES[tonic % 12], ""
    else:
        match = _KEY.fullmatch(str(tonic))
        if not match:
            return ""
        letter, accidental, rest = match.groups()
        accidental = {"♯": "#", "♭": "b"}.get(accidental, accidental)
        note = letter.upper() + accidental
        note = _FLAT_OF.get(note, note)
    mode_text = str(mode or rest).strip()
    mode_name = _MODES.get(mode_text) or _MODES.get(mode_text.lower())
    if mode_name is None:
        mode_name = mode_text.lower()[:3]
    return note + mode_name


def _tags_text(tags: object) -> str:
    if isinstance(tags, str):
        return tags
    if isinstance(tags, Sequence):
        return "_".join(str(t) for t in tags[:MAX_TAGS] if t)
    return ""


def _bpm_text(bpm: object) -> str:
    if isinstance(bpm, bool) or not isinstance(bpm, (int, float)):
        return ""
    if not math.isfinite(bpm) or bpm <= 0:
        return ""
    return str(round(bpm))


def _name_text(name: object) -> str:
    text = str(name) if name else ""
    lowered = text.lower()
    for ext in MIDI_EXTENSIONS:
        if lowered.endswith(ext):
            return text[: -len(ext)]
    return text


def _values(fields: Mapping[str, object]) -> dict[str, str]:
    """Render every placeholder's text from the fields; unknown values give ``""``."""
    key = fields.get("key")
    key_text = (
        format_key(key) if key else format_key(fields.get("key_tonic"), fields.get("key_mode"))
    )
    return {
        "bpm": _bpm_text(fields.get("bpm")),
        "key": key_text,
        "tags": _tags_text(fields.get("tags")),
        "category": str(fields.get("category") or ""),
        "name": _name_text(fields.get("name")),
        "pack": str(fields.get("pack") or ""),
    }


def _drop_glued_tail(text: str) -> str:
    """Remove the characters at the end of ``text`` that are not separated from what follows."""
    end = len(text)
    while end and text[end - 1] not in _SEPARATORS:
        end -= 1
    return text[:end]


def _drop_glued_head(text: str) -> str:
    """Remove the characters at the start of ``text`` up to the first separator."""
    start = 0
    while start < len(text) and text[start] not in _SEPARATORS:
        start += 1
    return text[start:]


def render_name(template: str, fields: Mapping[str, object]) -> str:
    """Render a template into a sanitized library file name ending in ``.mid``.

    ``fields`` may hold ``bpm`` (float, BPM), ``key`` (e.g. ``"Am"``) or ``key_tonic`` and
    ``key_mode`` (``"C"``, ``"major"``), ``tags`` (a sequence of strings), ``category``,
    ``name`` and ``pack``. Raises ``ValueError`` for unknown placeholders.
    """
    pieces = _parse(template)
    values = _values(fields)
    literals = [literal for literal, _ in pieces]
    rendered = [values[field] if field is not None else "" for _, field in pieces]
    for i, (_, field) in enumerate(pieces):
        if field is not None and not rendered[i]:
            literals[i] = _drop_glued_tail(literals[i])
            if i + 1 < len(literals):
                literals[i + 1] = _drop_glued_head(literals[i + 1])
    return sanitize_filename("".join(lit + val for lit, val in zip(literals, rendered)))
