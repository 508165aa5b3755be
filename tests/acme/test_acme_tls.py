"""The ACME server's HTTPS certificate under strict X.509 checks (``x509_strict``).

A private ACME server (``ca_bundle``) whose certificate lacks an Authority Key
Identifier is refused by strict verification (Python's default from 3.13
on); the failure is named in words with ``x509_strict = false`` as the way
forward, and that key clears only the strict checks. The tests set
``x509_strict = true`` explicitly, so they fail the same way on every Python.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certfleet.acme import AcmeError
from certfleet.acme.account import open_session
from certfleet.acme.ari import ari_window
from certfleet.acme.config import AcmeConfig, acme_config
from certfleet.errors import ConfigError
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import LabCA, make_key
from certfleet.lab.tls import CertSlot, LabHTTPSServer


def _leaf_without_aki(ca: LabCA) -> tuple[bytes, bytes]:
    """A server certificate for 127.0.0.1 that is valid except for the missing AKI."""
    import ipaddress

    issuer, issuer_key = ca.issuer
    key = make_key("ec-p256")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "private-acme")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = b"".join(c.public_bytes(pem) for c in ca.intermediate_certs)
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(pem) + chain, key_pem


class _Directory(BaseHTTPRequestHandler):
    """An ACME directory without renewalInfo: enough for ``ari_window`` to answer None."""

    def do_GET(self) -> None:
        host = f"https://127.0.0.1:{self.server.server_address[1]}"
        body = json.dumps({"newNonce": f"{host}/nonce", "newAccount": f"{host}/account",
                           "newOrder": f"{host}/order"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The directory URL of an HTTPS server whose certificate has no AKI, and its CA file."""
    ca = LabCA(name="private ACME")
    cert_pem, key_pem = _leaf_without_aki(ca)
    bundle = tmp_path_factory.mktemp("acme-tls") / "ca.pem"
    bundle.write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    slot = CertSlot(cert_pem, key_pem)
    https = LabHTTPSServer(_Directory, slot).start()
    try:
        yield f"https://127.0.0.1:{https.port}/dir", bundle
    finally:
        https.stop()
        slot.close()


def _config(url: str, bundle: Path, strict: bool | None) -> AcmeConfig:
    return AcmeConfig(certificate="wildcard", directory=url, ca_bundle=bundle,
                      x509_strict=strict)


def test_strict_failure_is_named_with_the_way_forward(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, bundle = server
    config = _config(url, bundle, True)
    for call in (lambda: open_session(config, tmp_path), lambda: ari_window(config, None)):
        with pytest.raises(AcmeError) as caught:
            call()
        message = str(caught.value)
        assert f"cannot read the ACME directory {url}" in message
        assert "certificate has no Authority Key Identifier" in message
        assert "strict X.509 verification is on (x509_strict)" in message
        assert "\n" not in message
        assert "x509_strict = false in [certificates.wildcard.acme]" in str(caught.value.hint)


def test_x509_strict_false_clears_only_the_strict_checks(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, bundle = server
    # The directory is read over the verified connection: no renewalInfo, so no window.
    assert ari_window(_config(url, bundle, False), None) is None
    # The CA bundle is still checked: another CA's bundle is refused, not in strict words.
    other = tmp_path / "other.pem"
    other.write_bytes(LabCA(name="other").root.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(AcmeError) as caught:
        ari_window(_config(url, other, False), None)
    assert "Authority Key Identifier" not in str(caught.value)
    assert "certificate verify failed" in str(caught.value)


def test_x509_strict_is_read_from_the_inventory() -> None:
    base = ('[certificates.wildcard]\ncn = "*.example.com"\n[certificates.wildcard.acme]\n'
            'directory = "https://ca.example/dir"\n')
    dns = '[certificates.wildcard.dns]\nprovider = "hook"\nadd = "./a.sh"\nremove = "./r.sh"\n'
    parsed = acme_config(parse_inventory(base + "x509_strict = false\n" + dns,
                                         "/srv/certfleet.toml"), "wildcard")
    assert parsed is not None and parsed.x509_strict is False
    default = acme_config(parse_inventory(base + dns, "/srv/certfleet.toml"), "wildcard")
    assert default is not None and default.x509_strict is None
    with pytest.raises(ConfigError, match=r"acme.x509_strict: must be true or false, not 'no'"):
        parse_inventory(base + 'x509_strict = "no"\n' + dns, "/srv/certfleet.toml")
