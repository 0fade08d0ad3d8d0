"""`midictl`: the command line. A thin layer: every command calls the functions the daemon uses.

Queries read the database directly; commands that change the library go to the daemon over its
control socket when it runs (it is the only writer), and run in this process when it does not.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .config import (CATEGORIES, DROPIN_NAME, Config, ConfigError, dropin_dir, find_config_file, get_value, load_config,
                     set_value, unset_value)
from .logsetup import stacks_on_sigusr1

log = logging.getLogger(__name__)
err_console = Console(stderr=True)
REMOVE_WAIT_S = 330.0  # a little longer than the daemon waits for its main loop (daemon.REMOVE_TIMEOUT_S)


class Fatal(click.ClickException):
    """A run that cannot proceed; the message says what to do. Exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"midictl: {self.message}", err=True)


def _config(ctx: click.Context) -> Config:
    try:
        return load_config(ctx.obj.get("config"))
    except ConfigError as exc:
        raise Fatal(str(exc)) from None


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, separators=(",", ":"), default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file (else $MIDID_CONFIG, /etc/midid/midid.toml, ~/.config/midid/midid.toml).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="midictl")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Manage a midid MIDI library: import, search, analyse, export to an MPC/Force."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), format="%(levelname)s %(name)s: %(message)s")
    stacks_on_sigusr1()
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


# ---- import ------------------------------------------------------------------------------


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object (last line).")
@click.option("--no-wait", is_flag=True, help="With a running daemon: hand the paths over and return at once.")
@click.option("--local", is_flag=True, help="Run in this process even when a daemon is running (needs the library lock).")
@click.pass_context
def import_cmd(ctx: click.Context, paths: tuple[str, ...], as_json: bool, no_wait: bool, local: bool) -> None:
    """Import files, folders and archives into the library, then split and analyse them."""
    cfg = _config(ctx)
    from .runjob import ImportJobError, daemon_import, run_import

    resolved = [str(Path(p).resolve()) for p in paths]
    try:
        summary = None if local else daemon_import(cfg, resolved, wait=not no_wait, show_progress=_tty() and not as_json)
        if summary is None:
            summary = run_import(cfg, resolved, show_progress=_tty() and not as_json)
    except ImportJobError as exc:
        raise Fatal(str(exc)) from None
    if as_json:
        _emit_json(summary)
    else:
        _print_import_summary(summary)


def _tty() -> bool:
    return sys.stderr.isatty()


def _print_import_summary(s: dict[str, Any]) -> None:
    console = Console()
    if s.get("queued"):
        console.print(f"handed {len(s.get('paths', []))} path(s) to the daemon; follow with `midictl status`")
        return
    console.print(
        f"seen {s['seen']:,}  imported {s['imported']:,}  duplicates {s['duplicates']:,}  "
        f"skipped {s['skipped']:,}  errors {s['errors']:,}  in {s['elapsed_s']:.1f} s"
    )
    if "analysed" in s:
        console.print(f"split into {s['split_parts']:,} part(s); analysed {s['analysed']:,}, "
                      f"{s['analysis_errors']:,} analysis error(s)")
    for failure in s["failed"][:50]:
        console.print(f"  [red]failed[/red] {escape(failure['path'])}: {escape(failure['error'])}", highlight=False)
    if len(s["failed"]) > 50:
        console.print(f"  … and {len(s['failed']) - 50} more (see `midictl status`)")


# ---- analyze -----------------------------------------------------------------------------


@cli.command("analyze")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input, one per line, in input order.")
def analyze_cmd(files: tuple[str, ...], as_json: bool) -> None:
    """Analyse MIDI files directly (no library, no database writes)."""
    from .analysis.report import analyze_paths, render_table

    rows = analyze_paths(files)
    if as_json:
        out = sys.stdout
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        out.flush()
        return
    Console().print(render_table(list(rows)))


# ---- status, find, stats -----------------------------------------------------------------


@cli.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """What the daemon is doing, per-stage progress, sources, devices and the latest errors."""
    from .status import collect_status, render_status

    status = collect_status(_config(ctx))
    if as_json:
        _emit_json(status)
    else:
        render_status(status, Console())


def _open_readonly(cfg: Config):  # type: ignore[no-untyped-def]
    from .db import Library

    try:
        return Library(cfg.database_path, readonly=True)
    except FileNotFoundError as exc:
        raise Fatal(str(exc)) from None


