"""The whole one-shot pipeline (issue 4): `midictl import` end to end against a bare parse loop.

Usage: `.venv/bin/python benchmarks/pipeline.py [--n 20000 [100000 ...]] [--profile DIR]`

For each N, N distinct files (80 % Groove drum loops, 20 % POP909 three-track songs, see
`common.py`) are written to a scratch folder, then in the same run:
  (a) bare: one process reads each file, hashes it (xxh3-128) and parses it with
      `symusic.Score.from_midi` — the floor of any pipeline that looks inside the files;
  (b) `midictl import --json DIR` as a subprocess with a default config (Ray actor pools when
      N is at least `[pipeline] local_below`, 2,000; below it midictl runs the same stages
      in-process without Ray): wall time from spawn to exit, Ray start-up included, with the
      summed RSS and PSS of midictl and every descendant (raylet, GCS, the actors) sampled
      from /proc every 0.5 s, and the same sums over the driver and the pool workers alone
      (issue 4's "peak RSS of driver + workers"; Ray's services are the rest).
(b)'s CPU seconds are also summed per process kind (driver, pool workers, Ray services), which
shows whether the driver or the pools limit the run.
"b/a" is (b)'s files/s over (a)'s: the share of the bare rate the real pipeline keeps. Input
files/s counts the N input files; the pipeline also analyses the split parts (3 per song), so
"analysed" is larger than N. Per-stage rates come from the library's `progress` table (one row
per committed batch): stage span is first to last commit of that stage, rate = rows / span.
Goals (issue 4): >= 5,000 files/s end to end, >= 25 % of the bare rate, RSS <= 1 GiB and flat
from 20k to 100k.

`--extra TOML` appends settings to the throw-away config (`\\n` for new lines), e.g.
`--extra '[pipeline]\\nlocal_below = 0'` to force Ray for a small N, or a large
`local_below` to run a big N in-process.

`--profile DIR` runs (b) once more under `py-spy record --subprocesses` (that run is not
timed: sampling slows it) and prints where the driver and the Ray workers spend their time:
top functions by self time and midid functions by inclusive time, per process kind. DIR gets
`profile.txt`, py-spy's raw collapsed stacks (draw them with flamegraph.pl, inferno or
speedscope).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from common import (VENV_BIN, Corpus, TreeSampler, exit_cleanly_on_signals, load_corpus, print_table,  # noqa: E402
                    scratch, self_peak_rss_mib, write_config, write_inputs)


def bare_parse(paths: list[str]) -> dict[str, Any]:
    """(a): read + xxh3-128 + symusic parse of every file, one process."""
    import symusic
    import xxhash

    start = time.perf_counter()
    notes = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        xxhash.xxh3_128_hexdigest(data)
        notes += sum(len(t.notes) for t in symusic.Score.from_midi(data).tracks)
    return {"seconds": time.perf_counter() - start, "peak_mib": self_peak_rss_mib(), "notes": notes}


def in_child(fn: Any, *args: Any) -> Any:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run_midictl(config: Path, inputs: Path, wrap: list[str] | None = None) -> dict[str, Any]:
    """(b): `midictl import --json` as a subprocess; wall time, summary and tree memory peaks."""
    cmd = [*(wrap or []), str(VENV_BIN / "midictl"), "--config", str(config), "import", "--json", str(inputs)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeSampler(proc.pid) as sampler:
        out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"midictl import failed ({proc.returncode}):\n{err[-3000:]}")
    # py-spy, when it wraps the command, prints its own lines after midictl's JSON.
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return {"seconds": seconds, "summary": summary, "worker_deaths": err.count("worker died"),
            "peak_rss_mib": sampler.peak_rss_mib, "peak_pss_mib": sampler.peak_pss_mib,
            "processes": sampler.peak_processes, "cpu_seconds": sampler.cpu_seconds,
            "peak_own_rss_mib": sampler.peak_own_rss_mib, "peak_own_pss_mib": sampler.peak_own_pss_mib}


def stage_rates(database: Path) -> list[tuple[str, int, float, float, float]]:
    """(stage, rows, first commit s, span s, rows/s) from the progress table, times relative
    to the first import commit."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT stage, sum(count), min(at), max(at) FROM progress GROUP BY stage").fetchall()
    finally:
        conn.close()
    t0 = min(r[2] for r in rows)
    order = {"import": 0, "sanitize": 1, "split": 2, "analyze": 3, "rename": 4}
    out = []
    for stage, count, first, last in sorted(rows, key=lambda r: order.get(r[0], 9)):
        span = last - first
        out.append((stage, int(count), first - t0, span, count / span if span > 0 else float("nan")))
    return out


