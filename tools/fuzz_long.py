#!/usr/bin/env python3
"""The long garbage-MIDI run: the normal suite's fuzz cases (tests/fuzz), by the hundred thousand.

    .venv/bin/python tools/fuzz_long.py --cases 100000            # seeds 0..99,999
    .venv/bin/python tools/fuzz_long.py --cases 100000 --start 100000 --workers 2
    .venv/bin/python tools/fuzz_long.py --replay 4242 --write /tmp/case.mid

Each seed makes one mutant of a real corpus file (`tests/fuzz/mutate.py`) and runs it through
`analyze_bytes` and `split_midi` (`tests/fuzz/harness.py`). Seeds are cut into chunks run by
forked worker processes; each finished chunk is written to `--state` as a small JSON file, so
an interrupted run resumes where it stopped (run the same command again), and `--start` lets
several machines share a seed space.

Outcomes, per stage: ok, error (the documented exception with a reason), crash (any other
exception). Per case: hang (no result within `--hang-s`; the worker is killed) and died (the
worker process ended on a signal or exit code: a native crash, or the address-space limit
`--mem-mb` hit outside Python). A hung or dead case is recorded and the chunk goes on after it.
The summary lists every finding with the seed that replays it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import signal
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fuzz.harness import CRASH, check  # noqa: E402
from fuzz.mutate import load_bases, make_case  # noqa: E402

SLOW_S = 2.0


def corpus_bases(corpus: Path) -> list[tuple[str, bytes]]:
    """Every MIDI file of the shared corpus, or the repo's test files when it is absent."""
    paths = sorted(corpus.rglob("*.mid")) if corpus.is_dir() else []
    if not paths:
        print(f"no corpus at {corpus}; using tests/data", file=sys.stderr)
        paths = sorted((REPO / "tests" / "data").rglob("*.mid"))
    bases = load_bases(paths)
    names = [n for n, _ in bases]
    if len(set(names)) != len(names):  # same name in two folders: keep both, distinctly
        bases = sorted((str(p.relative_to(corpus)), p.read_bytes()) for p in paths)
    return bases


def warm_up(bases: list[tuple[str, bytes]]) -> None:
    """Run the stages on a few dozen cases (negative seeds, outside any run) before forking:
    every worker then inherits the imported modules and the numba kernels of every code path
    already compiled, so all of them run the same code even if the source files change on disk
    during a long run, and no worker's first case pays the JIT (seconds, not a hang)."""
    for seed in range(-64, 0):
        check(make_case(seed, bases).data)


def _work(lo: int, hi: int, bases: list[tuple[str, bytes]], state: Path, current, started, mem_mb: int) -> None:
    """Worker: run seeds lo..hi-1, publishing the seed in hand, then write the chunk file."""
    if mem_mb:
        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    counts: Counter[str] = Counter()
    findings: list[dict] = []
    slowest = 0.0
    for seed in range(lo, hi):
        current.value, started.value = seed, time.monotonic()
        try:
            case = make_case(seed, bases)
        except Exception as exc:  # noqa: BLE001 - a bug of the mutators, not of midid: report it, go on
            counts["harness error"] += 1
            findings.append({"seed": seed, "kind": "harness", "stage": "mutate", "case": f"seed {seed}",
                             "detail": f"{type(exc).__name__}: {exc}"})
            continue
        for outcome in check(case.data):
            counts[f"{outcome.stage} {outcome.kind}"] += 1
            slowest = max(slowest, outcome.seconds)
            if outcome.kind == CRASH or outcome.seconds > SLOW_S:
                kind = outcome.kind if outcome.kind == CRASH else "slow"
                findings.append({"seed": seed, "kind": kind, "stage": outcome.stage, "case": case.label(),
                                 "detail": outcome.detail[:300], "seconds": round(outcome.seconds, 3)})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _write_chunk(state, lo, hi, {"counts": counts, "findings": findings, "slowest_s": round(slowest, 3),
                                 "peak_rss_mb": round(peak_mb, 1)})


def _write_chunk(state: Path, lo: int, hi: int, result: dict) -> None:
    path = state / f"chunk-{lo:09d}-{hi:09d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


def _done_seeds(state: Path) -> set[int]:
    done: set[int] = set()
    for path in state.glob("chunk-*.json"):
        _, lo, hi = path.stem.split("-")
        done.update(range(int(lo), int(hi)))
    return done


def _plan(start: int, cases: int, chunk: int, done: set[int]) -> list[tuple[int, int]]:
    """Contiguous runs of seeds not yet done, at most `chunk` long."""
    runs: list[tuple[int, int]] = []
    lo = None
    for seed in range(start, start + cases + 1):
        todo = seed < start + cases and seed not in done
        if todo and lo is None:
            lo = seed
        if lo is not None and (not todo or seed - lo >= chunk):
            runs.append((lo, seed))
            lo = seed if todo else None
    return runs


