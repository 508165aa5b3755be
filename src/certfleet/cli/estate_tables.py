"""The tables of the state store's commands: status (one line per listener) and history.

Both fit 100 columns; text that comes from a device or the store is
printed as text, never as rich markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import console

if TYPE_CHECKING:
    from ..estate.status import DeviceStatus

__all__ = ["BAND_STYLE", "OUTCOME_STYLE", "render_history", "render_status"]

BAND_STYLE = {
    "expired": "bold red",
    "critical": "red",
    "warning": "yellow",
    "ok": "green",
    "unknown": "dim",
}
OUTCOME_STYLE = {
    "installed": "green",
    "skipped": "dim",
    "would-deploy": "cyan",
    "restored": "yellow",
    "refused": "magenta",
    "failed": "bold red",
    "not-attempted": "dim",
    "interrupted": "bold red",
    "in-progress": "cyan",
}


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _cn(rfc4514: str | None) -> str:
    """The CN of an RFC 4514 name string, or the whole string when it has none."""
    if not rfc4514:
        return ""
    for part in rfc4514.split(","):
        if part.startswith("CN="):
            return part[3:]
    return rfc4514


def render_status(
    statuses: list[DeviceStatus], warn_days: int = 30, *, wide: bool | None = None
) -> Any:
    """The status table (rich): one line per listener, devices sorted by days left.

    Device, kind, listener and label are columns of their own, repeated on
    every line (each line reads alone); it fits 100 columns. The issuer gets
    a column on a wide terminal (``wide``: decided from the console width
    when None). Devices whose listeners disagree, or whose last deploy was
    interrupted, get a line under the table.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..estate.status import band

    if wide is None:
        wide = console.width >= 120
    table = Table(title="Estate status", title_justify="left", box=box.SIMPLE_HEAD,
                  collapse_padding=True, pad_edge=False)
    table.add_column("device", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("listener", no_wrap=True)
    table.add_column("label", max_width=12)
    table.add_column("certificate", max_width=28)
    if wide:
        table.add_column("issuer", max_width=28)
    table.add_column("sha256", no_wrap=True)
    table.add_column("days", justify="right", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("current", no_wrap=True)
    disagree = []
    for status in statuses:
        count = len(status.listeners)
        if not status.agree and count > 1:
            same = max(
                sum(1 for other in status.listeners if other.sha256 == x.sha256 and x.sha256)
                for x in status.listeners
            )
            disagree.append(Text(f"{status.name}: {same}/{count} listeners serve the same "
                                 "certificate", style="yellow"))
        for item in status.listeners:
            listener = Text(item.listener)
            if item.client_cert_requested:
                listener.append(" mTLS", style="cyan")
            where = [Text(status.name), Text(status.kind, style="dim"), listener,
                     Text(item.label or "-", style="dim")]
            if not item.reachable:
                error = Text("unreachable", style="red")
                error.append(f" {item.error}" if item.error else "", style="dim")
                table.add_row(*where, error, *([""] if wide else []), "", "", "", "")
                continue
            days = item.days_left
            days_text = Text(f"{days}{' expired' if days is not None and days < 0 else ''}",
                             style=BAND_STYLE[band(days, warn_days)])
            name_ok = {True: Text("ok", style="green"), False: Text("mismatch", style="red"),
                       None: Text("-")}[item.hostname_ok]
            if item.is_current:
                current = Text(f"v{status.current_version}", style="green")
            elif status.current_sha256:
                current = Text("no", style="yellow")
            else:
                current = Text("none", style="dim")
            issuer = [Text(_cn(item.issuer))] if wide else []
            table.add_row(*where, Text(_cn(item.subject)), *issuer,
                          _short(item.sha256)[:8], days_text, name_ok, current)
    notes = disagree + _journal_notes(statuses)
    if not notes:
        return table
    from rich.console import Group

    return Group(table, *notes)


def _journal_notes(statuses: list[DeviceStatus]) -> list[Any]:
    """One line per device whose newest deploy died mid-way (or still runs)."""
    from rich.text import Text

    notes = []
    for status in sorted(statuses, key=lambda s: s.name):
        last = status.last_deployment
        if not last or last["outcome"] not in ("interrupted", "in-progress"):
            continue
        line = Text()
        line.append(f"{status.name}: ", style="bold")
        line.append(last["outcome"], style=OUTCOME_STYLE[last["outcome"]])
        line.append(f" deploy (run {last['run_id']}) at {last['last_step'] or 'its start'}")
        if last["outcome"] == "interrupted":
            line.append("; run 'certfleet deploy' to finish it or "
                        f"'certfleet rollback {status.name}' to restore the backup before it")
        notes.append(line)
    return notes


def _when(iso: str | None) -> str:
    """``2026-12-01 02:17:21`` from an ISO 8601 UTC time (the whole time, never cut)."""
    if not iso:
        return "-"
    return iso.replace("T", " ").removesuffix("+00:00")


def render_history(rows: list[dict[str, Any]], *, steps: bool = False) -> Any:
    """The history table (fits 100 columns); with ``steps`` every step under its entry."""
    import datetime as dt

    from rich.table import Table
    from rich.text import Text

    table = Table(title="History (times in UTC)", title_justify="left")
    table.add_column("time", no_wrap=True, min_width=19)
    table.add_column("run", justify="right", no_wrap=True)
    table.add_column("user", no_wrap=True)
    table.add_column("device", no_wrap=True)
    table.add_column("command", max_width=16, overflow="fold")
    table.add_column("outcome", no_wrap=True)
    table.add_column("last step / message", ratio=1, overflow="fold")
    for row in rows:
        style = OUTCOME_STYLE.get(row["outcome"], "")
        detail = Text()
        if row["outcome"] == "in-progress" and row.get("last_step"):
            detail.append(f"at {row['last_step']}: ", style="bold")
        detail.append(str(row["message"]).removeprefix(f"{row['device']}: "))
        table.add_row(
            _when(row["finished"] or row["started"]),
            str(row["run_id"] or "-"),
            Text(row["user"] or "-"),
            Text(row["device"]),
            Text(row["command"] or "-"),
            Text(row["outcome"], style=style),
            detail,
        )
        for step in row["steps"] if steps else ():
            clock = dt.datetime.fromtimestamp(step["at"], dt.UTC).strftime("%H:%M:%S")
            status_style = {"ok": "green", "failed": "red", "start": "cyan"}.get(step["status"])
            table.add_row(
                Text(f"  {clock}", style="dim"), "", "", "", "",
                Text(step["status"], style=status_style or "dim"),
                Text(step["step"] + (f": {step['detail']}" if step["detail"] else "")),
            )
    return table
