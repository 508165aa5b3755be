"""Helpers of the ACME tests: start Pebble, write an inventory that orders from it."""

from __future__ import annotations

from pathlib import Path

from _tools import require_tool
from certfleet.lab.pebble import LabPebble


def start_pebble(directory: Path, **options: object) -> LabPebble:
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    return LabPebble(directory, **options).start()  # type: ignore[arg-type]


def write_inventory(directory: Path, pebble: LabPebble, extra: str = "", **tables: object) -> Path:
    """An inventory with one wildcard + apex certificate ordered from ``pebble``; no device."""
    directory.mkdir(parents=True, exist_ok=True)
    pebble.write_roots(directory / "pebble-roots.pem")
    text = (
        "[certificates.wildcard]\n"
        'cn = "*.example.com"\n'
        'sans = ["*.example.com", "example.com"]\n'
        'key_type = "ec-p256"\n\n'
        + pebble.inventory_tables(**tables)  # type: ignore[arg-type]
        + extra
    )
    path = directory / "certfleet.toml"
    path.write_text(text)
    return path
