"""Certificates the parsing library warns about (a negative serial, a CN over 64
characters): ``scan`` and ``check`` say so in their own words, and no Python warning
with a source line reaches stderr, even under ``-W default``."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki_support import odd_certificate
from stdlib_tls import serving

SRC = Path(__file__).resolve().parents[2] / "src"
LONG_CN = "x" * 70 + ".example"


def _long_cn() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LONG_CN, _validate=False)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(77)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=300)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.DER),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


CASES = {"negative-serial": (odd_certificate, "serial number is negative (RFC 5280 "
                                              "requires positive)"),
         "long-cn": (_long_cn, "subject CN is 78 characters (RFC 5280 allows 64)")}


@pytest.fixture(scope="module", params=sorted(CASES))
def odd(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, str]]:
    """(port, certificate file, the note expected) for a loopback server of each case."""
    make, note = CASES[request.param]
    der, key_pem = make()
    folder = tmp_path_factory.mktemp(request.param)
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_text(ssl.DER_cert_to_PEM_cert(der))
    key.write_bytes(key_pem)
    with serving(cert, key) as port:
        yield port, cert, note


def _certfleet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "default",
           "COLUMNS": "200", "CERTFLEET_STATE_DIR": str(cwd / "state")}
    return subprocess.run([sys.executable, "-W", "default", "-m", "certfleet", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def _assert_quiet(result: subprocess.CompletedProcess[str]) -> None:
    assert "Warning" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert ".py:" not in result.stderr, result.stderr  # no file:line of a warning


def test_scan_notes_the_oddity_and_prints_no_warning(
        odd: tuple[int, Path, str], tmp_path: Path) -> None:
    port, cert, note = odd
    # Trusted (its own root) and reached by IP: nothing is wrong but the oddity: exit 0.
    shown = _certfleet("scan", f"127.0.0.1:{port}", "--ca-bundle", str(cert), cwd=tmp_path)
    _assert_quiet(shown)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    as_json = _certfleet("scan", f"127.0.0.1:{port}", "--ca-bundle", str(cert), "--json",
                         cwd=tmp_path)
    _assert_quiet(as_json)
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    (result,) = json.loads(as_json.stdout)
    assert result["ok"] is True and result["problems"] == []
    assert note in result["notes"]


def test_check_reports_the_oddity_as_a_finding(odd: tuple[int, Path, str],
                                               tmp_path: Path) -> None:
    _port, cert, note = odd
    result = _certfleet("check", str(cert), "--json", cwd=tmp_path)
    _assert_quiet(result)
    findings = json.loads(result.stdout)["findings"]
    ours = [f for f in findings if f["code"] == "NOT_RFC5280"]
    assert ours and note in ours[0]["message"] and ours[0]["severity"] == "warning"
    # Warnings alone do not fail the check (exit 1 is for errors): a self-signed leaf
    # without a key gives only warnings here.
    assert result.returncode == (1 if any(f["severity"] == "error" for f in findings) else 0)
