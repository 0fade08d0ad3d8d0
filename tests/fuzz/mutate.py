"""Seeded mutators that turn real MIDI files into the garbage a MIDI library meets.

Every mutator is a pure function `(data, rng) -> bytes` over a whole Standard MIDI File; a
case is fully determined by its seed and the list of base files, so any failure found by the
long run (`tools/fuzz_long.py`) is replayed with `make_case(seed, bases)`.

The mutations aim at the places readers trust the file: chunk lengths (MThd and MTrk), the
header's track count and division (0 PPQ, SMPTE), variable-length numbers (delta times,
sysex and meta lengths), running status, and track structure (empty, absurdly many, one
1-KB file declaring a 4-GB track). Bit flips, truncation and splices cover the rest.
Offsets are byte offsets into the file; chunk lengths are big-endian 32-bit as in the SMF spec.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from midid.smf import SmfError, iter_spans

Mutator = Callable[[bytes, random.Random], bytes]

MAX_VLQ = b"\xff\xff\xff\x7f"  # 0x0FFFFFFF, the largest delta time a MIDI file can hold
EMPTY_TRACK = b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"


@dataclass(frozen=True)
class Chunk:
    """One chunk header found in a file: where its header starts and what it declares."""

    offset: int
    tag: bytes
    length: int

    @property
    def body(self) -> int:
        return self.offset + 8


def chunks(data: bytes) -> list[Chunk]:
    """Chunk headers in file order, following declared lengths while they stay inside the file."""
    found: list[Chunk] = []
    pos = 0
    while pos + 8 <= len(data):
        tag = data[pos : pos + 4]
        (length,) = struct.unpack_from(">I", data, pos + 4)
        found.append(Chunk(pos, tag, length))
        pos += 8 + length
    return found


def _tracks(data: bytes) -> list[Chunk]:
    return [c for c in chunks(data) if c.tag == b"MTrk" and c.body + c.length <= len(data)]


def _boundaries(data: bytes, track: Chunk) -> list[int]:
    """File offsets where an event's delta time starts in `track` (the body start at least)."""
    body = data[track.body : track.body + track.length]
    out = [track.body]
    try:
        out += [track.body + stop for _, _, _, stop in iter_spans(body)]
    except SmfError:
        pass  # an earlier mutation broke the track: the events read so far are enough
    return [b for b in out if b <= track.body + track.length]


def _insert_in_track(data: bytes, track: Chunk, at: int, payload: bytes) -> bytes:
    """Insert `payload` at file offset `at` inside `track` and fix the track's length."""
    fixed = struct.pack(">I", track.length + len(payload))
    out = data[: track.offset + 4] + fixed + data[track.offset + 8 : at] + payload + data[at:]
    return out


def _pick_track(data: bytes, rng: random.Random) -> Chunk | None:
    tracks = _tracks(data)
    return rng.choice(tracks) if tracks else None


