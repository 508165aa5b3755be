"""Host name matching (RFC 6125) and the names a certificate covers."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.lab.ca import LabCA
from certfleet.pki.names import certificate_names, host_matches


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
        ("bücher.example.com", "xn--bcher-kva.example.com", True),
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
    """Without a SAN extension the common name is the name."""
    assert certificate_names(_cert("legacy.example.com", None)) == ["legacy.example.com"]


def test_lab_wildcard_names(lab_ca: LabCA) -> None:
    """A lab wildcard leaf names the wildcard and the apex."""
    leaf = lab_ca.issue(("*.example.com", "example.com"), key_type="ec-p256").leaf
    names = certificate_names(leaf)
    assert names == ["*.example.com", "example.com"]
    assert any(host_matches(n, "example.com") for n in names)
    assert not any(host_matches(n, "a.b.example.com") for n in names)
