"""Build real archives for the import tests: zip, tar, 7z, RAR 4, bombs and hostile names.

Everything is written with the standard library or libarchive's own writer, except two
things nothing here can make: zip entries whose names are raw legacy bytes (cp437,
Shift-JIS, no UTF-8 flag) and RAR archives. For those this module writes the bytes itself,
following PKWARE's APPNOTE (local header, central directory, end record) and RARLAB's
RAR 4.x technote (marker block, main header, file headers with CRC-16-of-CRC-32).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import libarchive
import pytest

DATA = Path(__file__).resolve().parent / "data" / "archive"
MIB = 1024**2


def midi_bytes(index: int = 0) -> bytes:
    """A real Groove MIDI drum file from tests/data/archive (index 0 or 1)."""
    return sorted(DATA.glob("*.mid"))[index].read_bytes()


def rmid_wrap(smf: bytes) -> bytes:
    """Wrap a Standard MIDI File in a RIFF RMID container with a LIST chunk before `data`."""
    info = b"INFO" + b"INAM" + struct.pack("<I", 5) + b"test\x00" + b"\x00"
    chunks = b"LIST" + struct.pack("<I", len(info)) + info
    chunks += b"data" + struct.pack("<I", len(smf)) + smf + (b"\x00" if len(smf) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"RMID" + chunks


# --- zip ---------------------------------------------------------------------------------


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A deflated zip with UTF-8 names (zipfile sets the UTF-8 flag for non-ASCII names)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_zip_symlink(path: Path, link_name: str, target: str, members: dict[str, bytes]) -> Path:
    """A zip holding regular members plus one Unix symlink member (mode in external attrs)."""
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo(link_name)
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, target)
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_encrypted_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A ZipCrypto-encrypted zip written by libarchive (password "secret")."""
    with libarchive.file_writer(
        str(path), "zip", options="encryption=zipcrypt", passphrase="secret"
    ) as archive:
        for name, data in members.items():
            archive.add_file_from_memory(name, len(data), data)
    return path


@dataclass(frozen=True)
class RawZipEntry:
    """One member for `write_raw_zip`: name as raw bytes, data already compressed."""

    name: bytes
    compressed: bytes
    size: int  # uncompressed bytes
    crc: int
    method: int = 0  # 0 stored, 8 deflate
    flags: int = 0  # bit 11 (0x800) marks a UTF-8 name; clear means "cp437 or whatever"


def stored_entry(name: bytes, data: bytes, flags: int = 0) -> RawZipEntry:
    return RawZipEntry(name, data, len(data), zlib.crc32(data), 0, flags)


def write_raw_zip(path: Path, entries: list[RawZipEntry]) -> Path:
    """Write a zip byte by byte so names and flags are exactly what the test asks for."""
    with open(path, "wb") as out:
        central = io.BytesIO()
        for entry in entries:
            offset = out.tell()
            fields = (20, entry.flags, entry.method, 0, 0x21, entry.crc,
                      len(entry.compressed), entry.size, len(entry.name), 0)
            out.write(b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", *fields) + entry.name)
            out.write(entry.compressed)
            central.write(b"PK\x01\x02" + struct.pack(
                "<HHHHHHIIIHHHHHII", 20, 20, entry.flags, entry.method, 0, 0x21, entry.crc,
                len(entry.compressed), entry.size, len(entry.name), 0, 0, 0, 0, 0, offset,
            ) + entry.name)
        start = out.tell()
        out.write(central.getvalue())
        out.write(b"PK\x05\x06" + struct.pack(
            "<HHHHIIH", 0, 0, len(entries), len(entries), len(central.getvalue()), start, 0))
    return path


def write_zero_bomb(path: Path, size: int, prefix: bytes = b"MThd", name: bytes = b"zeros.mid") -> Path:
    """A zip with one deflated member of `size` bytes: `prefix` then zeros.

    The deflate stream is made of independently compressed 1 MiB pieces ended by a full
    flush, which concatenate into one valid stream; so a 1 GiB member costs ~1 MB of disk
    and well under a second to build instead of compressing a gigabyte.
    """
    piece = MIB

    def deflate(chunk: bytes) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)

    first = prefix + bytes(min(size, piece) - len(prefix))
    pieces, remainder = divmod(size - len(first), piece)
    zero_piece, crc = deflate(bytes(piece)), zlib.crc32(first)
    zeros = bytes(piece)
    for _ in range(pieces):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(remainder), crc)
    stream = io.BytesIO()
    stream.write(deflate(first))
    for _ in range(pieces):
        stream.write(zero_piece)
    stream.write(deflate(bytes(remainder)))
    stream.write(zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH))
    return write_raw_zip(path, [RawZipEntry(name, stream.getvalue(), size, crc, method=8)])


def write_lying_bomb(path: Path, size: int, claimed: int = 1000) -> Path:
    """`write_zero_bomb` whose headers claim the member is only `claimed` bytes long."""
    data = bytearray(write_zero_bomb(path, size).read_bytes())
    data[22:26] = claimed.to_bytes(4, "little")  # local header: uncompressed size
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = claimed.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def write_recursive_bomb(path: Path, width: int, depth: int, leaf: bytes) -> Path:
    """42.zip in miniature: each level holds `width` copies of the zip one level down."""
    level = write_zip(path.with_suffix(".0.zip"), {"leaf.mid": leaf})
    for step in range(1, depth + 1):
        inner = level.read_bytes()
        level.unlink()
        level = write_zip(path.with_suffix(f".{step}.zip"),
                          {f"copy{i}.zip": inner for i in range(width)})
    return Path(shutil.move(level, path))


