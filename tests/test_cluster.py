"""The pools on a real two-node Ray cluster: where the actors go, and losing a node mid-import."""

from __future__ import annotations

import functools
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import copied, write_config
from raycluster import two_nodes
from test_daemon import Daemon, ctl, status, wait_until
from rayhead import free_port, hold, kill, remove_head, resume, start_head
from midid.pool import placement
from midid.sample import chords, drum_loop, melody, song, write_samples


def test_placement_spreads_every_pool_by_cpus() -> None:
    nodes = [("a", 1.0), ("b", 2.0)]
    placed = placement(nodes, {"analyze": 3, "split": 0})
    assert sorted(placed["analyze"]) == ["a", "b", "b"] and placed["split"] == []
    # Each pool on its own is spread; together they fill the nodes by CPUs.
    placed = placement([("a", 2.0), ("b", 2.0)], {"analyze": 2, "split": 2})
    assert sorted(placed["analyze"]) == ["a", "b"] and sorted(placed["split"]) == ["a", "b"]
    placed = placement([("a", 2.0), ("b", 2.0)], {"analyze": 1, "split": 1})
    assert placed == {"analyze": ["a"], "split": ["b"]}
    # More actors than CPUs: still in proportion.
    assert sorted(placement([("a", 1.0), ("b", 3.0)], {"analyze": 8})["analyze"]).count("b") == 6


def test_placement_skips_nodes_without_cpus_and_needs_one() -> None:
    assert placement([("head", 0.0), ("w", 4.0)], {"analyze": 2}) == {"analyze": ["w", "w"]}
    with pytest.raises(RuntimeError, match="no live node with CPUs"):
        placement([("head", 0.0)], {"analyze": 1})


def _catch_running(cluster, count: int, deadline_s: float = 120) -> dict[str, list[int]]:
    """Stop each pool worker (SIGSTOP) the moment it is seen running a batch (Ray titles the
    process `ray::_Worker.run` then), until `count` are caught: each then has a batch in
    flight, and the import cannot end meanwhile. The known workers are watched every
    millisecond and /proc is walked for new ones only now and then: a walk takes tens of
    milliseconds on a loaded machine, long enough for a free worker to run every batch left
    between two looks (what failed in CI)."""
    deadline = time.monotonic() + deadline_s
    caught: dict[str, list[int]] = {}
    known: dict[int, str] = {}
    walked = 0.0
    while sum(map(len, caught.values())) < count:
        assert time.monotonic() < deadline, f"only {caught} of {count} pool workers ran a batch"
        if len(known) < count or time.monotonic() - walked > 0.5:
            known |= {pid: node for node, pids in cluster.workers().items() for pid in pids}
            walked = time.monotonic()
        for pid, node in known.items():
            if pid in caught.get(node, []):
                continue
            try:
                running = Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::_Worker.run")
            except OSError:
                continue
            if running:
                hold([pid])
                caught.setdefault(node, []).append(pid)
        time.sleep(0.001)
    return caught


