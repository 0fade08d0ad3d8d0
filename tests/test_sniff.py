"""Content sniffing: MIDI and archives are told apart by bytes, whatever their names."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import libarchive
import pytest

from archives import midi_bytes, rmid_wrap, write_7z, write_rar4, write_tar, write_zip, RarMember, TarMember
from midid.sniff import SNIFF_BYTES, midi_payload, sniff_kind


def test_plain_smf_is_returned_unchanged() -> None:
    smf = midi_bytes()
    assert midi_payload(smf) == smf
    assert sniff_kind(smf[:SNIFF_BYTES]) == "midi"


def test_rmid_is_unwrapped_past_other_chunks() -> None:
    smf = midi_bytes(1)
    wrapped = rmid_wrap(smf)
    assert wrapped != smf
    assert sniff_kind(wrapped[:SNIFF_BYTES]) == "midi"
    assert midi_payload(wrapped) == smf


@pytest.mark.parametrize("data", [
    b"RIFF\x10\x00\x00\x00WAVEfmt ",  # a RIFF that is not RMID
    b"RIFF" + struct.pack("<I", 12) + b"RMID" + b"data" + struct.pack("<I", 4) + b"junk",
    b"RIFF" + struct.pack("<I", 4) + b"RMID",  # RMID with no chunks at all
    b"",
    b"MTh",
    b"hello, not a MIDI file",
], ids=["wave", "rmid-data-not-smf", "rmid-empty", "empty", "short", "text"])
def test_non_midi_has_no_payload(data: bytes) -> None:
    assert midi_payload(data) is None


def test_rmid_payload_survives_truncated_trailing_chunk() -> None:
    wrapped = rmid_wrap(midi_bytes()) + b"LIST\xff\xff"  # a trailing chunk header cut short
    assert midi_payload(wrapped) == midi_bytes()


def _libarchive_write(path: Path, format_name: str, filter_name: str | None) -> Path:
    with libarchive.file_writer(str(path), format_name, filter_name) as archive:
        archive.add_file_from_memory("a.mid", len(midi_bytes()), midi_bytes())
    return path


@pytest.mark.parametrize("build", [
    lambda d: write_zip(d / "a.zip", {"a.mid": midi_bytes()}),
    lambda d: write_zip(d / "empty.zip", {}),
    lambda d: write_7z(d / "a.7z", {"a.mid": midi_bytes()}),
    lambda d: write_rar4(d / "a.rar", [RarMember(b"a.mid", midi_bytes())]),
    lambda d: write_tar(d / "a.tar", [TarMember("a.mid", midi_bytes())]),
    lambda d: write_tar(d / "a.tgz", [TarMember("a.mid", midi_bytes())], "w:gz"),
    lambda d: write_tar(d / "a.tbz", [TarMember("a.mid", midi_bytes())], "w:bz2"),
    lambda d: write_tar(d / "a.txz", [TarMember("a.mid", midi_bytes())], "w:xz"),
    lambda d: _libarchive_write(d / "a.tar.zst", "ustar", "zstd"),
    lambda d: _libarchive_write(d / "a.mid", "ustar", None),  # a tar misnamed .mid
], ids=["zip", "empty-zip", "7z", "rar4", "tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst",
        "tar-named-mid"])
def test_real_archives_sniff_as_archive(tmp_path: Path, build) -> None:
    path = build(tmp_path)
    head = path.read_bytes()[:SNIFF_BYTES]
    assert sniff_kind(head) == "archive"
    assert midi_payload(head) is None


def test_spanned_zip_marker_sniffs_as_archive(tmp_path: Path) -> None:
    body = write_zip(tmp_path / "a.zip", {"a.mid": midi_bytes()}).read_bytes()
    assert sniff_kind(b"PK\x07\x08" + body[:SNIFF_BYTES - 4]) == "archive"


def test_rar5_signature_sniffs_as_archive() -> None:
    assert sniff_kind(b"Rar!\x1a\x07\x01\x00" + bytes(100)) == "archive"


@pytest.mark.parametrize("head", [
    b"", b"PK", b"\x00" * SNIFF_BYTES, b"ID3\x03\x00", b"%PDF-1.7\n", b"MTrk\x00\x00",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
])
def test_other_content_is_other(head: bytes) -> None:
    assert sniff_kind(head) == "other"


def test_tar_magic_must_sit_at_offset_257() -> None:
    misplaced = b"ustar" + bytes(SNIFF_BYTES)
    assert sniff_kind(misplaced) == "other"
    placed = bytes(257) + b"ustar" + bytes(250)
    assert sniff_kind(placed) == "archive"
    assert tarfile.TarInfo("x").tobuf()[257:262] == b"ustar"