@cli.command("find")
@click.option("--bpm", help="120 or a range 118-122")
@click.option("--key", help="Am, C, F#m, 'D minor'")
@click.option("--category", type=click.Choice(CATEGORIES, case_sensitive=False))
@click.option("--tag", "tags", multiple=True, help="a tag (repeat for all of several)")
@click.option("--text", help="words in the name, pack, path or tags (names and packs of duplicates too)")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
@click.option("--paths", is_flag=True, help="only the library files' full paths, one per line (for xargs, cp, a DAW)")
@click.pass_context
def find_cmd(ctx: click.Context, bpm: str | None, key: str | None, category: str | None, tags: tuple[str, ...],
             text: str | None, limit: int, as_json: bool, paths: bool) -> None:
    """Search the library."""
    from .search import FindQuery, QueryError, find

    if as_json and paths:
        raise click.UsageError("--json and --paths print different things: choose one")
    cfg = _config(ctx)
    lib = _open_readonly(cfg)
    try:
        rows = find(lib, FindQuery(bpm=bpm, key=key, category=category, tags=tags, text=text, limit=limit))
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    # `path` is relative to the library folder, as the library shows it; `file` is where the
    # file is, to copy it into a project or open it in a DAW.
    library = os.path.abspath(cfg.library_path)
    for row in rows:
        row["file"] = os.path.join(library, row["path"])
    if as_json or paths:
        for row in rows:
            if paths:
                click.echo(row["file"])
            else:
                _emit_json(row)
        return
    if not rows:
        err_console.print("no matching files")
        return
    # The path gets the width: a narrow terminal cuts the tags short (`--json` has them all)
    # and folds the path only when it still does not fit, never cutting off its file name.
    cells = [(row["path"], f"{row['bpm']:.1f}" if row["bpm"] else "", row["key"] or "", row["category"] or "",
              ", ".join(row["tags"][:4])) for row in rows]
    heads = ("path", "bpm", "key", "category", "tags")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    console = Console()
    tags_room = console.width - sum(widths[:4]) - 2 * len(heads)
    table = Table(box=None)
    table.add_column("path", overflow="fold")
    for name in heads[1:4]:
        table.add_column(name, no_wrap=True)
    table.add_column("tags", no_wrap=True, overflow="ellipsis", max_width=max(len("tags"), tags_room))
    for cell in cells:
        table.add_row(escape(cell[0]), *cell[1:4], escape(cell[4]))
    console.print(table)
    more = f"; there may be more: --limit {min(limit * 10, 100_000)}" if len(rows) == limit else ""
    err_console.print(f"{len(rows)} file{'s' if len(rows) != 1 else ''} in {escape(library)}{more}",
                      highlight=False, soft_wrap=True)


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stats_cmd(ctx: click.Context, as_json: bool) -> None:
    """Library overview: files, duplicates saved, categories, BPM and key histograms."""
    from .search import stats

    data = stats(_open_readonly(_config(ctx)))
    if as_json:
        _emit_json(data)
        return
    console = Console()
    console.print(f"[bold]{data['files']:,}[/bold] files ({data['bytes'] / 1e6:,.1f} MB), "
                  f"{data['parts']:,} split parts, {data['duplicates']:,} duplicates not stored "
                  f"({data['duplicate_bytes_saved'] / 1e6:,.1f} MB saved)")
    for title, hist in (("category", data["categories"]), ("bpm", data["bpm"]), ("key", data["keys"])):
        _bar_chart(console, title, hist)


def _bar_chart(console: Console, title: str, hist: dict[str, int]) -> None:
    if not hist:
        return
    top = max(hist.values())
    table = Table(title=title, box=None, show_header=False)
    for label, count in hist.items():
        table.add_row(str(label), f"{count:,}", "[cyan]" + "█" * max(1, round(30 * count / top)) + "[/cyan]")
    console.print(table)


# ---- export, devices, sync ---------------------------------------------------------------


@cli.command("export")
@click.option("--to", "target", required=True, type=click.Path(file_okay=False), help="Folder or mounted drive.")
@click.option("--profile", type=click.Choice(["mpc", "force"], case_sensitive=False),
              help="Folder layout (default: [export] profile).")
@click.option("--category", "categories", multiple=True, type=click.Choice(CATEGORIES, case_sensitive=False),
              help="Only these categories (repeatable; default: [export] categories).")
