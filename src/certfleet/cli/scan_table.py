"""The scan's table for a terminal (``certfleet scan``, the demo's scan of the lab)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from ..scan.engine import ScanResult
from .common import plain
from .tables import Column, FitTable

__all__ = ["render_table"]


def _style(days: int | None, warn_days: int) -> str:
    if days is None:
        return "dim"
    if days < 0:
        return "bold red"
    if days <= 7:
        return "red"
    if days <= warn_days:
        return "yellow"
    return "green"


def _mark(value: bool | None, good: str = "ok", bad: str = "no") -> Text:
    return {True: Text(good, style="green"), False: Text(bad, style="red"),
            None: Text("-")}[value]


def render_table(results: Sequence[ScanResult], *, warn_days: int = 30, title: str = "Scan",
                 more: str = "certfleet scan --json") -> FitTable:
    """One row per endpoint, sorted as given (days left first).

    It fits the terminal down to 80 columns: the issuer, the chain's days left,
    then the current, trust, name and TLS columns give way in that order (the
    status column names every problem); a line under the table says which,
    and that ``more`` or a wider terminal shows them. Text from a device or a
    certificate is shown as text: no markup, control characters visible.
    """
    table = FitTable([
        Column("endpoint", cap=40),
        Column("certificate", wrap=True, fold_at=20, cap=36),
        Column("issuer", drop=1, wrap=True, fold_at=16, cap=28),
        Column("days", justify="right"),
        Column("chain days", drop=2, wrap=True, justify="right"),
        Column("tls", drop=6, wrap=True),
        Column("trust", drop=4),
        Column("name", drop=5),
        Column("current", drop=3),
        Column("status", wrap=True, floor=24),
    ], more=more, title=title, title_justify="left")
    for result in results:
        data = result.to_dict()
        where = plain(data["target"])
        if result.endpoint.device:
            label = f" {result.endpoint.label}" if result.endpoint.label else ""
            where.append("\n")
            where.append_text(plain(result.endpoint.device + label, style="dim"))
        elif result.listed is False:
            where.append("\nnot in the inventory", style="magenta")
        leaf = data["leaf"]
        if leaf is None:
            table.add_row(where, "", "", "", "", "", "", "", "",
                          plain(data["error"] or "unreachable", style="red"))
            continue
        days = leaf["days_left"]
        chain_days = data["chain_days_left"]
        tls = plain(data["tls_version"] or "?")
        if data["client_cert_requested"]:
            tls.append(" mTLS", style="cyan")
        status = (Text("ok", style="green") if result.ok
                  else plain(", ".join(result.problems), style="red"))
        table.add_row(
            where,
            plain(leaf["subject_cn"] or leaf["subject"]),
            plain(leaf["issuer_cn"] or leaf["issuer"]),
            Text(str(days), style=_style(days, warn_days)),
            Text(str(chain_days), style=_style(chain_days, warn_days))
            if chain_days is not None else "-",
            tls,
            _mark(result.trusted),
            _mark(result.name_match, bad="mismatch"),
            _mark(result.is_current, good="yes"),
            status,
        )
    return table
