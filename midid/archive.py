"""Walk one archive (and the archives inside it) safely, yielding one result per member.

libarchive (through libarchive-c) reads every format here — zip, 7z, RAR 4/5, tar and
gzip/bzip2/xz/zstd streams — with one streaming API that exposes entry types and hands data
out block by block, so memory stays bounded whatever the archive claims.

Safety model:
- Nothing is ever written under a member's name. MIDI members are read into memory; only
  nested archives are spooled, to numbered files in a private `tempfile.mkdtemp` sandbox
  that is removed when the walk ends, however it ends.
- Hostile members (path escapes, links, devices, encrypted data) are refused one by one
  and the rest of the archive goes on.
- Bomb limits (`Limits`) are enforced on bytes actually counted while streaming, never on
  header sizes alone. Bytes and members are one budget shared by a top-level archive and
  everything nested in it; when it runs out the whole top-level archive is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from libarchive import ffi
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError
from libarchive.read import new_archive_read

from midid.pathtext import path_text
from midid.sniff import COMPRESSED_STREAM_MAGICS, SNIFF_BYTES, midi_payload, sniff_kind

log = logging.getLogger(__name__)

_BLOCK = 64 * 1024
_RATIO_GRACE_BYTES = 1024**2
"""Ratios are only judged past this many extracted bytes: tiny, highly repetitive MIDI
files legitimately compress far better than 200:1, and a megabyte can do no harm."""

_entry_is_data_encrypted = ffi.libarchive.archive_entry_is_data_encrypted
_entry_is_data_encrypted.argtypes = [ctypes.c_void_p]
_entry_is_data_encrypted.restype = ctypes.c_int


@dataclass(frozen=True)
class Limits:
    """Bomb limits for one top-level archive; defaults are generous for MIDI packs."""

    max_depth: int = 10
    """Archives inside archives; the top-level archive is depth 0."""
    max_extracted_bytes: int = 4 * 1024**3
    """Total bytes taken out of one top-level archive, nested levels included."""
    max_members: int = 200_000
    """Entries (directories too) in one top-level archive, nested levels included."""
    max_ratio: float = 200.0
    """Extracted bytes / compressed bytes read, per member and per archive, while streaming."""
    max_midi_bytes: int = 64 * 1024**2
    """A single MIDI file larger than this is refused."""

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_extracted_bytes", "max_members", "max_ratio",
                     "max_midi_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Origin:
    """Where a file came from: a path on disk, plus member names for archive contents."""

    path: str
    """Absolute path on disk (the outermost archive for members)."""
    members: tuple[str, ...] = ()
    """Member names inside nested archives, outermost first, decoded to str."""

    def display(self) -> str:
        """`path` or `path!member!inner-member`, for logs, the library and `midictl status`
        (as :func:`.pathtext.path_text`)."""
        return "!".join((path_text(self.path), *self.members))

    def child(self, member: str) -> Origin:
        """The origin of `member` inside the archive this origin names."""
        return Origin(self.path, (*self.members, member))


@dataclass(frozen=True)
class FoundMidi:
    """A Standard MIDI File (RMID already unwrapped) and the on-disk file it came from."""

    origin: Origin
    data: bytes
    size: int
    """Bytes of the on-disk file (the outermost archive for members)."""
    mtime: float
    """Modification time of the on-disk file, seconds since the epoch."""


@dataclass(frozen=True)
class Skipped:
    """A file or member that is fine but not imported (not MIDI, unchanged, a symlink...)."""

    origin: Origin
    reason: str


@dataclass(frozen=True)
class Failed:
    """A file or member that could not or must not be read; `error` is one actionable line."""

    origin: Origin
    error: str


Item = FoundMidi | Skipped | Failed

VANISHED = "vanished while scanning; it will be imported if it comes back"


def walk_archive(path: str, limits: Limits, size: int, mtime: float) -> Iterator[Item]:
    """Yield one item per entry of the archive at `path`, descending into nested archives.

    `size` and `mtime` describe the on-disk file and are copied into every FoundMidi.
    A nested archive yields its contents, not itself; an archive that holds no files yields
    one Skipped; an archive that cannot be read yields one Failed after whatever it yielded
    before the failure.
    """
    origin = Origin(path)
    try:
        sandbox = tempfile.mkdtemp(prefix="midid-archive-")
    except OSError as error:
        yield Failed(origin, f"cannot create a temporary folder: {error.strerror or error}; "
                             "point TMPDIR at a writable folder with free space")
        return
    walk = _Walk(limits, _Budget(limits.max_extracted_bytes, limits.max_members),
                 sandbox, size, mtime)
    try:
        with open(path, "rb") as file:
            yield from walk.archive(file.fileno(), origin, os.path.basename(path), depth=0)
    except _BudgetExhausted as refusal:
        log.info("refused %s: %s", path, refusal)
        yield Failed(origin, f"refused: {refusal}")
    except FileNotFoundError:
        yield Failed(origin, VANISHED)
    except OSError as error:
        yield Failed(origin, f"cannot read archive: {error.strerror or error} "
                             f"({error.filename or path}); check permissions and the free "
                             "space of the temporary folder (TMPDIR)")
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def decode_member_name(raw: bytes) -> str:
    """Decode a member name stored as raw bytes, guessing the legacy encoding.

    UTF-8 first (flagged zip names, 7z, pax tar, and the many unflagged zips made on macOS
    and Linux). Otherwise Shift-JIS when the bytes decode as Shift-JIS to nothing but ASCII
    and Japanese text with at least one run of two kana/kanji: cp437 bytes of European
    words (`Crème`, `Müller`) decode as Shift-JIS to isolated kanji between ASCII letters,
    never to such runs. Otherwise cp437, the zip default, which decodes any byte.
    """
    with contextlib.suppress(UnicodeDecodeError):
        return raw.decode("utf-8")
    with contextlib.suppress(UnicodeDecodeError):
        text = raw.decode("shift_jis")
        if _SJIS_PLAUSIBLE.fullmatch(text) and _JAPANESE_RUN.search(text):
            return text
    return raw.decode("cp437")


_JAPANESE_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]{2,}")
_SJIS_PLAUSIBLE = re.compile(
    r"[\x00-\x7f\u2010-\u266f\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff01-\uff9f]*"
)
_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_name_reason(name: str) -> str | None:
    """Why a member name could escape an extraction folder, or None if it cannot.

    Both `/` and `\\` count as separators: archives made on Windows use backslashes and
    some extractors honour them.
    """
    if name.startswith(("/", "\\")):
        return f"member path is absolute ({name!r})"
    if _DRIVE.match(name):
        return f"member path names a drive ({name!r})"
    if ".." in re.split(r"[/\\]", name):
        return f"member path escapes the archive ({name!r})"
    return None


@dataclass
class _Budget:
    """What is left of one top-level archive's byte and member allowance (mutable)."""

    bytes_left: int
    members_left: int


