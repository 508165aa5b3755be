"""Connections of the SBC driver, counted on the wire: one TLS connection (one
handshake, checked) carries a whole deploy; a device that closes each connection
gets a new, checked one per request; a device that drops the connection while
idle is noticed and the next request goes on a new one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.drivers.sbc import SbcDriver
from certfleet.drivers.tlsprobe import Listener
from certfleet.lab.ca import Issued
from certfleet.lab.sbc import LabSbc
from mitm import MitmProxy
from sbc_support import bundle_of, deploy


@pytest.fixture()
def sbc(issued_ec: Issued) -> Iterator[LabSbc]:
    with LabSbc("sbc-conn") as device:
        # Context 1 (SIP) holds a certificate of its own, as in an estate: changing it
        # does not change what management HTTPS presents.
        device.seed_context(1, issued_ec.leaf_pem, issued_ec.key_pem())
        yield device


@pytest.fixture()
def relay(sbc: LabSbc, issued: Issued, tmp_path: Path) -> Iterator[MitmProxy]:
    """Relays every connection to the lab SBC and counts them (nothing is answered
    by the proxy itself)."""
    with MitmProxy(sbc.port, issued.leaf_pem, issued.key_pem(), tmp_path / "relay",
                   relay=10_000) as proxy:
        yield proxy


def _driver(sbc: LabSbc, proxy: MitmProxy, **options: object) -> SbcDriver:
    settings: dict[str, object] = {
        "password": sbc.password, "contexts": (1,), "ca_bundle": sbc.ca_bundle_pem,
        "listeners": [Listener("127.0.0.1", sbc.sip_port, label="sip")],
        "verify_timeout": 10.0, "busy_delay": 0.01, "timeout": 5.0,
    }
    settings.update(options)
    return SbcDriver(sbc.name, f"https://127.0.0.1:{proxy.port}", **settings)  # type: ignore[arg-type]


def test_a_deploy_runs_on_one_connection(sbc: LabSbc, relay: MitmProxy, issued: Issued) -> None:
    outcome = deploy(_driver(sbc, relay), bundle_of(issued), allow_no_rollback=True)
    assert outcome.outcome == "installed", outcome.message
    relay.settle()
    changes = [r for r in sbc.requests if r[0] in ("PUT", "POST")]
    assert len(sbc.requests) >= 8 and changes, sbc.requests
    assert relay.relayed == 1, f"{relay.relayed} connections for {len(sbc.requests)} requests"
    assert relay.impostor_connections == 0


def test_a_device_closing_each_connection_gets_a_checked_one_per_request(
    sbc: LabSbc, relay: MitmProxy, issued: Issued
) -> None:
    sbc.faults.close_connections = True
    outcome = deploy(_driver(sbc, relay), bundle_of(issued), allow_no_rollback=True)
    assert outcome.outcome == "installed", outcome.message
    relay.settle()
    assert relay.relayed == len(sbc.requests), sbc.requests


def test_a_connection_dropped_while_idle_is_replaced(sbc: LabSbc, relay: MitmProxy) -> None:
    async def run() -> tuple[int, int]:
        driver = _driver(sbc, relay)
        async with driver.session():
            await driver.read_certificate(1)
            first = relay.relayed
            relay.drop_all()  # the device (or a firewall) ends the idle connection
            await asyncio.to_thread(relay.settle)  # the relay has seen both ends close
            assert await driver.read_certificate(1) is not None
            return first, relay.relayed

    first, after = asyncio.run(run())
    assert (first, after) == (1, 2)
