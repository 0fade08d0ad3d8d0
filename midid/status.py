"""`midictl status`: the database says what is done; the daemon, when it runs, says what is live."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import Config
from .db import STAGES, Library


def collect_status(cfg: Config) -> dict[str, Any]:
    """One object: daemon, stages, sources, devices, errors — with or without a running daemon."""
    from .control import DaemonNotRunning, request

    live: dict[str, Any] = {}
    try:
        reply = request(cfg.socket_path, {"cmd": "status"}, timeout=2.0)
        if reply.get("ok"):
            live = reply
    except (DaemonNotRunning, OSError, ValueError):
        live = {}
    daemon = live.get("daemon") or {"running": False, "pid": None, "uptime_s": None, "version": None}
    status: dict[str, Any] = {"daemon": daemon, "stages": {s: {"done": 0, "queued": 0, "failed": 0, "rate": 0.0}
                                                           for s in STAGES},
                              "sources": live.get("sources") or [{"path": f, "watching": False}
                                                                 for f in map(str, cfg.source_folders)],
                              "devices": live.get("devices") or [], "errors": []}
    if cfg.database_path.exists():
        lib = Library(cfg.database_path, readonly=True)
        try:
            status["stages"] = lib.stage_counts(cfg.rename.enabled)
            status["errors"] = lib.latest_errors(10)
            if not status["devices"]:
                status["devices"] = list(lib.db.query(
                    "SELECT uuid, label, name, profile, last_seen, last_sync, state, message FROM devices"
                    " ORDER BY last_seen DESC"))
        finally:
            lib.close()
    for stage, extra in (live.get("queued") or {}).items():
        if stage in status["stages"]:
            status["stages"][stage]["queued"] += int(extra)
    status["daemon_messages"] = live.get("messages") or []
    status["compute"] = live.get("compute")  # None without a running daemon
    return status


def render_status(status: dict[str, Any], console: Console) -> None:
    d = status["daemon"]
    if d.get("running"):
        console.print(f"[green]midid running[/green] (pid {d['pid']}, up {_duration(d['uptime_s'])}, "
                      f"version {d['version']}){' — ' + d['state'] if d.get('state') else ''}")
    else:
        console.print("[yellow]midid is not running[/yellow] (showing the library database)")
    if status.get("compute"):
        console.print(f"compute: {_compute_line(status['compute'])}", highlight=False, soft_wrap=True)
    table = Table("stage", "done", "queued", "failed", "rate/s", "left", box=None)
    for stage, row in status["stages"].items():
        table.add_row(stage, f"{row['done']:,}", f"{row['queued']:,}",
                      f"[red]{row['failed']:,}[/red]" if row["failed"] else "0", f"{row['rate']:.1f}",
                      _time_left(row["queued"], row["rate"]))
    console.print(table)
    if status["sources"]:
        console.print("[bold]sources[/bold]")
        for src in status["sources"]:
            how = "watching" if src.get("watching") else "not watched"
            if src.get("polling"):
                how = "polling (inotify limit reached)"
            console.print(f"  {escape(src['path'])}  {how}", highlight=False)
    if status["devices"]:
        console.print("[bold]devices[/bold]")
        for dev in status["devices"]:
            console.print(f"  {escape(dev.get('label') or dev.get('uuid') or '')}  {dev.get('state') or ''}  "
                          f"pending {dev.get('pending', '?')}  {escape(dev.get('message') or '')}", highlight=False)
    for message in status.get("daemon_messages", []):
        console.print(f"[yellow]![/yellow] {escape(message)}", highlight=False)
    if status["errors"]:
        console.print("[bold]latest errors[/bold] (`midictl retry-failed` tries them all again)")
        for e in status["errors"]:
            when = time.strftime("%H:%M:%S", time.localtime(e["at"])) if e.get("at") else ""
            console.print(f"  {when} [red]{e['stage']}[/red] {escape(e['path'])}: {escape(e['error'])}", highlight=False)


def _time_left(queued: int, rate: float) -> str:
    """The queue over the last minute's rate: what a user importing a few hundred thousand
    files asks first. Blank when nothing waits or nothing moved in the last minute."""
    if not queued or rate <= 0:
        return ""
    return "~" + _duration(queued / rate)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def device_rows(cfg: Config) -> list[dict[str, Any]]:
    """Every drive the library has seen, merged with what the daemon has attached now."""
    live = {d["uuid"]: d for d in collect_status(cfg)["devices"] if d.get("devnode")}
    rows: list[dict[str, Any]] = []
    if cfg.database_path.exists():
        lib = Library(cfg.database_path, readonly=True)
        try:
            for row in lib.db.query("SELECT d.*, (SELECT count(*) FROM exports e WHERE e.device_uuid = d.uuid"
                                    " AND e.gone = 0) AS exported FROM devices d ORDER BY last_seen DESC"):
                row["attached"] = row["uuid"] in live
                if row["attached"]:
                    row.update({k: live[row["uuid"]][k] for k in ("state", "message", "pending", "mountpoint")})
                rows.append(row)
        finally:
            lib.close()
    known = {r["uuid"] for r in rows}
    rows += [dict(d, attached=True) for uuid, d in live.items() if uuid not in known]
    return rows


def _compute_line(compute: dict[str, Any]) -> str:
    """"3 Ray workers (analyze 3) on 2 nodes of the Ray cluster at host:6379", or the runner."""
    workers = compute.get("workers") or {}
    if not workers:
        return {"in-process": "in the daemon process", "no workers": "no workers (Ray starting, or "
                "restarting after a loss)"}.get(compute.get("runner"), compute.get("runner") or "none")
    pools = ", ".join(f"{kind} {n}" for kind, n in workers.items())
    nodes = len(compute.get("nodes") or {})
    where = "a local Ray" if compute.get("ray") == "local" else f"the Ray cluster at {compute.get('ray')}"
    count = sum(workers.values())
    line = (f"{count} Ray worker{'s' if count != 1 else ''} ({pools}) on {nodes} "
            f"node{'s' if nodes != 1 else ''} of {where}")
    if compute.get("rejoin_in_s") is not None:
        line += f"; the configured cluster is tried again in {compute['rejoin_in_s']:.0f} s"
    return line
