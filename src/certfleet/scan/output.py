"""``scan`` results as a table (rich), JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from .engine import ScanResult

__all__ = ["CSV_COLUMNS", "render_table", "to_csv", "to_json"]

CSV_COLUMNS = [
    "target", "host", "port", "sni", "device", "label", "listed", "ok", "error", "problems",
    "leaf_subject", "leaf_subject_cn", "leaf_sans", "leaf_issuer", "leaf_issuer_cn",
    "leaf_serial", "leaf_sha256", "leaf_not_before", "leaf_not_after", "leaf_days_left",
    "leaf_key_type", "leaf_key_size", "leaf_signature_algorithm", "chain_length",
    "chain_not_after", "chain_days_left", "chain_order_ok", "chain_complete", "tls_version",
    "cipher", "trusted", "name_match", "is_current", "client_cert_requested",
    "handshake_completed", "expired", "seconds",
]


def to_json(results: Sequence[ScanResult]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in results]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # text from a device is data, never a spreadsheet formula
    return value


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in data.items() if k not in ("leaf", "chain")}
    row["problems"] = "; ".join(data["problems"])
    for key, value in (data["leaf"] or {}).items():
        row[f"leaf_{key}"] = value
    row["chain_length"] = len(data["chain"])
    return row


def to_csv(results: Sequence[ScanResult]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for result in results:
        row = flatten(result.to_dict())
        writer.writerow({k: _cell(row.get(k)) for k in CSV_COLUMNS})
    return out.getvalue()


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


def _mark(value: bool | None, good: str = "ok", bad: str = "no") -> str:
    return {True: f"[green]{good}[/]", False: f"[red]{bad}[/]", None: "-"}[value]


def render_table(results: Sequence[ScanResult], *, warn_days: int = 30, title: str = "Scan") -> Any:
    """One row per endpoint, sorted as given (days left first)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("endpoint", no_wrap=True)
    table.add_column("certificate", max_width=36, overflow="fold")
    table.add_column("issuer", max_width=28, overflow="fold")
    table.add_column("days", justify="right", no_wrap=True)
    table.add_column("chain", justify="right", no_wrap=True)
    table.add_column("tls", no_wrap=True)
    table.add_column("trust", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("current", no_wrap=True)
    table.add_column("status")
    for result in results:
        data = result.to_dict()
        where = escape(data["target"])
        if result.endpoint.device:
            label = f" {result.endpoint.label}" if result.endpoint.label else ""
            where += f"\n[dim]{escape(result.endpoint.device + label)}[/]"
        elif result.listed is False:
            where += "\n[magenta]not in the inventory[/]"
        leaf = data["leaf"]
        if leaf is None:
            table.add_row(where, "", "", "", "", "", "", "", "",
                          f"[red]{escape(data['error'] or 'unreachable')}[/]")
            continue
        days = leaf["days_left"]
        chain_days = data["chain_days_left"]
        tls = escape(data["tls_version"] or "?")
        if data["client_cert_requested"]:
            tls += " [cyan]mTLS[/]"
        status = ("[green]ok[/]" if result.ok
                  else "[red]" + escape(", ".join(result.problems)) + "[/]")
        table.add_row(
            where,
            escape(leaf["subject_cn"] or leaf["subject"]),
            escape(leaf["issuer_cn"] or leaf["issuer"]),
            f"[{_style(days, warn_days)}]{days}[/]",
            f"[{_style(chain_days, warn_days)}]{chain_days}[/]" if chain_days is not None else "-",
            tls,
            _mark(result.trusted),
            _mark(result.name_match, bad="mismatch"),
            _mark(result.is_current, good="yes"),
            status,
        )
    return table