def one_size(n: int, corpus: Corpus, profile_dir: Path | None, extra: str) -> dict[str, Any]:
    with scratch(f"pipeline{n}") as tmp:
        inputs = tmp / "inputs"
        made = time.perf_counter()
        paths = write_inputs(inputs, n, corpus)
        print(f"wrote {n:,} distinct files in {time.perf_counter() - made:.1f} s", flush=True)
        bare = in_child(bare_parse, [str(p) for p in paths])
        print(f"bare: {n / bare['seconds']:,.0f} files/s", flush=True)
        real = run_midictl(write_config(tmp / "lib", extra), inputs)
        stages = stage_rates(tmp / "lib" / "midid.sqlite3")
        print(f"midictl import: {real['seconds']:.1f} s, {n / real['seconds']:,.0f} files/s", flush=True)
        if profile_dir:
            profile_dir.mkdir(parents=True, exist_ok=True)
            raw = profile_dir / "profile.txt"
            run_midictl(write_config(tmp / "prof", extra), inputs,
                        [str(VENV_BIN / "py-spy"), "record", "--subprocesses", "--format", "raw",
                         "-r", "50", "-o", str(raw), "--"])
            report_profile(raw)
    return {"n": n, "bare": bare, "real": real, "stages": stages}


_LINE = re.compile(r":\d+\)$")


def _kind(process: str) -> str:
    """Which kind of process a py-spy `process PID:"cmdline"` label is."""
    if "midictl" in process:
        return "driver (midictl)"
    if "default_worker.py" in process or "ray::" in process:
        return "Ray workers"
    return "other Ray processes"


def report_profile(raw: Path) -> None:
    """Self and inclusive sample counts per process kind from py-spy's raw collapsed stacks."""
    selfs: dict[str, Counter[str]] = defaultdict(Counter)
    incl: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # With --subprocesses a stack starts with the chain of processes down to the sampled one.
        parts = stack.split(";")
        chain = [p for p in parts if p.startswith("process ")]
        # The first process is the one py-spy started, midictl (its label can be empty: py-spy
        # may fail to read the command line of the process it spawned).
        kind = "driver (midictl)" if len(chain) == 1 else _kind(chain[-1] if chain else "")
        n = int(count)
        totals[kind] += n
        names = [_LINE.sub(")", f) for f in parts[len(chain):]]
        if names:
            selfs[kind][names[-1]] += n
        for name in set(names):
            if name.split(" (")[-1].startswith("midid/"):
                incl[kind][name] += n
    for kind in sorted(totals):
        total = totals[kind]
        print_table(f"profile: {kind}, {total:,} samples (self time)", ("function", "samples", "%"),
                    [(name, c, 100 * c / total) for name, c in selfs[kind].most_common(15)])
        if incl[kind]:
            print_table(f"profile: {kind}, midid functions (inclusive)", ("function", "samples", "%"),
                        [(name, c, 100 * c / total) for name, c in incl[kind].most_common(15)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000], help="input sizes, e.g. --n 20000 100000")
    parser.add_argument("--profile", type=Path, help="folder for a py-spy profile of the first size")
    parser.add_argument("--extra", default="", help=r"TOML appended to the config, e.g. '[pipeline]\nlocal_below = 0'")
    args = parser.parse_args()
    extra = args.extra.replace("\\n", "\n")
    exit_cleanly_on_signals()
    corpus = load_corpus()
    results = [one_size(n, corpus, args.profile if i == 0 else None, extra) for i, n in enumerate(args.n)]
    rows = []
    for r in results:
        n, bare, real, s = r["n"], r["bare"], r["real"], r["real"]["summary"]
        bare_rate, real_rate = n / bare["seconds"], n / real["seconds"]
        rows.append((f"{n:,}", bare_rate, bare["peak_mib"], real["seconds"], real_rate,
                     f"{100 * real_rate / bare_rate:.1f} %",
                     s["analysed"] + s["analysis_errors"], s["split_parts"], s["errors"] + s["analysis_errors"],
                     real["peak_rss_mib"], real["peak_pss_mib"], real["peak_own_rss_mib"], real["peak_own_pss_mib"],
                     real["processes"], real["worker_deaths"]))
    print_table("pipeline: (a) bare read+hash+symusic parse vs (b) `midictl import` end to end",
                ("N", "(a) files/s", "(a) RSS MiB", "(b) wall s", "(b) files/s", "b/a", "analysed", "parts",
                 "errors", "(b) peak RSS sum MiB", "(b) peak PSS sum MiB", "driver+workers RSS MiB",
                 "driver+workers PSS MiB", "procs", "worker deaths"), rows)
    for r in results:
        cpu = r["real"]["cpu_seconds"]
        total = sum(cpu.values())
        print_table(f"(b) CPU seconds by process, N = {r['n']:,} ({total:.1f} s in all over {r['real']['seconds']:.1f} s "
                    f"of wall time on {os.cpu_count()} cores)",
                    ("process", "CPU s", "share"),
                    [(kind, seconds, f"{100 * seconds / total:.0f} %") for kind, seconds in
                     sorted(cpu.items(), key=lambda kv: -kv[1])])
        print_table(f"per-stage commits, N = {r['n']:,} (seconds after the first import commit)",
                    ("stage", "rows", "starts s", "span s", "rows/s"), r["stages"])


if __name__ == "__main__":
    main()
