"""Host name matching (RFC 6125) and the names a certificate covers."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from certfleet.lab.ca import LabCA
from certfleet.pki.bundle import assemble
from certfleet.pki.checks import check_bundle
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Finding
from certfleet.pki.names import (
    NameKind,
    certificate_names,
    covers,
    host_matches,
    is_public_suffix,
)


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("sbc1.example.com", "sbc1.example.com", True),
        ("SBC1.Example.COM", "sbc1.example.com", True),
        ("sbc1.example.com", "SBC1.EXAMPLE.COM.", True),
        ("sbc1.example.com", "sbc2.example.com", False),
        ("*.example.com", "sbc1.example.com", True),
        ("*.example.com", "OVOC.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "sbc1.example.org", False),
        ("s*.example.com", "sbc1.example.com", False),
        ("*.*.example.com", "a.b.example.com", False),
        ("a.*.example.com", "a.b.example.com", False),
        ("*.com", "example.com", False),
        ("*", "localhost", False),
        ("xn--bcher-kva.example.com", "bücher.example.com", True),
        # A certificate carries A-labels; raw Unicode in a certificate name matches nothing.
        ("bücher.example.com", "xn--bcher-kva.example.com", False),
        ("XN--BCHER-KVA.example.com", "bücher.example.com", True),
        ("*.xn--bcher-kva.example", "www.BÜCHER.example", True),
        # Characters a host name cannot have; wildcards over public suffixes.
        ("a_b.example.com", "a_b.example.com", False),
        ("*.co.uk", "example.co.uk", False),
        ("*.s3.amazonaws.com", "bucket.s3.amazonaws.com", False),
        ("*.example.co.uk", "www.example.co.uk", True),
        ("*.github.io", "someone.github.io", False),
        ("*.lab.local", "sbc1.lab.local", True),
        ("10.0.0.5", "10.0.0.5", True),
        ("*.example.com", "bücher.example.com", True),
        ("192.0.2.10", "192.0.2.10", True),
        ("192.0.2.10", "192.0.2.11", False),
        ("::1", "0:0:0:0:0:0:0:1", True),
        ("*.example.com", "192.0.2.10", False),
        ("192.0.2.10", "sbc1.example.com", False),
        ("", "example.com", False),
    ],
)
def test_host_matches(pattern: str, host: str, expected: bool) -> None:
    """Wildcards cover exactly one left-most label; case, IDNA and IPs compare properly."""
    assert host_matches(pattern, host) is expected


def test_ip_text_in_a_dns_entry_matches_nothing() -> None:
    """Given as a dNSName, an IP literal covers neither the IP nor a name."""
    assert host_matches("10.0.0.5", "10.0.0.5", kind="ip")
    assert not host_matches("10.0.0.5", "10.0.0.5", kind="dns")
    assert not host_matches("sbc1.example.com", "10.0.0.5", kind="dns")


def _cert(
    cn: str, san: list[x509.GeneralName] | None
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_names_are_dns_and_ip_sans() -> None:
    """DNS and IP SANs are the names; the CN is ignored when a SAN extension exists."""
    cert = _cert(
        "ignored.example.com",
        [x509.DNSName("sbc1.example.com"), x509.IPAddress(ipaddress.ip_address("192.0.2.10"))],
    )
    assert certificate_names(cert) == ["sbc1.example.com", "192.0.2.10"]


def test_cn_is_the_fallback_without_sans() -> None:
    """Without a SAN extension the common name is shown as the name (matching ignores it)."""
    assert certificate_names(_cert("legacy.example.com", None)) == ["legacy.example.com"]


def test_lab_wildcard_names(lab_ca: LabCA) -> None:
    """A lab wildcard leaf names the wildcard and the apex."""
    leaf = lab_ca.issue(("*.example.com", "example.com"), key_type="ec-p256").leaf
    names = certificate_names(leaf)
    assert names == ["*.example.com", "example.com"]
    assert any(host_matches(n, "example.com") for n in names)
    assert not any(host_matches(n, "a.b.example.com") for n in names)


def _der(tag: int, content: bytes) -> bytes:
    assert len(content) < 0x80
    return bytes([tag, len(content)]) + content


def _cert_raw_sans(cn: str, dns_names: list[bytes]) -> x509.Certificate:
    """A certificate whose SAN holds the given dNSName bytes as they are.

    cryptography refuses to build a non-ASCII DNSName, so the extension is encoded by hand.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    san_der = _der(0x30, b"".join(_der(0x82, n) for n in dns_names))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, san_der),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _not_covered(cert: x509.Certificate, host: str) -> Finding:
    bundle = assemble(load_bytes(cert.public_bytes(serialization.Encoding.PEM), "leaf.pem"))
    findings = [f for f in check_bundle(bundle, [host]) if f.code == "NAME_NOT_COVERED"]
    assert len(findings) == 1, findings
    assert findings[0].severity == "error"
    return findings[0]


