"""Status and plan count a listener that requires a client certificate as observed (mTLS)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console

from certfleet.cli.estate import render_status
from certfleet.estate.plan import make_plan
from certfleet.estate.status import collect_status
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import Issued
from certfleet.lab.tls import CertSlot, LabTLSListener
from certfleet.pki.model import cert_sha256


@pytest.mark.parametrize("tls_version", [4, 8], ids=["TLSv1.2", "TLSv1.3"])
def test_mtls_listener_is_observed(old_issued: Issued, tls_version: int, tmp_path: Path) -> None:
    slot = CertSlot(old_issued.leaf_pem, old_issued.key_pem(), old_issued.chain_pem,
                    require_client_cert=True, tls_version=tls_version)
    with LabTLSListener(slot) as server:
        inventory = parse_inventory(f"""
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com"]

[devices.teams]
kind = "sbc"
address = "127.0.0.1"
fqdn = "teams.example.com"
password = "env:X"
listeners = [{server.port}]
""", "inv.toml")
        [status] = asyncio.run(collect_status(inventory, None))
        with Store.open(tmp_path) as store:
            [plan] = asyncio.run(make_plan(inventory, store))
    slot.close()
    [item] = status.listeners
    assert item.reachable and item.error is None
    assert item.client_cert_requested and item.to_dict()["client_cert_requested"] is True
    assert item.hostname_ok and item.days_left is not None
    assert plan.served == {f"127.0.0.1:{server.port}": item.sha256}
    assert item.sha256 == cert_sha256(old_issued.leaf)
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(render_status([status], wide=True))
    assert "mTLS" in out.getvalue() and "unreachable" not in out.getvalue()
