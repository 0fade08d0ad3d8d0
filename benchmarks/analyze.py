"""Speed and accuracy of midid's analysis against symusic, pretty_midi and music21.

Run: ``.venv/bin/python benchmarks/analyze.py [--music21 N]``; ``--chords-only`` prints just the
chord accuracy per half with its error types (seconds; a few seconds to run); ``--tempo-only``
the onset tempo estimate's accuracy per half on re-timed Groove beats, its misses and its
cost, next to a plain onset-autocorrelation baseline; ``--tempo-lodo`` the kit tempo weights
fitted on all drummers but one, scored on that one (does a wider fit carry further?);
``--fit`` instead re-fits the
learned constants (key templates on POP909 001-150, also fitted on 151-300 to show how much
the halves differ; tempo weights on Groove drummers 1 and 2) and prints them with their score
on both halves. Uses ../shared/corpus (Groove MIDI drums, POP909 songs, and "Loops": pack-like
4-8 bar quantised cuts of both). Prints one table of files/s and ms/file (bare symusic parse
as the baseline, per-file best of five runs of each, interleaved, in the same run), the cost
of the first analysis in a new process with an empty and a filled numba cache, and one table
of accuracy, each split into the two halves used for cross-validation (POP909 songs
001-150 / 151-300; Groove drummers 1, 2 / 4, 5, 10).

Accuracy definitions:
- key: MIREX weighted score (same 1.0, fifth 0.5, relative 0.3, parallel 0.2) against the
  longest-lasting key in key_audio.txt.
- tempo estimate: Groove beat files with tempo events removed and note ticks re-timed so they
  reflect real seconds at the default 120 BPM; within 4 % of the labelled BPM, and within 4 %
  allowing 1/2x, 2/3x, 1.5x, 2x; and within 4 % when the label is passed as the file-name
  BPM, the octave prior a pack's "..._140bpm_..." name gives (circular by construction: it
  shows that the name picks among the octave relatives the onsets allow, and no more).
- drums: is_drums on every Groove (drums) and POP909 (melodic) file.
- single-part drums: each Groove beat cut to one kit part (>= 8 hits) -> Drum* category.
- chords: POP909 chord_midi.txt reduced to the major/minor vocabulary, share of labelled time.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from symusic import Note, Score, Track

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midid.analysis import analyze_bytes  # noqa: E402
from midid.analysis.category import PART_CATEGORY  # noqa: E402
from midid.analysis.drums import PART_OF_PITCH, PARTS  # noqa: E402
from midid.analysis.key import ALBRECHT_SHANAHAN, TONICS  # noqa: E402
from midid.analysis.parse import parse_midi  # noqa: E402
from midid.analysis.timing import ticks_to_seconds  # noqa: E402
from midid.metadata import name_metadata  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
FLAT_TO_SHARP = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B",
                 "Fb": "E", "E#": "F", "B#": "C"}
FIT_DRUMMERS = ("drummer1", "drummer2")


def pitch_class(name: str) -> int:
    """Pitch class of a note name with sharps or flats ("Gb" -> 6)."""
    return TONICS.index(FLAT_TO_SHARP.get(name, name))


# ----- corpus -----------------------------------------------------------------------------
def pop909_songs() -> list[Path]:
    return sorted(p for p in (CORPUS / "pop909").iterdir() if p.is_dir())


def groove_rows() -> list[dict[str, str]]:
    with open(CORPUS / "groove" / "info.csv", newline="") as f:
        return list(csv.DictReader(f))


def name_bpm(row: dict[str, str]) -> float | None:
    """The BPM that `midictl analyze` reads from a Groove file's own name."""
    return name_metadata(Path(row["midi_filename"]).name).bpm


def longest_key(song: Path) -> tuple[int, str]:
    """(tonic pitch class, "major"/"minor") of the key lasting longest in key_audio.txt."""
    held: dict[str, float] = {}
    for line in (song / "key_audio.txt").read_text().split("\n"):
        if line.strip():
            start, end, key = line.split()
            held[key] = held.get(key, 0.0) + float(end) - float(start)
    tonic, mode = max(held, key=held.__getitem__).split(":")
    return pitch_class(tonic), "major" if mode == "maj" else "minor"


def mirex(est: tuple[int, str] | None, ref: tuple[int, str]) -> float:
    """MIREX key score: same 1, fifth above/below (same mode) 0.5, relative 0.3, parallel 0.2."""
    if est is None:
        return 0.0
    (et, em), (rt, rm) = est, ref
    if est == ref:
        return 1.0
    if em == rm and (et - rt) % 12 in (5, 7):
        return 0.5
    if em != rm and (et - rt) % 12 == (9 if rm == "major" else 3):
        return 0.3
    if em != rm and et == rt:
        return 0.2
    return 0.0


def retime_to_seconds(data: bytes) -> bytes:
    """Drop tempo events and re-time notes so ticks are real seconds at 120 BPM / 480 tpq."""
    sec = Score.from_midi(data).to("second")
    out = Score(480)
    for track in sec.tracks:
        new = Track(track.name, track.program, track.is_drum)
        for n in track.notes:
            new.notes.append(
                Note(round(n.time * 960), max(1, round(n.duration * 960)), n.pitch, n.velocity)
            )
        out.tracks.append(new)
    return out.dumps_midi()


def single_part_files(data: bytes, min_hits: int = 8) -> dict[str, bytes]:
    """The drum file cut to each kit part with at least ``min_hits`` hits."""
    score = Score.from_midi(data)
    out = {}
    for i, part in enumerate(PARTS):
        cut = score.copy()
        for track in cut.tracks:
            keep = [n for n in track.notes if PART_OF_PITCH[n.pitch] == i]
            track.notes.clear()
            track.notes.extend(keep)
        if sum(len(t.notes) for t in cut.tracks) >= min_hits:
            out[part] = cut.dumps_midi()
    return out


