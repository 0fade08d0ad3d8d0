"""Peak memory and time of scanning 1 GiB zip bombs, against a small honest zip.

Each case runs `midid.scan.scan` in a fresh child process that reports its own peak RSS
(`getrusage(RUSAGE_SELF).ru_maxrss`), so cases do not hide behind each other's peaks; the
baseline (a zip of 200 real MIDI files) runs in the same invocation, and the table shows
each case's ratio to it. Usage: `python benchmarks/bomb.py [--size-mib 1024]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from archives import MIB, midi_bytes, write_lying_bomb, write_zero_bomb, write_zip  # noqa: E402

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, {repo!r})
    from midid.scan import Limits, scan
    start = time.perf_counter()
    items = list(scan([{path!r}], Limits(**{limits!r})))
    print(json.dumps({{
        "seconds": time.perf_counter() - start,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "items": [type(i).__name__ for i in items],
        "first": getattr(items[0], "error", "") if items else "",
    }}))
""")


def run_case(path: Path, limits: dict) -> dict:
    code = CHILD.format(repo=str(REPO), path=str(path), limits=limits)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="bomb size in MiB")
    args = parser.parse_args()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        cases = [
            ("baseline: 200 real MIDI files", write_zip(
                root / "small.zip", {f"{i}.mid": midi_bytes(i % 2) for i in range(200)}), {}),
            ("bomb, MIDI member, default limits", write_zero_bomb(root / "midi.zip", size), {}),
            ("bomb, MIDI member, ratio only", root / "midi.zip",
             {"max_midi_bytes": 2 * size}),
            ("bomb, lying header, size cap only", write_lying_bomb(root / "liar.zip", size),
             {"max_ratio": 1e12}),
            ("bomb, nested tar member", write_zero_bomb(
                root / "nested.zip", size, prefix=bytes(257) + b"ustar", name=b"in.tar"), {}),
        ]
        rows = [(label, path.stat().st_size, run_case(path, limits))
                for label, path, limits in cases]
    baseline = rows[0][2]["peak_kib"]
    print(f"{'case':36} {'archive':>10} {'items':>6} {'peak RSS':>10} {'vs base':>8} {'time':>8}")
    for label, archive_bytes, result in rows:
        print(f"{label:36} {archive_bytes / 1024:>8.0f}KB {len(result['items']):>6} "
              f"{result['peak_kib'] / 1024:>8.1f}MB {result['peak_kib'] / baseline:>8.2f} "
              f"{result['seconds']:>7.3f}s")
    for label, _, result in rows[1:]:
        print(f"  {label}: {result['first']}")


if __name__ == "__main__":
    main()
