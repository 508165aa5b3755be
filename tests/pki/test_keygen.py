"""Key and CSR generation: types, names, encodings, checked by openssl as an oracle."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from _tools import require_tool
from certfleet.pki.keygen import (
    KEY_TYPES,
    build_csr,
    csr_pem,
    generate_private_key,
    native_key_format,
    normalize_dns_name,
    private_key_pem,
    stem_for_name,
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA-2048 key for the module (RSA generation is the slow part)."""
    key = generate_private_key("rsa2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """One EC P-256 key for the module."""
    key = generate_private_key("ec-p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


# One key for the property tests (hypothesis runs a test many times per fixture).
_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


@pytest.mark.parametrize(
    ("key_type", "cls", "size"),
    [("rsa3072", rsa.RSAPrivateKey, 3072), ("ec-p256", ec.EllipticCurvePrivateKey, 256),
     ("ec-p384", ec.EllipticCurvePrivateKey, 384)],
)
def test_generate_private_key_types(key_type: str, cls: type, size: int) -> None:
    """Each key type yields a key of that algorithm and size."""
    key = generate_private_key(key_type)
    assert isinstance(key, cls)
    bits = key.key_size if isinstance(key, rsa.RSAPrivateKey) else key.curve.key_size
    assert bits == size


def test_key_types_are_the_documented_ones() -> None:
    """KEY_TYPES lists exactly the supported types in a stable order."""
    assert KEY_TYPES == ("rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384")


def test_generate_private_key_rejects_unknown_type() -> None:
    """An unknown key type raises ValueError quoting it and naming the allowed ones."""
    with pytest.raises(ValueError, match=r"'rsa1024' is not one of rsa2048, .*ec-p384"):
        generate_private_key("rsa1024")


def test_csr_includes_cn_as_first_san_and_dedupes(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """The CN is always the first SAN, IPs become IP SANs and duplicates go."""
    csr = build_csr(ec_key, "*.Example.com", ["example.com", "*.example.com", "192.0.2.10"])
    assert _sans(csr) == [
        x509.DNSName("*.example.com"),
        x509.DNSName("example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
    ]
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "*.example.com"
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)


def test_csr_ip_common_name(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """An IP address as CN stays the CN and becomes an IP SAN."""
    csr = build_csr(ec_key, "10.1.2.3")
    assert _sans(csr) == [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "10.1.2.3"


def test_csr_subject_fields(rsa_key: rsa.RSAPrivateKey) -> None:
    """Organisation, unit, locality, state, country and e-mail land in the subject."""
    csr = build_csr(
        rsa_key, "ovoc.example.com", organization="Example Ltd", organizational_unit="Voice",
        locality="Leeds", state="West Yorkshire", country="gb", email="pki@example.com",
    )
    subject = {a.oid: a.value for a in csr.subject}
    assert subject[NameOID.ORGANIZATION_NAME] == "Example Ltd"
    assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "Voice"
    assert subject[NameOID.LOCALITY_NAME] == "Leeds"
    assert subject[NameOID.STATE_OR_PROVINCE_NAME] == "West Yorkshire"
    assert subject[NameOID.COUNTRY_NAME] == "GB"
    assert subject[NameOID.EMAIL_ADDRESS] == "pki@example.com"


@pytest.mark.parametrize(
    ("cn", "sans", "message"),
    [
        ("a..example.com", (), r"'a\.\.example\.com' has an empty label"),
        ("ovoc example.com", (), r"'ovoc example\.com' contains a space"),
        ("ovoc.*.example.com", (), r"'ovoc\.\*\.example\.com' has a wildcard outside"),
        ("w*.example.com", (), r"'w\*\.example\.com' has a wildcard outside"),
        ("ok.example.com", ("-bad.example.com",), r"label '-bad'"),
        # An internationalised name is converted to its xn-- form; one that cannot be is refused.
        ("ok.example.com", ("ü" * 64 + ".example",), r"is not ASCII and cannot be converted"),
        ("", (), r"common name is empty"),
        ("x" * 65 + ".example.com", (), r"longer than 64 characters"),
    ],
)
def test_csr_rejects_bad_names(
    ec_key: ec.EllipticCurvePrivateKey, cn: str, sans: tuple[str, ...], message: str
) -> None:
    """Invalid names raise ValueError quoting the bad name."""
    with pytest.raises(ValueError, match=message):
        build_csr(ec_key, cn, sans)


@pytest.mark.parametrize("country", ["GBR", "G", "1A", ""])
def test_csr_rejects_bad_country(ec_key: ec.EllipticCurvePrivateKey, country: str) -> None:
    """A country that is not two letters raises ValueError quoting it."""
    with pytest.raises(ValueError, match=rf"country {country!r} is not a two-letter"):
        build_csr(ec_key, "a.example.com", country=country)


def test_csr_rejects_single_string_sans(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """Passing one string as ``sans`` is a TypeError, not a list of characters."""
    with pytest.raises(TypeError, match="sequence of names"):
        build_csr(ec_key, "a.example.com", "b.example.com")


def test_csr_with_ed25519_key() -> None:
    """Keys that sign without a digest (Ed25519) still make a valid CSR."""
    csr = build_csr(ed25519.Ed25519PrivateKey.generate(), "a.example.com")
    assert csr.is_signature_valid


def test_normalize_dns_name() -> None:
    """Names are lower-cased and lose one trailing dot."""
    assert normalize_dns_name("SBC1.Example.COM.") == "sbc1.example.com"
    assert normalize_dns_name("_sip._tls.example.com") == "_sip._tls.example.com"


def test_private_key_pem_formats(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """PKCS#1, SEC1 and PKCS#8 carry their PEM labels; mismatches are refused."""
    assert private_key_pem(rsa_key, "pkcs1").startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert private_key_pem(ec_key, "sec1").startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert private_key_pem(rsa_key, "pkcs8").startswith(b"-----BEGIN PRIVATE KEY-----")
    assert native_key_format(rsa_key) == "pkcs1"
    assert native_key_format(ec_key) == "sec1"
    with pytest.raises(ValueError, match=r"'pkcs1' does not fit the EC key"):
        private_key_pem(ec_key, "pkcs1")
    with pytest.raises(ValueError, match=r"'pem' is not one of"):
        private_key_pem(ec_key, "pem")


def test_private_key_pem_encrypted(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """A passphrase gives encrypted PKCS#8 that decrypts back to the same key."""
    pem = private_key_pem(ec_key, "sec1", passphrase=b"s3cret")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = serialization.load_pem_private_key(pem, b"s3cret")
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == ec_key.private_numbers()
    with pytest.raises(ValueError, match=r"passphrase .* is empty"):
        private_key_pem(ec_key, "pkcs8", passphrase=b"")


def test_stem_for_name() -> None:
    """File stems replace the wildcard and characters Windows refuses."""
    assert stem_for_name("*.Example.com") == "wildcard.example.com"
    assert stem_for_name("My Server/1") == "my_server_1"
    assert stem_for_name("") == "certificate"


@pytest.mark.oracle
def test_openssl_verifies_csr_and_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """openssl verifies the CSR signature, shows the wildcard SANs and checks the key."""
    openssl = require_tool("openssl")
    csr = build_csr(rsa_key, "*.example.com", ["example.com", "192.0.2.1"])
    (tmp_path / "r.csr").write_bytes(csr_pem(csr))
    (tmp_path / "r.key").write_bytes(private_key_pem(rsa_key, "pkcs1"))
    out = subprocess.run(
        [openssl, "req", "-verify", "-noout", "-text", "-in", str(tmp_path / "r.csr")],
        capture_output=True, text=True, check=True,
    )
    assert "verify OK" in out.stdout + out.stderr
    assert "DNS:*.example.com, DNS:example.com, IP Address:192.0.2.1" in out.stdout
    assert "sha256WithRSAEncryption" in out.stdout
    check = subprocess.run(
        [openssl, "rsa", "-check", "-noout", "-in", str(tmp_path / "r.key")],
        capture_output=True, text=True, check=True,
    )
    assert "RSA key ok" in check.stdout


@pytest.mark.oracle
def test_openssl_reads_encrypted_key(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """openssl decrypts the encrypted PKCS#8 key with the passphrase from the environment."""
    openssl = require_tool("openssl")
    (tmp_path / "e.key").write_bytes(private_key_pem(ec_key, "pkcs8", passphrase=b"pw-123"))
    out = subprocess.run(
        [openssl, "pkey", "-in", str(tmp_path / "e.key"), "-passin", "env:CF_PW", "-noout",
         "-text"],
        capture_output=True, text=True, check=True, env={**os.environ, "CF_PW": "pw-123"},
    )
    assert "prime256v1" in out.stdout or "P-256" in out.stdout


_label_text = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,12}[A-Za-z0-9])?", fullmatch=True)
# A top-level label with a letter, so that the name is never an IP address.
_tld_text = st.from_regex(r"[A-Za-z]{2,10}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(_label_text, min_size=1, max_size=3), tld=_tld_text,
       wildcard=st.booleans())
def test_valid_names_survive_a_csr(labels: list[str], tld: str, wildcard: bool) -> None:
    """Any well-formed host name (optionally a wildcard) lands lower-cased as the first SAN."""
    name = ".".join((["*"] if wildcard else []) + labels + [tld])
    csr = build_csr(_EC_KEY, name)
    assert _sans(csr)[0] == x509.DNSName(name.lower())


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_any_name_is_accepted_or_refused_with_value_error(text: str) -> None:
    """Arbitrary text is refused with ValueError, or accepted and usable as a SAN."""
    try:
        name = normalize_dns_name(text)
    except ValueError:
        return
    csr = build_csr(_EC_KEY, "host.example.com", [name])
    assert x509.DNSName(name) in _sans(csr)
