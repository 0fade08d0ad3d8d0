#!/usr/bin/env python3
"""Soak: many files through a real daemon in watched-folder bursts, with RSS and fds sampled.

    .venv/bin/python tools/soak.py --files 200000            # the full soak (minutes on 2 cores)
    .venv/bin/python tools/soak.py --files 20000 --out /tmp/soak

A throw-away library, source folder and config are made under `--out`; the real daemon
(`python -m midid.daemon`, local Ray) watches the source folder. Files (real corpus MIDI, each
made distinct by a serial after its last track) are dropped in bursts of `--burst` into fresh
sub-folders, written under a hidden name and renamed, as a download would arrive; a new burst
waits while more than `--backlog` dropped files are not yet imported, so the run measures a
steady state rather than a flood.

Every `--sample-s` seconds the daemon's process tree is read from /proc: resident memory and
open file descriptors of the daemon itself, of its Ray workers (`ray::_Worker`), and of the
other Ray processes (GCS, raylet, agents). `soak.csv` gets one row per sample; `soak.png` a
plot when matplotlib is importable. The summary prints start (after warm-up), peak and end
values: flat curves after warm-up are the goal. Ctrl-C ends the run early, with the summary.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Sample:
    t_s: float
    dropped: int
    imported: int
    analysed: int
    daemon_rss_mb: float
    daemon_fds: int
    workers: int
    workers_rss_mb: float
    workers_fds: int
    ray_other_rss_mb: float
    ray_other_fds: int


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process we can read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry)] = (ppid, cmd.strip() or stat.split("(", 1)[1].split(")")[0])
    return table


def descendants(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024
    except (OSError, IndexError):
        return 0.0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def progress(db: Path) -> tuple[int, int]:
    """(source files imported, library files analysed), read-only."""
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            imported = conn.execute("SELECT count(*) FROM sources WHERE kind = 'file'").fetchone()[0]
            analysed = conn.execute("SELECT count(*) FROM files WHERE analysed_at IS NOT NULL").fetchone()[0]
        return imported, analysed
    except sqlite3.Error:
        return 0, 0


def sample(daemon_pid: int, started: float, dropped: int, db: Path) -> Sample:
    table = _proc_table()
    tree = descendants(daemon_pid, table)
    workers = [p for p in tree if "ray::_Worker" in table[p][1]]
    others = [p for p in tree if p not in workers]
    imported, analysed = progress(db)
    return Sample(round(time.monotonic() - started, 1), dropped, imported, analysed,
                  round(rss_mb(daemon_pid), 1), fds(daemon_pid), len(workers),
                  round(sum(rss_mb(p) for p in workers), 1), sum(fds(p) for p in workers),
                  round(sum(rss_mb(p) for p in others), 1), sum(fds(p) for p in others))


def base_files(corpus: Path) -> list[bytes]:
    paths = sorted((corpus / "groove").rglob("*.mid")) if corpus.is_dir() else []
    return [p.read_bytes() for p in (paths or sorted((REPO / "tests" / "data").rglob("*.mid")))]


def drop_burst(src: Path, bases: list[bytes], first: int, count: int) -> None:
    folder = src / f"burst_{first // count:05d}"
    folder.mkdir()
    for i in range(first, first + count):
        tmp, final = folder / f".f{i:07d}.part", folder / f"f{i:07d}.mid"
        tmp.write_bytes(bases[i % len(bases)] + i.to_bytes(4, "big"))
        os.replace(tmp, final)


def write_config(out: Path, src: Path) -> Path:
    config = out / "midid.toml"
    config.write_text(
        f'[library]\npath = "{out}/library"\ndatabase = "{out}/midid.sqlite3"\n'
        f'[control]\nsocket = "{out}/midid.sock"\n[sources]\nfolders = ["{src}"]\n'
        "[watch]\nsettle_s = 0.5\n[ray]\nnum_cpus = 2\nobject_store_mb = 200\n[export]\nenabled = false\n")
    return config


def plot(rows: list[Sample], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [r.t_s / 60 for r in rows]
    fig, (mem, fd, done) = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    mem.plot(t, [r.daemon_rss_mb for r in rows], label="daemon")
    mem.plot(t, [r.workers_rss_mb for r in rows], label="Ray workers")
    mem.plot(t, [r.ray_other_rss_mb for r in rows], label="other Ray")
    mem.set_ylabel("RSS (MB)")
    mem.legend(fontsize=7)
    fd.plot(t, [r.daemon_fds for r in rows], label="daemon")
    fd.plot(t, [r.workers_fds for r in rows], label="Ray workers")
    fd.plot(t, [r.ray_other_fds for r in rows], label="other Ray")
    fd.set_ylabel("open fds")
    done.plot(t, [r.dropped for r in rows], label="dropped")
    done.plot(t, [r.imported for r in rows], label="imported")
    done.set_ylabel("files")
    done.set_xlabel("minutes")
    done.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return True


def summarize(rows: list[Sample], warmup: float) -> str:
    steady = [r for r in rows if r.imported >= warmup * rows[-1].imported] or rows
    lines = [f"{rows[-1].imported:,} files imported, {rows[-1].analysed:,} library files analysed in "
             f"{rows[-1].t_s / 60:.1f} min; {len(rows)} samples (steady state from {steady[0].t_s:.0f} s)",
             f"{'':18}{'start':>9}{'peak':>9}{'end':>9}"]
    for name in ("daemon_rss_mb", "daemon_fds", "workers_rss_mb", "workers_fds", "ray_other_rss_mb", "ray_other_fds"):
        values = [getattr(r, name) for r in steady]
        lines.append(f"{name:18}{values[0]:>9g}{max(values):>9g}{values[-1]:>9g}")
    return "\n".join(lines)


def run(args: argparse.Namespace, out: Path, src: Path, db: Path, daemon: subprocess.Popen,
        rows: list[Sample]) -> None:
    """Drop bursts and sample (appending to `rows`) until every file is imported and analysed."""
    bases = base_files(args.corpus)
    started = time.monotonic()
    dropped, last_sample = 0, 0.0
    while not (out / "midid.sock").exists():
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.returncode}; see {out / 'daemon.log'}")
        time.sleep(0.2)
    with open(out / "soak.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        while True:
            now = time.monotonic()
            if now - last_sample >= args.sample_s:
                last_sample = now
                row = sample(daemon.pid, started, dropped, db)
                rows.append(row)
                writer.writerow(asdict(row))
                fh.flush()
                if len(rows) % 20 == 1:
                    print(f"  {row.t_s:7.0f} s  dropped {row.dropped:>7,}  imported {row.imported:>7,}  "
                          f"daemon {row.daemon_rss_mb:6.0f} MB {row.daemon_fds:3} fds  workers "
                          f"{row.workers_rss_mb:6.0f} MB {row.workers_fds:3} fds", flush=True)
                if dropped >= args.files and row.imported >= args.files and row.analysed >= row.imported:
                    return
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon died with {daemon.returncode}; see {out / 'daemon.log'}")
            imported = rows[-1].imported if rows else 0
            if dropped < args.files and dropped - imported < args.backlog:
                count = min(args.burst, args.files - dropped)
                drop_burst(src, bases, dropped, count)
                dropped += count
            else:
                time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=4000, help="dropped but not imported before a new burst waits")
    parser.add_argument("--sample-s", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the files counted as warm-up")
    parser.add_argument("--out", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="midid-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    src = out / "src"
    src.mkdir(exist_ok=True)
    config, db = write_config(out, src), out / "midid.sqlite3"
    log = open(out / "daemon.log", "ab")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MIDID_CONFIG")}
    daemon = subprocess.Popen([sys.executable, "-m", "midid.daemon", "--config", str(config)], stdout=log,
                              stderr=log, env=env, cwd=REPO)
    rows: list[Sample] = []
    print(f"soak of {args.files:,} files in {out} (daemon pid {daemon.pid})", flush=True)
    try:
        run(args, out, src, db, daemon, rows)
    except KeyboardInterrupt:
        print("interrupted: summary of the samples so far", flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(120)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    if not rows:
        raise SystemExit("no samples taken")
    print(summarize(rows, args.warmup))
    if plot(rows, out / "soak.png"):
        print(f"plot: {out / 'soak.png'}")
    print(f"samples: {out / 'soak.csv'}")


if __name__ == "__main__":
    main()
