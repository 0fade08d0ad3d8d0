"""Decode the bytes of a Standard MIDI File into flat note arrays for analysis.

symusic does the work for well-formed files (its C++ reader is ~150x faster than mido). Files
symusic rejects or misreads (truncated, lying chunk lengths, note-ons without note-offs) go
through a lenient event walk built on mido's byte-level readers, which keeps every event that
could be read before the damage. The result records which parser produced it.

Times are MIDI ticks (ints) here; channels are 0-based as on the wire (GM drums are 9).
"""

from __future__ import annotations

import functools
import io
import logging
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from mido.midifiles.meta import build_meta_message
from mido.midifiles.midifiles import read_byte, read_bytes, read_message
from symusic import Score

from .kernels import note_columns, tidy_tempo_map
from .model import AnalysisError

log = logging.getLogger(__name__)

DRUM_CHANNEL = 9
DEFAULT_MSPQ = 500_000  # MIDI default tempo: 120 BPM, in microseconds per quarter note
MAX_NOTES = 2_000_000  # beyond this a "MIDI file" is a denial-of-service, not music
_END_OF_TRACK = b"\xff\x2f\x00"
_METAS_USED = frozenset({0x03, 0x51, 0x58})  # track name, set tempo, time signature
_FEW_EVENTS = 8  # up to this many time signatures are read as attributes, more through numpy()


@dataclass(frozen=True)
class Voice:
    """One note-bearing stream: a track x channel x program, as both parsers split them.

    ``channel`` is 0-based, or None when the parser does not report it (symusic gives only
    the drum flag). ``program`` is the 0-based GM program.
    """

    name: str
    program: int
    is_drum: bool
    channel: int | None


@dataclass(frozen=True)
class ParsedMidi:
    """Notes and timing maps of one file, as parallel numpy arrays.

    ``start``/``end`` are note on/off times in ticks (int64); ``pitch``/``velocity`` int16;
    ``voice`` indexes :attr:`voices`; ``drum`` is True for notes on a drum voice (channel 10 or
    a kit found by note map, see :mod:`.drums`). Notes are in no particular order (nothing in
    the analysis needs them sorted, and sorting is a large share of the cost of a file).
    ``tempo_ticks``/``tempo_mspq`` is the set-tempo map (microseconds per quarter note), empty
    when the file has no set-tempo event. ``time_signatures`` is (tick, numerator, denominator).
    """

    tpq: int
    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    voice: np.ndarray
    voices: tuple[Voice, ...]
    tempo_ticks: np.ndarray
    tempo_mspq: np.ndarray
    time_signatures: tuple[tuple[int, int, int], ...]
    track_count: int
    parser: str


@dataclass(frozen=True)
class _Chunks:
    """Where the MTrk chunks are and whether their declared lengths can be trusted."""

    tpq: int
    count: int
    sound: bool


def _scan_chunks(data: bytes) -> _Chunks:
    """Check the header and walk chunk headers (cheap: a handful per file)."""
    if len(data) < 14 or data[:4] != b"MThd":
        raise AnalysisError("not a MIDI file (no MThd header)")
    header_len, _fmt, _ntracks, division = struct.unpack_from(">IHHH", data, 4)
    if division & 0x8000:
        raise AnalysisError("SMPTE time division is not supported (only ticks per quarter)")
    if division == 0:
        raise AnalysisError("header says 0 ticks per quarter note")
    pos = 8 + max(header_len, 6)
    count = 0
    sound = header_len == 6
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (length,) = struct.unpack_from(">I", data, pos + 4)
        end = pos + 8 + length
        if chunk_id != b"MTrk":
            if count == 0 or end > len(data):
                sound = False
                break
            pos = end
            continue
        count += 1
        if end > len(data) or data[end - 3 : end] != _END_OF_TRACK:
            sound = False
        pos = end
    if count == 0:
        sound = False
    # A sound file's walk met every chunk; a damaged one's count is a guess from the MTrk tags
    # (in a sound file those bytes may also sit inside a text event, and scanning for them
    # costs more than the walk).
    return _Chunks(tpq=division, count=count if sound else max(count, data.count(b"MTrk")), sound=sound)