def majmin(label: str) -> str | None:
    """Reduce a chord label to root:maj / root:min / N; None for chords outside that vocabulary."""
    if label == "N":
        return "N"
    root, quality = label.split(":")
    quality = quality.split("/")[0]
    root = TONICS[pitch_class(root)]
    if quality in ("maj", "maj7", "7", "maj6", "9", "maj9"):
        return f"{root}:maj"
    if quality in ("min", "min7", "min6", "minmaj7", "min9"):
        return f"{root}:min"
    return None


def chord_accuracy(song: Path, data: bytes, chords: list[dict]) -> tuple[float, float]:
    """(correct seconds, evaluated seconds) of estimated chords against chord_midi.txt."""
    errors = chord_errors(song, data, chords)
    return errors["correct"], sum(errors.values())


def chord_errors(song: Path, data: bytes, chords: list[dict]) -> dict[str, float]:
    """Seconds of chord_midi.txt (maj/min vocabulary) by outcome: "correct"; "N" (the
    reference has no chord, the estimate has one); "missed" (the estimate has none);
    "timing" (the estimate is a reference chord of the two beats before or after);
    "root" (another root); "quality" (same root, other quality); "other" (an estimate
    outside the vocabulary: dim, aug, sus)."""
    midi = parse_midi(data)
    out = dict.fromkeys(("correct", "N", "missed", "timing", "root", "quality", "other"), 0.0)
    rows = []
    for line in (song / "chord_midi.txt").read_text().split("\n"):
        if line.strip():
            s, e, lab = line.split()
            if float(e) > float(s) and majmin(lab) is not None:
                rows.append((float(s), float(e), majmin(lab)))
    if not chords:
        out["missed"] = sum(e - s for s, e, _ in rows)
        return out
    beats = np.array([c["beat"] for c in chords])
    starts = ticks_to_seconds(np.round(beats * midi.tpq).astype(np.int64), midi)
    labels = [majmin(c["label"]) for c in chords]
    ref_starts = np.array([s for s, _, _ in rows])
    for s, e, ref in rows:
        # reference chords sounding within two beats (of this chord's length) either side
        reach = 2 * (e - s)
        lo, hi = np.searchsorted(ref_starts, [s - reach, e + reach])
        near = {r for _, _, r in rows[max(lo - 1, 0):hi]}
        i0 = max(int(np.searchsorted(starts, s, side="right")) - 1, 0)
        i1 = int(np.searchsorted(starts, e, side="left"))
        for i in range(i0, max(i1, i0 + 1)):
            seg_e = starts[i + 1] if i + 1 < len(starts) else e
            overlap = min(e, seg_e) - max(s, starts[i])
            if overlap <= 0:
                continue
            est = labels[i]
            if est == ref:
                kind = "correct"
            elif ref == "N":
                kind = "N"
            elif est == "N":
                kind = "missed"
            elif est in near:
                kind = "timing"
            elif est is None:
                kind = "other"
            else:
                kind = "quality" if est.split(":")[0] == ref.split(":")[0] else "root"
            out[kind] += overlap
    return out


def chords_only() -> None:
    """Chord accuracy on POP909 per half, with the share of each error type."""
    totals: dict[bool, dict[str, float]] = {}
    for song in pop909_songs():
        data = (song / f"{song.name}.mid").read_bytes()
        half = totals.setdefault(int(song.name) <= 150, {})
        for kind, seconds in chord_errors(song, data, analyze_bytes(data).chords).items():
            half[kind] = half.get(kind, 0.0) + seconds
    kinds = list(totals[True])
    print(f"{'POP909 chords, share of labelled time':38s} " + " ".join(f"{k:>8s}" for k in kinds))
    for fit, name in ((True, "fit half 001-150"), (False, "check half 151-300")):
        total = sum(totals[fit].values())
        print(f"{name:38s} " + " ".join(f"{totals[fit][k] / total:8.4f}" for k in kinds))


def empty_like(score: Score) -> Score:
    """A score with ``score``'s resolution, tempo map and time signatures and no tracks: what
    every excerpt below (a loop, a track alone) starts from."""
    out = Score(score.ticks_per_quarter)
    out.tempos.extend(score.tempos)
    out.time_signatures.extend(score.time_signatures)
    return out


def pack_loops(groove_blobs: list[bytes], pop_blobs: list[bytes]) -> list[bytes]:
    """Files like those of MIDI packs, cut from the corpus: each Groove beat's first 4 bars
    and each POP909 track's first 8 bars (one file per track), quantised to 16ths, with the
    source's tempo map: short, step-sequenced loops."""
    out = []
    for data, bars, per_track in [(b, 4, False) for b in groove_blobs] + \
            [(b, 8, True) for b in pop_blobs]:
        score = Score.from_midi(data)
        grid = max(score.ticks_per_quarter // 4, 1)
        end = bars * 4 * score.ticks_per_quarter
        tracks = [[t] for t in score.tracks] if per_track else [list(score.tracks)]
        for group in tracks:
            cut = empty_like(score)
            for track in group:
                new = Track(track.name, track.program, track.is_drum)
                for n in track.notes:
                    t = round(n.time / grid) * grid
                    if t < end:
                        dur = max(round(n.duration / grid), 1) * grid
                        new.notes.append(Note(t, dur, n.pitch, n.velocity))
                cut.tracks.append(new)
            if sum(len(t.notes) for t in cut.tracks) >= 8:
                out.append(cut.dumps_midi())
    return out


# ----- runs -------------------------------------------------------------------------------
def per_file_best(blobs: list[bytes], repeats: int = 5) -> tuple[float, float, list]:
    """Seconds per file of the bare symusic parse and of ``analyze_bytes``: for each file
    the fastest of ``repeats`` runs of each, interleaved (on shared, loaded cores a whole
    pass is interrupted by other jobs; a per-file minimum is not), and the analyses."""
    parse_t = ours_t = 0.0
    res = []
    clock = time.perf_counter
    for data in blobs:
        best_parse = best_ours = float("inf")
        for _ in range(repeats):
            t0 = clock()
            Score.from_midi(data)
            t1 = clock()
            out = analyze_bytes(data)
            t2 = clock()
            best_parse, best_ours = min(best_parse, t1 - t0), min(best_ours, t2 - t1)
        parse_t += best_parse
        ours_t += best_ours
        res.append(out)
    return parse_t / len(blobs), ours_t / len(blobs), res


def first_call_seconds(data: bytes) -> tuple[float, float]:
    """Seconds of the first ``analyze_bytes`` call in a fresh process: with an empty numba
    cache (every kernel compiles), then with the cache that run filled (kernels load)."""
    code = ("import sys, time; from midid.analysis import analyze_bytes; "
            "data = sys.stdin.buffer.read(); t = time.perf_counter(); analyze_bytes(data); "
            "print(time.perf_counter() - t)")
    times = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", code], input=data, env=env,
                                  capture_output=True, check=True, cwd=REPO)
            times.append(float(done.stdout))
    return times[0], times[1]