@click.option("--dry-run", is_flag=True, help="Print the plan, copy nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def export_cmd(ctx: click.Context, target: str, profile: str | None, categories: tuple[str, ...], dry_run: bool,
               as_json: bool) -> None:
    """Export categorised files into the MPC/Force folder layout under DIR/<root>."""
    from rich.progress import Progress

    from .exporter import export_to_folder

    cfg = _config(ctx)
    lib = _open_readonly(cfg)
    dest = Path(target).resolve()
    with Progress(transient=True, disable=as_json or dry_run or not _tty()) as bar:
        task = bar.add_task("export", total=None)
        try:
            summary, items = export_to_folder(
                lib, cfg.library_path, dest, profile=profile or cfg.export.profile, root=cfg.export.root,
                categories=categories or cfg.export.categories, dry_run=dry_run,
                progress=lambda done, total: bar.update(task, completed=done, total=total))
        except OSError as exc:
            if not dest.parent.is_dir():
                raise Fatal(f"{dest.parent} does not exist: mount the drive (or create the folder) first") from None
            raise Fatal(f"cannot write to {dest}: {exc.strerror}; check that the drive is mounted and writable") from None
    if dry_run:
        for item in items:
            if as_json:
                _emit_json({"from": str(item.src), "to": item.dest_rel, "category": item.category})
            else:
                click.echo(f"{item.src}  ->  {item.dest_rel}")
        if not as_json:
            click.echo(f"{len(items)} file(s) to copy, {summary.skipped_already_there} already there")
        return
    if as_json:
        _emit_json(summary.to_dict())
        return
    Console().print(f"copied {summary.copied:,} file(s) ({summary.bytes / 1e6:,.1f} MB), "
                    f"{summary.skipped_already_there:,} already there, {summary.progressions} .progression file(s), "
                    f"{summary.errors} error(s)")
    for failure in summary.failed[:20]:
        Console().print(f"  [red]failed[/red] {escape(failure['path'])}: {escape(failure['error'])}", highlight=False)
    if summary.stopped:
        raise Fatal(f"stopped: {summary.stopped}; {summary.not_copied} file(s) not copied")


@cli.command("devices")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def devices_cmd(ctx: click.Context, as_json: bool) -> None:
    """Known export drives: attached now or not, last sync, files pending."""
    from .status import device_rows

    rows = device_rows(_config(ctx))
    if as_json:
        for row in rows:
            _emit_json(row)
        return
    if not rows:
        err_console.print("no export drive seen yet; plug one in (label MPC*, FORCE*, AKAI* or listed in"
                          " \\[export] devices)")
        return
    table = Table("drive", "uuid", "profile", "attached", "state", "last sync", "pending", box=None)
    for r in rows:
        last = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_sync"])) if r.get("last_sync") else "never"
        table.add_row(escape(r.get("label") or ""), r["uuid"], r.get("profile") or "", "yes" if r.get("attached") else "no",
                      escape((r.get("state") or "") + (f" — {r['message']}" if r.get("message") else "")), last,
                      str(r.get("pending", "")))
    Console().print(table)


@cli.command("sync")
@click.argument("device", required=False)
@click.option("--full", is_flag=True, help="Also copy again files you deleted on the drive.")
@click.pass_context
def sync_cmd(ctx: click.Context, device: str | None, full: bool) -> None:
    """Sync attached export drives now (the daemon does it on plug-in by itself)."""
    reply = _daemon(ctx, {"cmd": "sync", "device": device, "full": full})
    click.echo(f"syncing {', '.join(reply.get('devices', []))}")


@cli.command("retry-failed")
@click.pass_context
def retry_failed_cmd(ctx: click.Context) -> None:
    """Queue files whose split or analysis failed again (after fixing or upgrading)."""
    _daemon(ctx, {"cmd": "retry-failed"})
    click.echo("failed files queued again")


@cli.command("rescan")
@click.pass_context
def rescan_cmd(ctx: click.Context) -> None:
    """Look through the source folders for files the watcher missed."""
    _daemon(ctx, {"cmd": "rescan"})
    click.echo("rescan queued")


@cli.command("pause")
@click.pass_context
def pause_cmd(ctx: click.Context) -> None:
    """Pause importing, analysis and syncing."""
    _daemon(ctx, {"cmd": "pause"})


