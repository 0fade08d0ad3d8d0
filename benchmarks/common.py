"""Shared helpers of the benchmarks: distinct inputs from the corpus, RSS sampling, tables.

Inputs: N distinct MIDI files made from ../shared/corpus (Groove drum loops, POP909 songs) by
inserting a text meta event (`FF 01 "midid bench <i>"`, delta 0) at the start of the first
track. Appending bytes after the last track would also give distinct file hashes, but the
split stage copies the conductor track verbatim into every part, so only a change inside
track 0 makes the *parts* distinct too — otherwise the parts of 4,000 copies of 300 songs
would deduplicate to 900 files and the benchmark would measure the duplicate path.

Memory: `TreeSampler` reads /proc every `interval_s` (no psutil) and keeps the peak of the
summed RSS and PSS of a process and all its descendants (the Ray driver, raylet, GCS and
workers). RSS double-counts pages shared between processes (Ray's shared-memory object store,
shared libraries); PSS splits them fairly, so the PSS sum is the better "memory this job
costs" figure and the RSS sum an upper bound.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
VENV_BIN = REPO / ".venv" / "bin"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Corpus:
    """Bytes of the corpus files, read once: Groove drum loops (type 0) and POP909 songs (type 1)."""

    groove: list[bytes]
    pop909: list[bytes]


def load_corpus() -> Corpus:
    """Read the shared corpus; exits with a clear message when it is not beside the repo."""
    groove = [p.read_bytes() for p in sorted(CORPUS.glob("groove/*/*/*.mid"))]
    pop909 = [p.read_bytes() for p in sorted(CORPUS.glob("pop909/*/*.mid"))]
    if not groove or not pop909:
        sys.exit(f"needs the shared corpus (groove/ and pop909/) at {CORPUS}")
    return Corpus(groove, pop909)


def distinct_variant(data: bytes, i: int) -> bytes:
    """`data` with a text meta event naming `i` inserted at tick 0 of its first track."""
    pos = data.index(b"MTrk")
    (length,) = struct.unpack(">I", data[pos + 4:pos + 8])
    text = f"midid bench {i}".encode()
    event = b"\x00\xff\x01" + bytes([len(text)]) + text
    return data[:pos + 4] + struct.pack(">I", length + len(event)) + event + data[pos + 8:]


def write_inputs(dest: Path, n: int, corpus: Corpus, *, song_share: float = 0.2,
                 per_folder: int = 1000) -> list[Path]:
    """Write `n` distinct files under `dest` in folders of `per_folder`; every 1/song_share-th is a song.

    Names are plain (`0000042_groove.mid`, `0000044_song.mid`): no BPM or key for the filename
    metadata to find, so the analysis works from the MIDI content alone.
    """
    every = round(1 / song_share) if song_share > 0 else 0
    paths: list[Path] = []
    for i in range(n):
        folder = dest / f"pack{i // per_folder:04d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        if every and i % every == every - 1:
            data, kind = corpus.pop909[i % len(corpus.pop909)], "song"
        else:
            data, kind = corpus.groove[i % len(corpus.groove)], "groove"
        path = folder / f"{i:07d}_{kind}.mid"
        path.write_bytes(distinct_variant(data, i))
        paths.append(path)
    return paths


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder on the same disk as /tmp, removed afterwards even on Ctrl-C."""
    path = Path(tempfile.mkdtemp(prefix=f"midid-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(folder: Path, extra: str = "") -> Path:
    """A throw-away config whose library, database and socket live under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "midid.toml"
    path.write_text(
        f'[library]\npath = "{folder}/library"\ndatabase = "{folder}/midid.sqlite3"\n'
        f'[control]\nsocket = "{folder}/midid.sock"\n' + extra)
    return path


def self_peak_rss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """/proc/<pid>/stat from the state field on (None once the process is gone). The command
    name before it may hold spaces and parentheses: fields resume after the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is not None:
            out.setdefault(int(fields[1]), []).append(int(entry.name))
    return out


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _rss_pss_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _cpu_seconds_and_name(pid: int) -> tuple[float, str] | None:
    """(user + system CPU seconds, command line) of a process, None once it is gone."""
    fields = _stat_fields(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), cmdline


def process_kind(cmdline: str) -> str:
    """Driver, pool worker or Ray service, from a command line (Ray actors retitle themselves)."""
    if "py-spy" in cmdline.split(" ", 1)[0]:
        return "profiler (py-spy)"
    if "midictl" in cmdline or "midid.ctl" in cmdline:
        return "driver (midictl)"
    if cmdline.startswith("ray::_Worker") or "default_worker.py" in cmdline:
        return "Ray workers (pools)"
    return "Ray services (GCS, raylet, agents)"


OWN_KINDS = ("driver (midictl)", "Ray workers (pools)")  # midid's own processes, not Ray's services


class TreeSampler:
    """Samples the summed RSS/PSS of a process tree in a thread; peaks in MiB once stopped.

    `peak_own_rss_mib` / `peak_own_pss_mib` are the peaks of the same sums over the driver and
    the pool workers only (OWN_KINDS: what issue 4 calls "driver + workers"), without Ray's
    own services (GCS, raylet, dashboard, agents, monitors), which cost the same whatever
    midid does. It also keeps each process's last seen CPU time, summed per `process_kind` in
    `cpu_seconds` (a process's CPU after its last sample, at most `interval_s` of it, is missed).
    """

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss_mib = 0.0
        self.peak_pss_mib = 0.0
        self.peak_processes = 0
        self.peak_own_rss_mib = 0.0
        self.peak_own_pss_mib = 0.0
        self.samples: list[tuple[float, float, float]] = []  # (monotonic s, rss MiB, pss MiB)
        self._cpu: dict[int, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        pids = process_tree(self.pid)
        sizes = [_rss_pss_kib(p) for p in pids]
        rss = sum(s[0] for s in sizes) / 1024
        pss = sum(s[1] for s in sizes) / 1024
        self.samples.append((time.monotonic(), rss, pss))
        self.peak_rss_mib = max(self.peak_rss_mib, rss)
        self.peak_pss_mib = max(self.peak_pss_mib, pss)
        self.peak_processes = max(self.peak_processes, sum(1 for s in sizes if s[0]))
        own_rss = own_pss = 0.0
        for pid, (rss_kib, pss_kib) in zip(pids, sizes):
            seen = _cpu_seconds_and_name(pid)
            # An exiting process (a zombie) has an empty command line: keep the name it had,
            # or the driver's last CPU reading is counted as a Ray service.
            name = (seen[1] if seen else "") or self._cpu.get(pid, (0.0, ""))[1]
            if seen is not None:
                self._cpu[pid] = (seen[0], name)
            if process_kind(name) in OWN_KINDS:
                own_rss += rss_kib / 1024
                own_pss += pss_kib / 1024
        self.peak_own_rss_mib = max(self.peak_own_rss_mib, own_rss)
        self.peak_own_pss_mib = max(self.peak_own_pss_mib, own_pss)

    @property
    def cpu_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for seconds, cmdline in self._cpu.values():
            kind = process_kind(cmdline)
            out[kind] = out.get(kind, 0.0) + seconds
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (1..99) by the inclusive method; the value itself for one sample."""
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table; floats get thousands separators and sensible decimals."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in text:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def exit_cleanly_on_signals() -> None:
    """Turn SIGTERM and SIGINT into SystemExit so `finally` blocks stop daemons and remove scratch
    folders. SIGINT is set explicitly: a shell starts background jobs with it ignored."""
    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def count_in_file(path: Path, needle: str) -> int:
    """Lines of a log file containing `needle` (0 when the file is missing)."""
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0
