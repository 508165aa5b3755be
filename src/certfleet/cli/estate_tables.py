"""The tables of the state store's commands: status (one line per listener) and history.

Both fit the terminal down to 80 columns (see ``tables.FitTable``); text that
comes from a device or the store is printed as text, never as rich markup,
its control characters shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import plain

if TYPE_CHECKING:
    from rich.console import Group
    from rich.text import Text

    from ..estate.status import DeviceStatus, ListenerStatus
    from .tables import Column, FitTable

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
) -> FitTable | Group:
    """The status table (rich): one line per listener, devices sorted by days left.

    Device, kind, listener and label are columns of their own, repeated on
    every line (each line reads alone). It fits the terminal down to 80
    columns: the fingerprint, the kind, then the label give way, never the
    listener, the certificate (or why the listener is unreachable), days,
    name or current; a line under the table says what was left out. The
    issuer gets a column on a terminal of 120 columns or more (``wide``: always
    when True, never when False). Devices whose listeners disagree, or whose
    last deploy was interrupted, get a line under the table.
    """
    from rich import box

    from .tables import FitTable

    table = FitTable(_status_columns(wide), more="certfleet status --json",
                     title="Estate status", title_justify="left", box=box.SIMPLE_HEAD,
                     collapse_padding=True, pad_edge=False)
    disagree = []
    for status in statuses:
        line = _disagreement(status)
        if line is not None:
            disagree.append(line)
        for item in status.listeners:
            table.add_row(*_listener_cells(status, item, warn_days, wide=wide))
    notes = disagree + _journal_notes(statuses)
    if not notes:
        return table
    from rich.console import Group

    return Group(table, *notes)


def _status_columns(wide: bool | None) -> list[Column]:
    """The columns of the status table, the issuer's only when ``wide`` allows it."""
    from .tables import Column

    issuer_column = Column("issuer", wrap=True, fold_at=16, cap=28,
                           drop=None if wide else 1, min_total=120 if wide is None else 0)
    return [
        Column("device", cap=24),
        Column("kind", drop=2),
        Column("listener", cap=40),
        Column("label", drop=3, cap=16),
        Column("certificate", wrap=True, fold_at=20, floor=20, cap=28),
        *([issuer_column] if wide is not False else []),
        Column("sha256", drop=1),
        Column("days", justify="right"),
        Column("name"),
        Column("current"),
    ]


def _disagreement(status: DeviceStatus) -> Text | None:
    """The line under the table for a device whose listeners serve different certificates."""
    count = len(status.listeners)
    if status.agree or count <= 1:
        return None
    same = max(
        sum(1 for other in status.listeners if other.sha256 == x.sha256 and x.sha256)
        for x in status.listeners
    )
    line = plain(status.name, style="yellow")
    line.append(f": {same}/{count} listeners serve the same certificate")
    return line


def _listener_cells(
    status: DeviceStatus, item: ListenerStatus, warn_days: int, *, wide: bool | None,
) -> list[Text | str]:
    """One line of the status table: where (device, kind, listener, label), then what
    the listener serves, or why it is unreachable."""
    from rich.text import Text

    from ..estate.status import band

    issuer_cells: list[Text | str] = [] if wide is False else [""]
    listener = plain(item.listener)
    if item.client_cert_requested:
        listener.append(" mTLS", style="cyan")
    where: list[Text | str] = [plain(status.name), plain(status.kind, style="dim"), listener,
                               plain(item.label or "-", style="dim")]
    if not item.reachable:
        error = Text("unreachable", style="red")
        if item.error:
            error.append_text(plain(f" {item.error}", style="dim"))
        return [*where, error, *issuer_cells, "", "", "", ""]
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
    issuer = [] if wide is False else [plain(_cn(item.issuer))]
    return [*where, plain(_cn(item.subject)), *issuer,
            _short(item.sha256)[:8], days_text, name_ok, current]


def _journal_notes(statuses: list[DeviceStatus]) -> list[Text]:
    """One line per device whose newest deploy died mid-way (or still runs)."""

    notes = []
    for status in sorted(statuses, key=lambda s: s.name):
        last = status.last_deployment
        if not last or last["outcome"] not in ("interrupted", "in-progress"):
            continue
        line = plain(f"{status.name}: ", style="bold")
        line.append(last["outcome"], style=OUTCOME_STYLE[last["outcome"]])
        line.append(f" deploy (run {last['run_id']}) at {last['last_step'] or 'its start'}")
        if last["outcome"] == "interrupted":
            line.append("; run 'certfleet deploy' to finish it or ")
            line.append_text(plain(f"'certfleet rollback {status.name}'"))
            line.append(" to restore the backup before it")
        notes.append(line)
    return notes


def _when(iso: str | None) -> str:
    """``2026-12-01 02:17:21`` from an ISO 8601 UTC time (the whole time, never cut)."""
    if not iso:
        return "-"
    return iso.replace("T", " ").removesuffix("+00:00")


def render_history(rows: list[dict[str, Any]], *, steps: bool = False) -> FitTable:
    """The history table; with ``steps`` every step under its entry.

    It fits the terminal down to 80 columns: the user, the run, then the
    command give way, never the time, device, outcome or message, and a line
    under the table says what was left out.
    """
    import datetime as dt

    from rich.text import Text

    from .tables import Column, FitTable

    table = FitTable([
        Column("time"),
        Column("run", drop=2, justify="right"),
        Column("user", drop=1, cap=16),
        Column("device", cap=24),
        Column("command", drop=3, wrap=True, cap=16),
        Column("outcome"),
        Column("last step / message", wrap=True, floor=24),
    ], more="certfleet history --json", title="History (times in UTC)", title_justify="left")
    for row in rows:
        style = OUTCOME_STYLE.get(row["outcome"], "")
        detail = Text()
        if row["outcome"] == "in-progress" and row.get("last_step"):
            detail.append_text(plain(f"at {row['last_step']}: ", style="bold"))
        detail.append_text(plain(str(row["message"]).removeprefix(f"{row['device']}: ")))
        table.add_row(
            _when(row["finished"] or row["started"]),
            str(row["run_id"] or "-"),
            plain(row["user"] or "-"),
            plain(row["device"]),
            plain(row["command"] or "-"),
            plain(row["outcome"], style=style),
            detail,
        )
        for step in row["steps"] if steps else ():
            clock = dt.datetime.fromtimestamp(step["at"], dt.UTC).strftime("%H:%M:%S")
            status_style = {"ok": "green", "failed": "red", "start": "cyan"}.get(step["status"])
            table.add_row(
                Text(f"  {clock}", style="dim"), "", "", "", "",
                plain(step["status"], style=status_style or "dim"),
                plain(step["step"] + (f": {step['detail']}" if step["detail"] else "")),
            )
    return table