class _BudgetExhausted(Exception):
    """The top-level archive as a whole is over a limit: stop reading all of it."""


class _ArchiveRefused(Exception):
    """This (possibly nested) archive is over a limit: stop reading it, go on outside."""


class _MemberFailed(Exception):
    """This member is over a limit or damaged: fail it (full message), go on with the next."""


@dataclass
class _Reader:
    """One open libarchive reader and the bytes taken out of it, for the archive ratio."""

    pointer: int
    extracted: int = 0
    buffer: ctypes.Array = field(default_factory=lambda: ctypes.create_string_buffer(_BLOCK))

    def compressed_bytes(self) -> int:
        """Bytes libarchive has read from the underlying file so far (its file position)."""
        return max(ffi.filter_bytes(self.pointer, -1), 1)


@dataclass
class _Walk:
    """State of one top-level archive walk: limits, shared budget, sandbox, on-disk stat."""

    limits: Limits
    budget: _Budget
    sandbox: str
    size: int
    mtime: float
    spooled: int = 0

    def archive(self, fd: int, origin: Origin, name: str, depth: int) -> Iterator[Item]:
        """Items of the archive open at `fd`, or one Failed for it; see `walk_archive`."""
        yielded = 0
        try:
            with _open_reader(fd) as reader:
                for item in self._members(reader, origin, name, depth):
                    yielded += 1
                    yield item
        except _ArchiveRefused as refusal:
            log.info("refused %s: %s", origin.display(), refusal)
            yield Failed(origin, f"refused: {refusal}")
            return
        except ArchiveError as error:
            yield Failed(origin, _archive_error_message(error))
            return
        if not yielded:
            yield Skipped(origin, "archive holds no files")

    def _members(self, reader: _Reader, origin: Origin, name: str,
                 depth: int) -> Iterator[Item]:
        entry = ArchiveEntry(reader.pointer)
        while ffi.read_next_header2(reader.pointer, entry._entry_p) != ffi.ARCHIVE_EOF:
            self._take_member()
            if entry.isdir:
                continue
            member = origin.child(_member_name(entry, name))
            reason = _refusal(entry, member.members[-1])
            if reason:
                yield Failed(member, reason)
                continue
            try:
                yield from self._member(reader, entry, member, depth)
            except _MemberFailed as failure:
                log.info("%s: %s", member.display(), failure)
                yield Failed(member, str(failure))

    def _member(self, reader: _Reader, entry: ArchiveEntry, member: Origin,
                depth: int) -> Iterator[Item]:
        blocks = self._blocks(reader)
        head = b""
        for block in blocks:
            head += block
            if len(head) >= SNIFF_BYTES:
                break
        kind = sniff_kind(head[:SNIFF_BYTES])
        if kind == "other":
            yield Skipped(member, "not MIDI")
        elif kind == "midi":
            yield self._midi(member, head, blocks, entry.size)
        elif depth + 1 > self.limits.max_depth:
            yield Failed(member, f"refused: archive nested more than {self.limits.max_depth} "
                                 "levels deep; extract it by hand if it is genuine")
        elif entry.size is not None and entry.size > self.budget.bytes_left:
            raise _BudgetExhausted(_over_bytes(self.limits))
        else:
            yield from self._nested(member, head, blocks, depth)

    def _midi(self, member: Origin, head: bytes, blocks: Iterator[bytes],
              declared: int | None) -> Item:
        limit = self.limits.max_midi_bytes
        too_big = f"MIDI file larger than {limit:,} bytes (Limits.max_midi_bytes)"
        if declared is not None and declared > limit:
            return Failed(member, f"refused: {too_big}")
        data = bytearray(head)
        for block in blocks:
            data += block
            if len(data) > limit:
                return Failed(member, f"refused: {too_big}")
        payload = midi_payload(bytes(data))
        if payload is None:
            return Skipped(member, "not MIDI: RIFF RMID file without a MIDI data chunk")
        return FoundMidi(member, payload, self.size, self.mtime)

    def _nested(self, member: Origin, head: bytes, blocks: Iterator[bytes],
                depth: int) -> Iterator[Item]:
        """Spool a nested archive to the sandbox under a numbered name, then walk it."""
        self.spooled += 1
        spool = os.path.join(self.sandbox, f"{depth + 1}-{self.spooled}.archive")
        with open(spool, "w+b") as file:
            try:
                file.write(head)
                for block in blocks:
                    file.write(block)
                file.flush()
                file.seek(0)
                yield from self.archive(file.fileno(), member, member.members[-1], depth + 1)
            finally:
                os.unlink(spool)

    def _blocks(self, reader: _Reader) -> Iterator[bytes]:
        """The current member's data in blocks, charged to every limit as it streams.

        The first read asks for only `SNIFF_BYTES`, so members that are merely sniffed and
        skipped (samples, artwork) cost their budget almost nothing.
        """
        limits, budget = self.limits, self.budget
        start = reader.compressed_bytes()
        extracted = 0
        while True:
            want = _BLOCK if extracted >= SNIFF_BYTES else SNIFF_BYTES - extracted
            count = ffi.read_data(reader.pointer, reader.buffer, want)
            if count == ffi.ARCHIVE_WARN:
                message = (ffi.error_string(reader.pointer) or b"").decode(errors="replace")
                raise _MemberFailed(f"damaged: {message}; the archive may be corrupt, "
                                    "re-download it")
            if count <= 0:
                return
            extracted += count
            reader.extracted += count
            budget.bytes_left -= count
            if budget.bytes_left < 0:
                raise _BudgetExhausted(_over_bytes(limits))
            if extracted > _RATIO_GRACE_BYTES:
                ratio = extracted / max(reader.compressed_bytes() - start, 1)
                if ratio > limits.max_ratio:
                    raise _MemberFailed("refused: " + _over_ratio(ratio, limits, "member"))
            if reader.extracted > _RATIO_GRACE_BYTES:
                ratio = reader.extracted / reader.compressed_bytes()
                if ratio > limits.max_ratio:
                    raise _ArchiveRefused(_over_ratio(ratio, limits, "archive"))
            yield reader.buffer.raw[:count]

    def _take_member(self) -> None:
        self.budget.members_left -= 1
        if self.budget.members_left < 0:
            raise _BudgetExhausted(
                f"more than {self.limits.max_members:,} members (Limits.max_members); "
                "split the pack or raise the limit if it is genuine")