@functools.cache
def _long_song(bars: int = 4000) -> bytes:
    rng = random.Random(3)
    tracks = [melody(rng, 0, False, bars=bars), chords(0, False, [0, 4, 5, 3] * (bars // 4)), drum_loop(rng, bars=bars)]
    return song(100, tracks, ["Lead", "Keys", "Drums"])


def _write_long_songs(dest: Path, count: int) -> int:
    """Three-track songs 4,000 bars long: their split parts take ~10 ms each to analyse (the
    sample pack's ~1 ms), so a worker is seen in the middle of a batch. One song is built (mido
    takes seconds over it) and told apart by a byte after its last chunk, which readers skip."""
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (dest / f"long song {i}.mid").write_bytes(_long_song() + bytes([i]))
    return count


def _import_on_two_nodes(tmp_path: Path, lose) -> tuple[int, subprocess.CompletedProcess]:
    """A one-shot import on a head (1 CPU) + second node (2 CPUs) cluster, batch size 1; once
    every pool worker is caught mid-batch, `lose(cluster, workers)` takes something away."""
    src = tmp_path / "src"
    files = write_samples(src) + _write_long_songs(src / "long", 12)
    temp_dir = Path(tempfile.mkdtemp(prefix="midid-2n-"))  # short: Ray's socket paths below it
    try:
        with two_nodes(temp_dir, head_cpus=1, second_cpus=2) as cluster:
            config = write_config(tmp_path, f'[ray]\naddress = "{cluster.address}"\n'
                                            '[pipeline]\nbatch_size = 1\n')
            cmd = [sys.executable, "-m", "midid.ctl", "--config", str(config), "import", "--local", "--json", str(src)]
            job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                workers = _catch_running(cluster, 3)
                # One actor per CPU of the whole cluster, placed in proportion to the CPUs.
                assert {node: len(pids) for node, pids in workers.items()} == {"head": 1, "second": 2}
                lose(cluster, workers)
                out, err = job.communicate(timeout=300)
            finally:
                job.kill()
                resume([pid for pids in cluster.workers().values() for pid in pids])
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return files, subprocess.CompletedProcess(cmd, job.returncode, out, err)


def _nothing_lost_or_blamed(files: int, done: subprocess.CompletedProcess, resumed: bool = False) -> None:
    """`resumed`: a second run, which also analyses what the first left queued."""
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["imported"] + summary["duplicates"] == files
    assert summary["analysis_errors"] == 0 and summary["failed"] == [], summary
    if not resumed:
        assert summary["analysed"] == summary["imported"] + summary["split_parts"]


@pytest.mark.slow
def test_pools_spread_over_the_nodes_and_survive_losing_one(tmp_path: Path) -> None:
    """The second node dies with batches on it: they are redone on the actors Ray restarts on
    the head, nothing is lost or blamed on a file, and the cluster is kept (its GCS answers)."""
    def lose_second(cluster, workers) -> None:
        cluster.remove_second()
        kill(set(workers["second"]))  # its machine is gone: so are its processes
        resume(workers["head"])

    files, done = _import_on_two_nodes(tmp_path, lose_second)
    _nothing_lost_or_blamed(files, done)
    assert "worker died" in done.stderr, "the batches on the lost node must have failed and gone again"
    assert "lost the Ray cluster" not in done.stderr


@pytest.mark.slow
def test_losing_the_drivers_own_raylet_loses_nothing(tmp_path: Path) -> None:
    """Only the raylet of the driver's node dies (its GCS still answers, so the probe sees
    nothing). Ray ends a driver whose object store went with that raylet as soon as it puts or
    gets a batch larger than Ray inlines (100 KB: these long songs), so the import either
    finishes on what is left - the other node's actors, or a local Ray once the pool's workers
    stop answering - or is ended by Ray; then running it again finishes the rest. Either way
    every file is analysed exactly once and none is blamed."""
    def lose_drivers_raylet(cluster, workers) -> None:
        kill({cluster.raylets["head"]})
        resume(workers["head"] + workers["second"])

    files, first = _import_on_two_nodes(tmp_path, lose_drivers_raylet)
    if first.returncode == 0:
        _nothing_lost_or_blamed(files, first)
    else:
        assert "Traceback" not in first.stderr, first.stderr[-3000:]  # Ray ended it, not midid
        again = subprocess.run(first.args, capture_output=True, text=True, timeout=300)
        _nothing_lost_or_blamed(files, again, resumed=True)
    with sqlite3.connect(tmp_path / "midid.sqlite3") as conn:
        rows, analysed, distinct, unfinished = conn.execute(
            "SELECT (SELECT count(*) FROM files), (SELECT count(*) FROM analysis),"
            " (SELECT count(DISTINCT file_id) FROM analysis),"
            " (SELECT count(*) FROM files WHERE error IS NOT NULL OR analysed_at IS NULL)").fetchone()
    assert rows == analysed == distinct and unfinished == 0


@pytest.mark.slow
def test_the_daemon_on_a_cluster_says_where_its_workers_run(tmp_path: Path) -> None:
    """`midictl status` names the cluster and how many workers each node has (one per CPU)."""
    src = tmp_path / "src"
    src.mkdir()
    temp_dir = Path(tempfile.mkdtemp(prefix="midid-2n-"))
    try:
        with two_nodes(temp_dir, head_cpus=1, second_cpus=2) as cluster:
            config = write_config(tmp_path, f'[sources]\nfolders = ["{src}"]\n[watch]\nsettle_s = 0.5\n'
                                            f'[ray]\naddress = "{cluster.address}"\n[export]\nenabled = false\n')
            daemon = Daemon(tmp_path, config).ready()
            try:
                files = write_samples(src / "drop")
                wait_until(lambda: status(config)["stages"]["analyze"]["done"] >= files, 120, "the drop analysed")
                compute = status(config)["compute"]
                text = ctl(config, "status").stdout
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    short = {name: node[:8] for name, node in cluster.node_ids.items()}
    assert compute == {"runner": "ray", "ray": cluster.address, "workers": {"analyze": 3},
                       "nodes": {short["head"]: 1, short["second"]: 2}, "rejoin_in_s": None}
    assert f"compute: 3 Ray workers (analyze 3) on 2 nodes of the Ray cluster at {cluster.address}" in text


@pytest.mark.slow
def test_a_cluster_without_cpus_for_the_workers_is_said_and_the_work_runs_locally(tmp_path: Path,
                                                                                  sample_midi) -> None:
    """A head started with `--num-cpus=0` and no worker node yet: nowhere to put the pools.
    A one-shot import and the daemon both say so and analyse on a local Ray instead."""
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="midid-head-"))
    head = start_head(temp_dir, port, num_cpus=0)
    try:
        src = copied(sample_midi, tmp_path / "src")
        one_shot = write_config(tmp_path / "one-shot", f'[ray]\naddress = "127.0.0.1:{port}"\n')
        done = subprocess.run([sys.executable, "-m", "midid.ctl", "--config", str(one_shot), "import",
                               "--local", "--json", str(src)], capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["analysed"] == len(sample_midi) + 3
        assert "no live node with CPUs" in done.stderr and "local Ray" in done.stderr

        watched = tmp_path / "watched"
        watched.mkdir()
        config = write_config(tmp_path / "daemon", f'[sources]\nfolders = ["{watched}"]\n[watch]\nsettle_s = 0.5\n'
                                                   f'[ray]\naddress = "127.0.0.1:{port}"\n[export]\nenabled = false\n')
        daemon = Daemon(tmp_path / "daemon", config).ready()
        try:
            (watched / "a.mid").write_bytes(sample_midi[0].read_bytes())
            wait_until(lambda: status(config)["stages"]["analyze"]["done"] >= 1, 120, "analysed on a local Ray")
            s = status(config)
        finally:
            daemon.stop()
    finally:
        remove_head(head, temp_dir)
    assert s["compute"]["ray"] == "local" and 0 <= s["compute"]["rejoin_in_s"] <= 60  # [ray] rejoin_s
    assert any("cannot run midid's workers: the Ray cluster has no live node with CPUs" in m
               for m in s["daemon_messages"]), s["daemon_messages"]
