"""Sync throughput: copy_batch onto a loop-device ext4 drive vs ``cp -r`` of the same files.

Needs root (losetup, mount). Usage::

    sudo .venv/bin/python benchmarks/sync.py [--files 1000] [--batch 200] [--rounds 3]

Takes ``--files`` MIDI files from shared/corpus (its 885 are reused under other pack names
beyond that), plans their export paths with the ``mpc`` layout, and copies them onto a fresh
ext4 image each round three ways, in alternation: ``copy_batch`` in batches (durable:
syncfs, rename, syncfs per batch), ``cp -r`` of a
tree already laid out the same way (not durable), and ``cp -r`` followed by ``sync -f`` (the
fair comparison). Prints files/s, MB/s and the ratio to both baselines (medians over rounds),
the time until the first batch is durable, and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midid.export.copy import CopyItem, copy_batch  # noqa: E402
from midid.export.layout import export_relpath  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
IMAGE_MB = 256


def run(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout.strip()


def plan(count: int) -> list[CopyItem]:
    files = sorted(CORPUS.joinpath("groove").rglob("*.mid")) + sorted(
        CORPUS.joinpath("pop909").rglob("*.mid")
    )
    if not files:
        raise SystemExit(f"no corpus at {CORPUS}")
    taken: set[str] = set()
    items = []
    for n in range(count):
        path = files[n % len(files)]
        lap = n // len(files)  # the corpus has 885 files: reuse them as further packs
        pack = path.parent.name + (f"_{lap + 1}" if lap else "")
        category = "Drums" if "groove" in path.parts else "Chords"
        rel = export_relpath(
            "mpc", category, pack, path.name, taken=lambda p: p.casefold() in taken
        )
        taken.add(rel.casefold())
        items.append(CopyItem(path, rel))
    return items


def stage_tree(items: list[CopyItem], where: Path) -> Path:
    """The same files laid out as on the drive, for ``cp -r``."""
    for item in items:
        dest = where / item.dest_rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(item.src, dest)
        except OSError:
            shutil.copyfile(item.src, dest)
    return where / "MPC_Documents"


def fresh_drive(work: Path, name: str) -> tuple[str, Path]:
    image = work / f"{name}.img"
    with image.open("wb") as handle:
        handle.truncate(IMAGE_MB * 1024 * 1024)
    run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", "MPC_BENCH", str(image))
    devnode = run("losetup", "-f", "--show", str(image))
    mountpoint = work / name
    mountpoint.mkdir()
    run("mount", "-o", "nosuid,nodev", devnode, str(mountpoint))
    return devnode, mountpoint


def drop_drive(devnode: str, mountpoint: Path) -> None:
    subprocess.run(["umount", str(mountpoint)], check=False)
    subprocess.run(["losetup", "-d", devnode], check=False)


def with_copy_batch(items: list[CopyItem], root: Path, batch: int) -> tuple[float, float]:
    """Total seconds, and seconds until the first batch was durable."""
    start = time.perf_counter()
    first = 0.0
    for i in range(0, len(items), batch):
        result = copy_batch(items[i : i + batch], root)
        if result.stopped or result.failed:
            raise SystemExit(f"copy_batch failed: {result.stopped or result.failed[:3]}")
        first = first or time.perf_counter() - start
    return time.perf_counter() - start, first


def with_cp(tree: Path, root: Path, sync: bool) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(tree), str(root)], check=True)
    if sync:
        subprocess.run(["sync", "-f", str(root)], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root for losetup and mount")
    items = plan(args.files)
    size = sum(i.src.stat().st_size for i in items)
    times: dict[str, list[float]] = {"copy_batch": [], "cp -r": [], "cp -r + sync": []}
    firsts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="midid-bench-") as tmp:
        work = Path(tmp)
        tree = stage_tree(items, work / "tree")
        subprocess.run(["cat", *[str(i.src) for i in items]], stdout=subprocess.DEVNULL, check=True)
        for r in range(args.rounds):
            for method in times:
                devnode, root = fresh_drive(work, f"{method.replace(' ', '').replace('+', '_')}{r}")
                try:
                    if method == "copy_batch":
                        total, first = with_copy_batch(items, root, args.batch)
                        firsts.append(first)
                    else:
                        total = with_cp(tree, root, sync=method.endswith("sync"))
                    times[method].append(total)
                finally:
                    drop_drive(devnode, root)
                    (work / f"{root.name}.img").unlink()
    mb = size / 1_000_000
    baseline = {m: statistics.median(v) for m, v in times.items()}
    print(f"{len(items)} files, {mb:.1f} MB, batches of {args.batch}, ", end="")
    print(f"median of {args.rounds} rounds")
    print(f"{'method':<14}{'files/s':>10}{'MB/s':>8}{'vs cp -r':>10}{'vs cp+sync':>12}")
    for method, seconds in baseline.items():
        print(
            f"{method:<14}{len(items) / seconds:>10.0f}{mb / seconds:>8.1f}"
            f"{baseline['cp -r'] / seconds:>10.2f}{baseline['cp -r + sync'] / seconds:>12.2f}"
        )
    print(f"first batch durable after {statistics.median(firsts) * 1000:.0f} ms")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