@contextlib.contextmanager
def _open_reader(fd: int) -> Iterator[_Reader]:
    """A libarchive reader over `fd` (seekable when it is a regular file).

    The "raw" format is added for single compressed streams, so `song.mid.gz` reads as
    one member; it is kept off otherwise because it accepts any bytes at all, which would
    turn a corrupt zip into one odd member instead of a clear failure.
    """
    head = os.pread(fd, SNIFF_BYTES, 0)
    with new_archive_read("all", "all") as pointer:
        if head.startswith(COMPRESSED_STREAM_MAGICS):
            ffi.get_read_format_function("raw")(pointer)
        ffi.read_open_fd(pointer, fd, _BLOCK)
        yield _Reader(pointer)


def _member_name(entry: ArchiveEntry, archive_name: str) -> str:
    """The entry's name as text; the raw format's "data" entry is named after its stream."""
    if ffi.format_name(entry._archive_p) == b"raw":
        stem, extension = os.path.splitext(archive_name)
        return stem if extension else f"{archive_name}.data"
    raw = ffi.entry_pathname(entry._entry_p)
    if raw is None:
        return entry.pathname or ""
    return decode_member_name(raw)


def _refusal(entry: ArchiveEntry, name: str) -> str | None:
    """Why a member must not be read at all, or None."""
    unsafe = unsafe_name_reason(name)
    if unsafe:
        return f"refused: {unsafe}; extract it by hand if you trust the archive"
    if entry.islnk:
        return f"refused: hard link member (to {entry.linkpath!r}); links are never followed"
    if entry.issym:
        return f"refused: symbolic link member (to {entry.linkpath!r}); links are never followed"
    if entry.isdev:
        return "refused: device, fifo or socket member; only regular files are imported"
    if not entry.isreg:
        return f"refused: unsupported member type {entry.filetype:o}"
    if _entry_is_data_encrypted(entry._entry_p) > 0:
        return "encrypted: member is password-protected; extract it with its password and import the files"
    return None


def _archive_error_message(error: ArchiveError) -> str:
    message = error.msg.decode(errors="replace") if isinstance(error.msg, bytes) else error.msg
    message = (message or "").strip().rstrip(".") or "damaged or unknown archive format"
    if re.search(r"encrypt|passphrase|password", message, re.IGNORECASE):
        return (f"encrypted: {message}; extract the archive with its password and "
                "import the files")
    return (f"cannot read archive: {message}; it may be corrupt, truncated, or one part "
            "of a multi-volume set (import the extracted files instead)")


def _over_bytes(limits: Limits) -> str:
    return (f"more than {limits.max_extracted_bytes:,} bytes extracted "
            "(Limits.max_extracted_bytes); raise the limit if the pack is genuine")


def _over_ratio(ratio: float, limits: Limits, what: str) -> str:
    return (f"{what} expands more than {limits.max_ratio:g}:1 (reached {ratio:,.0f}:1), "
            "a likely zip bomb (Limits.max_ratio)")