def timed(fn: Callable[[bytes], object], blobs: list[bytes]) -> tuple[float, list]:
    """Seconds per file for ``fn`` over ``blobs`` and the results."""
    t0 = time.perf_counter()
    out = [fn(b) for b in blobs]
    return (time.perf_counter() - t0) / max(len(blobs), 1), out


def halves(values: Iterable[tuple[bool, float]]) -> tuple[float, float, float]:
    """Mean over (fit half, check half, all) of (is_fit, value) pairs."""
    vals = list(values)
    fit = [v for f, v in vals if f]
    check = [v for f, v in vals if not f]
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return mean(fit), mean(check), mean([v for _, v in vals])


def within(est: float | None, ref: float, factors: tuple[float, ...] = (1.0,)) -> bool:
    return est is not None and any(abs(est / (ref * f) - 1) <= 0.04 for f in factors)


OCTAVES = (1.0, 0.5, 2.0, 2 / 3, 1.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--music21", type=int, default=10, help="POP909 songs for music21")
    parser.add_argument("--fit", action="store_true", help="re-fit key and tempo constants")
    parser.add_argument("--chords-only", action="store_true",
                        help="chord accuracy and error types on POP909 only")
    parser.add_argument("--tempo-only", action="store_true",
                        help="bpm_estimate accuracy on Groove beats only, with a plain baseline")
    parser.add_argument("--tempo-lodo", action="store_true",
                        help="kit tempo weights fitted leaving one drummer out, scored on that drummer")
    parser.add_argument("--key-names", action="store_true",
                        help="the key a name states as a prior: right, relative and random names, by odds")
    args = parser.parse_args(argv)
    if args.chords_only:
        chords_only()
        return
    if args.tempo_only:
        tempo_only()
        return
    if args.tempo_lodo:
        tempo_leave_one_drummer_out()
        return
    if args.key_names:
        key_names()
        return
    if args.fit:
        fit_key()
        fit_tempo()
        return
    songs = pop909_songs()
    rows = groove_rows()
    pop_blobs = [(s / f"{s.name}.mid").read_bytes() for s in songs]
    groove_blobs = [(CORPUS / "groove" / r["midi_filename"]).read_bytes() for r in rows]

    # speed, per corpus: each row's ratio is to the bare parse of the same files in this run
    pretty_midi = None
    try:
        import pretty_midi
    except ImportError:
        pass
    speed: list[tuple[str, str, float, float]] = []
    results: list = []
    loops = pack_loops(groove_blobs, pop_blobs)
    for corpus, blobs in (("Groove", groove_blobs), ("POP909", pop_blobs), ("Loops", loops)):
        first, _ = timed(analyze_bytes, blobs)  # pays numba's cache load (or compile)
        t_parse, t_ours, res = per_file_best(blobs)
        if corpus != "Loops":
            results += res
        speed.append((corpus, "symusic Score.from_midi (per-file best of 5)", t_parse, t_parse))
        speed.append((corpus, "midid analyze_bytes (per-file best of 5)", t_ours, t_parse))
        speed.append((corpus, "midid analyze_bytes, first pass", first, t_parse))
        if pretty_midi is not None and corpus != "Loops":
            def pm_run(b: bytes) -> float:
                pm = pretty_midi.PrettyMIDI(io.BytesIO(b))
                pm.get_tempo_changes()
                return pm.estimate_tempo()

            t_pm, _ = timed(pm_run, blobs)
            speed.append((corpus, "pretty_midi load + estimate_tempo", t_pm, t_parse))
    groove_res, pop_res = results[: len(groove_blobs)], results[len(groove_blobs) :]
    m21 = None
    try:
        import music21

        sample = list(range(0, len(songs), max(1, len(songs) // args.music21)))[: args.music21]

        def m21_key(b: bytes) -> tuple[int, str]:
            k = music21.converter.parseData(b, format="midi").analyze("key")
            return k.tonic.pitchClass, k.mode

        t_parse, _ = timed(Score.from_midi, [pop_blobs[i] for i in sample])
        t_m21, m21_keys = timed(m21_key, [pop_blobs[i] for i in sample])
        speed.append(("POP909", f"music21 parse + analyze('key') ({len(sample)} songs)", t_m21,
                      t_parse))
        m21 = [(int(songs[i].name) <= 150, mirex(k, longest_key(songs[i])))
               for i, k in zip(sample, m21_keys, strict=True)]
    except ImportError:
        pass

    print(f"{'corpus':8s} {'speed':44s} {'files/s':>9s} {'ms/file':>9s} {'x parse':>8s}")
    for corpus, name, t, base in speed:
        print(f"{corpus:8s} {name:44s} {1 / t:9.0f} {t * 1000:9.3f} {t / base:8.1f}")
    compile_s, load_s = first_call_seconds(groove_blobs[0])
    print(f"first analyze_bytes in a new process (import excluded): {compile_s:.1f} s with an "
          f"empty numba cache (compiles), {load_s:.2f} s with the cache filled")
    key_speed = _key_speed(pop_blobs)
    print(f"{'POP909':8s} {'midid key only (chroma + match)':44s} {1 / key_speed:9.0f} "
          f"{key_speed * 1000:9.4f}")

    # accuracy
    acc: list[tuple[str, tuple[float, float, float]]] = []
    key_scores = []
    chord_parts: list[tuple[bool, float, float]] = []
    for song, blob, res in zip(songs, pop_blobs, pop_res, strict=True):
        fit = int(song.name) <= 150
        est = (TONICS.index(res.key_tonic), res.key_mode) if res.key_tonic else None
        key_scores.append((fit, mirex(est, longest_key(song))))
        c, t = chord_accuracy(song, blob, res.chords)
        chord_parts.append((fit, c, t))
    acc.append(("key MIREX, POP909 (midid)", halves(key_scores)))
    by_kind: dict[str, list[tuple[bool, float]]] = {}  # tracks alone and 8-bar loops
    for s, b in zip(songs, pop_blobs, strict=True):
        excerpts = [(f"{n.lower()} track alone", x) for n, x in track_files(b).items()]
        excerpts += [(f"8-bar {n.lower()} loops", x) for n, x in bar_windows(b)]
        for what, blob in excerpts:
            res = analyze_bytes(blob)
            if res.key_tonic is not None:
                by_kind.setdefault(what, []).append((int(s.name) <= 150, mirex(
                    (pitch_class(res.key_tonic), res.key_mode), longest_key(s))))
    for what, scores in sorted(by_kind.items()):
        acc.append((f"key MIREX, POP909 {what} (midid)", halves(scores)))
    acc.append(("key MIREX, POP909 (Albrecht-Shanahan profile)",
                halves((int(s.name) <= 150, mirex(albrecht_shanahan_key(b), longest_key(s)))
                       for s, b in zip(songs, pop_blobs, strict=True))))
    if m21:
        acc.append(("key MIREX, POP909 sample (music21)", halves(m21)))
    chord_fit = [(c, t) for f, c, t in chord_parts if f]
    chord_chk = [(c, t) for f, c, t in chord_parts if not f]
    ratio = lambda xs: sum(c for c, _ in xs) / sum(t for _, t in xs)  # noqa: E731
    acc.append(("chords maj/min by duration, POP909", (ratio(chord_fit), ratio(chord_chk),
                                                          ratio(chord_fit + chord_chk))))

    fit_flags = [r["drummer"] in FIT_DRUMMERS for r in rows]
    meta = [(f, float(res.bpm == float(r["bpm"]) and res.bpm_source == "meta"))
            for f, r, res in zip(fit_flags, rows, groove_res, strict=True)]
    acc.append(("BPM from tempo events, Groove", halves(meta)))
    beats = [(f, r, b) for f, r, b in zip(fit_flags, rows, groove_blobs, strict=True)
             if r["beat_type"] == "beat"]
    retimed = [retime_to_seconds(b) for _, _, b in beats]
    est = [analyze_bytes(b).bpm_estimate for b in retimed]
    acc.append(("bpm_estimate within 4 %, Groove beats (midid)",
                halves((f, float(within(e, float(r["bpm"])))) for (f, r, _), e in zip(beats, est))))
    acc.append(("bpm_estimate within 4 % any octave (midid)",
                halves((f, float(within(e, float(r["bpm"]), OCTAVES)))
                       for (f, r, _), e in zip(beats, est))))
    # What a pack file named "..._<bpm>bpm_..." gets: the name picks the octave the onsets
    # leave open (circular here, the label is the hint: it shows the choice, not the scan).
    named = [analyze_bytes(b, filename_bpm=float(r["bpm"])).bpm_estimate
             for b, (_, r, _) in zip(retimed, beats, strict=True)]
    acc.append(("bpm_estimate within 4 %, label as file-name BPM",
                halves((f, float(within(e, float(r["bpm"])))) for (f, r, _), e in zip(beats, named))))
    # As `midictl analyze` reads a Groove file under its own name ("100_neworleans-secondline_94_beat_4-4"):
    # the BPM that `name_metadata` finds in it, leading index number and all.
    own = [analyze_bytes(b, filename_bpm=name_bpm(r)).bpm_estimate for b, (_, r, _) in zip(retimed, beats, strict=True)]
    acc.append(("bpm_estimate within 4 %, under the file's own name",
                halves((f, float(within(e, float(r["bpm"])))) for (f, r, _), e in zip(beats, own))))
    # Drummer 2's "rock 130" session is played near 145 BPM against its 130 label (its ride
    # cymbal pulses every 0.41 s); shown apart so the score without it is visible too.
    labelled = [(f, r, e) for (f, r, _), e in zip(beats, est)
                if not (r["drummer"] == "drummer2" and r["style"] == "rock" and r["bpm"] == "130")]
    cut_est = [(f, float(r["bpm"]), analyze_bytes(cut).bpm_estimate) for (f, r, _), b
               in zip(beats, retimed, strict=True) for cut in single_part_files(b).values()]
    acc.append(("bpm_estimate within 4 %, single-part drum cuts",
                halves((f, float(within(e, bpm))) for f, bpm, e in cut_est)))
    acc.append(("... any octave, single-part drum cuts",
                halves((f, float(within(e, bpm, OCTAVES))) for f, bpm, e in cut_est)))
    acc.append(("... within 4 %, without drummer2 rock-130 session",
                halves((f, float(within(e, float(r["bpm"])))) for f, r, e in labelled)))
    if pretty_midi is not None:
        pm_est = [pretty_midi.PrettyMIDI(io.BytesIO(b)).estimate_tempo() for b in retimed]
        acc.append(("bpm_estimate within 4 % (pretty_midi)",
                    halves((f, float(within(e, float(r["bpm"]))))
                           for (f, r, _), e in zip(beats, pm_est))))
        acc.append(("bpm_estimate within 4 % any octave (pretty_midi)",
                    halves((f, float(within(e, float(r["bpm"]), OCTAVES)))
                           for (f, r, _), e in zip(beats, pm_est))))

    drums = [(int(s.name) <= 150, float(not r.is_drums)) for s, r in zip(songs, pop_res)]
    drums += [(f, float(r.is_drums)) for f, r in zip(fit_flags, groove_res)]
    acc.append(("drums vs melodic (midid)", halves(drums)))
    if pretty_midi is not None:
        def pm_drums(b: bytes) -> bool:
            insts = pretty_midi.PrettyMIDI(io.BytesIO(b)).instruments
            n_drum = sum(len(i.notes) for i in insts if i.is_drum)
            return n_drum * 2 >= sum(len(i.notes) for i in insts)
        pmd = [(int(s.name) <= 150, float(not pm_drums(b))) for s, b in zip(songs, pop_blobs)]
        pmd += [(f, float(pm_drums(b))) for f, b in zip(fit_flags, groove_blobs)]
        acc.append(("drums vs melodic (pretty_midi)", halves(pmd)))
    single = []
    for f, _, b in beats:
        for part, cut in single_part_files(b).items():
            single.append((f, float(analyze_bytes(cut).category == PART_CATEGORY[part])))
    acc.append((f"single-part drum files -> Drum* ({len(single)} files)", halves(single)))

    print(f"\n{'accuracy':52s} {'fit half':>9s} {'check':>7s} {'all':>7s}")
    for name, (a, b, c) in acc:
        print(f"{name:52s} {a:9.3f} {b:7.3f} {c:7.3f}")


# ----- fitting (softmax regression, numpy Adam) -----------------------------------------
def softmax_fit(x: np.ndarray, target: np.ndarray, w0: np.ndarray, l2: float,
                steps: int = 3000, lr: float = 0.05,
                sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Weights w maximising log P(target) with P = softmax over candidates of x @ w.

    ``x`` is (items, candidates, features); ``target`` a boolean (items, candidates) mask of
    the right answers; ``sample_weight`` (items,) how much each item counts (default 1).
    L2 pulls w towards the starting point ``w0``."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    ok = target.any(axis=1)
    x, target = x[ok], target[ok]
    weight = np.ones(len(x)) if sample_weight is None else sample_weight[ok] / sample_weight[ok].mean()
    for t in range(1, steps + 1):
        s = x @ w
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        q = p * target
        q /= q.sum(axis=1, keepdims=True)
        g = np.einsum("n,nc,ncf->f", weight, p - q, x) / len(x) + l2 * (w - w0)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def key_inputs(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pitch, duration in quarters, chord-root profiles) of a file's notes, as
    ``analyze_bytes`` passes them to ``find_key`` (POP909 has no drums)."""
    from midid.analysis.chords import chord_runs, root_profiles

    m = parse_midi(data)
    runs = chord_runs(m.start, m.end, m.pitch, m.tpq, m.voice)
    roots = root_profiles(runs, m.end.max() / m.tpq)
    return m.pitch, (m.end - m.start) / m.tpq, roots


def fit_key(l2: float = 1e-4) -> None:
    """Key templates: start from Albrecht-Shanahan, fit on POP909 001-150 (and, to show how
    much the halves differ, on 151-300), on what the analysis is given: whole songs, each
    track alone (the split stage's parts) and 8-bar loops (:func:`bar_windows`).

    Each song counts once whole, once spread over its tracks and once over its loops (a
    track weighs 1 / the song's track count, a loop 1 / its loop count). Scores are printed
    per kind."""
    from midid.analysis.key import key_features, key_matrix

    feats, truth, fit, kind, weight = [], [], [], [], []
    for song in pop909_songs():
        data = (song / f"{song.name}.mid").read_bytes()
        tonic, mode = longest_key(song)
        tracks, loops = track_files(data), bar_windows(data)
        for name, blob, share in [("song", data, 1.0)] + [
                (n, b, 1.0 / len(tracks)) for n, b in tracks.items()] + [
                (f"8 bars {n}", b, 1.0 / len(loops)) for n, b in loops]:
            profile = key_features(*key_inputs(blob))
            if not profile[:12].any():  # a drum-free window can still be empty of notes
                continue
            feats.append(profile)
            truth.append(tonic + 12 * (mode == "minor"))
            fit.append(int(song.name) <= 150)
            kind.append(name)
            weight.append(share)
    feats_arr, fit_arr, kind_arr = np.array(feats), np.array(fit), np.array(kind)
    n_prof = feats_arr.shape[1] // 12
    # x[n, key, j] = d score(key) / d weight j, since scores are linear in the templates.
    basis = np.eye(2 * n_prof * 12).reshape(-1, 2, n_prof, 12)
    x = np.stack([feats_arr @ key_matrix(b).T for b in basis], axis=-1)
    z = (ALBRECHT_SHANAHAN - ALBRECHT_SHANAHAN.mean(axis=1, keepdims=True)) / \
        ALBRECHT_SHANAHAN.std(axis=1, keepdims=True)
    w0 = np.zeros((2, n_prof, 12))
    w0[:, 0] = z
    target = np.eye(24, dtype=bool)[truth]
    for name, train in (("001-150", fit_arr), ("151-300", ~fit_arr)):
        w = softmax_fit(x[train], target[train], w0.ravel(), l2=l2,
                        sample_weight=np.array(weight)[train])
        best = np.argmax(x @ w, axis=1)
        scores = [mirex((b % 12, ("major", "minor")[b // 12]),
                        (t % 12, ("major", "minor")[t // 12])) for b, t in zip(best, truth)]
        for what in ("song", *sorted(set(kind) - {"song"})):
            chosen = kind_arr == what
            print(f"key templates fitted on {name}, {what:8s}: (001-150, 151-300, all) =",
                  tuple(round(v, 3) for v in halves(
                      (f, sc) for f, sc, c in zip(fit, scores, chosen) if c)))
        if train is fit_arr:
            templates = w.reshape(2, n_prof, 12)
    print(np.array2string(templates, precision=3, separator=", "))


def key_names(odds_tried: tuple[float, ...] = (1, 5, 10, 20, 50, 100)) -> None:
    """MIREX key score of POP909 tracks alone and 8-bar loops (what packs hold) when their name
    states the right key, its relative (a mislabel the notes cannot tell) or a random other
    key, for each odds `midid.analysis.key` could give the name (1 = no prior); per half."""
    from midid.analysis.key import _MATRIX, key_features

    rng = np.random.default_rng(1)
    probs: list[tuple[int, tuple[int, str], np.ndarray]] = []
    for song in pop909_songs():
        ref = longest_key(song)
        data = (song / f"{song.name}.mid").read_bytes()
        for blob in [*track_files(data).values(), *(b for _, b in bar_windows(data))]:
            pitch, dur, roots = key_inputs(blob)
            if pitch.size:
                scores = _MATRIX @ key_features(pitch, dur, roots)
                probs.append((int(int(song.name) > 150), ref, np.exp(scores - scores.max())))
    index = lambda key: key[0] + 12 * (key[1] == "minor")  # noqa: E731
    relative = lambda key: ((key[0] + 9) % 12, "minor") if key[1] == "major" else ((key[0] + 3) % 12, "major")  # noqa: E731
    others = {i: [j for j in range(24) if j != i] for i in range(24)}
    print(f"{len(probs)} excerpts; MIREX score, songs 001-150 | 151-300")
    print("odds  | right         | relative      | random")
    for odds in odds_tried:
        cells = []
        for namer in (lambda ref: index(ref), lambda ref: index(relative(ref)),
                      lambda ref: int(rng.choice(others[index(ref)]))):
            per_half = [[], []]
            for half, ref, p in probs:
                q = p.copy()
                q[namer(ref)] *= odds
                best = int(q.argmax())
                per_half[half].append(mirex((best % 12, "minor" if best >= 12 else "major"), ref))
            cells.append(" | ".join(f"{np.mean(h):.3f}" for h in per_half))
        print(f"{odds:5g} | " + " | ".join(cells))


def bar_windows(data: bytes, starts: tuple[int, ...] = (8, 24, 40), bars: int = 8,
                min_notes: int = 8) -> list[tuple[str, bytes]]:
    """8-bar loops cut from a song, as a pack holds them: bars 9-16, 25-32 and 41-48 (past
    the intro) of the whole arrangement and of each track alone, notes re-timed to the
    window's start, with the tempo map; windows with fewer than ``min_notes`` notes dropped.
    Named "arrangement" or by the track's name."""
    score = Score.from_midi(data)
    tpq = score.ticks_per_quarter
    out = []
    for start in starts:
        low, high = start * 4 * tpq, (start + bars) * 4 * tpq
        groups = [("arrangement", list(score.tracks))] + [
            (t.name.upper(), [t]) for t in score.tracks if len(t.notes)]
        for name, group in groups:
            cut = empty_like(score)
            for track in group:
                new = Track(track.name, track.program, track.is_drum)
                new.notes.extend(Note(n.time - low, n.duration, n.pitch, n.velocity)
                                 for n in track.notes if low <= n.time < high)
                cut.tracks.append(new)
            if sum(len(t.notes) for t in cut.tracks) >= min_notes:
                out.append((name, cut.dumps_midi()))
    return out


def track_files(data: bytes) -> dict[str, bytes]:
    """Each note-bearing track of a file alone (with the tempo map and time signatures), by
    track name: what the split stage hands the analysis."""
    score = Score.from_midi(data)
    out = {}
    for track in score.tracks:
        if len(track.notes):
            one = empty_like(score)
            one.tracks.append(track)
            out[track.name.upper() or f"TRACK{len(out) + 1}"] = one.dumps_midi()
    return out


# A file whose labelled beat has no periodicity in its onsets (autocorrelation of all onsets
# at the labelled beat below this) teaches the score nothing about its tempo: it is left out
# of the fit (still scored). In Groove these are drummer 2's "rock 130" session, played near
# 145 BPM, and a 5/4 prog groove.
UNSUPPORTED_ACF = 0.1


def tempo_inputs(row: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onsets in seconds, velocity / 127, tempo role) of a Groove file re-timed without
    tempo events, as ``analyze_bytes`` passes them to ``estimate_bpm``."""
    return onset_inputs(retime_to_seconds((CORPUS / "groove" / row["midi_filename"]).read_bytes()))


def onset_inputs(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onsets in seconds, velocity / 127, tempo role) of a file's notes, as ``analyze_bytes``
    passes them to ``estimate_bpm``."""
    from midid.analysis.analyze import _drum_notes, onset_roles

    m = parse_midi(data)
    return ticks_to_seconds(m.start, m), m.velocity / 127.0, onset_roles(m.pitch,
                                                                          _drum_notes(m, []))


def plain_acf_bpm(onset_s: np.ndarray, weight: np.ndarray) -> float | None:
    """Peer baseline: the autocorrelation of the onset envelope (velocity-weighted, 10 ms
    frames, first 20 s) at each beat lag, times a log-normal prior (120 BPM, one octave)."""
    frames = np.round(onset_s * 100).astype(np.int64)
    keep = (frames >= 0) & (frames < 2000)
    if np.unique(frames[keep]).size < 8:
        return None
    env = np.bincount(frames[keep], weights=weight[keep])
    env -= env.mean()
    n = 1 << int(np.ceil(np.log2(2 * env.size)))
    acf = np.fft.irfft(np.abs(np.fft.rfft(env, n)) ** 2)[: env.size]
    lags = np.arange(19, min(env.size, 151))  # 40-315 BPM
    bpm = 6000.0 / lags
    score = acf[lags] / (env.size - lags) * np.exp(-0.5 * np.log2(bpm / 120.0) ** 2)
    return float(bpm[int(np.argmax(score))])


def tempo_only() -> None:
    """bpm_estimate accuracy per half on re-timed Groove beats (the misses listed), next to
    the plain autocorrelation baseline on the same inputs, and the estimate's cost."""
    from midid.analysis.tempo import estimate_bpm

    rows = [r for r in groove_rows() if r["beat_type"] == "beat"]
    inputs = [tempo_inputs(r) for r in rows]
    fit = [r["drummer"] in FIT_DRUMMERS for r in rows]
    ours = [estimate_bpm(*i) for i in inputs]
    hinted = [estimate_bpm(*i, hint=float(r["bpm"])) for i, r in zip(inputs, rows, strict=True)]
    own = [estimate_bpm(*i, hint=name_bpm(r)) for i, r in zip(inputs, rows, strict=True)]
    plain = [plain_acf_bpm(o, w) for o, w, _ in inputs]
    print(f"{'tempo estimate, Groove beats':44s} {'fit half':>9s} {'check':>7s} {'all':>7s}")
    for name, est in (("midid", ours), ("midid + label as file-name BPM", hinted),
                      ("midid + BPM from its own name", own),
                      ("plain onset ACF + log prior", plain)):
        for label, factors in (("within 4 %", (1.0,)), ("any octave", OCTAVES)):
            a, b, c = halves((f, float(within(e, float(r["bpm"]), factors)))
                             for f, r, e in zip(fit, rows, est, strict=True))
            print(f"{name + ', ' + label:44s} {a:9.3f} {b:7.3f} {c:7.3f}")
    # Single-part drum files (each beat cut to each part with >= 8 hits), as analyze_bytes
    # estimates them (with PART_WEIGHTS) and as the kit weights alone would.
    cuts = [(f, part, float(r["bpm"]), cut) for f, r in zip(fit, rows, strict=True)
            for part, cut in single_part_files(retime_to_seconds(
                (CORPUS / "groove" / r["midi_filename"]).read_bytes())).items()]
    part_est = [analyze_bytes(cut).bpm_estimate for _, _, _, cut in cuts]
    kit_est = [estimate_bpm(*onset_inputs(cut)) for _, _, _, cut in cuts]
    for name, est in (("single-part cuts", part_est), ("single-part cuts, kit weights", kit_est)):
        for label, factors in (("within 4 %", (1.0,)), ("any octave", OCTAVES)):
            a, b, c = halves((f, float(within(e, bpm, factors)))
                             for (f, _, bpm, _), e in zip(cuts, est, strict=True))
            print(f"{name + ', ' + label:44s} {a:9.3f} {b:7.3f} {c:7.3f}")
    for part in sorted({p for _, p, _, _ in cuts}, key=PARTS.index):
        a, b, c = halves((f, float(within(e, bpm))) for (f, p, bpm, _), e
                         in zip(cuts, part_est, strict=True) if p == part)
        print(f"{'  ' + part + ' alone, within 4 %':44s} {a:9.3f} {b:7.3f} {c:7.3f}")
    # Pitched material: POP909 songs and their tracks re-timed the same way, against the
    # song's one tempo event (POP909's MIDI is beat-aligned to it). Nothing was fitted on it.
    pitched: dict[str, list[tuple[bool, float, float | None]]] = {}
    for song in pop909_songs():
        data = (song / f"{song.name}.mid").read_bytes()
        label = 60e6 / float(np.median(Score.from_midi(data).tempos.numpy()["mspq"]))
        retimed_song = retime_to_seconds(data)
        for name, blob in [("song", retimed_song), *track_files(retimed_song).items()]:
            pitched.setdefault(name, []).append(
                (int(song.name) <= 150, label, analyze_bytes(blob).bpm_estimate))
    for name, items in pitched.items():
        for label_, factors in (("within 4 %", (1.0,)), ("any octave", OCTAVES)):
            a, b, c = halves((f, float(within(e, bpm, factors))) for f, bpm, e in items)
            print(f"{'POP909 ' + name.lower() + ', ' + label_:44s} {a:9.3f} {b:7.3f} {c:7.3f}")
    for r, e in zip(rows, ours, strict=True):
        if not within(e, float(r["bpm"])):
            print(f"  miss {r['drummer']:9s} {r['style']:30s} {r['bpm']:>4s} -> {e} "
                  f"({e / float(r['bpm']):.3f}x)" if e else f"  miss {r['midi_filename']}")
    clock = time.perf_counter
    best = []
    for i in inputs:
        times = []
        for _ in range(5):
            t0 = clock()
            estimate_bpm(*i)
            times.append(clock() - t0)
        best.append(min(times))
    print(f"estimate_bpm: {np.mean(best) * 1000:.3f} ms per Groove beat (per-file best of 5)")


def tempo_fit_rows(with_parts: bool = False) -> tuple[list[tuple[np.ndarray, float, str, bool]],
                                                      list[tuple[np.ndarray, float, str, bool]]]:
    """(features, bpm, drummer, supported) of every Groove beat re-timed without tempo events,
    and of its single-part cuts when asked: what the tempo fits learn from."""
    from midid.analysis.tempo import CANDIDATES, FEATURE_NAMES, features

    kits: list[tuple[np.ndarray, float, str, bool]] = []
    parts: list[tuple[np.ndarray, float, str, bool]] = []
    for row in groove_rows():
        if row["beat_type"] != "beat":
            continue
        retimed = retime_to_seconds((CORPUS / "groove" / row["midi_filename"]).read_bytes())
        f = features(*onset_inputs(retimed))
        if f is None:
            continue
        bpm = float(row["bpm"])
        beat = np.abs(CANDIDATES / bpm - 1) <= 0.03
        # A file whose labelled beat has no periodicity in its onsets teaches nothing (its
        # parts neither): left out of the fit, still scored.
        supported = f[beat, FEATURE_NAMES.index("acf all 1")].max() >= UNSUPPORTED_ACF
        kits.append((f, bpm, row["drummer"], supported))
        for cut in single_part_files(retimed).values() if with_parts else ():
            g = features(*onset_inputs(cut))
            if g is not None:
                parts.append((g, bpm, row["drummer"], supported))
    return kits, parts


def comb_weights() -> np.ndarray:
    """Where every tempo fit starts: a plain metrical comb (beat, its half, its double and
    bar) with a log prior."""
    from midid.analysis.tempo import FEATURE_NAMES

    comb = {"acf all 0.5": 0.25, "acf all 1": 1.0, "acf all 2": 1.0, "acf all 4": 0.25,
            "log2 bpm/120 ^2": -0.6}
    return np.array([comb.get(name, 0.0) for name in FEATURE_NAMES])


def tempo_leave_one_drummer_out() -> None:
    """Whether more drummers in the fit would carry better to other drummers: the kit weights
    fitted as `--fit` does on all drummers but one, scored on that one."""
    from midid.analysis.tempo import CANDIDATES, WEIGHTS

    kits, _ = tempo_fit_rows()
    x = np.array([k[0] for k in kits])
    bpms = np.array([k[1] for k in kits])
    drummers = np.array([k[2] for k in kits])
    supported = np.array([k[3] for k in kits])
    target = np.abs(CANDIDATES[None, :] / bpms[:, None] - 1) <= 0.03
    held_out: dict[str, list[bool]] = {}
    for drummer in sorted(set(drummers)):
        train = (drummers != drummer) & supported
        w = softmax_fit(x[train], target[train], comb_weights(), l2=1e-2)
        est = CANDIDATES[np.argmax(x[drummers == drummer] @ w, axis=1)]
        held_out[drummer] = [within(e, b) for e, b in zip(est, bpms[drummers == drummer], strict=True)]
    shipped = CANDIDATES[np.argmax(x @ WEIGHTS, axis=1)]
    print(f"{'drummer':10s} {'beats':>6s} {'left out':>9s} {'shipped':>8s}")
    for drummer, hits in held_out.items():
        mine = drummers == drummer
        ours = np.mean([within(e, b) for e, b in zip(shipped[mine], bpms[mine], strict=True)])
        print(f"{drummer:10s} {len(hits):6d} {np.mean(hits):9.3f} {ours:8.3f}")
    check = [h for d, hits in held_out.items() if d not in FIT_DRUMMERS for h in hits]
    print(f"held-out drummers {', '.join(d for d in held_out if d not in FIT_DRUMMERS)} together: "
          f"left out {np.mean(check):.3f}")


def fit_tempo() -> None:
    """Tempo weights: fit on the beats of Groove drummers 1 and 2, check on 4, 5 and 10; the
    reverse fit (on 4, 5, 10, checked on 1, 2) is printed to show how far the fit carries.

    Two sets: one for whole kits (and everything else), one for single-part drum files (a
    kick, snare, hat ... pattern alone), fitted on each beat cut to each of its parts; a part
    alone has far fewer cues to its tempo, and a score fitted on kits reads most kick
    patterns at double or half time."""
    from midid.analysis.tempo import CANDIDATES

    kits, parts = tempo_fit_rows(with_parts=True)
    w0 = comb_weights()
    for what, items in (("WEIGHTS (kits)", kits), ("PART_WEIGHTS (single-part cuts)", parts)):
        x = np.array([i[0] for i in items])
        bpms = np.array([i[1] for i in items])
        fit_arr = np.array([i[2] in FIT_DRUMMERS for i in items])
        supported = np.array([i[3] for i in items])
        target = np.abs(CANDIDATES[None, :] / bpms[:, None] - 1) <= 0.03
        print(f"{what}: left out of the fit (labelled beat unsupported): "
              f"{int((~supported & fit_arr).sum())} of {int(fit_arr.sum())} (1, 2), "
              f"{int((~supported & ~fit_arr).sum())} of {int((~fit_arr).sum())} (4, 5, 10)")
        for name, train in (("1, 2", fit_arr), ("4, 5, 10", ~fit_arr)):
            w = softmax_fit(x[train & supported], target[train & supported], w0, l2=1e-2)
            est = CANDIDATES[np.argmax(x @ w, axis=1)]
            for label, factors in (("within 4 %", (1.0,)), ("any octave", OCTAVES)):
                hits = (within(e, b, factors) for e, b in zip(est, bpms, strict=True))
                scores = tuple(round(v, 3) for v in halves(zip(fit_arr, hits, strict=True)))
                print(f"tempo {label} fitted on {name}: (1, 2 / 4, 5, 10 / all) =", scores)
            if train is fit_arr:
                weights = w
        print(what, np.array2string(weights, precision=3, separator=", "))


def _key_speed(blobs: list[bytes]) -> float:
    """Seconds per file of the key step alone (profiles from parsed notes + template match)."""
    from midid.analysis.key import find_key

    inputs = [key_inputs(b) for b in blobs[:100]]
    t0 = time.perf_counter()
    for pitch, duration, roots in inputs:
        find_key(pitch, duration, roots)
    return (time.perf_counter() - t0) / len(inputs)


def albrecht_shanahan_key(data: bytes) -> tuple[int, str]:
    """Peer baseline: duration-weighted chroma correlated with Albrecht-Shanahan profiles."""
    m = parse_midi(data)
    chroma = np.bincount(m.pitch % 12, weights=(m.end - m.start).astype(float), minlength=12)
    best, best_key = -np.inf, (0, "major")
    for mode, profile in zip(("major", "minor"), ALBRECHT_SHANAHAN, strict=True):
        for tonic in range(12):
            r = np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]
            if r > best:
                best, best_key = r, (tonic, mode)
    return best_key


if __name__ == "__main__":
    main()
