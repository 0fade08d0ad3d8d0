"""`midictl status` as text: the compute line in each state the daemon reports."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from midid.status import render_status


def _text(compute: dict | None) -> str:
    status = {"daemon": {"running": compute is not None, "pid": 1, "uptime_s": 5.0, "version": "0",
                         "state": "running"},
              "stages": {"analyze": {"done": 0, "queued": 0, "failed": 0, "rate": 0.0}},
              "sources": [], "devices": [], "errors": [], "daemon_messages": [], "compute": compute}
    out = io.StringIO()
    render_status(status, Console(file=out, width=60))
    return out.getvalue()


@pytest.mark.parametrize("compute, line", [
    ({"runner": "ray", "ray": "192.0.2.2:6379", "workers": {"analyze": 3, "split": 1},
      "nodes": {"aa": 2, "bb": 2}},
     "compute: 4 Ray workers (analyze 3, split 1) on 2 nodes of the Ray cluster at 192.0.2.2:6379"),
    ({"runner": "ray", "ray": "local", "workers": {"analyze": 1}, "nodes": {"aa": 1}},
     "compute: 1 Ray worker (analyze 1) on 1 node of a local Ray"),
    ({"runner": "ray", "ray": "local", "workers": {"analyze": 2}, "nodes": {"aa": 2}, "rejoin_in_s": 41.6},
     "compute: 2 Ray workers (analyze 2) on 1 node of a local Ray; the configured cluster is tried again in 42 s"),
    ({"runner": "no workers", "ray": None, "workers": {}, "nodes": {}},
     "compute: no workers (Ray starting, or restarting after a loss)"),
    ({"runner": "in-process", "ray": None, "workers": {}, "nodes": {}}, "compute: in the daemon process"),
])
def test_the_compute_line_says_where_the_workers_run(compute: dict, line: str) -> None:
    assert line in _text(compute).splitlines()  # one line, however narrow the terminal


def test_no_compute_line_without_a_daemon() -> None:
    assert "compute:" not in _text(None)
