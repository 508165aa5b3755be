"""Status and plan by handshake: agreement, unreachable listeners, name checks, bands."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from certfleet.cli.estate import render_plan, render_status
from certfleet.errors import PasswordError
from certfleet.estate.devices import prompt_secrets
from certfleet.estate.plan import make_plan
from certfleet.estate.status import band, collect_status
from certfleet.estate.store import Store
from certfleet.inventory import Inventory, parse_inventory
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.tls import CertSlot, LabTLSListener, free_port


@pytest.fixture
def mixed(lab_ca: LabCA, old_issued: Issued) -> Iterator[tuple[Inventory, Issued, Issued]]:
    """Device a: 2 listeners on the old cert + 1 closed port; device b: a cert for other names."""
    other = lab_ca.issue(("other.org",), key_type="ec-p256", days=60)
    slots = [CertSlot(old_issued.leaf_pem, old_issued.key_pem(), old_issued.chain_pem)
             for _ in range(2)]
    slots.append(CertSlot(other.leaf_pem, other.key_pem(), other.chain_pem))
    servers = [LabTLSListener(slot).start() for slot in slots]
    closed = free_port()
    text = f"""
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com"]

[devices.a]
kind = "sbc"
address = "127.0.0.1"
fqdn = "a.example.com"
password = "env:X"
listeners = [{servers[0].port}, {servers[1].port}, {closed}]

[devices.b]
kind = "sbc"
address = "127.0.0.1"
fqdn = "b.example.com"
password = "prompt"
listeners = [{servers[2].port}]
"""
    try:
        yield parse_inventory(text, "inv.toml"), old_issued, other
    finally:
        for server in servers:
            server.stop()
        for slot in slots:
            slot.close()


def test_status_reports_each_listener(mixed: tuple[Inventory, Issued, Issued]) -> None:
    """Unreachable listeners carry their error; disagreement and name mismatch are shown."""
    inventory, _, _ = mixed
    statuses = asyncio.run(collect_status(inventory, None))
    assert [s.name for s in statuses] == ["a", "b"]  # fewest days left first
    a, b = statuses
    assert not a.agree
    reachable = [item for item in a.listeners if item.reachable]
    assert len(reachable) == 2 and all(item.hostname_ok for item in reachable)
    [down] = [item for item in a.listeners if not item.reachable]
    # named as what it is (a refused connection), not as a failed TLS handshake
    assert down.error and "connection refused" in down.error
    assert a.days_left is not None and a.days_left <= 5
    assert b.listeners[0].hostname_ok is False
    assert b.agree
    data = a.to_dict()
    assert set(data) >= {"name", "kind", "certificate", "listeners", "agree", "days_left"}

    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(render_status(statuses, wide=True))
    text = out.getvalue()
    assert "2/3 listeners" in text and "unreachable" in text and "mismatch" in text


def test_plan_without_version_is_blocked(
    mixed: tuple[Inventory, Issued, Issued], tmp_path: Path
) -> None:
    """Plan shows what is served; without an imported version nothing can be deployed."""
    inventory, _, _ = mixed
    with Store.open(tmp_path) as store:
        plans = asyncio.run(make_plan(inventory, store))
    assert {p.action for p in plans} == {"blocked"}
    assert not plans[0].rollback  # the SBC's current key is not in the store
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(render_plan(plans))
    assert "blocked" in out.getvalue()


def test_bands() -> None:
    """Days left fall into expired, critical (<= 7), warning (<= 30) and ok."""
    assert [band(d) for d in (-1, 0, 7, 8, 30, 31, None)] == [
        "expired", "critical", "critical", "warning", "warning", "ok", "unknown"
    ]


def test_prompt_secrets_need_a_terminal(mixed: tuple[Inventory, Issued, Issued]) -> None:
    """A `prompt` secret is asked before the run starts, and refused without a terminal."""
    inventory, _, _ = mixed
    assert "a" in prompt_secrets([inventory.devices["a"]])  # env refs only: nothing asked
    with pytest.raises(PasswordError, match="no terminal"):
        prompt_secrets([inventory.devices["b"]])


def test_status_table_one_line_per_listener_in_100_columns(
    mixed: tuple[Inventory, Issued, Issued],
) -> None:
    """Device, kind, listener and label are columns of their own on every line; 100 columns."""
    inventory, _, _ = mixed
    statuses = asyncio.run(collect_status(inventory, None))
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(render_status(statuses))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 100 for line in lines)
    header = next(line for line in lines if "listener" in line)
    assert header.split() == ["device", "kind", "listener", "label", "certificate", "sha256",
                              "days", "name", "current"]
    for status in statuses:
        for item in status.listeners:
            rows = [line.split()[:3] for line in lines if len(line.split()) > 2]
            assert rows.count([status.name, status.kind, item.listener]) == 1