def parse_midi(data: bytes) -> ParsedMidi:
    """Parse SMF bytes (RIFF already unwrapped); raise AnalysisError when nothing is readable."""
    chunks = _scan_chunks(data)
    if chunks.sound:
        try:
            parsed, earliest = _parse_symusic(data, chunks)
        except RuntimeError as err:
            log.debug("symusic rejected file (%s); using lenient parse", err)
        else:
            # symusic keeps ticks in 32 bits: huge delta times wrap to negative times. A file
            # without notes is read again leniently: symusic drops notes that never end.
            if parsed.start.size and earliest >= 0:
                return parsed
    return _parse_lenient(data, chunks)


def _parse_symusic(data: bytes, chunks: _Chunks) -> tuple[ParsedMidi, int]:
    """The parse, and its earliest note start (negative when symusic's 32-bit ticks wrapped)."""
    score = Score.from_midi(data)
    voices: list[Voice] = []
    parts: list[dict[str, np.ndarray]] = []
    # symusic's lists are indexed, not iterated: a pybind iterator costs more than the few
    # tracks, tempi and signatures of a typical file.
    tracks = score.tracks
    for i in range(len(tracks)):
        track = tracks[i]
        notes = track.notes
        if not len(notes):
            continue
        parts.append(notes.numpy())
        voices.append(_symusic_voice(track.name, track.program, track.is_drum))
    sizes = [len(p["time"]) for p in parts]
    if sum(sizes) > MAX_NOTES:
        raise AnalysisError(f"more than {MAX_NOTES} notes")
    tempo_ticks, tempo_mspq = _event_columns(score.tempos, ("time", "mspq"))
    signatures = score.time_signatures
    if len(signatures) <= _FEW_EVENTS:
        sigs = tuple((ts.time, ts.numerator, ts.denominator)
                     for ts in (signatures[i] for i in range(len(signatures))))
    else:
        ts_ticks, numerators, denominators = _event_columns(signatures, ("time", "numerator", "denominator"))
        sigs = tuple(zip(ts_ticks.tolist(), numerators.tolist(), denominators.tolist(), strict=True))
    if len(parts) == 1:  # the common case (a loop, a split part): no copies
        only = parts[0]
        time, dur, pitch, vel = only["time"], only["duration"], only["pitch"], only["velocity"]
        voice = np.zeros(sizes[0], dtype=np.int16)
    elif parts:
        time, dur, pitch, vel = (np.concatenate([p[name] for p in parts])
                                 for name in ("time", "duration", "pitch", "velocity"))
        voice = np.repeat(np.arange(len(parts), dtype=np.int16), sizes)
    else:  # symusic's own dtypes, so the kernel below is compiled for one signature only
        time = dur = np.zeros(0, np.int32)
        pitch = vel = np.zeros(0, np.int8)
        voice = np.zeros(0, np.int16)
    start, end, pitch, vel, earliest = note_columns(time, dur, pitch, vel)
    return _assemble(chunks, start, end, pitch, vel, voice, tuple(voices), tempo_ticks, tempo_mspq,
                     sigs, "symusic"), earliest


@functools.lru_cache(maxsize=1024)
def _symusic_voice(name: str, program: int, is_drum: bool) -> Voice:
    """The voice of a symusic track. Voices are immutable and a library holds few distinct
    ones, so they are shared between files rather than built again for each."""
    return Voice(name=name, program=program, is_drum=is_drum,
                 channel=DRUM_CHANNEL if is_drum else None)


def _event_columns(events: Any, names: tuple[str, ...]) -> list[np.ndarray]:
    """int64 columns of a symusic event list (tempi, time signatures): one event read as
    Python attributes (the usual case, a tenth of the cost of ``numpy()``), more through
    ``numpy()``."""
    if len(events) == 1:
        only = events[0]
        return [np.array([getattr(only, name)], dtype=np.int64) for name in names]
    columns = events.numpy()
    return [columns[name].astype(np.int64) for name in names]


