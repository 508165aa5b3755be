"""CLIENT_AUTH_DROPPED: a renewal without clientAuth on a listener that does mutual TLS (it
asks for a client certificate, or the inventory labels it teams) is a warning; elsewhere not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from certfleet.acme.clientauth import client_auth_findings
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.tls import CertSlot, LabTLSListener

BOTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


@pytest.fixture(scope="module")
def ca() -> LabCA:
    return LabCA()


@pytest.fixture
def served(ca: LabCA) -> Issued:
    return ca.issue(eku=BOTH)


def _listener(issued: Issued, *, mtls: bool) -> Iterator[LabTLSListener]:
    slot = CertSlot(issued.leaf_pem, issued.key_pem(), issued.chain_pem,
                    require_client_cert=mtls)
    with LabTLSListener(slot) as server:
        yield server
    slot.close()


def _devices(port: int, label: str = "sip") -> list[object]:
    inventory = parse_inventory(f"""
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com"]

[devices.sbc1]
kind = "sbc"
address = "127.0.0.1"
fqdn = "sbc1.example.com"
password = "env:X"
listeners = [{{ port = {port}, label = "{label}" }}]
""", "inv.toml")
    return list(inventory.devices_using("wildcard"))


@pytest.mark.parametrize(("mtls", "label", "renewal_eku", "expected"), [
    (True, "sip", (ExtendedKeyUsageOID.SERVER_AUTH,), 1),   # asks for a client certificate
    (False, "teams", (ExtendedKeyUsageOID.SERVER_AUTH,), 1),  # the inventory says Teams
    (False, "sip", (ExtendedKeyUsageOID.SERVER_AUTH,), 0),  # plain TLS: NO_CLIENT_AUTH only
    (True, "sip", BOTH, 0),                                 # the renewal keeps clientAuth
])
def test_client_auth_dropped(ca: LabCA, served: Issued, mtls: bool, label: str,
                             renewal_eku: tuple[object, ...], expected: int) -> None:
    """The warning appears only for a mutual-TLS listener whose renewal loses clientAuth."""
    renewal = ca.issue(eku=renewal_eku)  # type: ignore[arg-type]
    for server in _listener(served, mtls=mtls):
        findings = asyncio.run(client_auth_findings(_devices(server.port, label),
                                                    renewal.leaf))
    assert len(findings) == expected
    for finding in findings:
        assert finding.code == "CLIENT_AUTH_DROPPED" and finding.severity == "warning"
        assert "sbc1" in finding.message and "Teams Direct Routing" in finding.message
        assert "profile" in finding.hint and "clientAuth" in finding.hint
