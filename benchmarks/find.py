"""`midictl find` and `midictl status` on a generated million-file library (issue 5).

Usage: `.venv/bin/python benchmarks/find.py [--rows 1000000] [--runs 50] [--db PATH]`

The database is the real one: `midid.db.Library(path)` creates the schema, indexes and FTS5
table; the generator then fills `files`, `analysis`, `tags`, `search`, `sources`, `exports`
and `progress` with plausible random values (70 % originals, 30 % split parts; categories,
BPMs and keys with realistic skew; ~4.6 tag rows per file: two words, bpm, key, category;
1 % queued, 0.5 % failed). To load fast
it drops the indexes of the tables it fills, inserts in big transactions, and re-creates the
indexes from the very SQL the schema stored in sqlite_master — the end state is the schema
midid makes. No ANALYZE is run, because midid does not run one either. With `--db PATH` the
database is kept at PATH (and reused when it already exists) to try indexes on it afterwards.

Timed, in this process, each ~`--runs` times on a warm page cache (p50, p95, max):
  - `midid.search.find` for typical queries (bpm, bpm range, key, category, tag, text, and
    combinations) through a read-only `Library`, as `midictl find` opens it;
  - `Library.stage_counts`, and `midid.status.collect_status` (what `midictl status` does;
    no daemon runs, so it reads the database only).
Then as subprocesses (10 runs each): `midictl find`, `midictl status --json`, against
`midictl --version` as the baseline (interpreter and CLI start-up), so "- baseline" is what the
query itself costs a user. Goals: find <= 100 ms p95, status <= 200 ms. A query above its goal
is printed with SQLite's EXPLAIN QUERY PLAN.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from common import VENV_BIN, exit_cleanly_on_signals, percentile, print_table, scratch, write_config  # noqa: E402

from midid.config import load_config  # noqa: E402
from midid.db import ANALYSIS_COLUMNS, ANALYZER_VERSION, Library  # noqa: E402
from midid.search import FindQuery, find  # noqa: E402
from midid.status import collect_status  # noqa: E402

CATEGORY_WEIGHTS = {
    "Drums": 22, "DrumKicks": 4, "DrumSnares": 3, "DrumHats": 4, "DrumCymbals": 1, "DrumToms": 1, "DrumPerc": 3,
    "Bass": 15, "Melody": 20, "Chords": 12, "Progressions": 3, "FX": 3, "Loops": 9,
}
TONICS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# The `files` columns the generator fills, by name: later schemas add columns (as `reanalyse`
# did, which broke a positional insert) that keep their defaults here.
FILE_COLUMNS = ("id", "hash", "size", "path", "name", "pack", "format", "tracks", "parent_id", "part_index",
                "added_at", "sanitized_at", "split_at", "split_parts", "split_error", "analysed_at", "renamed_at",
                "original_path", "error", "error_stage", "attempts")
ROLE_WORDS = ("kick", "snare", "hat", "bass", "lead", "chord", "pad", "fx", "loop", "fill", "perc", "arp",
              "pluck", "keys", "piano", "strings", "melody", "groove", "break", "riff")
GENRE_WORDS = ("house", "techno", "trap", "hiphop", "funk", "soul", "jazz", "rock", "pop", "dnb", "dubstep",
               "lofi", "reggaeton", "afrobeat", "disco", "ambient", "trance", "garage", "drill", "rnb")
QUERIES: list[tuple[str, FindQuery]] = [
    ("--bpm 120", FindQuery(bpm="120")),
    ("--bpm 118-122", FindQuery(bpm="118-122")),
    ("--key Am", FindQuery(key="Am")),
    ("--category Bass", FindQuery(category="Bass")),
    ("--category Progressions", FindQuery(category="Progressions")),
    ("--tag kick", FindQuery(tags=("kick",))),
    ("--text funk", FindQuery(text="funk")),
    ("--text 'soul groove'", FindQuery(text="soul groove")),
    ("--bpm 118-122 --key Am --category Melody", FindQuery(bpm="118-122", key="Am", category="Melody")),
    ("--category Bass --tag trap --bpm 140-150", FindQuery(category="Bass", tags=("trap",), bpm="140-150")),
    ("--category Chords --text lofi", FindQuery(category="Chords", text="lofi")),
    ("--key F#m --tag pad --text ambient", FindQuery(key="F#m", tags=("pad",), text="ambient")),
    ("--bpm 174 --limit 1000", FindQuery(bpm="174", limit=1000)),
]


def _bpm(rng: random.Random, drums: bool) -> float:
    centre = rng.choice((90.0, 120.0, 128.0, 140.0, 174.0) if drums else (85.0, 100.0, 120.0, 140.0))
    value = min(200.0, max(50.0, rng.gauss(centre, 8.0)))
    return round(value) if rng.random() < 0.7 else round(value, 2)


def generate(path: Path, rows: int, seed: int = 7) -> float:
    """Create the real schema at `path` and fill it with `rows` files; returns seconds taken."""
    start = time.perf_counter()
    Library(path).close()
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    filled = ("files", "analysis", "tags", "sources", "exports")
    indexes = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
        f" AND tbl_name IN ({','.join('?' * len(filled))})", filled).fetchall()
    for name, _sql in indexes:
        conn.execute(f"DROP INDEX {name}")
    categories, weights = list(CATEGORY_WEIGHTS), list(CATEGORY_WEIGHTS.values())
    now = time.time()
    chunk = 100_000
    columns = list(ANALYSIS_COLUMNS)
    for first in range(1, rows + 1, chunk):
        files, analysis, tags, search, sources, exports = [], [], [], [], [], []
        for fid in range(first, min(rows, first + chunk - 1) + 1):
            pack_no = fid // 700
            pack = f"{rng.choice(GENRE_WORDS).title()} {rng.choice(ROLE_WORDS).title()} Vol {pack_no % 40 + 1}"
            category = rng.choices(categories, weights)[0]
            drums = category.startswith("Drum")
            bpm = _bpm(rng, drums)
            tonic = None if drums else rng.choice(TONICS)
            mode = None if drums else rng.choice(("major", "minor"))
            words = rng.sample(ROLE_WORDS, 1) + rng.sample(GENRE_WORDS, 1)
            key_text = f"{tonic}{'m' if mode == 'minor' else ''}" if tonic else ""
            name = f"{pack_no:05d}_{words[1]}_{words[0]}_{int(bpm)}bpm{'_' + key_text if key_text else ''}_{fid}.mid"
            is_part = rng.random() < 0.3 and fid > 10
            state = rng.random()
            analysed = None if state < 0.01 else now - rng.uniform(60, 86400 * 30)
            error = "analysis failed: bad chunk" if 0.01 <= state < 0.015 else None
            files.append((fid, f"{fid:032x}", rng.randint(500, 60_000), f"{pack}/{name}", name, pack, 1, 2,
                          fid - rng.randint(1, 10) if is_part else None, rng.randint(0, 3) if is_part else None,
                          now - 86400 * 30, now - 86400 * 30, None if is_part else now - 86400 * 29, 0,
                          None, analysed if error is None else None, None, None, error,
                          "analyze" if error else None, 0))
            file_tags = [(fid, w, "filename") for w in words] + [(fid, f"bpm:{int(bpm)}", "filename")]
            if key_text:
                file_tags.append((fid, f"key:{key_text}", "filename"))
            if analysed and not error:
                file_tags.append((fid, category.lower(), "analysis"))
                record = {"file_id": fid, "parser": "symusic", "bpm": bpm, "bpm_source": "meta",
                          "tempo_changes": 0, "time_signature": "4/4", "duration_s": rng.uniform(2, 240),
                          "bars": float(rng.choice((1, 2, 4, 8, 16, 32))), "key_tonic": tonic, "key_mode": mode,
                          "key_confidence": None if drums else rng.random(), "is_drums": int(drums),
                          "notes": rng.randint(4, 3000), "tracks": 1, "category": category,
                          "tags": f'["{category.lower()}","{words[0]}"]', "polyphony": rng.uniform(1, 4),
                          "analyzer": ANALYZER_VERSION}
                analysis.append(tuple(record.get(c) for c in columns))
            tags += file_tags
            search.append((fid, name, f"{pack}/{name}", pack, " ".join(t[1] for t in file_tags) + " " + category))
            sources.append((fid, fid, f"/srv/midi/{pack}/{name}", f"/srv/midi/{pack}/{name}",
                            "split" if is_part else "file", 1000, now, now, 0))
            if fid % 5 == 0 and analysed:
                exports.append(("MPC-ONE-UUID", fid, f"MPC_Documents/{name}", f"{fid:032x}", category, now, 0))
        with conn:
            conn.executemany(f"INSERT INTO files({','.join(FILE_COLUMNS)}) VALUES ({','.join('?' * len(FILE_COLUMNS))})",
                             files)
            conn.executemany(f"INSERT INTO analysis({','.join(columns)}) VALUES ({','.join('?' * len(columns))})",
                             analysis)
            conn.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?, ?)", tags)
            conn.executemany("INSERT INTO search(rowid, name, path, pack, tags) VALUES (?, ?, ?, ?, ?)", search)
            conn.executemany("INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", sources)
            conn.executemany("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?)", exports)
        print(f"  {min(rows, first + chunk - 1):,} rows ({time.perf_counter() - start:.0f} s)", flush=True)
    with conn:
        for _name, sql in indexes:
            conn.execute(sql)
        conn.executemany("INSERT INTO progress(stage, at, count, failed) VALUES (?, ?, ?, ?)",
                         [(stage, now - i, 256, 0) for stage in ("import", "sanitize", "analyze") for i in range(600)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - start


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    """Milliseconds of each of `runs` calls after one warm-up call, and the last result."""
    result = fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        out.append((time.perf_counter() - start) * 1000)
    return out, result


def last_sql(lib: Library, fn: Callable[[], Any]) -> str:
    """The last SQL statement `fn` ran on this library's connection (for EXPLAIN QUERY PLAN)."""
    seen: list[str] = []
    lib.db.conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        lib.db.conn.set_trace_callback(None)
    return [s for s in seen if s.lstrip().upper().startswith("SELECT")][-1]