@cli.command("resume")
@click.pass_context
def resume_cmd(ctx: click.Context) -> None:
    """Resume after `pause` (or after a full library disk was freed)."""
    _daemon(ctx, {"cmd": "resume"})


@cli.command("remove")
@click.argument("paths", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def remove_cmd(ctx: click.Context, paths: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Take library files or folders (as `find` shows them), or what a source pack brought, out of the library.

    Sources are not touched; a rescan does not bring the files back, importing them again does.
    With the daemon running, the daemon does it."""
    from .control import DaemonNotRunning, request
    from .db import Library
    from .remove import RemoveError, RemoveSummary, remove_from_library, targets
    from .runjob import LibraryBusy, writer_lock

    cfg = _config(ctx)
    try:
        named: dict[str, None] = {}  # in order, once each
        kept = 0
        reader = _open_readonly(cfg)
        for given in paths:
            found, also_elsewhere = targets(reader, cfg.library_path, given, Path.cwd())
            named.update(dict.fromkeys(found))
            kept += also_elsewhere
        relpaths = list(named)
        if not relpaths:
            summary = RemoveSummary(dry_run=dry_run)
        elif dry_run:
            summary = remove_from_library(reader, cfg.library_path, relpaths, dry_run=True)
        else:
            try:
                reply = request(cfg.socket_path, {"cmd": "remove", "paths": relpaths}, timeout=REMOVE_WAIT_S)
            except DaemonNotRunning:
                with writer_lock(cfg, wait=False):
                    summary = remove_from_library(Library(cfg.database_path), cfg.library_path, relpaths)
            else:
                if not reply.get("ok"):
                    raise Fatal(str(reply.get("error")))
                summary = RemoveSummary(reply["removed"], reply["parts"])
    except RemoveError as exc:
        raise Fatal(str(exc)) from None
    except LibraryBusy as exc:
        raise Fatal(f"{exc}; try again when it ends") from None
    except PermissionError as exc:
        raise Fatal(str(exc)) from None
    summary.kept = kept
    if as_json:
        _emit_json(summary.to_dict())
        return
    for path in summary.removed[:50]:
        click.echo(f"  {path}")
    if len(summary.removed) > 50:
        click.echo(f"  … and {len(summary.removed) - 50} more")
    files = f"{len(summary.removed):,} file(s), {summary.parts:,} of them split parts"
    if dry_run:
        click.echo(f"would remove {files}")
    else:
        moved = "; with [sources] mode = \"move\" they were the only copies" if cfg.sources.mode == "move" else ""
        click.echo(f"removed {files}; sources untouched (import them again to bring the files back){moved}")
    if summary.kept:
        click.echo(f"kept {summary.kept:,} file(s) also imported from elsewhere")


@cli.command("check")
@click.option("--repair", is_flag=True, help="Fix what disagrees (needs the daemon stopped).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def check_cmd(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Verify that the library folder and the database agree; exit 1 when they do not."""
    from .check import check_library, repair_library
    from .db import Library
    from .runjob import LibraryBusy, writer_lock

    cfg = _config(ctx)
    if not repair:
        report = check_library(_open_readonly(cfg), cfg.library_path)
    else:
        try:
            with writer_lock(cfg, wait=False):
                lib = Library(cfg.database_path)
                report = repair_library(lib, cfg.library_path, check_library(lib, cfg.library_path))
                after = check_library(lib, cfg.library_path)
                after.repaired = report.repaired
                report = after
        except LibraryBusy as exc:
            raise Fatal(f"{exc}; stop the daemon (`systemctl stop midid`) before `check --repair`") from None
    if as_json:
        _emit_json(report.to_dict())
    else:
        console = Console()
        console.print(f"database integrity: {report.integrity}; {report.files:,} file rows; "
                      f"{report.unanalysed:,} waiting for analysis")
        for label, paths in (("missing from the folder", report.missing), ("not in the database", report.orphans),
                             ("changed on disk", report.changed)):
            if paths:
                console.print(f"[red]{len(paths):,} {label}[/red]: " + escape(", ".join(paths[:10])), highlight=False)
        if report.staging:
            console.print(f"{report.staging} unfinished file(s) in the staging folder")
        if report.repaired:
            console.print("repaired: " + ", ".join(f"{k} {v}" for k, v in report.repaired.items()))
        console.print("[green]library and database agree[/green]" if report.ok
                      else "run `midictl check --repair` to fix")
    if not report.ok:
        ctx.exit(1)


def _daemon(ctx: click.Context, msg: dict[str, Any]) -> dict[str, Any]:
    from .control import DaemonNotRunning, request

    cfg = _config(ctx)
    try:
        reply = request(cfg.socket_path, msg)
    except DaemonNotRunning as exc:
        raise Fatal(f"{exc}; start it with `systemctl start midid`") from None
    except PermissionError as exc:
        raise Fatal(str(exc)) from None
    if not reply.get("ok"):
        raise Fatal(str(reply.get("error")))
    return reply


# ---- config ------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Show and edit the configuration (edits go to a drop-in; your file stays as written)."""


@config_group.command("path")
@click.pass_context
def config_path_cmd(ctx: click.Context) -> None:
    """The main config file in use (it may not exist yet)."""
    click.echo(find_config_file(ctx.obj.get("config")))


@config_group.command("show")
@click.option("--origin", is_flag=True, help="Say which file each value comes from.")
@click.pass_context
def config_show(ctx: click.Context, origin: bool) -> None:
    """The whole configuration in effect: your file, its drop-ins and the defaults, merged."""
    import tomli_w

    cfg = _config(ctx)
    if not origin:
        click.echo(tomli_w.dumps(cfg.to_toml_dict()), nl=False)
        return
    for section, table in cfg.to_toml_dict().items():
        for key, value in table.items():
            where = cfg.origins.get(f"{section}.{key}", "default")
            click.echo(f"{section}.{key} = {json.dumps(value)}    # {where}")


@config_group.command("get")
@click.argument("key")
@click.pass_context
def config_get(ctx: click.Context, key: str) -> None:
    """The value of KEY (section.name) in effect."""
    try:
        value = get_value(_config(ctx), key)
    except ConfigError as exc:
        raise Fatal(str(exc)) from None
    click.echo(json.dumps(value) if not isinstance(value, str) else value)


@config_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Validate and write KEY = VALUE into the midictl drop-in; a running daemon reloads."""
    main = find_config_file(ctx.obj.get("config"))
    try:
        set_value(main, key, value)
    except ConfigError as exc:
        raise Fatal(str(exc)) from None
    in_effect = _say_in_effect(ctx, main, key, written=True)
    _tell_daemon_reload(main)
    if not in_effect:
        ctx.exit(1)


@config_group.command("unset")
@click.argument("key")
@click.pass_context
def config_unset(ctx: click.Context, key: str) -> None:
    """Take KEY out of the midictl drop-in: your file, another drop-in or the default decides again."""
    main = find_config_file(ctx.obj.get("config"))
    try:
        removed = unset_value(main, key)
    except ConfigError as exc:
        raise Fatal(str(exc)) from None
    if not removed:
        err_console.print(f"{key} is not set by midictl; nothing to do")
        return
    _say_in_effect(ctx, main, key, written=False)
    _tell_daemon_reload(main)


def _say_in_effect(ctx: click.Context, main: Path, key: str, written: bool) -> bool:
    """Say what KEY is now and where that comes from; False when midictl has just `written` it
    but a drop-in that sorts after midictl's own (say 90-local.toml) sets it too and wins: the
    `config set` would otherwise look done and not be."""
    cfg = _config(ctx)
    value = get_value(cfg, key)
    shown = escape(json.dumps(value) if not isinstance(value, str) else value)
    origin = cfg.origins.get(key)
    ours = str(dropin_dir(main) / DROPIN_NAME)
    if not written or origin in (None, str(main), ours):
        err_console.print(f"{key} = {shown}  ({escape(origin or 'the default')})", highlight=False, soft_wrap=True)
        return True
    err_console.print(f"{key} = {shown}, set by {escape(origin)}, which is read after midictl's "
                      f"{DROPIN_NAME} and wins; change it there", highlight=False, soft_wrap=True)
    return False


def _tell_daemon_reload(main: Path) -> None:
    from .control import DaemonNotRunning, request

    try:
        cfg = load_config(main)
        reply = request(cfg.socket_path, {"cmd": "reload"})
    except (DaemonNotRunning, ConfigError, OSError):
        return
    if not reply.get("ok"):
        err_console.print(f"the daemon did not reload: {escape(str(reply.get('error')))}")


def main(argv: Iterable[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="midictl")


if __name__ == "__main__":
    main()
