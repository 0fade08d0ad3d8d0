"""Benchmark of midid.watch.SourceWatcher: drop-to-ready latency and a 20,000-file flood.

Run:  .venv/bin/python benchmarks/watch.py [--drops 50] [--flood 20000]

Latency: single small files dropped into a watched folder one at a time, three ways:
  - raw watchdog: a bare watchdog observer's FileClosedEvent (the baseline: inotify + watchdog),
  - close-after-write: written in place, reported on IN_CLOSE_WRITE,
  - rename in (settle 0.5 s): renamed in from outside, so no close is seen and the file is
    reported once its size and mtime held for settle_s.
Flood: `cp -r` of a folder of N small files into the watched folder (another process, as a
user's copy would be): time until every file was reported, how many on_ready calls that took,
and RSS. The baseline is the same `cp -r` into an unwatched folder in this run (the faster of
one copy before and one after the watched one).
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from watchdog.events import FileClosedEvent, FileSystemEventHandler  # noqa: E402
from watchdog.observers.inotify import InotifyObserver  # noqa: E402

from midid.watch import SourceWatcher  # noqa: E402

SETTLE_S = 0.5


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def raw_watchdog_latency(root: Path, drops: int) -> list[float]:
    arrived: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()

    class Handler(FileSystemEventHandler):
        def on_closed(self, event: FileClosedEvent) -> None:
            arrived.put((str(event.src_path), time.monotonic()))

    observer = InotifyObserver()
    observer.schedule(Handler(), str(root), recursive=True)
    observer.start()
    try:
        out = []
        for i in range(drops):
            path = root / f"raw {i}.mid"
            path.write_bytes(b"MThd" + bytes(64))
            done = time.monotonic()
            while True:
                name, at = arrived.get(timeout=10)
                if name == str(path):
                    out.append(at - done)
                    break
            time.sleep(0.05)
        return out
    finally:
        observer.stop()
        observer.join()


def watcher_latency(root: Path, staging: Path, drops: int, *, rename: bool) -> list[float]:
    arrived: queue.SimpleQueue[tuple[Path, float]] = queue.SimpleQueue()

    def on_ready(paths: list[Path]) -> None:
        now = time.monotonic()
        for p in paths:
            arrived.put((p, now))

    watcher = SourceWatcher([root], settle_s=SETTLE_S, on_ready=on_ready, on_moved=lambda _: None,
                            on_deleted=lambda _: None)
    watcher.start()
    try:
        out = []
        for i in range(drops):
            path = root.resolve() / f"{'renamed' if rename else 'written'} {i}.mid"
            if rename:
                tmp = staging / f"part {i}"
                tmp.write_bytes(b"MThd" + bytes(64))
                os.rename(tmp, path)
            else:
                path.write_bytes(b"MThd" + bytes(64))
            done = time.monotonic()
            while True:
                got, at = arrived.get(timeout=10 + SETTLE_S)
                if got == path:
                    out.append(at - done)
                    break
            time.sleep(0.05)
        return out
    finally:
        watcher.stop()


def copy_tree(src: Path, dest: Path) -> float:
    start = time.monotonic()
    subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
    return time.monotonic() - start


def flood(base: Path, count: int) -> dict[str, float]:
    pack = base / "pack"
    pack.mkdir()
    for i in range(count):
        (pack / f"Loop {i:05d} 120bpm.mid").write_bytes(b"MThd" + bytes(i % 200))
    baseline_s = copy_tree(pack, base / "unwatched copy 1")

    root = (base / "watched").resolve()
    root.mkdir()
    seen: set[Path] = set()
    calls = 0
    all_in = threading.Event()
    start = 0.0
    finished = 0.0

    def on_ready(paths: list[Path]) -> None:
        nonlocal calls, finished
        calls += 1
        seen.update(paths)
        if len(seen) >= count and not all_in.is_set():
            finished = time.monotonic()
            all_in.set()

    peak = rss_mib()
    rss_before = peak
    stop_sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop_sampling.wait(0.05):
            peak = max(peak, rss_mib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    watcher = SourceWatcher([root], settle_s=SETTLE_S, on_ready=on_ready, on_moved=lambda _: None,
                            on_deleted=lambda _: None)
    watcher.start()
    try:
        start = time.monotonic()
        copy_s = copy_tree(pack, root / "pack")
        all_in.wait(timeout=300)
        time.sleep(2 * SETTLE_S)  # anything reported twice would arrive by now
    finally:
        watcher.stop()
        stop_sampling.set()
        sampler.join()
    baseline_s = min(baseline_s, copy_tree(pack, base / "unwatched copy 2"))  # warm cache, as the watched one
    expected = {root / "pack" / p.name for p in pack.iterdir()}
    return {
        "files": count,
        "all_ready_s": finished - start if all_in.is_set() else float("nan"),
        "copy_s": copy_s,
        "baseline_copy_s": baseline_s,
        "callbacks": calls,
        "missing": len(expected - seen),
        "rss_before_mib": rss_before,
        "rss_peak_mib": peak,
        "rss_after_mib": rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", type=int, default=50)
    parser.add_argument("--flood", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="midid-bench-watch-") as tmp:
        base = Path(tmp)
        for name in ("raw", "written", "renamed", "staging"):
            (base / name).mkdir()
        raw = raw_watchdog_latency(base / "raw", args.drops)
        written = watcher_latency(base / "written", base / "staging", args.drops, rename=False)
        renamed = watcher_latency(base / "renamed", base / "staging", args.drops, rename=True)
        raw_p50 = statistics.median(raw)
        print(f"drop-to-ready latency, {args.drops} single small files (ms)")
        print(f"{'path':<28}{'p50':>9}{'p95':>9}{'max':>9}{'p50/raw':>9}")
        for label, values in (("raw watchdog (baseline)", raw), ("close-after-write", written),
                              (f"rename in (settle {SETTLE_S:g} s)", renamed)):
            print(f"{label:<28}{1000 * statistics.median(values):>9.1f}{1000 * percentile(values, 95):>9.1f}"
                  f"{1000 * max(values):>9.1f}{statistics.median(values) / raw_p50:>9.1f}")
        f = flood(base, args.flood)
        print()
        print(f"flood: cp -r of {f['files']:,} files into a watched folder")
        print(f"{'all ready (s)':<28}{f['all_ready_s']:>9.2f}")
        print(f"{'cp -r while watched (s)':<28}{f['copy_s']:>9.2f}")
        print(f"{'cp -r unwatched (s)':<28}{f['baseline_copy_s']:>9.2f}")
        print(f"{'all ready / unwatched cp':<28}{f['all_ready_s'] / f['baseline_copy_s']:>9.2f}")
        print(f"{'on_ready calls':<28}{f['callbacks']:>9}")
        print(f"{'files never reported':<28}{f['missing']:>9}")
        print(f"{'RSS before/peak/after MiB':<28}{f['rss_before_mib']:>9.1f}{f['rss_peak_mib']:>9.1f}"
              f"{f['rss_after_mib']:>9.1f}")


if __name__ == "__main__":
    main()
