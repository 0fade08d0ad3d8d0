"""A real two-node Ray cluster on this machine, for the tests: a head and a second node, each
its own raylet with its own CPUs, built with Ray's own `ray.cluster_utils.Cluster` (what Ray
tests multi-node scheduling with) in a child process, so the test session's local Ray is
never touched.

Run as a script it starts the cluster, prints one JSON line (address and each node's raylet
pid and id), then obeys lines on stdin: ``remove`` stops the second node (its raylet and its
workers, as when that machine dies); end of input shuts the cluster down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rayhead import head_processes, kill, process_table


@dataclass
class TwoNodes:
    address: str
    raylets: dict[str, int]  # "head" / "second" -> raylet pid
    node_ids: dict[str, str]
    process: subprocess.Popen

    def remove_second(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("remove\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "removed"

    def workers(self) -> dict[str, list[int]]:
        """midid's pool workers on each node: `ray::_Worker` processes by their parent raylet."""
        by_raylet = {pid: node for node, pid in self.raylets.items()}
        found: dict[str, list[int]] = {node: [] for node in self.raylets}
        for pid, (parent, cmdline) in process_table().items():
            if parent in by_raylet and cmdline.startswith("ray::_Worker"):
                found[by_raylet[parent]].append(pid)
        return found


@contextmanager
def two_nodes(temp_dir: Path, head_cpus: int = 1, second_cpus: int = 1) -> Iterator[TwoNodes]:
    process = subprocess.Popen([sys.executable, __file__, str(temp_dir), str(head_cpus), str(second_cpus)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    assert process.stdout is not None and process.stdin is not None
    try:
        line = process.stdout.readline()
        assert line, "the two-node Ray cluster did not start"
        info = json.loads(line)
        yield TwoNodes(info["address"], info["raylets"], info["node_ids"], process)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        kill(head_processes(temp_dir))  # anything the cluster's shutdown left behind


def _serve(temp_dir: str, head_cpus: int, second_cpus: int) -> None:
    import ray
    from ray._private import ray_constants
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )
    from ray.cluster_utils import Cluster

    # As `ray start` does (and midid's driver expects): token authentication when this
    # machine has a Ray token.
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    # The Cluster writes its address file below Ray's default temp dir whatever temp_dir says
    # (and fails when /tmp/ray does not exist yet): keep it inside this cluster's own.
    os.environ["RAY_TMPDIR"] = temp_dir
    Path(temp_dir, "ray").mkdir(exist_ok=True)

    common = {"temp_dir": temp_dir, "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": head_cpus, "include_dashboard": False, **common})
    second = cluster.add_node(num_cpus=second_cpus, **common)
    cluster.wait_for_nodes()
    nodes = {"head": cluster.head_node, "second": second}
    raylets = {name: node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
               for name, node in nodes.items()}
    print(json.dumps({"address": cluster.address, "raylets": raylets,
                      "node_ids": {name: node.node_id for name, node in nodes.items()}}), flush=True)
    for command in sys.stdin:
        if command.strip() == "remove":
            cluster.remove_node(second, allow_graceful=False)
            print("removed", flush=True)
    cluster.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
