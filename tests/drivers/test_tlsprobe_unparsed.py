"""A server that presents a certificate the parser refuses: "could not be parsed", never
"no certificate presented", in the probe, in ``scan`` and in a deploy's verification."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.drivers.tlsprobe import Listener, handshake, wait_for_served
from certfleet.errors import VerificationError
from stdlib_tls import serving

CN = "ab_cd.example"


def _printable_cn_pem(tmp: Path) -> tuple[Path, Path]:
    """A certificate whose CN is a PrintableString holding '_' (OpenSSL loads it,
    cryptography refuses it); the signature no longer matches, which no one here checks."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CN)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(4242)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    utf8 = b"\x0c" + bytes([len(CN)]) + CN.encode()
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(utf8) == 2  # subject and issuer
    der = der.replace(utf8, b"\x13" + utf8[1:])
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der)
    cert_path, key_path = tmp / "printable.pem", tmp / "key.pem"
    cert_path.write_text(ssl.DER_cert_to_PEM_cert(der))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A stdlib ``ssl`` server on 127.0.0.1 presenting the unparseable certificate."""
    cert, key = _printable_cn_pem(tmp_path_factory.mktemp("unparsed"))
    with serving(cert, key) as port:
        yield port


def test_the_stdlib_client_does_receive_a_certificate(server: int) -> None:
    """The oracle: the standard library's ssl reads a certificate from the server."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server), timeout=30) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der and CN.encode() in der


def test_probe_says_the_certificate_could_not_be_parsed(server: int) -> None:
    result = asyncio.run(handshake(Listener("127.0.0.1", server), 30))
    assert result.certificate is None
    assert result.error is not None
    assert "the certificate could not be parsed" in result.error
    assert "without presenting" not in result.error
    assert "\n" not in result.error


def test_deploy_verification_names_the_unparseable_certificate(server: int) -> None:
    with pytest.raises(VerificationError) as caught:
        asyncio.run(wait_for_served([Listener("127.0.0.1", server)], "0" * 64, timeout=0,
                                    handshake_timeout=30))
    assert "the certificate could not be parsed" in caught.value.message
    assert "without presenting" not in caught.value.message


def test_scan_says_the_certificate_could_not_be_parsed(server: int, tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "200", "CERTFLEET_STATE_DIR": str(tmp_path)})
    result = runner.invoke(app, ["scan", "--json", f"127.0.0.1:{server}"],
                           catch_exceptions=False)
    assert "the certificate could not be parsed" in result.output, result.output
    assert "without presenting" not in result.output


def test_status_says_the_certificate_could_not_be_parsed(server: int) -> None:
    from certfleet.estate.status import collect_status
    from certfleet.inventory import parse_inventory

    inventory = parse_inventory(f"""
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com"]

[devices.odd]
kind = "sbc"
address = "127.0.0.1"
fqdn = "odd.example.com"
password = "env:X"
listeners = [{server}]
""", "inv.toml")
    [status] = asyncio.run(collect_status(inventory, None))
    [item] = status.listeners
    assert item.error is not None
    assert "the certificate could not be parsed" in item.error
    assert "without presenting" not in item.error