def _assemble(
    chunks: _Chunks,
    start: np.ndarray,
    end: np.ndarray,
    pitch: np.ndarray,
    vel: np.ndarray,
    voice: np.ndarray,
    voices: tuple[Voice, ...],
    tempo_ticks: np.ndarray,
    tempo_mspq: np.ndarray,
    sigs: tuple[tuple[int, int, int], ...],
    parser: str,
) -> ParsedMidi:
    """Tidy the tempo map (one value per tick, positive tempi)."""
    if tempo_mspq.size == 1:  # the usual map: nothing to sort or merge
        if tempo_mspq[0] <= 0:
            tempo_ticks, tempo_mspq = tempo_ticks[:0], tempo_mspq[:0]
    elif tempo_mspq.size:
        tempo_ticks, tempo_mspq = tidy_tempo_map(tempo_ticks, tempo_mspq)
    return ParsedMidi(
        tpq=chunks.tpq,
        start=start,
        end=end,
        pitch=pitch,
        velocity=vel,
        voice=voice,
        voices=voices,
        tempo_ticks=tempo_ticks,
        tempo_mspq=tempo_mspq,
        time_signatures=tuple(sorted(sigs)) if len(sigs) > 1 else sigs,
        track_count=chunks.count,
        parser=parser,
    )


def _track_bodies(data: bytes) -> list[bytes]:
    """Find MTrk bodies without trusting declared lengths: each runs to the next MTrk or EOF."""
    starts = []
    pos = data.find(b"MTrk", 8)
    while pos >= 0:
        starts.append(pos)
        pos = data.find(b"MTrk", pos + 8)
    bounds = [*starts, len(data)]
    return [data[bounds[i] + 8 : bounds[i + 1]] for i in range(len(starts))]


def _parse_lenient(data: bytes, chunks: _Chunks) -> ParsedMidi:
    """Walk every track event by event, keeping what precedes any damage.

    Notes left sounding (no note-off) end at the next onset on their channel, or at the end
    of their track (at least a quarter note), so files without note-offs still have durations.
    """
    notes: list[tuple[int, int, int, int, int]] = []  # start, end, pitch, velocity, voice
    voice_ids: dict[tuple[int, int, int], int] = {}
    voices: list[Voice] = []
    tempos: list[tuple[int, int]] = []
    sigs: list[tuple[int, int, int]] = []
    for track_index, body in enumerate(_track_bodies(data)):
        _walk_track(body, track_index, chunks.tpq, notes, voice_ids, voices, tempos, sigs)
        if len(notes) > MAX_NOTES:
            raise AnalysisError(f"more than {MAX_NOTES} notes")
    if not notes and not tempos and not sigs and not voices:
        raise AnalysisError("no readable MIDI events")
    # One row per field, each contiguous like symusic's arrays: the compiled kernels are then
    # specialised for one array layout only, not compiled again for the first broken file.
    rows = np.array(notes, dtype=np.int64).reshape(-1, 5).T.copy()
    tempo_rows = np.array(tempos, dtype=np.int64).reshape(-1, 2).T.copy()
    return _assemble(
        chunks,
        rows[0],
        rows[1],
        rows[2].astype(np.int16),
        rows[3].astype(np.int16),
        rows[4].astype(np.int16),
        tuple(voices),
        tempo_rows[0],
        tempo_rows[1],
        tuple(sigs),
        "mido",
    )