def write_self_nesting_zip(path: Path, generations: int, leaf: bytes) -> Path:
    """A zip whose member is a copy of its own previous version, `generations` times over.

    Generation 0 holds only `song.mid`; generation n holds `song.mid` and generation n-1
    under the archive's own name, as when a pack gets re-zipped with the old zip inside.
    """
    write_zip(path, {"song.mid": leaf})
    for _ in range(generations):
        write_zip(path, {"song.mid": leaf, path.name: path.read_bytes()})
    return path


# --- tar ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TarMember:
    """One tar member: a regular file (data), or a link/device/fifo/dir (`kind`)."""

    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    link: str = ""


def write_tar(path: Path, members: list[TarMember], mode: str = "w") -> Path:
    """A tar (mode "w", "w:gz", "w:bz2", "w:xz") with exactly the given members."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.kind
            info.linkname = member.link
            info.size = len(member.data) if member.kind == tarfile.REGTYPE else 0
            if member.kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            archive.addfile(info, io.BytesIO(member.data) if info.size else None)
    return path


# --- 7z ----------------------------------------------------------------------------------


def write_7z(path: Path, members: dict[str, bytes]) -> Path:
    """A 7z written by libarchive's own writer."""
    with libarchive.file_writer(str(path), "7zip") as archive:
        for name, data in members.items():
            archive.add_file_from_memory(name, len(data), data)
    return path


def write_7z_symlink(path: Path, link_name: str, target: str, members: dict[str, bytes]) -> Path:
    """A 7z holding regular members plus one symlink member.

    libarchive's writer crashes when a symlink entry is added from memory, so the members are
    laid out in a scratch folder (the link as a real symlink, never followed) and added from disk.
    """
    path = path.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / link_name).symlink_to(target)
        for name, data in members.items():
            (root / name).write_bytes(data)
        with contextlib.chdir(root), libarchive.file_writer(str(path), "7zip") as archive:
            archive.add_files(link_name, *members)
    return path


def write_encrypted_7z(path: Path, members: dict[str, bytes], *, names_too: bool = False) -> Path | None:
    """An AES-encrypted 7z (password "secret") written by 7-Zip's `7zz`; None without it.

    libarchive reads encrypted 7z but cannot write one. `names_too` also encrypts the header,
    so not even the member names can be listed.
    """
    seven = shutil.which("7zz") or shutil.which("7z")
    if seven is None:
        return None
    path = path.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in members.items():
            (Path(scratch) / name).write_bytes(data)
        args = [seven, "a", "-bd", "-bso0", "-psecret", f"-mhe={'on' if names_too else 'off'}", str(path), *members]
        subprocess.run(args, cwd=scratch, check=True)
    return path


# --- RAR 4 -------------------------------------------------------------------------------

_RAR_MARKER = b"Rar!\x1a\x07\x00"
_RAR_MAIN, _RAR_FILE, _RAR_END = 0x73, 0x74, 0x7B
_RAR_LONG_BLOCK = 0x8000
_RAR_SPLIT_AFTER, _RAR_ENCRYPTED, _RAR_DIRECTORY = 0x02, 0x04, 0xE0
_RAR_MAIN_VOLUME = 0x0001
_RAR_HOST_UNIX = 3
_DOS_TIME_2020 = ((2020 - 1980) << 25) | (1 << 21) | (1 << 16)


@dataclass(frozen=True)
class RarMember:
    """One RAR 4 member, stored (method 0x30, no compression)."""

    name: bytes  # raw name bytes, as RAR 4 stores them without the Unicode flag
    data: bytes = b""
    directory: bool = False
    symlink: bool = False  # data is then the link target
    split_after: bool = False  # "continued in the next volume"
    encrypted: bool = False


def _rar_block(head_type: int, flags: int, body: bytes, add_size: int | None = None) -> bytes:
    if add_size is not None:
        flags |= _RAR_LONG_BLOCK
    head = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head


def write_rar4(path: Path, members: list[RarMember], volume: bool = False) -> Path:
    """Write a RAR 4 archive of stored members (only RAR itself can compress)."""
    blocks = [_RAR_MARKER,
              _rar_block(_RAR_MAIN, _RAR_MAIN_VOLUME if volume else 0, bytes(6))]
    for member in members:
        flags = ((_RAR_DIRECTORY if member.directory else 0)
                 | (_RAR_SPLIT_AFTER if member.split_after else 0)
                 | (_RAR_ENCRYPTED if member.encrypted else 0))
        mode = 0o40755 if member.directory else 0o120777 if member.symlink else 0o100644
        data = member.data
        stored = data[: len(data) // 2] if member.split_after else data
        body = struct.pack(
            "<IIBIIBBHI", len(stored), len(data), _RAR_HOST_UNIX, zlib.crc32(data),
            _DOS_TIME_2020, 20, 0x30, len(member.name), mode,
        ) + member.name
        blocks.append(_rar_block(_RAR_FILE, flags, body, add_size=len(stored)) + stored)
    if not volume:
        blocks.append(_rar_block(_RAR_END, 0x4000, b""))
    path.write_bytes(b"".join(blocks))
    return path


def truncate(path: Path, keep: float) -> Path:
    """Cut a file to `keep` (0..1) of its length, like an interrupted download."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- checking results ----------------------------------------------------------------------


def outcome(items) -> list[tuple[str, tuple[str, ...], str]]:
    """(kind, member names, reason/error or "") per item, for compact assertions."""
    return [(type(item).__name__, item.origin.members,
             getattr(item, "reason", None) or getattr(item, "error", None) or "")
            for item in items]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root`, with (size, mtime_ns) for files: equal before and after
    means nothing was written (folder mtimes are left out: the sandbox comes and goes)."""
    return {str(p.relative_to(root)): (0, 0) if p.is_dir() else (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point `tempfile` at an empty folder so a test can see the scan's sandboxes come and go."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root
