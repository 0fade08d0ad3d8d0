"""A small generated MIDI pack for `make demo` when ../shared/corpus is not beside the checkout.

`python -m midid.sample DIR` writes drum loops, single drum parts, bass lines, melodies and
chord progressions in several keys and tempi, as a producer's messy download folder: names
with spaces and BPM/key words, a zip pack, and a duplicate under another name.
"""

from __future__ import annotations

import random
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import mido

from .metadata import TONICS

TPQ = 480
MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]


def song(bpm: float, tracks: list[list[tuple[int, int, int, int, int]]], names: list[str]) -> bytes:
    """tracks: (start_tick, duration_ticks, note, velocity, channel) per note."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPQ)
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
                                mido.MetaMessage("time_signature", numerator=4, denominator=4)])
    mid.tracks.append(conductor)
    for notes, name in zip(tracks, names):
        events = []
        for start, dur, note, vel, ch in notes:
            events.append((start, 1, mido.Message("note_on", note=note, velocity=vel, channel=ch)))
            events.append((start + dur, 0, mido.Message("note_off", note=note, velocity=0, channel=ch)))
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name)])
        now = 0
        for tick, _, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    out = BytesIO()
    mid.save(file=out)
    return out.getvalue()


def drum_loop(rng: random.Random, bars: int = 4, parts: tuple[str, ...] = ("kick", "snare", "hat")) -> list:
    notes = []
    step = TPQ // 4
    for bar in range(bars):
        for s in range(16):
            t = (bar * 16 + s) * step
            if "kick" in parts and (s in (0, 8) or (s == 10 and rng.random() < 0.5)):
                notes.append((t, step, 36, 110, 9))
            if "snare" in parts and s in (4, 12):
                notes.append((t, step, 38, 105, 9))
            if "hat" in parts and s % 2 == 0:
                notes.append((t, step // 2, 42, 70 + rng.randint(0, 20), 9))
    return notes


def chords(root: int, minor: bool, degrees: list[int], bars_each: int = 1) -> list:
    scale = MINOR if minor else MAJOR
    notes = []
    for i, degree in enumerate(degrees):
        t = i * 4 * TPQ * bars_each
        for k in (0, 2, 4):
            pc = scale[(degree + k) % 7] + 12 * ((degree + k) // 7)
            notes.append((t, 4 * TPQ * bars_each - 10, 48 + root + pc, 80, 0))
    return notes


def bass(root: int, minor: bool, degrees: list[int]) -> list:
    scale = MINOR if minor else MAJOR
    notes = []
    for i, degree in enumerate(degrees):
        for beat in range(4):
            notes.append(((i * 4 + beat) * TPQ, TPQ - 20, 36 + root + scale[degree % 7], 100, 1))
    return notes


def melody(rng: random.Random, root: int, minor: bool, bars: int = 4) -> list:
    scale = MINOR if minor else MAJOR
    notes, t, idx = [], 0, 0
    while t < bars * 4 * TPQ:
        dur = rng.choice([TPQ // 2, TPQ, TPQ])
        idx = max(0, min(9, idx + rng.choice([-2, -1, 1, 2])))
        notes.append((t, dur - 10, 60 + root + scale[idx % 7] + 12 * (idx // 7), 90, 2))
        t += dur
    return notes


def write_samples(dest: Path, seed: int = 7) -> int:
    """Write the pack under `dest`; returns how many MIDI files were written (archive members included)."""
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0

    def put(rel: str, data: bytes) -> None:
        nonlocal count
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        count += 1

    for bpm in (90, 128, 140):
        put(f"Trap Drums {bpm} BPM/Full Loop {bpm}bpm.mid", song(bpm, [drum_loop(rng)], ["Drums"]))
        put(f"Trap Drums {bpm} BPM/Kick Only {bpm}.mid", song(bpm, [drum_loop(rng, parts=("kick",))], ["Kick"]))
        put(f"Trap Drums {bpm} BPM/Hats {bpm}.mid", song(bpm, [drum_loop(rng, parts=("hat",))], ["Hats"]))
    progressions = [[0, 4, 5, 3], [5, 3, 0, 4], [1, 4, 0, 0], [0, 5, 3, 4]]
    for i, (root, minor) in enumerate([(9, True), (0, False), (2, True), (7, False)]):
        key = TONICS[root] + ("m" if minor else "")
        degrees = progressions[i]
        bpm = rng.choice([85, 100, 120])
        put(f"Chord Kit/Progression {key} {bpm}bpm.mid", song(bpm, [chords(root, minor, degrees)], ["Chords"]))
        put(f"Bass Lines/Bass {key} {bpm}bpm.mid", song(bpm, [bass(root, minor, degrees)], ["Bass"]))
        put(f"Melodies/Lead {key} {bpm}.MID", song(bpm, [melody(rng, root, minor)], ["Lead"]))
        put(f"Songs/Song {i + 1} {key}.midi",
            song(bpm, [melody(rng, root, minor), chords(root, minor, degrees), bass(root, minor, degrees),
                        drum_loop(rng)], ["Lead", "Keys", "Bass", "Drums"]))
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as pack:
        for j, (root, minor) in enumerate([(4, True), (5, False)]):
            key = TONICS[root] + ("m" if minor else "")
            pack.writestr(f"Lofi Pack/Keys {key} 80bpm.mid", song(80, [chords(root, minor, [0, 3, 4, 0])], ["Keys"]))
            count += 1
    (dest / "Lofi Pack.zip").write_bytes(buffer.getvalue())
    put("Downloads/copy of Full Loop.mid", (dest / "Trap Drums 90 BPM" / "Full Loop 90bpm.mid").read_bytes())
    (dest / "Downloads" / "readme.txt").write_text("Thanks for downloading! Royalty free.\n")
    return count


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "samples")
    print(f"wrote {write_samples(target)} MIDI files under {target}")
