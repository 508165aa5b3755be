"""``scan`` results as a table (rich), JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from ..safetext import csv_cell
from .engine import ScanResult

__all__ = ["CSV_COLUMNS", "to_csv", "to_json"]

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
    """A CSV cell: text from a device is data, control characters shown, never a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    if isinstance(value, str):
        return csv_cell(value)
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