def run(start: int, cases: int, workers: int, chunk: int, state: Path, hang_s: float, mem_mb: int,
        bases: list[tuple[str, bytes]]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    queue = _plan(start, cases, chunk, _done_seeds(state))
    total = sum(hi - lo for lo, hi in queue)
    print(f"{cases:,} seeds from {start:,}: {total:,} to run in {len(queue)} chunk(s) on {workers} worker(s), "
          f"{len(bases)} base files; state in {state}", flush=True)
    ctx = multiprocessing.get_context("fork")
    active: list[tuple[multiprocessing.Process, int, int, object, object]] = []
    began, last_report = time.monotonic(), 0.0
    try:
        while queue or active:
            while queue and len(active) < workers:
                lo, hi = queue.pop(0)
                current, started = ctx.Value("q", lo), ctx.Value("d", time.monotonic())
                proc = ctx.Process(target=_work, args=(lo, hi, bases, state, current, started, mem_mb), daemon=True)
                proc.start()
                active.append((proc, lo, hi, current, started))
            time.sleep(0.2)
            for entry in list(active):
                proc, lo, hi, current, started = entry
                hung = proc.is_alive() and time.monotonic() - started.value > hang_s
                if hung:
                    proc.kill()
                proc.join(0 if not hung else 5)
                if proc.is_alive():
                    continue
                active.remove(entry)
                if proc.exitcode == 0 and not hung:
                    continue
                seed = current.value
                kind = "hang" if hung else "died"
                detail = f"no result within {hang_s:g} s" if hung else f"worker exit code {proc.exitcode}"
                label = make_case(seed, bases).label()
                _write_chunk(state, seed, seed + 1, {"counts": {kind: 1}, "findings": [
                    {"seed": seed, "kind": kind, "stage": "", "case": label, "detail": detail}]})
                print(f"  {kind}: {label} ({detail})", flush=True)
                queue[:0] = [r for r in ((lo, seed), (seed + 1, hi)) if r[1] > r[0]]
            now = time.monotonic()
            if now - last_report > 30:
                last_report = now
                left = sum(hi - lo for lo, hi in queue) + sum(hi - c.value for _, _, hi, c, _ in active)
                print(f"  {now - began:,.0f} s: {total - left:,}/{total:,} seeds", flush=True)
    finally:
        for proc, *_ in active:
            proc.kill()
    summarize(state, start, cases, time.monotonic() - began, total)


def summarize(state: Path, start: int, cases: int, elapsed: float, ran: int) -> None:
    counts: Counter[str] = Counter()
    findings: list[dict] = []
    slowest, peak, seeds = 0.0, 0.0, 0
    for path in sorted(state.glob("chunk-*.json")):
        _, lo, hi = path.stem.split("-")
        if int(hi) <= start or int(lo) >= start + cases:
            continue
        result = json.loads(path.read_text())
        seeds += int(hi) - int(lo)
        counts.update(result["counts"])
        findings += result["findings"]
        slowest = max(slowest, result.get("slowest_s", 0.0))
        peak = max(peak, result.get("peak_rss_mb", 0.0))
    rate = f", {ran / elapsed:,.0f} cases/s this run" if ran and elapsed else ""
    print(f"\n{seeds:,} cases (seeds {start:,}..{start + cases - 1:,}){rate}")
    for stage in ("analyze", "split"):
        print(f"  {stage:8} " + "  ".join(f"{kind} {counts[f'{stage} {kind}']:,}" for kind in ("ok", "error", "crash")))
    print(f"  per case  hang {counts['hang']:,}  died {counts['died']:,}  harness errors {counts['harness error']:,}")
    print(f"  slowest stage call {slowest:.2f} s; peak worker RSS {peak:.0f} MB")
    for finding in sorted(findings, key=lambda f: f["seed"])[:100]:
        print(f"  [{finding['kind']}] {finding['case']} {finding['stage']}: {finding['detail']}")
    if len(findings) > 100:
        print(f"  ... and {len(findings) - 100} more in {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunk", type=int, default=500, help="seeds per worker process")
    parser.add_argument("--hang-s", type=float, default=20.0, help="a case taking longer is a hang")
    parser.add_argument("--mem-mb", type=int, default=3072, help="address-space limit per worker (0: none)")
    parser.add_argument("--state", type=Path, default=REPO / ".fuzz-long", help="chunk results (resume)")
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--replay", type=int, metavar="SEED", help="run one seed and print its outcome")
    parser.add_argument("--write", type=Path, help="with --replay: also write the mutant to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    bases = corpus_bases(args.corpus)
    warm_up(bases)
    if args.replay is not None:
        case = make_case(args.replay, bases)
        if args.write:
            args.write.write_bytes(case.data)
        print(case.label(), f"({len(case.data):,} bytes)")
        for outcome in check(case.data):
            print(f"  {outcome.stage}: {outcome.kind} in {outcome.seconds:.3f} s: {outcome.detail}")
        return
    run(args.start, args.cases, args.workers, args.chunk, args.state, args.hang_s, args.mem_mb, bases)


if __name__ == "__main__":
    main()