def test_rule_cn_without_san_is_not_matched() -> None:
    """Rule 1: no subjectAltName, CN = the host: not covered, and the hint says why."""
    cert = _cert("sbc1.example.com", None)
    assert not covers(cert, "sbc1.example.com")
    finding = _not_covered(cert, "sbc1.example.com")
    assert "clients ignore the CN" in finding.message
    assert "subjectAltName" in finding.hint


def test_rule_ip_literal_in_dns_san() -> None:
    """Rule 2: DNS:10.0.0.5 does not cover 10.0.0.5; IP:10.0.0.5 does."""
    wrong = _cert("sbc1", [x509.DNSName("10.0.0.5")])
    assert not covers(wrong, "10.0.0.5")
    finding = _not_covered(wrong, "10.0.0.5")
    assert "only an iPAddress entry covers an IP" in finding.message
    right = _cert("sbc1", [x509.IPAddress(ipaddress.ip_address("10.0.0.5"))])
    assert covers(right, "10.0.0.5")


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        (b"sip_trunk.example.com", "sip_trunk.example.com"),
        ("\N{SLIGHTLY SMILING FACE}.example.com".encode(), "\N{SLIGHTLY SMILING FACE}.example.com"),
        ("bücher.example.com".encode(), "xn--bcher-kva.example.com"),
    ],
    ids=["underscore", "emoji", "raw-u-label"],
)
def test_rule_invalid_characters_never_match(raw: bytes, host: str) -> None:
    """Rule 3: a dNSName with '_' or raw non-ASCII text covers nothing, not even itself."""
    cert = _cert_raw_sans("x", [raw])
    assert not covers(cert, host)
    finding = _not_covered(cert, host)
    assert "clients ignore it" in finding.message


def test_idna_a_label_in_certificate_matches_unicode_host() -> None:
    """Kept: the certificate's xn-- name covers the host typed in Unicode."""
    cert = _cert_raw_sans("x", [b"xn--bcher-kva.example.com"])
    assert covers(cert, "BÜCHER.example.com")


@pytest.mark.parametrize(
    ("wildcard", "host"),
    [("*.co.uk", "shop.co.uk"), ("*.s3.amazonaws.com", "bucket.s3.amazonaws.com")],
)
def test_rule_wildcard_over_public_suffix_is_an_error(wildcard: str, host: str) -> None:
    """Rule 4: a wildcard directly over a public suffix covers nothing: NAME_NOT_COVERED."""
    cert = _cert("x", [x509.DNSName(wildcard)])
    assert not covers(cert, host)
    finding = _not_covered(cert, host)
    assert "public suffix" in finding.message


def test_wildcard_under_a_registrable_domain_still_matches() -> None:
    """Kept: *.example.co.uk covers one label under a registrable domain."""
    cert = _cert("x", [x509.DNSName("*.example.co.uk")])
    assert covers(cert, "www.example.co.uk")
    assert not covers(cert, "a.www.example.co.uk")
    assert is_public_suffix("co.uk") and not is_public_suffix("example.co.uk")


_CPYTHON_CASES = json.loads(
    (Path(__file__).parent / "data" / "hostname_cases_cpython.json").read_text(encoding="utf-8")
)["cases"]


@pytest.mark.parametrize(("kind", "pattern", "host", "expected"), _CPYTHON_CASES)
def test_public_hostname_cases(kind: NameKind, pattern: str, host: str, expected: bool) -> None:
    """CPython's match_hostname cases on subjectAltName entries give the same answers."""
    assert host_matches(pattern, host, kind=kind) is expected
