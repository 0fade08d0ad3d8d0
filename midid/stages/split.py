"""Split a multi-track MIDI file into one file per note-bearing track (type 1) or channel (type 0).

Type 1 parts copy track chunks verbatim (no event is decoded or re-encoded), so a part is
byte-for-byte the source track behind a copy of the conductor track: tempo map, time and key
signatures survive exactly and the cost is a few tens of microseconds per file. Only the start
of each track is walked, up to its first note, to learn its name, channel and program.

Type 0 files (one track, many channels) are split by channel with a full event walk; every
part keeps all meta and sysex events. Most type-0 files (drum loops) use one channel, which a
byte search, then a compiled walk over the events, detects before any event is copied.

Only the events that are read are validated: a corrupt event after a type-1 track's first
note is left for the analyze stage to report, and a part copies its track's bytes exactly as
the source had them. Format 2 files (independent sequences) are not split.

Labels name a part for its file name: the track name when it says something, else the
General MIDI instrument family of the program playing the first note ("Drums" on channel 10),
else ``ch{N}`` with N the 1-based channel number users see on their gear.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from midid.smf import (
    META,
    META_END_OF_TRACK,
    META_TRACK_NAME,
    Event,
    SmfError,
    iter_events,
    iter_spans,
    note_channels,
    read_smf,
    write_smf,
    write_track,
)
from midid.stages.sanitize import clean_component

__all__ = ["Part", "SplitError", "split_midi"]

log = logging.getLogger(__name__)

DRUM_CHANNEL = 9  # 0-based; "channel 10" to users.
LABEL_MAX = 24  # characters; the label becomes a file name suffix under a 64-character cap.

# General MIDI level 1 instrument families, 8 programs each (program 0-127 // 8).
GM_FAMILIES = (
    "Piano", "ChromPerc", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
    "Reed", "Pipe", "SynthLead", "SynthPad", "SynthFX", "Ethnic", "Percussive", "SFX",
)  # fmt: skip

# Meta events a rebuilt conductor track keeps: track name, SMPTE offset, tempo, time and key
# signature. Everything else in a note-bearing track 0 belongs to its own part.
CONDUCTOR_META = frozenset({0x03, 0x51, 0x54, 0x58, 0x59})

_NOTE_ON_BYTES = tuple(bytes((0x90 | channel,)) for channel in range(16))

# Names sequencers give tracks by default; they say nothing about the part.
_GENERIC_NAME = re.compile(r"(track|untitled|new[ _-]?track|midi|tr|seq)?[\s_-]*\d*", re.I)


class SplitError(ValueError):
    """The file cannot be read well enough to split it."""


@dataclass(frozen=True)
class Part:
    """One part of a split file.

    ``label`` is already sanitized for use as a file name suffix (e.g. ``Bass``, ``ch10``).
    ``data`` is a complete SMF. ``index`` is the source track index for type 1 files and the
    0-based channel for type 0 files. ``track_name`` is the source track's name as written
    (latin-1 decoded), None when it has none or for type 0 parts, whose single track name
    belongs to the whole song.
    """

    label: str
    data: bytes
    index: int
    track_name: str | None


@dataclass(frozen=True)
class _NoteTrack:
    """What the start of a note-bearing track tells about it, up to its first sounding note."""

    name: str | None
    channel: int  # 0-based channel of the first note-on
    program: int | None  # last program change on that channel before the first note-on


def _meta_text(track: bytes, start: int, stop: int) -> str:
    """Text of the meta event spanning ``track[start:stop]`` (from its type byte), as latin-1.

    latin-1 is what mido and most sequencers assume; it never fails to decode.
    """
    pos = start + 1
    while track[pos] & 0x80:  # skip the length (a VLQ already checked by iter_spans)
        pos += 1
    return track[pos + 1 : stop].decode("latin-1")


def _scan_track(track: bytes) -> _NoteTrack | None:
    """Walk a track only up to its first sounding note-on; None when it has no notes.

    Offsets only, nothing copied: this is the whole per-track cost of a type-1 split.
    """
    name: str | None = None
    programs: dict[int, int] = {}
    for _, status, start, stop in iter_spans(track):
        kind = status >> 4
        if kind == 0x9 and track[stop - 1]:
            channel = status & 0x0F
            return _NoteTrack(name, channel, programs.get(channel))
        if kind == 0xC:
            programs[status & 0x0F] = track[start]
        elif status == META and track[start] == META_TRACK_NAME and name is None:
            name = _meta_text(track, start, stop)
    return None


def _label(name: str | None, channel: int, program: int | None) -> str:
    """Pick the label: a meaningful track name, else GM family, else ch{N} (1-based)."""
    if name and not _GENERIC_NAME.fullmatch(name.strip()):
        label = clean_component(name, LABEL_MAX)
        if label:
            return label
    if channel == DRUM_CHANNEL:
        return "Drums"
    if program is not None:
        return GM_FAMILIES[program // 8]
    return f"ch{channel + 1}"


def _dedupe(labels: list[str]) -> list[str]:
    """Give repeated labels ``_2``, ``_3``... in order; unique case-insensitively (FAT)."""
    used: set[str] = set()
    out = []
    for label in labels:
        unique, n = label, 1
        while unique.casefold() in used:
            n += 1
            unique = f"{label}_{n}"
        used.add(unique.casefold())
        out.append(unique)
    return out


def _conductor_from(track: bytes) -> bytes:
    """Rebuild a conductor track from a note-bearing track 0: its timing meta events only.

    The end-of-track event is kept too so the rebuilt track keeps the source's length in ticks
    (loops rely on it).
    """
    kept = [e for e in iter_events(track)
            if e.meta_type in CONDUCTOR_META or e.meta_type == META_END_OF_TRACK]
    return write_track(kept)


def _split_type1(division: int, tracks: tuple[bytes, ...]) -> list[Part]:
    scanned = [(i, info) for i, t in enumerate(tracks) if (info := _scan_track(t)) is not None]
    if len(scanned) < 2:
        return []
    conductor = tracks[0]
    if scanned[0][0] == 0:  # notes in track 0: parts get its timing events only
        conductor = _conductor_from(tracks[0])
    labels = _dedupe([_label(info.name, info.channel, info.program) for _, info in scanned])
    parts = []
    for (index, info), label in zip(scanned, labels):
        if index == 0:
            data = write_smf(0, division, [tracks[0]])
        else:
            data = write_smf(1, division, [conductor, tracks[index]])
        parts.append(Part(label, data, index, info.name))
    return parts


def _may_hold_several_note_channels(track: bytes) -> bool:
    """Cheap necessary condition (C-speed byte search) before walking a type-0 track.

    Every note-on is written with an explicit ``0x9n`` status byte or inherits it by running
    status from an earlier explicit one, so the channels carrying notes are a subset of the
    ``n`` whose ``0x9n`` byte occurs anywhere in the track (delta times and text can add false
    positives, never false negatives). Fewer than two such bytes: nothing to split.
    """
    return sum(status in track for status in _NOTE_ON_BYTES) >= 2


def _split_type0(division: int, track: bytes) -> list[Part]:
    if not _may_hold_several_note_channels(track):
        return []
    channels = note_channels(track)
    if len(channels) < 2:
        return []  # the common one-channel file: decided without copying any event
    events = list(iter_events(track))
    programs: dict[int, int] = {}
    sounding: set[int] = set()
    for event in events:
        if event.is_note_on:
            sounding.add(event.status & 0x0F)
        elif event.status >> 4 == 0xC and event.status & 0x0F not in sounding:
            programs[event.status & 0x0F] = event.data[1]  # last program before the first note
    labels = _dedupe([_label(None, c, programs.get(c)) for c in channels])
    kept: dict[int, list[Event]] = {channel: [] for channel in channels}
    for event in events:
        if event.status >= 0xF0:  # meta and sysex go to every part
            for part_events in kept.values():
                part_events.append(event)
        elif (part_events := kept.get(event.status & 0x0F)) is not None:
            part_events.append(event)
    return [
        Part(label, write_smf(0, division, [write_track(kept[channel])]), channel, None)
        for channel, label in zip(channels, labels)
    ]


def split_midi(data: bytes) -> list[Part]:
    """Split one SMF into its parts, or return ``[]`` when there is nothing to split.

    A type-1 file splits when more than one track carries notes, a type-0 file when more
    than one channel does. Raises :class:`SplitError` for anything unreadable; no other
    exception escapes for bad input.
    """
    try:
        smf = read_smf(data)
        if smf.format == 1 and len(smf.tracks) > 1:
            parts = _split_type1(smf.division, smf.tracks)
        elif smf.format == 0 and smf.tracks:
            parts = _split_type0(smf.division, smf.tracks[0])
        else:
            parts = []
    except SmfError as exc:
        raise SplitError(str(exc)) from exc
    log.debug("split into %d parts", len(parts))
    return parts
