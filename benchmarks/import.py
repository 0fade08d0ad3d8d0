"""Import stage alone (issue 2): files/s and peak RSS against a bare read+hash loop, and the bomb.

Usage: `.venv/bin/python benchmarks/import.py [--n 20000] [--bomb-mib 1024]`

Only the import stage is measured: the `Importer` class runs directly on a `Library` (scan the
folder, read, xxh3-128 hash, dedupe against the library, sanitize a library name, filename
metadata and tags, write the batch durably, one transaction per batch). `midictl import` would
also run split and analyze, which `benchmarks/pipeline.py` measures; subtracting them from an
end-to-end time would be noisier than measuring the stage itself.

Cases, each in a fresh child process (its own `ru_maxrss` is its peak RSS, so the cases do not
hide behind each other's peaks), over the same N distinct files (80 % Groove, 20 % POP909, see
`common.py`), warm in the page cache:
  - bare read+hash: os.walk + read_bytes + xxh3_128 — the floor any importer pays (baseline);
  - import: Importer.run into an empty library (every file new);
  - re-import: the same folder again (every file a duplicate: hash + lookup + alias rows);
  - 1 GiB zero bomb: Importer.run on a zip whose one MIDI-looking member inflates to 1 GiB of
    zeros (refused by the bomb limits; peak RSS shows memory stays bounded).
Read "x bare" as how many times slower than the bare loop (1.0 = as fast as reading).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from common import (MIB, REPO, exit_cleanly_on_signals, load_corpus, print_table, scratch,  # noqa: E402
                    self_peak_rss_mib, write_config, write_inputs)


def bare_read_hash(folder: str) -> dict[str, Any]:
    """Walk, read and hash every file: what any importer must pay at least."""
    import xxhash

    start = time.perf_counter()
    count = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                xxhash.xxh3_128_hexdigest(f.read())
            count += 1
    return {"files": count, "seconds": time.perf_counter() - start, "peak_mib": self_peak_rss_mib()}


def run_importer(config: str, folder: str) -> dict[str, Any]:
    """Importer.run on `folder` into the config's library; the summary, time and peak RSS."""
    from midid.config import load_config
    from midid.db import Library
    from midid.importer import Importer

    cfg = load_config(config)
    lib = Library(cfg.database_path)
    try:
        start = time.perf_counter()
        summary = Importer(cfg, lib, batch_size=cfg.pipeline.batch_size).run([folder])
        seconds = time.perf_counter() - start
    finally:
        lib.close()
    return {"files": summary.seen, "seconds": seconds, "peak_mib": self_peak_rss_mib(),
            "summary": summary.to_dict()}


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """Run `fn(*args)` in a fresh spawned process, so its ru_maxrss is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def write_bomb(path: Path, size_mib: int) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from archives import write_zero_bomb

    return write_zero_bomb(path, size_mib * MIB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="distinct files to import")
    parser.add_argument("--bomb-mib", type=int, default=1024, help="size of the zero bomb (0: skip)")
    args = parser.parse_args()
    exit_cleanly_on_signals()
    corpus = load_corpus()
    with scratch("import") as tmp:
        inputs = tmp / "inputs"
        made = time.perf_counter()
        write_inputs(inputs, args.n, corpus)
        print(f"wrote {args.n:,} distinct files in {time.perf_counter() - made:.1f} s under {inputs}")
        config = write_config(tmp / "lib")
        bare = in_child(bare_read_hash, str(inputs))
        first = in_child(run_importer, str(config), str(inputs))
        again = in_child(run_importer, str(config), str(inputs))
        rows = [("bare read+hash (baseline)", bare, "")]
        s1, s2 = first["summary"], again["summary"]
        rows.append(("import (all new)", first, f"imported {s1['imported']:,}, errors {s1['errors']}"))
        rows.append(("re-import (all duplicates)", again, f"duplicates {s2['duplicates']:,}"))
        bomb_row = None
        if args.bomb_mib:
            bomb = write_bomb(tmp / "bomb.zip", args.bomb_mib)
            bomb_cfg = write_config(tmp / "bomblib")
            result = in_child(run_importer, str(bomb_cfg), str(bomb))
            failed = result["summary"]["failed"]
            bomb_row = (f"{args.bomb_mib} MiB zero bomb ({bomb.stat().st_size / 1024:.0f} KiB zip)", result,
                        f"errors {result['summary']['errors']}: {failed[0]['error'] if failed else '-'}")
    table = []
    for label, r, note in rows:
        rate = r["files"] / r["seconds"]
        slower = (r["seconds"] / r["files"]) / (bare["seconds"] / bare["files"])
        table.append((label, r["files"], r["seconds"], rate, slower,
                      r["peak_mib"], note))
    print_table(f"import stage, N = {args.n:,} (80 % Groove, 20 % POP909), each case in a fresh process",
                ("case", "files", "s", "files/s", "x bare", "peak RSS MiB", "notes"), table)
    if bomb_row:
        label, r, note = bomb_row
        print_table("bomb", ("case", "s", "peak RSS MiB", "x bare peak", "outcome"),
                    [(label, r["seconds"], r["peak_mib"], r["peak_mib"] / bare["peak_mib"], note)])


if __name__ == "__main__":
    main()