def run_cli(config: Path, args: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(VENV_BIN / "midictl"), "--config", str(config), *args], check=True,
                       capture_output=True)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="files in the generated library")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per query")
    parser.add_argument("--cli-runs", type=int, default=10, help="timed runs per midictl subprocess")
    parser.add_argument("--db", type=Path, help="keep the generated database here (reused if present)")
    args = parser.parse_args()
    exit_cleanly_on_signals()
    with scratch("find") as tmp:
        config = write_config(tmp)
        if args.db:
            config.write_text(config.read_text().replace(f'"{tmp}/midid.sqlite3"', f'"{args.db.resolve()}"'))
        cfg = load_config(config)
        if cfg.database_path.exists():
            print(f"reusing {cfg.database_path}")
        else:
            print(f"generating {args.rows:,} files into {cfg.database_path}")
            gen_s = generate(cfg.database_path, args.rows)
            print(f"generated in {gen_s:.0f} s, {cfg.database_path.stat().st_size / 1e6:,.0f} MB")
        lib = Library(cfg.database_path, readonly=True)
        rows, slow = [], []
        for label, query in QUERIES:
            times, result = timed(lambda q=query: find(lib, q), args.runs)
            rows.append((f"find {label}", len(result), percentile(times, 50), percentile(times, 95), max(times)))
            if percentile(times, 95) > 100:
                slow.append((label, last_sql(lib, lambda q=query: find(lib, q))))
        times, _ = timed(lambda: lib.stage_counts(False), args.runs)
        rows.append(("Library.stage_counts", 6, percentile(times, 50), percentile(times, 95), max(times)))
        if percentile(times, 95) > 200:
            slow += _stage_count_plans(lib)
        times, _ = timed(lambda: collect_status(cfg), max(5, args.runs // 5))
        rows.append(("status.collect_status", 1, percentile(times, 50), percentile(times, 95), max(times)))
        print_table(f"in-process on {args.rows:,} files, {args.runs} runs each (ms)",
                    ("query", "rows", "p50 ms", "p95 ms", "max ms"), rows)
        for label, sql in slow:
            plan = lib.db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            print(f"\nslow: {label}\n  {sql}\n" + "\n".join(f"  plan: {r[3]}" for r in plan))
        lib.close()
        base = run_cli(config, ["--version"], args.cli_runs)
        cli_rows = [("midictl --version (baseline)", base)]
        cli_rows.append(("midictl find --bpm 118-122 --key Am --json",
                         run_cli(config, ["find", "--bpm", "118-122", "--key", "Am", "--json"], args.cli_runs)))
        cli_rows.append(("midictl status --json", run_cli(config, ["status", "--json"], args.cli_runs)))
        b50 = percentile(base, 50)
        print_table(f"subprocesses, {args.cli_runs} runs each (ms)",
                    ("command", "p50 ms", "p95 ms", "p50 - baseline ms"),
                    [(label, percentile(t, 50), percentile(t, 95), percentile(t, 50) - b50) for label, t in cli_rows])


def _stage_count_plans(lib: Library) -> list[tuple[str, str]]:
    """Each count query of stage_counts that takes over 20 ms, for EXPLAIN QUERY PLAN."""
    seen: list[str] = []
    lib.db.conn.set_trace_callback(seen.append)
    try:
        lib.stage_counts(False)
    finally:
        lib.db.conn.set_trace_callback(None)
    out = []
    for sql in seen:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        start = time.perf_counter()
        lib.db.execute(sql).fetchall()
        ms = (time.perf_counter() - start) * 1000
        if ms > 20:
            out.append((f"stage_counts part, {ms:.0f} ms", sql))
    return out


if __name__ == "__main__":
    main()
