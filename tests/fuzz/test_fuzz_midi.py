"""Garbage MIDI: seeded mutants of real files through analyze, split, `midictl analyze` and the pipeline.

Every input must get exactly one outcome — a result, or an error with a reason — with no
exception of another kind, no hang (a generous per-file bound, not a speed test) and no
memory blow-up. The same cases, by the hundred thousand, run in `tools/fuzz_long.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import DATA, write_config
from fuzz.harness import CRASH, ERROR, OK, check, check_analyze
from fuzz.mutate import MUTATORS, giant_track, huge_delta_times, load_bases, make_case, overlong_vlq
from midid.analysis import AnalysisError, analyze_bytes
from midid.sniff import SNIFF_BYTES, sniff_kind

MIDICTL = [sys.executable, "-m", "midid.ctl"]
SUITE_SEEDS = range(300)
HANG_S = 2.0  # CPU seconds per file and stage: a hang detector with a generous bound
GROWTH_LIMIT_KB = 64 * 1024  # what a hostile file may add over a normal one, in the same code


@pytest.fixture(scope="module")
def bases() -> list[tuple[str, bytes]]:
    """Real files shipped with the repo (Groove drums, POP909 songs; licenses beside them)."""
    return load_bases(sorted((DATA / "midi").glob("*.mid")) + sorted((DATA / "split").glob("*.mid")))


@pytest.fixture(scope="module")
def outcomes(bases):
    for _, data in bases:  # compile the numba kernels (or load them from their cache) untimed
        check(data)
    return [(make_case(seed, bases), check(make_case(seed, bases).data)) for seed in SUITE_SEEDS]


def test_every_mutant_gets_a_result_or_an_error_with_a_reason(outcomes) -> None:
    crashes = [f"{case.label()}: {o.stage} {o.detail}" for case, pair in outcomes for o in pair if o.kind == CRASH]
    assert not crashes, "\n".join(crashes)
    for case, pair in outcomes:
        for o in pair:
            assert o.kind in (OK, ERROR)
            assert o.detail.strip(), f"{case.label()}: {o.stage} gave no reason"
    kinds = Counter((o.stage, o.kind) for _, pair in outcomes for o in pair)
    # Both outcomes must really occur, or the mutators (or the stages) have stopped doing anything.
    for stage in ("analyze", "split"):
        assert kinds[(stage, OK)] and kinds[(stage, ERROR)], kinds


def test_no_mutant_hangs_a_stage(outcomes) -> None:
    slow = [(round(o.seconds, 2), case.label(), o.stage) for case, pair in outcomes for o in pair
            if o.seconds > HANG_S]
    assert not slow, slow


def test_the_cases_cover_every_mutator_and_really_change_the_files(outcomes, bases) -> None:
    used = Counter(m for case, _ in outcomes for m in case.mutators)
    assert set(used) == set(MUTATORS), set(MUTATORS) - set(used)
    originals = {data for _, data in bases}
    unchanged = [case.label() for case, _ in outcomes if case.data in originals]
    assert len(unchanged) <= len(outcomes) // 50, unchanged
    assert make_case(7, bases) == make_case(7, bases), "a seed must replay the same case"


def test_overlong_delta_time_is_damage_not_a_crash(bases) -> None:
    """mido reads variable-length numbers of any length; a run of 0xFF bytes used to become a
    delta time too large for int64 (OverflowError) in the lenient parser."""
    song = dict(bases)["pop909_003.mid"]
    for seed in range(20):
        mutant = overlong_vlq(song, random.Random(seed))
        assert mutant != song
        try:
            analyze_bytes(mutant)
        except AnalysisError:
            pass


def test_tick_overflow_in_symusic_falls_back_instead_of_crashing(bases) -> None:
    """Sixty-four delta times of 0x0FFFFFFF overflow symusic's 32-bit ticks into negative note
    times, which crashed chord detection (np.bincount of negative segments)."""
    for name in ("pop909_235.mid", "pop909_003.mid"):
        for seed in range(10):
            mutant = huge_delta_times(dict(bases)[name], random.Random(seed))
            try:
                result = analyze_bytes(mutant)
            except AnalysisError:
                continue
            assert result.duration_s >= 0 and all(c["beat"] >= 0 for c in result.chords)


def test_midictl_analyze_gives_exactly_one_line_per_input(tmp_path: Path, outcomes) -> None:
    cases = [case for case, _ in outcomes[:200]]
    paths = []
    for case in cases:
        path = tmp_path / f"case_{case.seed:04d}.mid"
        path.write_bytes(case.data)
        paths.append(str(path))
    (tmp_path / "empty.mid").write_bytes(b"")
    paths += [str(tmp_path / "empty.mid"), str(tmp_path / "missing.mid"), str(tmp_path)]
    done = subprocess.run([*MIDICTL, "analyze", "--json", *paths], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in rows] == paths
    for (case, (expected, _)), row in zip(outcomes[:200], rows):
        assert row["ok"] == (expected.kind == OK), (case.label(), row["error"], expected)
        assert row["ok"] or (row["error"] and not row["error"].startswith("internal error")), case.label()
    for row in rows[len(cases):]:
        assert row["ok"] is False and row["error"], row


def _peak_rss_kb(path: Path) -> tuple[int, list]:
    """Run both stages on one file in a fresh process; its peak RSS (KB) and outcomes."""
    code = ("import json, sys\n"
            "from fuzz.harness import check\n"
            "print(json.dumps([[o.kind, o.detail] for o in check(open(sys.argv[1], 'rb').read())]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    # wait4 is getrusage(RUSAGE_CHILDREN) for this one child: earlier children of the test
    # process (Ray, other subprocesses) cannot pollute the peak.
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss, json.loads(out)


def test_a_1_kb_file_declaring_a_4_gb_track_is_not_allocated(tmp_path: Path, bases) -> None:
    song = dict(bases)["pop909_003.mid"]
    giant = giant_track(song, random.Random(0))
    assert len(giant) < 1100 and giant[14:18] == b"MTrk" and giant[18:22] == b"\xff\xff\xff\xff"
    (tmp_path / "giant.mid").write_bytes(giant)
    (tmp_path / "normal.mid").write_bytes(song)
    # The interpreter, numpy, symusic and the loaded numba kernels alone take 150-300 MB
    # depending on the machine: compare with the same process analysing a normal file.
    baseline_kb, _ = _peak_rss_kb(tmp_path / "normal.mid")
    peak_kb, results = _peak_rss_kb(tmp_path / "giant.mid")
    assert [kind for kind, _ in results] != [] and all(kind in (OK, ERROR) for kind, _ in results), results
    assert peak_kb < baseline_kb + GROWTH_LIMIT_KB, f"peak RSS {peak_kb / 1024:.0f} MB vs {baseline_kb / 1024:.0f} MB"


def test_mutants_through_the_real_pipeline_are_all_accounted_for(tmp_path: Path, bases) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cases = [make_case(seed, bases) for seed in range(1000, 1050)]
    by_path = {}
    for case in cases:
        path = src / f"mutant_{case.seed}.mid"
        path.write_bytes(case.data)
        by_path[str(path)] = case
    config = write_config(tmp_path)
    done = subprocess.run([*MIDICTL, "--config", str(config), "import", "--local", "--json", str(src)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    midi = [c for c in cases if sniff_kind(c.data[:SNIFF_BYTES]) == "midi"]
    distinct = {hashlib.sha256(c.data).digest() for c in midi}
    assert summary["seen"] == len(cases)
    assert summary["imported"] + summary["duplicates"] + summary["skipped"] + summary["errors"] == summary["seen"]
    assert summary["skipped"] == len(cases) - len(midi)
    assert summary["imported"] == len(distinct) and summary["errors"] == 0
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(
            "SELECT s.disk_path, f.id, f.analysed_at IS NOT NULL, f.error, f.split_at IS NOT NULL"
            " FROM sources s JOIN files f ON f.id = s.file_id WHERE s.kind = 'file'").fetchall()
        files = conn.execute("SELECT id, analysed_at IS NOT NULL, error FROM files").fetchall()
        analysis_ids = [r[0] for r in conn.execute("SELECT file_id FROM analysis")]
    assert {r[0] for r in rows} == {str(src / f"mutant_{c.seed}.mid") for c in midi}
    for disk_path, _, analysed, error, split in rows:
        case = by_path[disk_path]
        assert analysed != bool(error), case.label()
        assert split, f"{case.label()}: never split (nor recorded as a split error)"
        assert analysed == (check_analyze(case.data).kind == OK), (case.label(), error)
    for file_id, analysed, error in files:  # split parts included
        assert analysed != bool(error), file_id
    assert sorted(analysis_ids) == sorted(f[0] for f in files if f[1])
    assert summary["analysed"] + summary["analysis_errors"] == len(files)
