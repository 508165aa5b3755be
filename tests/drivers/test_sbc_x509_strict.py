"""Strict X.509 checks (Python 3.13's default) on a management certificate verified by
a CA bundle: named in words with the way forward; ``x509_strict=False`` / ``--relaxed-x509``
clears that flag only; a pin is unaffected."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from certfleet.cli import sbc as sbc_cli
from certfleet.drivers.sbc import SbcDriver
from certfleet.errors import HostKeyError
from certfleet.lab.sbc import LabSbc
from certfleet.pki.model import cert_sha256


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def no_aki() -> tuple[bytes, bytes, bytes, str]:
    """A CA as RFC 5280 wants it, and a device certificate without Authority Key
    Identifier (as factory certificates often are): root PEM, leaf PEM, key PEM, leaf SHA-256."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Old Internal CA")).issuer_name(_name("Old Internal CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("sbc-strict")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # no AuthorityKeyIdentifier
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem, cert_sha256(leaf)


@pytest.fixture()
def sbc(no_aki: tuple[bytes, bytes, bytes, str]) -> Iterator[LabSbc]:
    _root, leaf, key, _sha = no_aki
    with LabSbc("sbc-strict") as device:
        device.seed_context(0, leaf, key)  # context 0 is what management HTTPS presents
        yield device


def _status(driver: SbcDriver) -> dict[str, object]:
    async def run() -> dict[str, object]:
        async with driver.session():
            return driver.status

    return asyncio.run(run())


def test_strict_failure_is_named_with_the_way_forward(
    sbc: LabSbc, no_aki: tuple[bytes, bytes, bytes, str]
) -> None:
    root, _leaf, _key, sha = no_aki
    driver = SbcDriver(sbc.name, sbc.url, password=sbc.password, ca_bundle=root,
                       x509_strict=True, timeout=5.0)
    with pytest.raises(HostKeyError) as caught:
        _status(driver)
    error = caught.value
    assert "the SBC's certificate at" in error.message
    assert "has no Authority Key Identifier" in error.message
    assert "strict X.509" in error.message
    assert error.hint is not None
    assert f"--pin-sha256 {sha}" in error.hint
    assert "--relaxed-x509" in error.hint and "x509_strict = false" in error.hint
    assert not any(path.startswith("/api") for _m, path, _s in sbc.requests)


def test_python_default_strict_failure_names_python(
    sbc: LabSbc, no_aki: tuple[bytes, bytes, bytes, str]
) -> None:
    """What a Python 3.13 user sees: the strict flag set by Python, not by us. On older
    Pythons the flag is set in the context here, as 3.13's create_default_context does."""
    root, _leaf, _key, _sha = no_aki
    driver = SbcDriver(sbc.name, sbc.url, password=sbc.password, ca_bundle=root, timeout=5.0)
    default = ssl.create_default_context(cadata=root.decode())
    default.verify_flags |= ssl.VERIFY_X509_STRICT
    driver._ssl_context = lambda: default  # type: ignore[method-assign]
    with pytest.raises(HostKeyError, match=r"no Authority Key Identifier; Python 3\.\d+ rejects "
                       r"such certificates by default"):
        _status(driver)


def test_relaxed_and_pinned_connect(sbc: LabSbc, no_aki: tuple[bytes, bytes, bytes, str]) -> None:
    root, _leaf, _key, sha = no_aki
    relaxed = SbcDriver(sbc.name, sbc.url, password=sbc.password, ca_bundle=root,
                        x509_strict=False, timeout=5.0)
    assert _status(relaxed)["productType"]
    assert relaxed.management_sha256 == sha
    pinned = SbcDriver(sbc.name, sbc.url, password=sbc.password, pin_sha256=sha, timeout=5.0)
    assert _status(pinned)["productType"]
    # relaxed clears VERIFY_X509_STRICT only: chain and name are still verified
    assert relaxed._ssl_context().verify_mode == ssl.CERT_REQUIRED
    assert relaxed._ssl_context().check_hostname


def test_cli_relaxed_x509(sbc: LabSbc, no_aki: tuple[bytes, bytes, bytes, str],
                          tmp_path: Path) -> None:
    root, _leaf, _key, sha = no_aki
    (tmp_path / "ca.pem").write_bytes(root)
    app = typer.Typer()
    app.command("noop")(lambda: None)
    sbc_cli.register(app)
    runner = CliRunner(env={"SBC_PW": sbc.password})
    conn = ["--url", sbc.url, "--password-env", "SBC_PW", "--ca-bundle", str(tmp_path / "ca.pem")]
    relaxed = runner.invoke(app, ["sbc", "status", *conn, "--relaxed-x509", "--json"])
    assert relaxed.exit_code == 0, relaxed.output
    assert sha in relaxed.output
    plain = runner.invoke(app, ["sbc", "status", *conn, "--json"])
    if ssl.create_default_context().verify_flags & ssl.VERIFY_X509_STRICT:  # Python 3.13+
        assert plain.exit_code == 3
        assert "no Authority Key Identifier" in plain.output
        assert "--relaxed-x509" in plain.output
    else:
        assert plain.exit_code == 0, plain.output
