"""Walking archives: formats, nesting, hostile members, bombs, names, and the sandbox.

Every archive is built by a fixture (tests/archives.py) from two real Groove MIDI files.
Each test checks the one-item-per-entry accounting, and that the scan wrote nothing outside
its sandbox, which is gone afterwards.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from archives import (
    MIB,
    RarMember,
    TarMember,
    midi_bytes,
    outcome,
    private_tmp,  # noqa: F401  (fixture)
    rmid_wrap,
    stored_entry,
    tree,
    truncate,
    write_7z,
    write_encrypted_zip,
    write_lying_bomb,
    write_rar4,
    write_raw_zip,
    write_recursive_bomb,
    write_self_nesting_zip,
    write_tar,
    write_zero_bomb,
    write_zip,
    write_zip_symlink,
)
from midid.archive import Failed, FoundMidi, Limits, Skipped, decode_member_name, unsafe_name_reason
from midid.scan import scan

M0, M1 = midi_bytes(0), midi_bytes(1)


def scanned(path: Path, limits: Limits = Limits()) -> list:
    """Scan one archive and check the sandbox is gone and nothing around it changed."""
    before = tree(path.parent)
    items = list(scan([str(path)], limits))
    assert tree(path.parent) == before
    return items


def assert_sandbox_gone(root: Path) -> None:
    assert list(root.iterdir()) == []


# --- formats and nesting -------------------------------------------------------------------


def test_zip_in_7z_in_tar_and_rar_in_zip(tmp_path: Path, private_tmp: Path) -> None:
    work = tmp_path / "build"
    work.mkdir()
    inner_zip = write_zip(work / "inner.zip", {"groove/a.mid": M0, "readme.txt": b"hi"})
    seven = write_7z(work / "drums.7z", {"inner.zip": inner_zip.read_bytes(), "b.MID": M1})
    rar = write_rar4(work / "song.rar", [RarMember(b"c.midi", M0)])
    rar_zip = write_zip(work / "rar.zip", {"song.rar": rar.read_bytes()})
    outer = write_tar(tmp_path / "pack.tar", [
        TarMember("pack", kind=tarfile.DIRTYPE),
        TarMember("pack/drums.7z", seven.read_bytes()),
        TarMember("pack/rar.zip", rar_zip.read_bytes()),
        TarMember("pack/top.kar", M1),
    ])
    items = scanned(outer)
    assert outcome(items) == [
        ("FoundMidi", ("pack/drums.7z", "inner.zip", "groove/a.mid"), ""),
        ("Skipped", ("pack/drums.7z", "inner.zip", "readme.txt"), "not MIDI"),
        ("FoundMidi", ("pack/drums.7z", "b.MID"), ""),
        ("FoundMidi", ("pack/rar.zip", "song.rar", "c.midi"), ""),
        ("FoundMidi", ("pack/top.kar",), ""),
    ]
    assert [item.data for item in items if isinstance(item, FoundMidi)] == [M0, M1, M0, M1]
    stat = outer.stat()
    assert {(item.size, item.mtime) for item in items if isinstance(item, FoundMidi)} == {
        (stat.st_size, stat.st_mtime)}
    assert items[0].origin.display() == f"{outer}!pack/drums.7z!inner.zip!groove/a.mid"
    assert_sandbox_gone(private_tmp)


def test_every_entry_yields_exactly_one_item(tmp_path: Path, private_tmp: Path) -> None:
    members = {f"{folder}/{i}.{ext}": (M0 if ext != "txt" else b"text")
               for folder in ("drums", "bass") for i in range(7) for ext in ("mid", "txt")}
    nested = write_zip(tmp_path / "nested.zip", members)
    outer = write_zip(tmp_path / "outer.zip", {**members, "nested.zip": nested.read_bytes(),
                                               "empty.zip": write_zip(tmp_path / "e.zip", {}).read_bytes()})
    items = scanned(outer)
    leaves = [(name,) for name in members] + [("nested.zip", name) for name in members]
    assert sorted(item.origin.members for item in items) == sorted([*leaves, ("empty.zip",)])
    assert outcome(items)[-1] == ("Skipped", ("empty.zip",), "archive holds no files")
    assert sum(isinstance(item, FoundMidi) for item in items) == len(leaves) // 2
    assert_sandbox_gone(private_tmp)


@pytest.mark.parametrize("name", ["a.mid", "a.MID", "a.midi", "a.kar", "a", "a.txt"])
def test_midi_found_by_content_whatever_the_extension(tmp_path: Path, name: str) -> None:
    archive = write_zip(tmp_path / "x.zip", {name: M0, f"rmid-{name}": rmid_wrap(M1),
                                             f"text-{name}": b"MTh but no MIDI"})
    assert outcome(scanned(archive)) == [
        ("FoundMidi", (name,), ""), ("FoundMidi", (f"rmid-{name}",), ""),
        ("Skipped", (f"text-{name}",), "not MIDI"),
    ]
    assert [item.data for item in scan([str(archive)]) if isinstance(item, FoundMidi)] == [M0, M1]


def test_single_gzip_stream_is_one_member(tmp_path: Path) -> None:
    (tmp_path / "song.mid.gz").write_bytes(gzip.compress(M0))
    items = scanned(tmp_path / "song.mid.gz")
    assert outcome(items) == [("FoundMidi", ("song.mid",), "")]
    assert items[0].data == M0


# --- hostile members -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "why"), [
    ("../evil.mid", "escapes"), ("..\\evil.mid", "escapes"), ("ok/../../x.mid", "escapes"),
    ("a\\..\\..\\b.mid", "escapes"), ("/etc/evil.mid", "absolute"), ("C:evil.mid", "drive"),
    ("c:\\x\\evil.mid", "drive"),
])
def test_path_slips_are_refused_one_by_one(tmp_path: Path, private_tmp: Path, name: str,
                                           why: str) -> None:
    archive = write_zip(tmp_path / "slip.zip", {"first.mid": M0, name: M1, "last.mid": M0})
    items = scanned(archive)
    kinds = outcome(items)
    assert [k[0] for k in kinds] == ["FoundMidi", "Failed", "FoundMidi"]
    assert kinds[1][2].startswith("refused: member path") and why in kinds[1][2]
    assert_sandbox_gone(private_tmp)


def test_tar_links_devices_and_slips_are_refused(tmp_path: Path, private_tmp: Path) -> None:
    archive = write_tar(tmp_path / "evil.tar", [
        TarMember("dir", kind=tarfile.DIRTYPE),
        TarMember("dir/a.mid", M0),
        TarMember("sym.mid", kind=tarfile.SYMTYPE, link="/etc/passwd"),
        TarMember("hard.mid", kind=tarfile.LNKTYPE, link="../../etc/passwd"),
        TarMember("hard-inside.mid", kind=tarfile.LNKTYPE, link="dir/a.mid"),
        TarMember("tty", kind=tarfile.CHRTYPE),
        TarMember("disk", kind=tarfile.BLKTYPE),
        TarMember("pipe", kind=tarfile.FIFOTYPE),
        TarMember("../up.mid", M1),
        TarMember("/abs.mid", M1),
        TarMember("z.mid", M1),
    ])
    errors = {members[0]: text for kind, members, text in outcome(scanned(archive))
              if kind == "Failed"}
    assert set(errors) == {"sym.mid", "hard.mid", "hard-inside.mid", "tty", "disk", "pipe",
                           "../up.mid", "/abs.mid"}
    assert "symbolic link" in errors["sym.mid"] and "hard link" in errors["hard.mid"]
    assert all("device" in errors[name] for name in ("tty", "disk", "pipe"))
    assert [m for k, m, _ in outcome(scan([str(archive)])) if k == "FoundMidi"] == [
        ("dir/a.mid",), ("z.mid",)]
    assert_sandbox_gone(private_tmp)


def test_zip_and_rar_symlink_members_are_refused(tmp_path: Path) -> None:
    zipped = write_zip_symlink(tmp_path / "l.zip", "link.mid", "../../../etc/passwd", {"a.mid": M0})
    rar = write_rar4(tmp_path / "l.rar", [RarMember(b"link.mid", b"/etc/passwd", symlink=True),
                                          RarMember(b"a.mid", M0)])
    for archive in (zipped, rar):
        kinds = outcome(scanned(archive))
        assert [k[:2] for k in kinds] == [("Failed", ("link.mid",)), ("FoundMidi", ("a.mid",))]
        assert "symbolic link" in kinds[0][2]


def test_encrypted_members_fail_and_the_rest_go_on(tmp_path: Path) -> None:
    zipped = write_encrypted_zip(tmp_path / "e.zip", {"a.mid": M0, "b.mid": M1})
    rar = write_rar4(tmp_path / "e.rar", [RarMember(b"a.mid", M0, encrypted=True),
                                          RarMember(b"b.mid", M1)])
    assert [k[:2] for k in outcome(scanned(zipped))] == [("Failed", ("a.mid",)), ("Failed", ("b.mid",))]
    assert all(item.error.startswith("encrypted: ") for item in scan([str(zipped)]))
    kinds = outcome(scanned(rar))
    assert [k[:2] for k in kinds] == [("Failed", ("a.mid",)), ("FoundMidi", ("b.mid",))]
    assert kinds[0][2].startswith("encrypted: ")


# --- damaged archives --------------------------------------------------------------------------


def _ten(tmp_path: Path, kind: str) -> tuple[Path, list[bytes]]:
    datas = [M0 + bytes([i]) * 4000 for i in range(10)]  # distinct, ~4.5 KB each
    names = [f"m{i}.mid" for i in range(10)]
    if kind == "zip":
        path = write_raw_zip(tmp_path / "t.zip", [stored_entry(n.encode(), d) for n, d in zip(names, datas)])
    elif kind == "7z":
        path = write_7z(tmp_path / "t.7z", dict(zip(names, datas)))
    elif kind == "rar":
        path = write_rar4(tmp_path / "t.rar", [RarMember(n.encode(), d) for n, d in zip(names, datas)])
    else:
        path = write_tar(tmp_path / "t.tar.gz", [TarMember(n, d) for n, d in zip(names, datas)], "w:gz")
    return path, datas


@pytest.mark.parametrize("kind", ["zip", "7z", "rar", "tar.gz"])
def test_truncated_archive_keeps_what_was_read_then_fails_once(tmp_path: Path, private_tmp: Path,
                                                               kind: str) -> None:
    path, datas = _ten(tmp_path, kind)
    truncate(path, 0.6)
    items = scanned(path)
    *found, last = items
    assert isinstance(last, Failed) and last.origin.members == ()
    assert last.error.startswith("cannot read archive: ")
    assert all(isinstance(item, FoundMidi) for item in found)
    assert [item.data for item in found] == datas[: len(found)]
    assert len(found) < len(datas)
    assert_sandbox_gone(private_tmp)


def test_garbage_with_archive_magic_fails_once(tmp_path: Path) -> None:
    path = tmp_path / "fake.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    assert [k[:2] for k in outcome(scanned(path))] == [("Failed", ())]


def test_multi_volume_parts_fail_after_their_complete_members(tmp_path: Path) -> None:
    rar = write_rar4(tmp_path / "set.part1.rar",
                     [RarMember(b"a.mid", M0), RarMember(b"b.mid", M1, split_after=True)],
                     volume=True)
    assert [k[:2] for k in outcome(scanned(rar))] == [("FoundMidi", ("a.mid",)), ("Failed", ())]
    whole = write_raw_zip(tmp_path / "w.zip", [stored_entry(f"m{i}.mid".encode(), M0) for i in range(4)])
    data = whole.read_bytes()
    spanned = tmp_path / "set.z01"
    spanned.write_bytes(b"PK\x07\x08" + data[: data.index(b"PK\x01\x02") - 100])
    kinds = outcome(scanned(spanned))
    assert [k[:2] for k in kinds] == [("FoundMidi", (f"m{i}.mid",)) for i in range(3)] + [("Failed", ())]
    assert "multi-volume" in kinds[-1][2]


# --- member names -----------------------------------------------------------------------------


HOSTILE_NAMES = ["line\nbreak.mid", "$(touch CANARY).mid", "a; rm -rf ~.mid", "-rf.mid",
                 "--help", "`id`.mid", "x" * 296 + ".mid", "spaced  name (1) [x].mid"]


def test_hostile_names_are_kept_verbatim_and_never_executed(tmp_path: Path, private_tmp: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    archive = write_zip(tmp_path / "names.zip", {name: M0 for name in HOSTILE_NAMES})
    nested = write_7z(tmp_path / "names.7z", {"in.zip": archive.read_bytes()})
    items = scanned(nested)
    assert [item.origin.members for item in items] == [("in.zip", n) for n in HOSTILE_NAMES]
    assert all(isinstance(item, FoundMidi) and item.data == M0 for item in items)
    assert not (tmp_path / "CANARY").exists()
    assert_sandbox_gone(private_tmp)


def test_legacy_encoded_zip_names_are_decoded(tmp_path: Path) -> None:
    names = {"Café_Über.mid": ("cp437", 0), "Crème_brûlée.mid": ("cp437", 0),
             "ドラム_パターン.mid": ("shift_jis", 0), "日本語のベース.mid": ("shift_jis", 0),
             "Ünïcode_日本.mid": ("utf-8", 0x800), "naïve_unflagged.mid": ("utf-8", 0)}
    archive = write_raw_zip(tmp_path / "n.zip", [
        stored_entry(name.encode(codec), M0, flag) for name, (codec, flag) in names.items()])
    assert [item.origin.members[0] for item in scanned(archive)] == list(names)


@pytest.mark.parametrize("text", ["Müller_Bär", "Año_Niño", "Déjà_vu", "Drüben_Fünf",
                                  "Mélodie_Séquence", "Bösendorfer_Flügel", "Größe"])
def test_cp437_european_names_are_not_mistaken_for_shift_jis(text: str) -> None:
    assert decode_member_name(text.encode("cp437")) == text


@pytest.mark.parametrize("text", ["ドラム", "夏祭り", "ピアノ伴奏", "ドラム（ロック）", "君が代_120bpm"])
def test_shift_jis_names_are_recognised(text: str) -> None:
    assert decode_member_name(text.encode("shift_jis")) == text


@pytest.mark.parametrize(("name", "unsafe"), [
    ("a/b.mid", False), ("..a/b..mid", False), ("a..b", False), ("-x", False),
    ("../a", True), ("a/..", True), ("a\\..\\b", True), ("/a", True), ("\\\\server\\a", True),
    ("C:a", True), ("z:/a", True),
])
def test_unsafe_name_reason(name: str, unsafe: bool) -> None:
    assert (unsafe_name_reason(name) is not None) == unsafe


# --- bombs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gib_bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1 GiB of zeros behind three faces: MIDI, a nested tar, and a lying size header."""
    root = tmp_path_factory.mktemp("bombs")
    midi = write_zero_bomb(root / "midi.zip", 1024 * MIB)
    nested = write_zero_bomb(root / "nested.zip", 1024 * MIB, prefix=bytes(257) + b"ustar",
                             name=b"inner.tar")
    return {"midi": midi, "nested": nested, "liar": write_lying_bomb(root / "liar.zip", 1024 * MIB)}