def _walk_track(
    body: bytes,
    track_index: int,
    tpq: int,
    notes: list[tuple[int, int, int, int, int]],
    voice_ids: dict[tuple[int, int, int], int],
    voices: list[Voice],
    tempos: list[tuple[int, int]],
    sigs: list[tuple[int, int, int]],
) -> None:
    """Append the notes, tempi and time signatures of one track body to the given lists.

    A note still sounding at the end of the track lasts until then, and at least a quarter."""
    infile = io.BytesIO(body)
    tick = 0
    last_status: int | None = None
    name = ""
    programs = [0] * 16
    sounding: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (ch, pitch) -> starts
    onsets: dict[int, list[int]] = {}
    first_note = len(notes)
    try:
        while True:
            tick += _read_vlq(infile)
            status = read_byte(infile)
            peek: list[int] = []
            if status < 0x80:
                if last_status is None:
                    break
                peek, status = [status], last_status
            elif status < 0xF0:
                last_status = status
            if status == 0xFF:
                meta_type = read_byte(infile)
                payload = read_bytes(infile, _read_vlq(infile))
                if meta_type == 0x2F:
                    break
                if meta_type not in _METAS_USED:
                    continue
                try:
                    meta = build_meta_message(meta_type, payload, 0)
                except (ValueError, KeyError, TypeError, IndexError):
                    continue
                if meta.type == "set_tempo":
                    tempos.append((tick, meta.tempo))
                elif meta.type == "time_signature":
                    sigs.append((tick, meta.numerator, meta.denominator))
                elif meta.type == "track_name" and not name:
                    name = meta.name
                continue
            if status in (0xF0, 0xF7):
                read_bytes(infile, _read_vlq(infile))
                continue
            msg = read_message(infile, status, peek, 0, clip=True)
            channel = status & 0x0F
            if msg.type == "program_change":
                programs[channel] = msg.program
            elif msg.type == "note_on" and msg.velocity > 0:
                key = (channel, msg.note)
                held = sounding.setdefault(key, [])
                if held:  # a retrigger ends the note still sounding on that key
                    s, v, voice = held.pop(0)
                    notes.append((s, tick, msg.note, v, voice))
                voice = _voice_id(track_index, channel, programs[channel], name, voice_ids, voices)
                held.append((tick, msg.velocity, voice))
                onsets.setdefault(channel, []).append(tick)
            elif msg.type in ("note_on", "note_off"):
                held = sounding.get((channel, msg.note))
                if held:
                    s, v, voice = held.pop(0)
                    notes.append((s, tick, msg.note, v, voice))
    except (EOFError, OSError, ValueError) as err:
        log.debug("track %d is damaged after tick %d: %s", track_index, tick, err)
    for (channel, pitch), held in sounding.items():
        times = np.array(sorted(onsets.get(channel, [])), dtype=np.int64)
        for s, v, voice in held:
            nxt = times[np.searchsorted(times, s, side="right") :]
            end = int(nxt[0]) if nxt.size else max(tick, s + tpq)
            notes.append((s, end, pitch, v, voice))
    if name and len(notes) > first_note:
        _rename_voices(voices, {n[4] for n in notes[first_note:]}, name)


def _read_vlq(infile: io.BytesIO) -> int:
    """A variable-length number of at most 4 bytes, as the SMF spec allows (mido reads any
    length, so a run of 0xFF bytes became a delta time of thousands of bits)."""
    value = 0
    for _ in range(4):
        byte = read_byte(infile)
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value
    raise ValueError("variable-length number longer than 4 bytes")


def _voice_id(
    track_index: int,
    channel: int,
    program: int,
    name: str,
    voice_ids: dict[tuple[int, int, int], int],
    voices: list[Voice],
) -> int:
    key = (track_index, channel, program)
    if key not in voice_ids:
        voice_ids[key] = len(voices)
        voices.append(
            Voice(name=name, program=program, is_drum=channel == DRUM_CHANNEL, channel=channel)
        )
    return voice_ids[key]


def _rename_voices(voices: list[Voice], ids: set[int], name: str) -> None:
    """Give voices of a track the track name found later in the track (names often come last)."""
    for i in ids:
        v = voices[i]
        if not v.name:
            voices[i] = Voice(name=name, program=v.program, is_drum=v.is_drum, channel=v.channel)
