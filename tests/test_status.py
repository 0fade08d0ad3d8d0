"""`midictl status` as text: the compute line in each state the daemon reports, and names that
look like rich markup."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from midid.status import render_status


def _text(compute: dict | None, **lists: list) -> str:
    status = {"daemon": {"running": compute is not None, "pid": 1, "uptime_s": 5.0, "version": "0",
                         "state": "running"},
              "stages": {"analyze": {"done": 0, "queued": 0, "failed": 0, "rate": 0.0}},
              "sources": [], "devices": [], "errors": [], "daemon_messages": [], "compute": compute,
              **lists}
    out = io.StringIO()
    render_status(status, Console(file=out, width=200))
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


def test_names_in_square_brackets_are_shown_as_they_are() -> None:
    """Packs are often called "[FREE] ..." or "Kick [red].mid": rich would take the brackets
    for markup and drop them (or fail on "[/x]")."""
    text = _text(
        None,
        sources=[{"path": "/srv/[FREE] Packs", "watching": True}],
        devices=[{"label": "MPC [bold]", "state": "synced", "pending": 0, "message": "[/x] done"}],
        errors=[{"at": 0, "stage": "analyze", "path": "[FREE] Pack/Kick [red].mid", "error": "bad [bold] chunk"}],
        daemon_messages=["library disk full: [/] free some space"],
    )
    for shown in ("/srv/[FREE] Packs", "MPC [bold]", "[/x] done", "[FREE] Pack/Kick [red].mid: bad [bold] chunk",
                  "library disk full: [/] free some space"):
        assert shown in text, shown


def test_each_stage_says_how_long_its_queue_will_take_at_the_last_minutes_rate() -> None:
    stages = {"import": {"done": 5, "queued": 0, "failed": 0, "rate": 3.0},
              "analyze": {"done": 9000, "queued": 12000, "failed": 0, "rate": 100.0},
              "split": {"done": 0, "queued": 40, "failed": 0, "rate": 0.0},
              "export": {"done": 0, "queued": 720000, "failed": 0, "rate": 50.0}}
    out = io.StringIO()
    render_status({"daemon": {"running": False}, "stages": stages, "sources": [], "devices": [], "errors": [],
                   "compute": None}, Console(file=out, width=100))
    rows = {line.split()[0]: line.split()[1:] for line in out.getvalue().splitlines()[1:] if line.strip()}
    assert rows["stage"] == ["done", "queued", "failed", "rate/s", "left"]
    assert rows["analyze"][-1] == "~2m00s"
    assert rows["export"][-1] == "~4h00m"
    assert len(rows["import"]) == 4 and len(rows["split"]) == 4  # nothing queued / nothing moving: blank
