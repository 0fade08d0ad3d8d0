"""The real daemon (issues 5 and 6): drop-to-library latency, and a 20,000-file flood.

Usage: `.venv/bin/python benchmarks/daemon.py [--drops 30] [--flood 20000] [--settle 2.0]`

Starts `python -m midid.daemon --config ...` with one watched source folder, `[export] enabled
= false` and otherwise default settings (local Ray on all cores, `[watch] settle_s` from
--settle), with a real NOTIFY_SOCKET, and waits for READY=1 (its start-up time is reported).

Latency: `--drops` small distinct Groove files are written one at a time straight into the
watched folder (written in place, so the watcher sees close-after-write), each after the
previous one was analysed. The library database is polled every 10 ms through a read-only
connection: "row" is when the file's `sources` row (and so its `files` row) is visible,
"analysed" when its `files.analysed_at` is set. Goal: p95 <= 2 s.

Flood: `--flood` distinct files (80 % Groove, 20 % POP909 songs that split into 3 parts) are
written outside, then copied into the watched folder at once with `cp -r` (another process, as
a user's copy would be). Reported: time until every file has a row and until the whole queue is
analysed, the summed RSS/PSS of the daemon and its Ray processes (idle after READY, and the
peak, sampled every 0.5 s), and the check that nothing was imported twice (rows, distinct
hashes and source rows all equal the number copied). The baseline is the `cp -r` itself:
"x cp" is how many times longer the daemon took to absorb the files than it took to copy them.
A progress trace (rows visible and files analysed every ~10 s) shows whether the rate holds;
after --timeout the flood is reported as far as it got. The daemon is stopped with SIGTERM
(SIGKILL after 120 s) and the count of "worker died" lines in its log is printed: a non-zero
count means actors crashed (e.g. the checkout changed under the run) and the figures are suspect.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "tests")]

from common import (REPO, TreeSampler, count_in_file, distinct_variant, exit_cleanly_on_signals,  # noqa: E402
                    load_corpus, percentile, print_table, scratch, write_config, write_inputs)
from notifysock import NotifySocket  # noqa: E402


def start_daemon(tmp: Path, config: Path) -> tuple[subprocess.Popen[bytes], NotifySocket, float]:
    notify = NotifySocket(tmp / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path))
    log = open(tmp / "daemon.log", "ab")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "midid.daemon", "--config", str(config)],
                            stdout=log, stderr=log, env=env, cwd=REPO)
    log.close()
    try:
        notify.wait_for("READY=1", 120, proc=proc)
    except AssertionError as exc:
        sys.exit(f"{exc}\n{(tmp / 'daemon.log').read_text()[-3000:]}")
    return proc, notify, time.perf_counter() - start


def connect(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)


def drop_latency(db: sqlite3.Connection, folder: Path, groove: list[bytes], drops: int) -> list[tuple[float, float]]:
    """(row seconds, analysed seconds) after each file was written and closed."""
    out = []
    for i in range(drops):
        path = folder / f"drop_{i:03d}_beat.mid"
        path.write_bytes(distinct_variant(groove[i % len(groove)], 10_000_000 + i))
        dropped = time.monotonic()
        row_at = None
        while True:
            found = db.execute("SELECT f.analysed_at, f.error FROM sources s JOIN files f ON f.id = s.file_id"
                               " WHERE s.disk_path = ?", [str(path)]).fetchone()
            now = time.monotonic()
            if found and row_at is None:
                row_at = now - dropped
            if found and (found[0] is not None or found[1] is not None):
                out.append((row_at, now - dropped))
                break
            if now - dropped > 60:
                raise RuntimeError(f"{path.name} not analysed within 60 s")
            time.sleep(0.01)
        time.sleep(0.2)
    return out


def flood(db: sqlite3.Connection, source: Path, watched: Path, n: int, pid: int,
          timeout_s: float) -> dict[str, Any]:
    """Copy `source` into `watched` with cp -r; wait until imported and analysed; check counts.

    Gives up after `timeout_s` and reports how far it got; `trace` holds (seconds, rows visible,
    files analysed) every ~10 s, which shows whether the rate holds up or decays."""
    like = f"{watched / source.name}/%"
    trace: list[tuple[float, int, int]] = []
    imported_at = analysed_at = None
    with TreeSampler(pid) as sampler:
        start = time.monotonic()
        subprocess.run(["cp", "-r", str(source), str(watched)], check=True)
        copied = time.monotonic() - start
        while True:
            rows = db.execute("SELECT count(*) FROM sources WHERE disk_path LIKE ?", [like]).fetchone()[0]
            analysed, queued, unsplit = db.execute(
                "SELECT count(analysed_at), sum(analysed_at IS NULL AND error IS NULL),"
                " sum(split_at IS NULL AND parent_id IS NULL AND error IS NULL) FROM files").fetchone()
            now = time.monotonic() - start
            if not trace or now - trace[-1][0] >= 10:
                trace.append((now, rows, analysed))
            if rows >= n and imported_at is None:
                imported_at = now
            if rows >= n and not queued and not unsplit:
                analysed_at = now
                break
            if now > timeout_s:
                trace.append((now, rows, analysed))
                break
            time.sleep(0.25)
    files, hashes = db.execute(
        "SELECT count(*), count(DISTINCT hash) FROM files WHERE id IN"
        " (SELECT file_id FROM sources WHERE disk_path LIKE ?)", [like]).fetchone()
    sources, paths = db.execute(
        "SELECT count(*), count(DISTINCT disk_path) FROM sources WHERE disk_path LIKE ?", [like]).fetchone()
    parts, parts_analysed, errors = db.execute(
        "SELECT count(*), count(analysed_at), count(error) FROM files WHERE parent_id IN"
        " (SELECT file_id FROM sources WHERE disk_path LIKE ?)", [like]).fetchone()
    return {"copy_s": copied, "imported_s": imported_at, "analysed_s": analysed_at, "files": files,
            "hashes": hashes, "sources": sources, "twice": (sources - paths) + (files - hashes), "parts": parts,
            "parts_analysed": parts_analysed, "part_errors": errors, "trace": trace,
            "peak_rss_mib": sampler.peak_rss_mib, "peak_pss_mib": sampler.peak_pss_mib}


def stop_daemon(proc: subprocess.Popen[bytes], grace_s: float = 120) -> str:
    """SIGTERM, then SIGKILL after `grace_s`; says which it took."""
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = proc.wait(grace_s)
        return f"exit code {code} {time.monotonic() - started:.1f} s after SIGTERM"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"did not stop within {grace_s:.0f} s of SIGTERM; killed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=30, help="single files dropped one at a time")
    parser.add_argument("--flood", type=int, default=20_000, help="files copied in at once (0: skip)")
    parser.add_argument("--settle", type=float, default=2.0, help="[watch] settle_s")
    parser.add_argument("--timeout", type=float, default=900, help="give up on the flood after this many s")
    args = parser.parse_args()
    exit_cleanly_on_signals()
    corpus = load_corpus()
    with scratch("daemon") as tmp:
        watched = tmp / "watched"
        (watched / "drops").mkdir(parents=True)
        outside = tmp / "outside" / "flood"
        if args.flood:
            write_inputs(outside, args.flood, corpus)
        config = write_config(tmp, f'[sources]\nfolders = ["{watched}"]\n[watch]\nsettle_s = {args.settle}\n'
                                   "[export]\nenabled = false\n")
        proc, notify, ready_s = start_daemon(tmp, config)
        try:
            idle = TreeSampler(proc.pid)
            idle.sample()
            db = connect(tmp / "midid.sqlite3")
            lat = drop_latency(db, watched / "drops", corpus.groove, args.drops)
            result = flood(db, outside, watched, args.flood, proc.pid, args.timeout) if args.flood else None
            db.close()
        finally:
            stopped = stop_daemon(proc)
            notify.close()
            deaths = count_in_file(tmp / "daemon.log", "worker died")
    print(f"daemon READY=1 after {ready_s:.1f} s (Ray start-up included); idle RSS sum {idle.peak_rss_mib:,.0f} MiB,"
          f" PSS sum {idle.peak_pss_mib:,.0f} MiB; {stopped}; Ray worker deaths logged: {deaths}")
    rows = [(what, percentile(v, 50) * 1000, percentile(v, 95) * 1000, max(v) * 1000)
            for what, v in (("drop -> row visible", [r for r, _ in lat]), ("drop -> analysed", [a for _, a in lat]))]
    print_table(f"drop-to-library latency, {args.drops} single files, settle_s = {args.settle} (ms; goal p95 <= 2,000)",
                ("measure", "p50 ms", "p95 ms", "max ms"), rows)
    if result:
        r = result
        print_table(f"flood: {args.flood:,} files copied in with cp -r (80 % Groove, 20 % POP909)",
                    ("measure", "value"),
                    [("cp -r (baseline) s", r["copy_s"]),
                     ("all rows visible s", r["imported_s"] or f"not within {args.timeout:.0f} s"),
                     ("all analysed (queue empty) s", r["analysed_s"] or f"not within {args.timeout:.0f} s"),
                     ("x cp (analysed)", r["analysed_s"] / r["copy_s"] if r["analysed_s"] else "-"),
                     ("input files/s (analysed)", args.flood / r["analysed_s"] if r["analysed_s"] else "-"),
                     ("file rows / distinct hashes / source rows",
                      f"{r['files']:,} / {r['hashes']:,} / {r['sources']:,}"),
                     ("imported twice (extra rows)", r["twice"]),
                     ("split parts (analysed, errors)",
                      f"{r['parts']:,} ({r['parts_analysed']:,}, {r['part_errors']})"),
                     ("peak RSS sum MiB (idle)", f"{r['peak_rss_mib']:,.0f} ({idle.peak_rss_mib:,.0f})"),
                     ("peak PSS sum MiB (idle)", f"{r['peak_pss_mib']:,.0f} ({idle.peak_pss_mib:,.0f})")])
        print_table("flood progress (every ~10 s)", ("s after cp started", "rows visible", "files analysed (all)"),
                    r["trace"])


if __name__ == "__main__":
    main()
