"""The handshake probe reads what a mutual-TLS listener serves, on TLS 1.2 and TLS 1.3."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest

from _tools import require_tool
from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate, handshake, probe
from certfleet.errors import DeviceConnectionError
from certfleet.lab.sbc import LabSbc
from certfleet.lab.tls import free_port

VERSIONS = {4: "TLSv1.2", 8: "TLSv1.3"}


@pytest.fixture(params=sorted(VERSIONS), ids=lambda bits: VERSIONS[bits])
def sbc(request: pytest.FixtureRequest) -> Iterator[LabSbc]:
    with LabSbc("sbc-mtls", teams_listener=True, tls_versions={2: request.param}) as device:
        yield device


def test_mtls_listener_shows_its_certificate(sbc: LabSbc) -> None:
    """The Teams listener refuses us for want of a client certificate; its chain is read."""
    bits = sbc.state.running[2].tls_version
    result = asyncio.run(handshake(Listener("127.0.0.1", sbc.teams_port or 0), 10))
    assert result.certificate is not None
    assert result.sha256 == sbc.served_sha256("teams")
    assert len(result.chain) >= 2  # leaf and the intermediate, as sent
    assert result.chain[1].subject == result.certificate.issuer
    assert result.client_cert_requested and result.mtls
    assert not result.handshake_completed
    assert result.tls_version == VERSIONS[bits]
    assert result.cipher


def test_plain_listener_completes(sbc: LabSbc) -> None:
    """The SIP-TLS listener asks for nothing and accepts the handshake."""
    (result,) = asyncio.run(probe([Listener("127.0.0.1", sbc.sip_port)], 10))
    assert result.error is None and result.handshake_completed
    assert not result.client_cert_requested and not result.mtls
    assert result.sha256 == sbc.served_sha256("sip")


@pytest.mark.oracle
def test_openssl_agrees_the_listener_requires_a_client_certificate(sbc: LabSbc) -> None:
    """openssl s_client, as the oracle, is refused by the same listener and sees the same leaf."""
    openssl = require_tool("openssl")
    out = subprocess.run(
        f"{openssl} s_client -connect 127.0.0.1:{sbc.teams_port} -showcerts -ign_eof"
        " </dev/null 2>&1",
        shell=True, capture_output=True, text=True, timeout=30)
    text = out.stdout
    # Refused by the server: an alert after its certificate request.
    assert "alert certificate required" in text or "alert handshake failure" in text, text
    result = asyncio.run(handshake(Listener("127.0.0.1", sbc.teams_port or 0), 10))
    assert result.certificate is not None
    first = text.index("-----BEGIN CERTIFICATE-----")
    pem = text[first:text.index("-----END CERTIFICATE-----") + 25].encode()
    from cryptography import x509

    assert x509.load_pem_x509_certificate(pem) == result.certificate


def test_unreachable_is_data_and_fetch_raises_a_certfleet_error() -> None:
    port = free_port()
    result = asyncio.run(handshake(Listener("127.0.0.1", port), 5))
    assert result.certificate is None and result.error and result.error_kind == "connect"
    with pytest.raises(DeviceConnectionError):
        asyncio.run(fetch_served_certificate(Listener("127.0.0.1", port), 5))