@pytest.mark.parametrize("face", ["midi", "nested", "liar"])
def test_gib_zero_bomb_is_refused_early(gib_bombs: dict[str, Path], private_tmp: Path,
                                        face: str) -> None:
    roomy = Limits(max_midi_bytes=2 * 1024 * MIB)  # so only the streaming ratio can stop it
    for limits in (Limits(), roomy):
        kinds = outcome(scanned(gib_bombs[face], limits))
        assert len(kinds) == 1 and kinds[0][0] == "Failed" and kinds[0][2].startswith("refused: ")
    assert "200:1" in outcome(scan([str(gib_bombs[face])], roomy))[0][2]
    assert_sandbox_gone(private_tmp)


def test_gib_zero_bomb_keeps_memory_low(gib_bombs: dict[str, Path]) -> None:
    """Peak RSS of a fresh process scanning the bomb, measured as its parent sees it."""
    repo = Path(__file__).resolve().parents[1]
    child = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(repo)!r})
        from midid.scan import scan, Limits
        items = list(scan({[str(p) for p in gib_bombs.values()]!r},
                          Limits(max_midi_bytes=2 * 1024**3)))
        assert len(items) == 3 and all(type(i).__name__ == "Failed" for i in items), items
    """)
    parent = textwrap.dedent(f"""
        import resource, subprocess, sys
        subprocess.run([sys.executable, "-c", {child!r}], check=True)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """)
    result = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                            check=True, timeout=120)
    peak_mib = int(result.stdout.strip()) / 1024
    assert peak_mib < 300, f"peak RSS {peak_mib:.0f} MiB"


def test_recursive_bomb_is_stopped_by_the_shared_budgets(tmp_path: Path, private_tmp: Path) -> None:
    leaf = M0 + bytes(200_000)  # 200 KB of "MIDI" that compresses well
    bomb = write_recursive_bomb(tmp_path / "42.zip", width=4, depth=4, leaf=leaf)
    leaves = 4**4
    full = scanned(bomb, Limits(max_ratio=1e9))
    assert len(full) == leaves and all(isinstance(item, FoundMidi) for item in full)

    by_members = scanned(bomb, Limits(max_members=leaves // 2, max_ratio=1e9))
    *found, last = by_members
    assert isinstance(last, Failed) and last.origin.members == ()
    assert "Limits.max_members" in last.error and 0 < len(found) < leaves // 2

    by_bytes = scanned(bomb, Limits(max_extracted_bytes=len(leaf) * 20, max_ratio=1e9))
    *found, last = by_bytes
    assert "Limits.max_extracted_bytes" in last.error and last.origin.members == ()
    assert 0 < len(found) < 20
    assert_sandbox_gone(private_tmp)


def test_archive_holding_its_earlier_self_stops_at_max_depth(tmp_path: Path, private_tmp: Path) -> None:
    limits = Limits()
    bomb = write_self_nesting_zip(tmp_path / "pack.zip", generations=limits.max_depth + 3, leaf=M0)
    kinds = outcome(scanned(bomb, limits))
    chain = ("pack.zip",) * (limits.max_depth + 1)
    assert kinds == [("FoundMidi", chain[:depth] + ("song.mid",), "") for depth in range(limits.max_depth + 1)] + [
        ("Failed", chain, kinds[-1][2])]
    assert "nested more than 10 levels" in kinds[-1][2]
    shallow = outcome(scanned(bomb, Limits(max_depth=0)))
    assert shallow == [("FoundMidi", ("song.mid",), ""), ("Failed", ("pack.zip",), shallow[1][2])]
    assert_sandbox_gone(private_tmp)


def test_too_many_members_refuses_the_archive(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "many.zip", {f"{i}.mid": M0 for i in range(50)})
    items = scanned(archive, Limits(max_members=20))
    assert len(items) == 21 and isinstance(items[-1], Failed)
    assert items[-1].origin.members == () and "Limits.max_members" in items[-1].error
    assert len(scanned(archive, Limits(max_members=50))) == 50


def test_midi_member_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "big.zip", {"big.mid": M0 + bytes(5000), "ok.mid": M0})
    kinds = outcome(scanned(archive, Limits(max_midi_bytes=4000)))
    assert [k[:2] for k in kinds] == [("Failed", ("big.mid",)), ("FoundMidi", ("ok.mid",))]
    assert "Limits.max_midi_bytes" in kinds[0][2]


@pytest.mark.parametrize("declared", [True, False], ids=["zip, size declared", "gzip stream, size unknown"])
def test_a_midi_member_of_exactly_the_size_limit_is_taken(tmp_path: Path, declared: bool) -> None:
    """max_midi_bytes is the largest size accepted, whether the archive declares the member's
    size up front (zip) or it shows only while the member streams (a gzip stream)."""
    member = M0 + bytes(4000 - len(M0))

    def archive(data: bytes) -> Path:
        if declared:
            return write_zip(tmp_path / f"{len(data)}.zip", {"loop.mid": data})
        path = tmp_path / f"{len(data)}" / "loop.mid.gz"
        path.parent.mkdir()
        path.write_bytes(gzip.compress(data))
        return path

    limits = Limits(max_midi_bytes=4000)
    assert [k[0] for k in outcome(scanned(archive(member), limits))] == ["FoundMidi"]
    over = outcome(scanned(archive(member + b"\0"), limits))
    assert [k[0] for k in over] == ["Failed"] and "Limits.max_midi_bytes" in over[0][2]


# --- sandbox -----------------------------------------------------------------------------------


def test_sandbox_is_removed_when_the_consumer_stops_early(tmp_path: Path, private_tmp: Path) -> None:
    inner = write_zip(tmp_path / "inner.zip", {"a.mid": M0, "b.mid": M1})
    outer = write_7z(tmp_path / "outer.7z", {"inner.zip": inner.read_bytes()})
    items = scan([str(outer)])
    first = next(items)
    assert first.origin.members == ("inner.zip", "a.mid")
    (sandbox,) = private_tmp.iterdir()
    assert [p.name for p in sandbox.iterdir()] == ["1-1.archive"]  # spooled under a numbered name
    items.close()
    assert_sandbox_gone(private_tmp)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=-1)


def test_skipped_records_carry_their_reason(tmp_path: Path) -> None:
    item = scanned(write_zip(tmp_path / "t.zip", {"notes.txt": b"hello"}))[0]
    assert isinstance(item, Skipped) and item.reason == "not MIDI"


def test_skipped_members_cost_only_their_sniff(tmp_path: Path) -> None:
    """Big samples next to the MIDI files are sniffed, skipped and not charged in full."""
    members = {"sample.wav": b"RIFF\x00\x00\x00\x00WAVE" + bytes(1_000_000),
               **{f"{i}.txt": b"t" * 10_000 for i in range(50)}, "a.mid": M0}
    archive = write_zip(tmp_path / "pack.zip", members)
    kinds = outcome(scanned(archive, Limits(max_extracted_bytes=50_000)))
    assert kinds == [("Skipped", (name,), "not MIDI") for name in list(members)[:-1]] + [
        ("FoundMidi", ("a.mid",), "")]
