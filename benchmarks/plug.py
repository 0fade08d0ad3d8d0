"""Plug-to-first-file and plug-to-synced latency of the daemon's hot-plug sync (needs root).

Builds a library of N distinct corpus-derived files (one-shot `midictl import --local`), starts
the real daemon, then attaches and mounts a real ext4 loop-device drive labelled MPC_BENCH as a
desktop automounter would. Reports the time from the mount to the first exported file on the
drive and to the daemon reporting the drive `synced`, and as a baseline `cp -r` of the same
library folder onto a fresh drive in the same run.

    .venv/bin/python benchmarks/plug.py --n 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from loopdev import LoopDrive, make_image, require_loop  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"


def status(config: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "midid.ctl", "--config", str(config), "status", "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    require_loop_ok = True
    try:
        require_loop()
    except BaseException as exc:  # pytest.skip raises a BaseException subclass
        require_loop_ok = False
        print(f"cannot run: {exc}")
    if not require_loop_ok:
        return
    sources = sorted(CORPUS.glob("groove/**/*.mid"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src" / "Bench Pack"
        src.mkdir(parents=True)
        for i in range(args.n):
            data = sources[i % len(sources)].read_bytes()
            (src / f"f{i:05d}.mid").write_bytes(data + i.to_bytes(4, "big"))
        config = tmp / "midid.toml"
        config.write_text(f'[library]\npath = "{tmp}/library"\n[control]\nsocket = "{tmp}/s.sock"\n'
                          "[export]\nmount_wait_s = 5.0\n[ray]\nnum_cpus = 2\n")
        subprocess.run([sys.executable, "-m", "midid.ctl", "--config", str(config), "import", "--json",
                        str(src)], check=True, capture_output=True)
        daemon = subprocess.Popen([sys.executable, "-m", "midid.daemon", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        drive = LoopDrive(make_image(tmp / "bench.img", "MPC_BENCH", 256), "MPC_BENCH")
        base = LoopDrive(make_image(tmp / "cp.img", "BASELINE", 256), "BASELINE")
        try:
            deadline = time.monotonic() + 120
            while not (tmp / "s.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)
            drive.attach()
            mounted = drive.mount(tmp / "media" / "MPC_BENCH")
            t0 = time.monotonic()
            first = synced = None
            while time.monotonic() - t0 < 300:
                if first is None and next(mounted.rglob("*.mid"), None) is not None:
                    first = time.monotonic() - t0
                states = [d for d in status(config)["devices"] if d.get("label") == "MPC_BENCH"]
                if states and states[0].get("state") == "synced" and first is not None:
                    synced = time.monotonic() - t0
                    break
                time.sleep(0.05)
            copied = sum(1 for _ in mounted.rglob("*.mid"))
            base.attach()
            target = base.mount(tmp / "media" / "BASELINE")
            t1 = time.monotonic()
            subprocess.run(["cp", "-r", str(tmp / "library"), str(target / "copy")], check=True)
            subprocess.run(["sync", "-f", str(target)], check=True)
            cp_s = time.monotonic() - t1
        finally:
            daemon.terminate()
            daemon.wait(60)
            drive.cleanup()
            base.cleanup()
        print(f"{'measure':<34}{'value':>12}")
        print(f"{'files synced':<34}{copied:>12,}")
        print(f"{'plug (mount) -> first file':<34}{first or float('nan'):>11.2f}s")
        print(f"{'plug (mount) -> synced':<34}{synced or float('nan'):>11.2f}s")
        if synced:
            print(f"{'sync rate incl. detection':<34}{copied / synced:>10,.0f}/s")
        print(f"{'cp -r + sync -f of the library':<34}{cp_s:>11.2f}s")
        if synced:
            print(f"{'ratio synced / cp -r':<34}{synced / cp_s:>12.2f}")
        shutil.rmtree(tmp / "media", ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
