"""Hostile archives and names, end to end: the real `midictl import --local --json` on a matrix.

tests/test_archive.py proves each refusal at the scan level. Here every case of the matrix
(format x attack) sits in one source tree that one real import run takes in, and the test
checks what a user would: nothing was written outside the library and the database (the
test's whole tmp dir is snapshotted before and after; the private TMPDIR ends empty; no
slip target appears anywhere), no name reached a shell (canary files), memory stayed bounded
with a 1 GiB bomb in the pile, and every member is accounted for: the summary adds up, each
expected member is a library source or a recorded failure with its reason.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from archives import (
    MIB,
    RarMember,
    TarMember,
    midi_bytes,
    stored_entry,
    tree,
    truncate,
    write_7z,
    write_7z_symlink,
    write_encrypted_7z,
    write_encrypted_zip,
    write_rar4,
    write_raw_zip,
    write_recursive_bomb,
    write_self_nesting_zip,
    write_tar,
    write_zero_bomb,
    write_zip_symlink,
)
from conftest import write_config
from midid.config import Config, ImportConfig
from midid.importer import limits_from
from midid.scan import scan

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("zip", "7z", "rar", "tar")
# The import process alone peaks at 200-310 MB (numba compiling its kernels on a cold cache is
# the top of that), and 403 MB was seen once in a full fresh-clone run; a 1 GiB bomb expanded
# in memory would add its gigabyte. Half of that is the bound.
RSS_LIMIT_KB = 512 * 1024
CANARY = "CANARY"
SHELL_NAMES = ["line\nbreak.mid", f"$(touch {CANARY}1).mid", f"a; touch {CANARY}2 ;.mid", "-rf.mid",
               "--help.mid", f"`touch {CANARY}3`.mid", "x" * 296 + ".mid"]
LEGACY = {"cp437": "Café_Über_Müller.mid", "sjis": "ドラム_ループ_120.mid"}
SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
DEPTH = ImportConfig().max_archive_depth


@dataclass
class Case:
    """One archive of the matrix and what must become of it.

    `found` and `failed` list member paths (inside the archive, outermost first) that must end
    as a library source and as a recorded failure (with `reason` in its message); `items` is how
    many scan items the archive makes. Bombs and damaged archives whose cut-off point depends on
    the bytes (`oracle`) take `items` from a scan with the same limits and are checked by reason.
    """

    fmt: str
    name: str
    path: Path
    found: list[tuple[str, ...]] = field(default_factory=list)
    failed: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    items: int = 0
    oracle: str = ""

    def origin(self, members: tuple[str, ...]) -> str:
        return "!".join((str(self.path), *members))


class _Data:
    """Distinct real MIDI payloads, so every found member is a new library file."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> bytes:
        self.count += 1
        return midi_bytes(self.count % 2) + self.count.to_bytes(4, "big")


def _archive(fmt: str, path: Path, members: list[tuple[str | bytes, bytes]]) -> Path:
    """An archive of regular members; bytes names are written raw (zip, rar) or as cp437 (tar)."""
    if fmt == "zip":
        return write_raw_zip(path, [stored_entry(n if isinstance(n, bytes) else n.encode(),
                                                 d, 0 if isinstance(n, bytes) else 0x800) for n, d in members])
    if fmt == "rar":
        return write_rar4(path, [RarMember(n if isinstance(n, bytes) else n.encode(), d) for n, d in members])
    if fmt == "7z":
        return write_7z(path, {n: d for n, d in members})
    return write_tar(path, [TarMember(n, d) for n, d in members])


