"""Export formats: contents, errors, round trips through the loader, openssl/keytool oracles."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from _tools import require_tool
from certfleet.errors import ConfigError, InputError, PasswordError, PrivateKeyError
from certfleet.lab.ca import Issued
from certfleet.pki.bundle import assemble
from certfleet.pki.export import FORMATS, PASSWORD_FORMATS, export_bundle
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle, cert_sha256, spki_sha256

PW = b"Out-pass 1"


@pytest.fixture(scope="module")
def ec_bundle(issued_ec: Issued) -> Bundle:
    """An EC P-256 bundle with one intermediate and its root."""
    return Bundle(issued_ec.leaf, issued_ec.chain, issued_ec.root, issued_ec.key)


def _certs(data: bytes, password: bytes | None = None) -> list[str]:
    return [
        cert_sha256(o.value)  # type: ignore[arg-type]  # filtered to certificates
        for o in load_bytes(data, "export", password)
        if o.type == "certificate"
    ]


def _keys(data: bytes, password: bytes | None = None) -> list[str]:
    return [spki_sha256(o.value) for o in load_bytes(data, "export", password)
            if o.type == "private_key"]


def _pw(fmt: str) -> bytes | None:
    return PW if fmt in PASSWORD_FORMATS else None


# What each format carries: (certificates in order, key included).
def _expected(bundle: Bundle, fmt: str) -> tuple[list[x509.Certificate], bool]:
    assert bundle.root is not None
    with_root = [bundle.leaf, *bundle.chain, bundle.root]
    return {
        "pem": ([bundle.leaf], False),
        "der": ([bundle.leaf], False),
        "chain": (list(bundle.chain), False),
        "fullchain": (list(bundle.fullchain), False),
        "p7b": (with_root, False),  # a SET in PKCS#7: order compared as sorted
        "key-pkcs1": ([], True),
        "key-pkcs8": ([], True),
        "key-pkcs8-encrypted": ([], True),
        "pfx": (with_root, True),
        "pfx-legacy": (with_root, True),
        "jks": (with_root, True),
    }[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(full: Bundle, fmt: str) -> None:
    """Every format loads back with exactly the certificates (in order) and key it should hold."""
    data = export_bundle(full, fmt, _pw(fmt))
    certs, has_key = _expected(full, fmt)
    loaded, expected = _certs(data, _pw(fmt)), [cert_sha256(c) for c in certs]
    if fmt == "p7b":
        loaded, expected = sorted(loaded), sorted(expected)
    assert loaded == expected
    assert _keys(data, _pw(fmt)) == ([spki_sha256(full.leaf)] if has_key else [])


@pytest.mark.parametrize("fmt", ["pfx", "pfx-legacy", "jks", "p7b"])
def test_round_trip_assembles_same_bundle(full: Bundle, fmt: str) -> None:
    """Container formats assemble back into the same leaf, chain, root and key."""
    data = export_bundle(full, fmt, _pw(fmt))
    objects = load_bytes(data, f"x.{fmt}", _pw(fmt))
    if fmt == "p7b":
        objects += load_bytes(export_bundle(full, "key-pkcs8"), "x.key")
    back = assemble(objects)
    assert back.leaf == full.leaf
    assert back.chain == full.chain
    assert back.root == full.root
    assert back.private_key is not None
    assert spki_sha256(back.private_key) == spki_sha256(full.leaf)


def test_pem_labels(full: Bundle, ec_bundle: Bundle) -> None:
    """Key formats carry the PEM labels devices look for."""
    assert export_bundle(full, "key-pkcs1").startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert export_bundle(ec_bundle, "key-pkcs1").startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert export_bundle(full, "key-pkcs8").startswith(b"-----BEGIN PRIVATE KEY-----")
    encrypted = export_bundle(full, "key-pkcs8-encrypted", PW)
    assert encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert export_bundle(full, "pem").count(b"BEGIN CERTIFICATE") == 1
    assert export_bundle(full, "fullchain").count(b"BEGIN CERTIFICATE") == 3
    assert export_bundle(full, "p7b").startswith(b"-----BEGIN PKCS7-----")


def test_pfx_friendly_name_is_leaf_cn(full: Bundle) -> None:
    """The PKCS#12 friendly name of the key's certificate is the leaf CN."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    p12 = pkcs12.load_pkcs12(export_bundle(full, "pfx", PW), PW)
    assert p12.cert is not None
    assert p12.cert.friendly_name == b"*.example.com"
    assert [c.certificate for c in p12.additional_certs] == [*full.chain, full.root]


