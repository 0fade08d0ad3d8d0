"""Recognise MIDI files and archives by their first bytes, never by their extension.

MIDI packs are full of misnamed files (`.kar`, `.midi`, `.MID`, no extension, `.rmi`
wrappers, archives called `.mid`), so the import stage decides what a file is from its
content alone.
"""

from __future__ import annotations

import struct
from typing import Literal

SNIFF_BYTES = 512
"""How many leading bytes `sniff_kind` needs (tar's `ustar` magic sits at offset 257)."""

_SMF_MAGIC = b"MThd"

_ARCHIVE_MAGICS: tuple[bytes, ...] = (
    b"PK\x03\x04",  # zip local file header
    b"PK\x05\x06",  # empty zip (end of central directory only)
    b"PK\x07\x08",  # first volume of a spanned zip
    b"7z\xbc\xaf\x27\x1c",  # 7z
    b"Rar!\x1a\x07",  # RAR 4 (…\x00) and RAR 5 (…\x01\x00)
)

COMPRESSED_STREAM_MAGICS: tuple[bytes, ...] = (
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"\x28\xb5\x2f\xfd",  # zstd frame
)
"""Single-stream compressors: the payload may be a tar or one bare file (`song.mid.gz`)."""

_TAR_MAGIC_OFFSET = 257


def midi_payload(data: bytes) -> bytes | None:
    """Return the Standard MIDI File inside `data`, or None if `data` holds none.

    A plain SMF (starts with `MThd`) is returned unchanged. A RIFF `RMID` file (Windows
    `.rmi`) is unwrapped: its `data` chunk is returned when that chunk starts with `MThd`.
    RIFF sizes are little-endian and chunks are padded to even lengths.
    """
    if data.startswith(_SMF_MAGIC):
        return data
    if not _is_rmid(data):
        return None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (length,) = struct.unpack_from("<I", data, offset + 4)
        body = data[offset + 8 : offset + 8 + length]
        if chunk_id == b"data":
            return body if body.startswith(_SMF_MAGIC) else None
        offset += 8 + length + (length & 1)
    return None


def sniff_kind(head: bytes) -> Literal["midi", "archive", "other"]:
    """Classify a file from its first `SNIFF_BYTES` bytes (fewer if the file is shorter)."""
    if head.startswith(_SMF_MAGIC) or _is_rmid(head):
        return "midi"
    if head.startswith(_ARCHIVE_MAGICS) or head.startswith(COMPRESSED_STREAM_MAGICS):
        return "archive"
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "archive"
    return "other"


def _is_rmid(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"RMID"