def _legacy_tar(path: Path, name: str, encoding: str, data: bytes) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding=encoding) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def write_tar_gz_bomb(path: Path, size: int) -> Path:
    """A tar.gz holding one "MIDI" member of `size` bytes (MThd then zeros), built from
    independently deflated 1 MiB pieces like `write_zero_bomb`, so 1 GiB costs ~1 MB."""
    header = tarfile.TarInfo("zeros.mid")
    header.size = size
    head = header.tobuf(tarfile.GNU_FORMAT) + b"MThd"
    total = len(head) + (size - 4) + (-size % 512) + 1024
    first = head + bytes(MIB - len(head))
    pieces, rest = divmod(total - len(first), MIB)

    def deflate(chunk: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)

    zero_piece, zeros = deflate(bytes(MIB)), bytes(MIB)
    crc = zlib.crc32(first)
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + deflate(first))
        for _ in range(pieces):
            out.write(zero_piece)
            crc = zlib.crc32(zeros, crc)
        out.write(deflate(bytes(rest)) + zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH))
        crc = zlib.crc32(bytes(rest), crc)
        out.write((crc & 0xFFFFFFFF).to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little"))
    return path


def _self_nesting(fmt: str, path: Path, leaf: bytes, generations: int) -> Path:
    if fmt == "zip":
        return write_self_nesting_zip(path, generations, leaf)
    _archive(fmt, path, [("song.mid", leaf)])
    for _ in range(generations):
        previous = path.read_bytes()
        path.unlink()
        _archive(fmt, path, [("song.mid", leaf), (path.name, previous)])
    return path


def build_matrix(root: Path) -> list[Case]:
    """Every (format, attack) archive under root/<format>/, with what must become of it."""
    data = _Data()
    cases: list[Case] = []
    bomb_dir = root / "bombs"
    bomb_dir.mkdir()
    zip_bomb = write_zero_bomb(bomb_dir / "zeros.zip", 1024 * MIB)
    leaf = midi_bytes(0) + bytes(4 * MIB)  # 256 leaves of 4 MiB: 1 GiB in ~30 KB
    small_42 = write_recursive_bomb(bomb_dir / "42.zip", width=4, depth=4, leaf=leaf)
    for fmt in FORMATS:
        d = root / fmt
        d.mkdir()
        ext = fmt

        def add(name: str, members: list[tuple[str | bytes, bytes]], expect: dict[str, str], **kw) -> Case:
            path = _archive(fmt, d / f"{name}.{ext}", members)
            case = Case(fmt, name, path, items=len(members), **kw)
            for (member, _), outcome in zip(members, expect.values()):
                key = (member.decode("latin-1") if isinstance(member, bytes) else member,)
                if outcome == "found":
                    case.found.append(key)
                else:
                    case.failed.append((key, outcome))
            cases.append(case)
            return case

        for attack, hostile, reason in (("slip_dotdot", "../../../pwned_dotdot.mid", "escapes"),
                                        ("slip_backslash", "..\\..\\pwned_backslash.mid", "escapes"),
                                        ("absolute", "/tmp/pwned_absolute.mid", "absolute"),
                                        ("drive_letter", "C:\\pwned_drive.mid", "drive")):
            add(attack, [("ok.mid", data()), (hostile, data())], {"ok": "found", "bad": reason})
        add("shell_names", [(n, data()) for n in SHELL_NAMES], {n: "found" for n in SHELL_NAMES})
        if fmt != "7z":  # 7z stores names as UTF-16: there are no legacy encodings to meet
            for label, text in LEGACY.items():
                encoding = "cp437" if label == "cp437" else "shift_jis"
                raw = text.encode(encoding)
                path = d / f"names_{label}.{ext}"
                payload = data()
                if fmt == "tar":
                    _legacy_tar(path, text, encoding, payload)
                else:
                    _archive(fmt, path, [(raw, payload)])
                cases.append(Case(fmt, f"names_{label}", path, found=[(text,)], items=1))
        link = d / f"symlink.{ext}"
        if fmt == "zip":
            write_zip_symlink(link, "link.mid", "../../../etc/passwd", {"a.mid": data()})
        elif fmt == "7z":
            write_7z_symlink(link, "link.mid", "../../../etc/passwd", {"a.mid": data()})
        elif fmt == "rar":
            write_rar4(link, [RarMember(b"link.mid", b"/etc/passwd", symlink=True), RarMember(b"a.mid", data())])
        else:
            write_tar(link, [TarMember("link.mid", kind=tarfile.SYMTYPE, link="/etc/passwd"),
                             TarMember("a.mid", data())])
        cases.append(Case(fmt, "symlink", link, found=[("a.mid",)],
                          failed=[(("link.mid",), "symbolic link")], items=2))
        if fmt == "tar":
            tar = write_tar(d / "links_devices.tar", [
                TarMember("a.mid", data()), TarMember("hard.mid", kind=tarfile.LNKTYPE, link="../../etc/passwd"),
                TarMember("tty", kind=tarfile.CHRTYPE), TarMember("disk", kind=tarfile.BLKTYPE),
                TarMember("pipe", kind=tarfile.FIFOTYPE)])
            cases.append(Case(fmt, "links_devices", tar, found=[("a.mid",)], items=5, failed=[
                (("hard.mid",), "hard link"), (("tty",), "device"), (("disk",), "device"), (("pipe",), "device")]))
        # Bombs: the 1 GiB zero bomb and the 42-style bomb, bare (zip, tar.gz) or nested.
        if fmt == "zip":
            bomb = write_zero_bomb(d / "zero_bomb.zip", 1024 * MIB)
            nest = write_recursive_bomb(d / "recursive_bomb.zip", width=4, depth=4, leaf=leaf)
        elif fmt == "tar":
            bomb = write_tar_gz_bomb(d / "zero_bomb.tar.gz", 1024 * MIB)
            nest = write_tar(d / "recursive_bomb.tar", [TarMember("42.zip", small_42.read_bytes())])
        else:
            bomb = _archive(fmt, d / f"zero_bomb.{ext}", [("zeros.zip", zip_bomb.read_bytes())])
            nest = _archive(fmt, d / f"recursive_bomb.{ext}", [("42.zip", small_42.read_bytes())])
        cases.append(Case(fmt, "zero_bomb", bomb, oracle="refused: "))
        cases.append(Case(fmt, "recursive_bomb", nest, oracle="refused: "))
        nested = _self_nesting(fmt, d / f"self_nesting.{ext}", data(), DEPTH + 3)
        chain = (nested.name,) * (DEPTH + 1)
        cases.append(Case(fmt, "self_nesting", nested, items=DEPTH + 2,
                          found=[chain[:depth] + ("song.mid",) for depth in range(DEPTH + 1)],
                          failed=[(chain, f"nested more than {DEPTH} levels")]))
        ten = _archive(fmt, d / f"truncated.{ext}", [(f"m{i}.mid", data() + bytes(4000)) for i in range(10)])
        cases.append(Case(fmt, "truncated", truncate(ten, 0.6), oracle="cannot read archive: "))
        if fmt == "zip":
            enc = write_encrypted_zip(d / "encrypted.zip", {"a.mid": data(), "b.mid": data()})
            cases.append(Case(fmt, "encrypted", enc, items=2,
                              failed=[(("a.mid",), "encrypted: "), (("b.mid",), "encrypted: ")]))
        if fmt == "7z":
            enc = write_encrypted_7z(d / "encrypted.7z", {"a.mid": data(), "b.mid": data()})
            if enc is not None:
                cases.append(Case(fmt, "encrypted", enc, items=2,
                                  failed=[(("a.mid",), "encrypted: "), (("b.mid",), "encrypted: ")]))
            hidden = write_encrypted_7z(d / "encrypted_names.7z", {"a.mid": data()}, names_too=True)
            if hidden is not None:
                cases.append(Case(fmt, "encrypted_names", hidden, items=1, failed=[((), "encrypted: ")]))
        if fmt == "rar":
            enc = write_rar4(d / "encrypted.rar", [RarMember(b"a.mid", data(), encrypted=True),
                                                   RarMember(b"b.mid", data())])
            cases.append(Case(fmt, "encrypted", enc, items=2, found=[("b.mid",)],
                              failed=[(("a.mid",), "encrypted: ")]))
            vol = write_rar4(d / "set.part1.rar", [RarMember(b"a.mid", data()),
                                                   RarMember(b"b.mid", data(), split_after=True)], volume=True)
            cases.append(Case(fmt, "multi_volume", vol, items=2, found=[("a.mid",)],
                              failed=[((), "multi-volume")]))
        if fmt in ("zip", "7z"):
            whole = _archive(fmt, bomb_dir / f"whole.{fmt}", [(f"v{i}.mid", data() + bytes(3000)) for i in range(4)])
            first = d / ("set.z01" if fmt == "zip" else "set.7z.001")
            raw = whole.read_bytes()
            first.write_bytes(b"PK\x07\x08" + raw[: raw.index(b"PK\x01\x02") - 100] if fmt == "zip"
                              else raw[: len(raw) // 2])
            cases.append(Case(fmt, "multi_volume", first, oracle="multi-volume"))
    limits = limits_from(Config())
    for case in cases:
        if case.oracle:
            case.items = len(list(scan([str(case.path)], limits)))
    for stray in bomb_dir.iterdir():
        stray.unlink()
    bomb_dir.rmdir()
    return cases


@dataclass
class Run:
    root: Path
    cases: list[Case]
    summary: dict
    peak_rss_kb: int
    before: dict
    after: dict
    src_before: dict
    src_after: dict
    sources: dict[str, str]
    failures: dict[str, str]
    library_paths: list[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("hostile")
    src, cwd, tmp = root / "src", root / "cwd", root / "tmp"
    for d in (src, cwd, tmp):
        d.mkdir()
    cases = build_matrix(src)
    config = write_config(root)
    before, src_before = tree(root), tree(src)
    env = dict(os.environ, TMPDIR=str(tmp), XDG_CONFIG_HOME=str(root / "xdg"))
    env.pop("MIDID_CONFIG", None)
    with open(root / "import.out", "wb") as out, open(root / "import.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "midid.ctl", "--config", str(config), "import", "--local",
                                 "--json", str(src)], cwd=cwd, env=env, stdout=out, stderr=err)
        # wait4 reports this one child's peak RSS (getrusage(RUSAGE_CHILDREN) would include
        # every earlier child of the test process).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, (root / "import.err").read_text()[-3000:]
    out_text = (root / "import.out").read_text()
    (root / "import.out").unlink()
    (root / "import.err").unlink()
    after, src_after = tree(root), tree(src)
    summary = json.loads(out_text.strip().splitlines()[-1])
    with sqlite3.connect(root / "midid.sqlite3") as conn:
        sources = dict(conn.execute("SELECT origin, kind FROM sources"))
        failures = dict(conn.execute("SELECT origin, error FROM failures WHERE stage = 'import'"))
        library_paths = [r[0] for r in conn.execute("SELECT path FROM files")]
    return Run(root, cases, summary, usage.ru_maxrss, before, after, src_before, src_after, sources, failures, library_paths)


CASE_IDS = [(fmt, name) for fmt in FORMATS for name in (
    "slip_dotdot", "slip_backslash", "absolute", "drive_letter", "shell_names", "names_cp437", "names_sjis",
    "symlink", "links_devices", "zero_bomb", "recursive_bomb", "self_nesting", "truncated", "encrypted",
    "encrypted_names", "multi_volume")]


@pytest.mark.parametrize(("fmt", "name"), CASE_IDS, ids=[f"{f}-{n}" for f, n in CASE_IDS])
def test_each_member_is_a_source_or_a_failure_with_its_reason(run: Run, fmt: str, name: str) -> None:
    case = next((c for c in run.cases if c.fmt == fmt and c.name == name), None)
    if case is None:
        pytest.skip(f"{name} does not apply to {fmt} (or cannot be built here)")
    for members in case.found:
        assert case.origin(members) in run.sources, (case.origin(members), sorted(run.sources)[:5])
    # libarchive turns a zip's or rar's backslashes into slashes (they come from Windows).
    failures = {o.replace("\\", "/"): e for o, e in run.failures.items()}
    for members, reason in case.failed:
        error = failures.get(case.origin(members).replace("\\", "/"))
        assert error is not None and reason in error, (case.origin(members), error)
    mine = [o for o in run.failures if o == str(case.path) or o.startswith(f"{case.path}!")]
    if case.oracle:
        assert any(case.oracle in run.failures[o] for o in mine), (case.name, [run.failures[o] for o in mine])
    else:
        assert len(mine) == len(case.failed), mine
        assert len([o for o in run.sources if o.startswith(f"{case.path}!")]) == len(case.found)


def test_the_summary_accounts_for_every_member(run: Run) -> None:
    s = run.summary
    assert s["seen"] == sum(c.items for c in run.cases)
    assert s["imported"] + s["duplicates"] + s["skipped"] + s["errors"] == s["seen"]
    assert s["errors"] == len(run.failures)
    assert s["imported"] + s["duplicates"] == len(run.sources)
    assert s["analysed"] + s["analysis_errors"] >= s["imported"]


def test_nothing_is_written_outside_the_library_and_the_database(run: Run) -> None:
    assert run.src_after == run.src_before, "the sources were changed"
    allowed = ("library", "midid.sqlite3", "midid.sqlite3-wal", "midid.sqlite3-shm", "midid.sqlite3.lock")
    new = {p for p in set(run.after) - set(run.before) if p.split("/")[0] not in allowed}
    assert new == set(), new
    changed = {p for p in run.before if run.after.get(p) != run.before[p] and p.split("/")[0] not in allowed}
    assert changed == set(), changed
    assert list((run.root / "tmp").iterdir()) == [], "the archive sandboxes were not removed"
    assert list((run.root / "cwd").iterdir()) == [], "something was created in the working directory"
    for top in (run.root.parent, Path("/tmp"), Path("/etc")):
        assert not list(top.glob("pwned_*")) and not list(top.glob(f"{CANARY}*")), top


def test_library_names_are_safe_whatever_the_member_names(run: Run) -> None:
    assert run.library_paths
    for path in run.library_paths:
        for part in path.split("/"):
            assert SAFE_COMPONENT.fullmatch(part) and len(part.encode()) <= 255, path
        assert (run.root / "library" / path).is_file()


def test_memory_stays_bounded_with_a_gib_bomb_in_the_pile(run: Run) -> None:
    assert run.peak_rss_kb < RSS_LIMIT_KB, f"peak RSS {run.peak_rss_kb / 1024:.0f} MB"


def test_midid_never_hands_a_string_to_a_shell() -> None:
    offenders = []
    for path in sorted((REPO / "midid").rglob("*.py")):
        text = path.read_text()
        for pattern in (r"shell\s*=\s*True", r"\bos\.system\s*\(", r"\bos\.popen\s*\(", r"\bos\.exec\w*\(",
                        r"\bcommands\.getoutput"):
            offenders += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert offenders == []
