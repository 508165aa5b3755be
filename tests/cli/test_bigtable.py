"""A status table of thousands of rows is printed in blocks (widths fixed once) whose text,
styles included, is the one-table rendering's, at 80 and 120 columns."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from certfleet.cli.bigtable import print_table, probing_line
from certfleet.cli.common import SafeConsole
from certfleet.cli.estate_tables import render_status
from certfleet.estate.status import DeviceStatus, ListenerStatus
from certfleet.inventory import Device, load_inventory

ROWS = 2_400


def _statuses(count: int) -> list[DeviceStatus]:
    """Devices of every shape a status row takes: unreachable with a long reason, served
    with a long subject, expired, mutual TLS, mismatched names, two listeners that
    disagree, an interrupted deploy."""
    out = []
    for i in range(count):
        status = DeviceStatus(f"s{i:04d}" + ("-fr" * (i % 7 == 0)), "sbc",
                              "wildcard", "ab" * 32 if i % 3 else None, 2 if i % 3 else None)
        shape = i % 5
        if shape == 0:
            status.listeners.append(ListenerStatus(
                f"127.0.0.1:{1000 + i}", "", False,
                error=f"127.0.0.1:{1000 + i}: connection refused (nothing listens on the "
                      "port, or a firewall rejects it)"))
        else:
            days = [400, -3, 5, 20, 90][shape] + i % 11
            status.listeners.append(ListenerStatus(
                f"10.{i % 9}.1:443", "teams" if i % 2 else "", True,
                sha256=("ab" * 32) if i % 4 else f"{i:064x}",
                subject=f"CN=*.site{i % 50:02d}.example-corporation-voice.com,O=Example",
                issuer="CN=Example Corporation Enterprise Voice Services Intermediate CA 1",
                not_after="2027-01-01T00:00:00+00:00", days_left=days,
                hostname_ok=[True, False, None][i % 3], is_current=bool(i % 4),
                client_cert_requested=i % 9 == 0))
        if i % 13 == 0:
            status.listeners.append(ListenerStatus(f"10.{i % 9}.2:5061", "sip", True,
                                                   sha256="cd" * 32, subject="CN=other",
                                                   days_left=30, hostname_ok=True))
        if i % 101 == 0:
            status.last_deployment = {"run_id": i, "outcome": "interrupted",
                                      "last_step": "upload", "started": None,
                                      "finished": None, "message": ""}
        out.append(status)
    return out


def _console(width: int) -> Console:
    return SafeConsole(file=io.StringIO(), width=width, force_terminal=True,
                       color_system="truecolor", highlight=False)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_blocks_print_what_one_table_prints(width: int) -> None:
    statuses = _statuses(ROWS)
    whole, blocks = _console(width), _console(width)
    whole.print(render_status(statuses))
    printed = print_table(blocks, render_status(statuses), big_rows=1_000, block_rows=300)
    assert printed == -(-sum(len(s.listeners) for s in statuses) // 300)
    expected, got = whole.file.getvalue(), blocks.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[" in expected and "unreachable" in expected
    assert got.splitlines() == expected.splitlines()


def test_a_small_table_is_printed_by_rich_at_once() -> None:
    statuses = _statuses(40)
    whole, small = _console(120), _console(120)
    whole.print(render_status(statuses))
    assert print_table(small, render_status(statuses)) == 0
    assert small.file.getvalue() == whole.file.getvalue()  # type: ignore[attr-defined]


def _inventory(tmp_path: Path, devices: int) -> list[Device]:
    lines = ['[certificates.wildcard]', 'cn = "*.example.com"', ""]
    for i in range(devices):
        lines += [f"[devices.sbc{i:05d}]", 'kind = "sbc"', 'address = "127.0.0.1"',
                  'user = "Admin"', 'password = "env:SBC_PASSWORD"', ""]
    path = tmp_path / "certfleet.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return list(load_inventory(path).devices.values())


def test_a_large_estate_says_what_status_does_before_it_probes(tmp_path: Path) -> None:
    devices = _inventory(tmp_path, 30)
    assert probing_line(devices, big_rows=30) is None
    line = probing_line(devices, big_rows=29)
    assert line is not None
    assert line.startswith("status: probing 30 devices' 30 listeners;")
    assert probing_line(devices) is None  # a normal estate says nothing