def test_unknown_format(full: Bundle) -> None:
    """An unknown format is a ConfigError listing the formats."""
    with pytest.raises(ConfigError, match=r"'pkcs12' is unknown") as info:
        export_bundle(full, "pkcs12")
    assert info.value.hint is not None and "pfx-legacy" in info.value.hint


def test_password_for_unencrypted_format(full: Bundle) -> None:
    """A password given to a format that is not encrypted is refused, not silently dropped."""
    with pytest.raises(ConfigError, match=r"'key-pkcs8' is not encrypted"):
        export_bundle(full, "key-pkcs8", PW)


def test_chain_without_intermediates(full: Bundle) -> None:
    """The chain format of a bundle without intermediates says there are none."""
    bare = Bundle(full.leaf, (), full.root, full.private_key)
    with pytest.raises(InputError, match="has no intermediates"):
        export_bundle(bare, "chain")


@pytest.mark.parametrize("fmt", ["key-pkcs1", "key-pkcs8", "key-pkcs8-encrypted", "pfx",
                                 "pfx-legacy"])
def test_key_formats_need_the_key(full: Bundle, fmt: str) -> None:
    """Key formats without a key raise PrivateKeyError asking for the key file."""
    keyless = Bundle(full.leaf, full.chain, full.root)
    with pytest.raises(PrivateKeyError, match=r"'\*\.example\.com' has no private key") as info:
        export_bundle(keyless, fmt, _pw(fmt))
    assert info.value.hint == "add the key file to the input"


@pytest.mark.parametrize("fmt", sorted(PASSWORD_FORMATS))
def test_encrypted_formats_need_a_password(full: Bundle, fmt: str) -> None:
    """Encrypted formats without a password raise PasswordError pointing at --out-password-env."""
    for password in (None, b""):
        with pytest.raises(PasswordError, match="no output password") as info:
            export_bundle(full, fmt, password)
        assert info.value.hint is not None and "--out-password-env VAR" in info.value.hint


def test_jks_without_key_is_a_trust_store(full: Bundle) -> None:
    """Without a key, the JKS holds one trusted certificate entry per certificate."""
    import jks

    keyless = Bundle(full.leaf, full.chain, full.root)
    store = jks.KeyStore.loads(export_bundle(keyless, "jks", PW), PW.decode())
    assert not store.private_keys
    assert len(store.certs) == 4
    assert "wildcard.example.com" in store.certs


def test_ec_bundle_round_trips_through_pfx_and_jks(ec_bundle: Bundle) -> None:
    """EC keys survive PKCS#12 and JKS."""
    for fmt in ("pfx", "pfx-legacy", "jks"):
        back = load_bytes(export_bundle(ec_bundle, fmt, PW), fmt, PW)
        keys = [o.value for o in back if o.type == "private_key"]
        assert len(keys) == 1 and isinstance(keys[0], ec.EllipticCurvePrivateKey)
        assert spki_sha256(keys[0]) == spki_sha256(ec_bundle.leaf)


# --- independent oracles -------------------------------------------------------------------

def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, check=True, env={**os.environ, **env}
    )


@pytest.mark.oracle
def test_openssl_reads_modern_pfx(full: Bundle, tmp_path: Path) -> None:
    """openssl shows PBES2/PBKDF2/AES-256-CBC, a SHA-256 MAC, four certificates and the CN."""
    openssl = require_tool("openssl")
    path = tmp_path / "x.pfx"
    path.write_bytes(export_bundle(full, "pfx", PW))
    info = _run([openssl, "pkcs12", "-info", "-noout", "-in", str(path), "-passin", "env:PW"],
                PW=PW.decode())
    text = info.stdout + info.stderr
    assert "PBES2, PBKDF2, AES-256-CBC" in text
    assert "MAC: sha256" in text
    certs = _run([openssl, "pkcs12", "-in", str(path), "-nokeys", "-passin", "env:PW"],
                 PW=PW.decode())
    assert certs.stdout.count("BEGIN CERTIFICATE") == 4
    assert "friendlyName: *.example.com" in certs.stdout


@pytest.mark.oracle
def test_openssl_reads_legacy_pfx(full: Bundle, tmp_path: Path) -> None:
    """openssl shows 3DES (pbeWithSHA1And3-KeyTripleDES-CBC) and a SHA-1 MAC, key included."""
    openssl = require_tool("openssl")
    path = tmp_path / "x.pfx"
    path.write_bytes(export_bundle(full, "pfx-legacy", PW))
    info = _run([openssl, "pkcs12", "-info", "-noout", "-in", str(path), "-passin", "env:PW"],
                PW=PW.decode())
    text = info.stdout + info.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in text
    assert "MAC: sha1" in text
    assert "AES" not in text
    key = _run([openssl, "pkcs12", "-in", str(path), "-nocerts", "-nodes", "-passin", "env:PW"],
               PW=PW.decode())
    assert "BEGIN PRIVATE KEY" in key.stdout


