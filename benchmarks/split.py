"""Benchmark split_midi against a bare read and a mido-based split, in one run.

Usage: ``.venv/bin/python benchmarks/split.py [--repeat N]``

For POP909 (type 1, verbatim-copy path), Groove (type 0, one channel: nothing to split) and
POP909 songs merged to type 0 (split by channel: full event walk) it prints files/s, peak
Python memory (tracemalloc, measured in a separate untimed pass over the first 50 files) and
each method's time relative to split_midi. "read" opens and reads each file
(what every stage pays anyway); "mido split" is the obvious implementation: parse with mido
and save one MidiFile per note-bearing track or channel; "symusic parse" is a fast C++ parse
with no splitting, for scale.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import mido
import symusic

from midid.stages.split import split_midi

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
TYPE0_SAMPLE = 50  # POP909 songs merged to type 0 (merging with mido is slow)
PEAK_SAMPLE = 50  # files per peak-memory pass; the peak is per file, tracemalloc is slow


def bare_read(path: Path) -> int:
    return len(path.read_bytes())


def midid_split(path: Path) -> int:
    return len(split_midi(path.read_bytes()))


def symusic_parse(path: Path) -> int:
    return len(symusic.Score.from_midi(path.read_bytes()).tracks)


def _has_notes(track: mido.MidiTrack, channel: int | None = None) -> bool:
    return any(m.type == "note_on" and m.velocity > 0 and channel in (None, m.channel)
               for m in track)


def _save(midi: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def mido_split(path: Path) -> int:
    """The straightforward mido implementation split_midi replaces."""
    midi = mido.MidiFile(file=io.BytesIO(path.read_bytes()))
    parts = []
    if midi.type == 1:
        tracks = [t for t in midi.tracks[1:] if _has_notes(t)]
        if len(tracks) > 1:
            for track in tracks:
                parts.append(_save(mido.MidiFile(type=1, ticks_per_beat=midi.ticks_per_beat,
                                                 tracks=[midi.tracks[0], track])))
    elif midi.type == 0:
        track = midi.tracks[0]
        channels = sorted({m.channel for m in track if m.type == "note_on" and m.velocity})
        if len(channels) > 1:
            for channel in channels:
                kept, carry = mido.MidiTrack(), 0
                for msg in track:
                    if getattr(msg, "channel", channel) == channel:
                        kept.append(msg.copy(time=msg.time + carry))
                        carry = 0
                    else:
                        carry += msg.time
                parts.append(_save(mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat,
                                                 tracks=[kept])))
    return len(parts)


METHODS: dict[str, Callable[[Path], int]] = {
    "read": bare_read,
    "split_midi": midid_split,
    "symusic parse": symusic_parse,
    "mido split": mido_split,
}


def run(files: list[Path], method: Callable[[Path], int], repeat: int) -> float:
    """Best-of-``repeat`` seconds for one pass over ``files`` (best damps noisy neighbours)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for path in files:
            method(path)
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(files: list[Path], method: Callable[[Path], int]) -> int:
    tracemalloc.start()
    for path in files:
        method(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def table(name: str, files: list[Path], repeat: int) -> None:
    print(f"\n{name}: {len(files)} files, best of {repeat}")
    print(f"{'method':<14} {'files/s':>10} {'us/file':>9} {'peak KiB':>9} {'x split_midi':>13}")
    seconds = {label: run(files, fn, repeat if label != "mido split" else 1)
               for label, fn in METHODS.items()}
    for label, fn in METHODS.items():
        secs = seconds[label]
        peak_kib = peak_memory(files[:PEAK_SAMPLE], fn) / 1024
        ratio = secs / seconds["split_midi"]
        print(f"{label:<14} {len(files) / secs:>10.0f} {secs / len(files) * 1e6:>9.1f} "
              f"{peak_kib:>9.0f} {ratio:>13.2f}")


def merge_to_type0(path: Path, folder: Path) -> Path:
    """Write ``path`` merged into a single-track type-0 file in ``folder``."""
    midi = mido.MidiFile(path)
    merged = mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat,
                           tracks=[mido.merge_tracks(midi.tracks)])
    out = folder / path.name
    merged.save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pop909 = sorted((CORPUS / "pop909").glob("*/*.mid"))
    groove = sorted((CORPUS / "groove").glob("*/*/*.mid"))
    if not pop909:
        raise SystemExit(f"POP909 corpus not found under {CORPUS}")
    split_parts = sum(midid_split(p) for p in pop909)
    mido_parts = sum(mido_split(p) for p in pop909)
    if split_parts != mido_parts:
        raise SystemExit(f"split_midi made {split_parts} parts, mido split {mido_parts}")
    table("POP909 (type 1, 3 note tracks)", pop909, args.repeat)
    if groove:
        table("Groove (type 0, drums only: nothing to split)", groove[:200], args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        merged = [merge_to_type0(p, Path(tmp)) for p in pop909[:TYPE0_SAMPLE]]
        table("POP909 merged to type 0 (3 note channels: full event walk)", merged, args.repeat)


if __name__ == "__main__":
    main()