# ---- the mutators --------------------------------------------------------------------------


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    """Flip 1 to 32 random bits anywhere in the file."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 32)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def byte_stomp(data: bytes, rng: random.Random) -> bytes:
    """Overwrite a few bytes with values readers special-case (0x00, 0x7F, 0x80, 0xF0, 0xFF)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.choice((0x00, 0x7F, 0x80, 0x81, 0xF0, 0xF7, 0xFF))
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file anywhere, like an interrupted download (possibly inside the header)."""
    return data[: rng.randrange(len(data))]


def chunk_length_lie(data: bytes, rng: random.Random) -> bytes:
    """Make one chunk (MThd or MTrk) declare a wrong length: 0, off by one, or huge."""
    found = chunks(data)
    if not found:
        return data
    chunk = rng.choice(found)
    lie = rng.choice((0, 1, 5, chunk.length - 1, chunk.length + 1, chunk.length * 2, 0x7FFFFFFF, 0xFFFFFFFF,
                      rng.randrange(1 << 32)))
    return data[: chunk.offset + 4] + struct.pack(">I", lie & 0xFFFFFFFF) + data[chunk.offset + 8 :]


def huge_delta_times(data: bytes, rng: random.Random) -> bytes:
    """Insert 1 to 64 text events each 0x0FFFFFFF ticks apart: the total overflows 32 bits."""
    track = _pick_track(data, rng)
    if track is None:
        return data
    at = rng.choice(_boundaries(data, track))
    return _insert_in_track(data, track, at, (MAX_VLQ + b"\xff\x01\x00") * rng.randint(1, 64))


def overlong_vlq(data: bytes, rng: random.Random) -> bytes:
    """A delta time of 5 to 40 continuation bytes (the spec allows at most 4)."""
    track = _pick_track(data, rng)
    if track is None:
        return data
    at = rng.choice(_boundaries(data, track))
    return _insert_in_track(data, track, at, b"\xff" * rng.randint(5, 40) + b"\x00\x90\x3c\x40")


def huge_event_length(data: bytes, rng: random.Random) -> bytes:
    """A sysex or meta event declaring ~256 MB of payload in a file of a few KB."""
    track = _pick_track(data, rng)
    if track is None:
        return data
    at = rng.choice(_boundaries(data, track))
    event = rng.choice((b"\x00\xf0" + MAX_VLQ, b"\x00\xff\x01" + MAX_VLQ, b"\x00\xff\x51" + MAX_VLQ))
    return _insert_in_track(data, track, at, event + bytes(rng.randint(0, 16)))


def running_status_abuse(data: bytes, rng: random.Random) -> bytes:
    """Data bytes where a status is expected: at a track start (no status yet), after a
    sysex or meta event (which cancel running status in some readers), or a status byte
    stripped from an event so it runs on the previous status."""
    track = _pick_track(data, rng)
    if track is None:
        return data
    bounds = _boundaries(data, track)
    how = rng.randrange(4)
    if how == 0:
        return _insert_in_track(data, track, track.body, b"\x00\x3c\x40" * rng.randint(1, 8))
    at = rng.choice(bounds)
    if how == 1:
        return _insert_in_track(data, track, at, b"\x00\xf0\x01\xf7\x00\x3c\x40\x00\x3c\x00")
    if how == 2:
        return _insert_in_track(data, track, at, b"\x00\xff\x01\x01x\x00\x40\x7f")
    # Strip the status byte after the delta at `at` (deltas of one byte are the common case).
    status_at = at + 1
    if status_at < track.body + track.length and data[status_at] >= 0x80 and data[at] < 0x80:
        fixed = struct.pack(">I", track.length - 1)
        return data[: track.offset + 4] + fixed + data[track.offset + 8 : status_at] + data[status_at + 1 :]
    return _insert_in_track(data, track, at, b"\x00\xf8\x00\xf4\x00\xf9")


def zero_length_tracks(data: bytes, rng: random.Random) -> bytes:
    """Empty some tracks to length 0 (no end-of-track event) or add empty chunks between."""
    tracks = _tracks(data)
    if not tracks:
        return data
    out = bytearray(data)
    for track in sorted(rng.sample(tracks, rng.randint(1, len(tracks))), key=lambda c: -c.offset):
        if rng.random() < 0.5:
            out[track.offset :track.body + track.length] = b"MTrk\x00\x00\x00\x00"
        else:
            out[track.offset : track.offset] = b"MTrk\x00\x00\x00\x00" * rng.randint(1, 4)
    return bytes(out)


def absurd_track_count(data: bytes, rng: random.Random) -> bytes:
    """Declare 0 or up to 65,535 tracks, and maybe really append thousands of tiny ones."""
    if len(data) < 14:
        return data
    count = rng.choice((0, 1, 255, 4096, 65535, rng.randrange(65536)))
    out = data[:10] + struct.pack(">H", count) + data[12:]
    if rng.random() < 0.5:
        out += EMPTY_TRACK * rng.randint(1000, 20000)
    return out


def zero_ppq(data: bytes, rng: random.Random) -> bytes:
    """Division 0: zero ticks per quarter note (every tick-to-time conversion divides by it)."""
    return data[:12] + b"\x00\x00" + data[14:] if len(data) >= 14 else data


def smpte_division(data: bytes, rng: random.Random) -> bytes:
    """An SMPTE division (-24/-25/-29/-30 fps, a few ticks per frame) or a garbage one."""
    if len(data) < 14:
        return data
    fps = rng.choice((-24, -25, -29, -30, -1, -128))
    division = struct.pack(">bB", fps, rng.choice((0, 4, 40, 80, 255)))
    return data[:12] + division + data[14:]


def header_lies(data: bytes, rng: random.Random) -> bytes:
    """A header that lies about itself: length < 6 or huge, format 3 to 65535."""
    if len(data) < 14:
        return data
    if rng.random() < 0.5:
        length = rng.choice((0, 3, 5, 7, 64, 0xFFFF, 0xFFFFFFFF))
        return data[:4] + struct.pack(">I", length) + data[8:]
    return data[:8] + struct.pack(">H", rng.choice((3, 7, 255, 65535))) + data[10:]


def stuck_notes(data: bytes, rng: random.Random) -> bytes:
    """Thousands of note-ons with no note-offs, on random channels and keys."""
    track = _pick_track(data, rng)
    if track is None:
        return data
    notes = bytearray()
    for _ in range(rng.randint(100, 5000)):
        notes += bytes((rng.randrange(4), 0x90 | rng.randrange(16), rng.randrange(128), 1 + rng.randrange(127)))
    return _insert_in_track(data, track, rng.choice(_boundaries(data, track)), bytes(notes))


def splice(data: bytes, rng: random.Random) -> bytes:
    """Duplicate or drop a random span (a copy tool that lost its place)."""
    a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    if rng.random() < 0.5:
        return data[:b] + data[a:]
    return data[:a] + data[b:]


def giant_track(data: bytes, rng: random.Random) -> bytes:
    """About 1 KB of real track bytes behind a header declaring a 4 GB (0xFFFFFFFF) track."""
    tracks = _tracks(data)
    body = b"".join(data[t.body : t.body + t.length] for t in tracks)[:1000] or bytes(1000)
    header = data[:14] if len(data) >= 14 and data[:4] == b"MThd" else b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0"
    return header + b"MTrk\xff\xff\xff\xff" + body


MUTATORS: dict[str, Mutator] = {
    f.__name__: f
    for f in (bit_flips, byte_stomp, truncate, chunk_length_lie, huge_delta_times, overlong_vlq,
              huge_event_length, running_status_abuse, zero_length_tracks, absurd_track_count, zero_ppq,
              smpte_division, header_lies, stuck_notes, splice, giant_track)
}


@dataclass(frozen=True)
class Case:
    """One fuzz input: which seed made it, from which base file, with which mutators."""

    seed: int
    base: str
    mutators: tuple[str, ...]
    data: bytes

    def label(self) -> str:
        return f"seed {self.seed}: {self.base} + {'+'.join(self.mutators)}"


def make_case(seed: int, bases: Sequence[tuple[str, bytes]]) -> Case:
    """The case for `seed`: a base file, then one mutator (or two or three stacked)."""
    rng = random.Random(seed)
    name, data = bases[rng.randrange(len(bases))]
    names = list(MUTATORS)
    chosen = tuple(rng.choice(names) for _ in range(rng.choice((1, 1, 1, 2, 3))))
    for mutator in chosen:
        if not data:
            break
        data = MUTATORS[mutator](data, rng)
    return Case(seed, name, chosen, data)


def load_bases(paths: Sequence[Path]) -> list[tuple[str, bytes]]:
    """(name, bytes) of real MIDI files, sorted by name so a seed means the same case everywhere."""
    return sorted((p.name, p.read_bytes()) for p in paths)