@pytest.mark.oracle
def test_keytool_reads_jks(full: Bundle, tmp_path: Path) -> None:
    """keytool lists one PrivateKeyEntry with a chain of four and decrypts its key."""
    keytool = require_tool("keytool")
    path = tmp_path / "x.jks"
    path.write_bytes(export_bundle(full, "jks", PW))
    listing = _run([keytool, "-list", "-v", "-keystore", str(path), "-storepass:env", "PW"],
                   PW=PW.decode())
    assert "Keystore type: JKS" in listing.stdout
    assert "Alias name: wildcard.example.com" in listing.stdout
    assert "Entry type: PrivateKeyEntry" in listing.stdout
    assert "Certificate chain length: 4" in listing.stdout
    # Converting to PKCS#12 makes keytool decrypt the key with the same password.
    dest = tmp_path / "y.p12"
    _run([keytool, "-importkeystore", "-noprompt", "-srckeystore", str(path),
          "-srcstoretype", "JKS", "-srcalias", "wildcard.example.com",
          "-srcstorepass:env", "PW", "-srckeypass:env", "PW",
          "-destkeystore", str(dest), "-deststoretype", "PKCS12", "-deststorepass:env", "PW"],
         PW=PW.decode())
    keys = _keys(dest.read_bytes(), PW)
    assert keys == [spki_sha256(full.leaf)]


@pytest.mark.oracle
def test_keytool_reads_trust_store_jks(full: Bundle, tmp_path: Path) -> None:
    """keytool lists a keyless JKS as trustedCertEntry entries only."""
    keytool = require_tool("keytool")
    path = tmp_path / "t.jks"
    path.write_bytes(export_bundle(Bundle(full.leaf, full.chain, full.root), "jks", PW))
    listing = _run([keytool, "-list", "-keystore", str(path), "-storepass:env", "PW"],
                   PW=PW.decode())
    assert listing.stdout.count("trustedCertEntry") == 4
    assert "PrivateKeyEntry" not in listing.stdout


@pytest.mark.oracle
def test_openssl_reads_p7b(full: Bundle, tmp_path: Path) -> None:
    """openssl prints the p7b's four certificates: leaf, both intermediates and root."""
    openssl = require_tool("openssl")
    path = tmp_path / "x.p7b"
    path.write_bytes(export_bundle(full, "p7b"))
    out = _run([openssl, "pkcs7", "-print_certs", "-noout", "-in", str(path)])
    subjects = re.findall(r"^subject=.*CN\s?=\s?(.+)$", out.stdout, re.M)
    # PKCS#7 keeps certificates in a DER SET OF, sorted by encoding: order is not kept.
    assert sorted(subjects) == sorted([
        "*.example.com",
        "certfleet Other Intermediate CA 2",
        "certfleet Other Intermediate CA 1",
        "certfleet Other Root CA",
    ])


@pytest.mark.oracle
def test_openssl_fingerprint_of_der_and_pkcs1_key(full: Bundle, tmp_path: Path) -> None:
    """openssl's SHA-256 fingerprint of the DER export is the leaf's; the PKCS#1 key checks."""
    openssl = require_tool("openssl")
    der = tmp_path / "x.der"
    der.write_bytes(export_bundle(full, "der"))
    out = _run([openssl, "x509", "-inform", "DER", "-in", str(der), "-noout", "-fingerprint",
                "-sha256"])
    assert out.stdout.split("=", 1)[1].strip().replace(":", "").lower() == full.leaf_sha256
    key = tmp_path / "x.key"
    key.write_bytes(export_bundle(full, "key-pkcs1"))
    assert "RSA key ok" in _run([openssl, "rsa", "-check", "-noout", "-in", str(key)]).stdout


@pytest.mark.oracle
def test_openssl_decrypts_encrypted_key(full: Bundle, tmp_path: Path) -> None:
    """openssl decrypts key-pkcs8-encrypted with the password given through the environment."""
    openssl = require_tool("openssl")
    key = tmp_path / "x.key"
    key.write_bytes(export_bundle(full, "key-pkcs8-encrypted", PW))
    out = _run([openssl, "pkey", "-in", str(key), "-passin", "env:PW", "-pubout"],
               PW=PW.decode())
    public = serialization.load_pem_public_key(out.stdout.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    assert spki_sha256(public) == spki_sha256(full.leaf)
