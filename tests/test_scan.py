"""Scanning paths on disk: folders, files, archives, links, vanishing files, catch-up."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from archives import midi_bytes, outcome, private_tmp, rmid_wrap, tree, write_7z, write_zip  # noqa: F401
from midid.scan import Failed, FoundMidi, Limits, Origin, Skipped, scan

M0, M1 = midi_bytes(0), midi_bytes(1)
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


_recording: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _recording and isinstance(args[0], str):
        _recording[-1].append(args[0])


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one records only when asked


@contextlib.contextmanager
def recording_opens() -> Iterator[list[str]]:
    """Collect the paths this process opens inside the block (Python's audit hook)."""
    opened: list[str] = []
    _recording.append(opened)
    try:
        yield opened
    finally:
        _recording.pop()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A small messy folder tree: MIDI under odd names, text, an RMID, a zip, a 7z."""
    root = tmp_path / "lib"
    (root / "b folder" / "deeper").mkdir(parents=True)
    (root / "a.MID").write_bytes(M0)
    (root / "notes.txt").write_text("not midi")
    (root / "b folder" / "song.rmi").write_bytes(rmid_wrap(M1))
    (root / "b folder" / "deeper" / "no extension").write_bytes(M1)
    write_zip(root / "b folder" / "pack.zip", {"x.mid": M0, "y.txt": b"y"})
    write_7z(root / "c.7z", {"z.midi": M1})
    return root


def test_folder_tree_yields_one_item_per_file_in_sorted_order(library: Path,
                                                              private_tmp: Path) -> None:
    before = tree(library)
    items = list(scan([str(library)]))
    assert tree(library) == before
    assert [(type(i).__name__, i.origin.display()) for i in items] == [
        ("FoundMidi", f"{library}/a.MID"),
        ("FoundMidi", f"{library}/b folder/deeper/no extension"),
        ("FoundMidi", f"{library}/b folder/pack.zip!x.mid"),
        ("Skipped", f"{library}/b folder/pack.zip!y.txt"),
        ("FoundMidi", f"{library}/b folder/song.rmi"),
        ("FoundMidi", f"{library}/c.7z!z.midi"),
        ("Skipped", f"{library}/notes.txt"),
    ]
    rmi = items[4]
    assert rmi.data == M1 and rmi.size == (library / "b folder" / "song.rmi").stat().st_size
    assert rmi.mtime == (library / "b folder" / "song.rmi").stat().st_mtime
    assert items == list(scan([str(library)]))  # deterministic
    assert list(private_tmp.iterdir()) == []


def test_mixed_and_relative_inputs(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(library)
    items = list(scan(["a.MID", str(library / "c.7z"), "b folder/deeper"]))
    assert [i.origin for i in items] == [
        Origin(str(library / "a.MID")), Origin(str(library / "c.7z"), ("z.midi",)),
        Origin(str(library / "b folder" / "deeper" / "no extension"))]
    assert all(isinstance(i, FoundMidi) for i in items)


def test_unchanged_files_are_skipped_without_being_opened(library: Path) -> None:
    seen: list[tuple[str, int, float]] = []

    def unchanged(path: str, size: int, mtime: float) -> bool:
        seen.append((path, size, mtime))
        return path.endswith(("pack.zip", "a.MID"))

    items = list(scan([str(library)], unchanged=unchanged))
    reasons = {i.origin.display(): getattr(i, "reason", None) for i in items}
    assert reasons[f"{library}/a.MID"] == "unchanged"
    assert reasons[f"{library}/b folder/pack.zip"] == "unchanged"
    assert not any("!" in key and "pack.zip" in key for key in reasons)
    song = library / "b folder" / "song.rmi"
    assert (str(song), song.stat().st_size, song.stat().st_mtime) in seen
    assert len(seen) == 6  # every regular file on disk, once


def test_unchanged_skip_reads_nothing(library: Path) -> None:
    with recording_opens() as opened:
        items = list(scan([str(library)], unchanged=lambda *_: True))
    with recording_opens() as opened_normally:
        list(scan([str(library)]))
    assert [p for p in opened if p.startswith(str(library))] == []
    assert len({p for p in opened_normally if p.startswith(str(library))}) == 6
    assert {getattr(i, "reason", None) for i in items} == {"unchanged"} and len(items) == 6


def test_symlinks_are_not_followed_unless_asked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.mid").write_bytes(M0)
    (root / "link.mid").symlink_to(root / "real" / "a.mid")
    (root / "loop").symlink_to(root)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    items = list(scan([str(root)]))
    assert outcome(items) == [("Skipped", (), "symbolic link not followed")] * 3 + [
        ("FoundMidi", (), "")]
    assert [i.origin.path for i in items] == [str(root / n) for n in
                                              ("dangling", "link.mid", "loop", "real/a.mid")]
    followed = list(scan([str(root)], follow_symlinks=True))
    assert [(type(i).__name__, i.origin.path) for i in followed] == [
        ("Failed", str(root / "dangling")),
        ("FoundMidi", str(root / "link.mid")),
        ("Skipped", str(root / "loop")),
        ("FoundMidi", str(root / "real" / "a.mid")),
    ]
    assert "already scanned" in followed[2].reason
    assert list(scan([str(root / "link.mid")]))[0].reason == "symbolic link not followed"


def test_vanishing_paths_fail_and_the_scan_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("a.mid", "b.mid", "c.mid"):
        (root / name).write_bytes(M0)
    items = scan([str(tmp_path / "missing"), str(root)])
    first = next(items)
    assert isinstance(first, Failed) and "vanished" in first.error
    assert next(items).origin.path == str(root / "a.mid")
    (root / "b.mid").unlink()
    rest = list(items)
    assert [(type(i).__name__, Path(i.origin.path).name) for i in rest] == [
        ("Failed", "b.mid"), ("FoundMidi", "c.mid")]
    assert "vanished" in rest[0].error


def test_special_files_are_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mid")
    (tmp_path / "ok.mid").write_bytes(M0)
    assert outcome(scan([str(tmp_path)])) == [
        ("FoundMidi", (), ""), ("Skipped", (), "not a regular file (device, fifo or socket)")]


def test_midi_on_disk_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.mid").write_bytes(M0 + bytes(10_000))
    (tmp_path / "fine.mid").write_bytes(M0)
    items = list(scan([str(tmp_path)], Limits(max_midi_bytes=5_000)))
    assert [type(i) for i in items] == [Failed, FoundMidi]
    assert "Limits.max_midi_bytes" in items[0].error


def test_non_midi_is_skipped_by_content(tmp_path: Path) -> None:
    (tmp_path / "fake.mid").write_bytes(b"ID3 this is an mp3 named .mid")
    (tmp_path / "fake.rmi").write_bytes(b"RIFF\x04\x00\x00\x00RMID")
    assert [(type(i), i.reason) for i in scan([str(tmp_path)])] == [
        (Skipped, "not MIDI"), (Skipped, "not MIDI: RIFF RMID file without a MIDI data chunk")]


def test_real_corpus_folder_and_its_zip(tmp_path: Path) -> None:
    folder = CORPUS / "groove" / "drummer1"
    if not folder.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    files = sorted(p for p in folder.rglob("*") if p.is_file())[:150]
    midi = [p for p in files if p.read_bytes()[:4] == b"MThd"]
    archive = write_zip(tmp_path / "drummer1.zip",
                        {str(p.relative_to(folder)): p.read_bytes() for p in files})
    items = list(scan([str(archive)]))
    assert len(items) == len(files)
    found = {i.origin.members[0]: i.data for i in items if isinstance(i, FoundMidi)}
    assert found == {str(p.relative_to(folder)): p.read_bytes() for p in midi}
    on_disk = [i for i in scan([str(folder)]) if isinstance(i, FoundMidi)]
    assert len(on_disk) == sum(1 for p in folder.rglob("*") if p.is_file()
                               and p.read_bytes()[:4] == b"MThd")


def test_a_midi_file_of_exactly_the_size_limit_is_taken(tmp_path: Path) -> None:
    exact = tmp_path / "exact.mid"
    exact.write_bytes(M0 + bytes(4000 - len(M0)))
    (tmp_path / "over.mid").write_bytes(exact.read_bytes() + b"\0")
    items = {Path(i.origin.path).name: i for i in scan([str(tmp_path)], Limits(max_midi_bytes=4000))}
    assert isinstance(items["exact.mid"], FoundMidi) and items["exact.mid"].data == exact.read_bytes()
    assert isinstance(items["over.mid"], Failed) and "Limits.max_midi_bytes" in items["over.mid"].error


def test_a_file_that_grew_after_its_stat_is_read_whole_or_refused(tmp_path: Path) -> None:
    """The read is sized from the file's stat; a file still being written (a copy in progress)
    may be longer by the time it is read. It is read to its end, up to the limit; past the
    limit it is refused, not cut short."""
    from midid.scan import _scan_file

    path = tmp_path / "growing.mid"
    small = M0 + bytes(1000)  # past the first read (SNIFF_BYTES), so the stat sizes the rest
    path.write_bytes(small)
    stat_then = os.stat(path)
    grown = small + bytes(3000)
    path.write_bytes(grown)
    [found] = _scan_file(Origin(str(path)), stat_then, Limits(max_midi_bytes=5000), None)
    assert isinstance(found, FoundMidi) and found.data == grown
    [refused] = _scan_file(Origin(str(path)), stat_then, Limits(max_midi_bytes=2000), None)
    assert isinstance(refused, Failed) and "grew past 2,000 bytes" in refused.error
    at_limit = grown[:2000]
    path.write_bytes(at_limit)
    [taken] = _scan_file(Origin(str(path)), stat_then, Limits(max_midi_bytes=2000), None)
    assert isinstance(taken, FoundMidi) and taken.data == at_limit
