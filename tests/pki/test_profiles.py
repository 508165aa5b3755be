"""Target profiles: the OVOC and SBC file sets, their preflight, overrides and sinks."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from _tools import require_tool
from certfleet.errors import CertificateError, ConfigError, PrivateKeyError
from certfleet.lab.ca import Issued
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle, spki_sha256
from certfleet.pki.profiles import (
    FINDING_CODES,
    PROFILES,
    Artifact,
    Artifacts,
    OvocProfile,
    SbcProfile,
    keystore_password_findings,
    profile_findings,
    profile_from_mapping,
    render_target,
)


def _certs(data: bytes) -> list[x509.Certificate]:
    return [o.value for o in load_bytes(data, "t") if isinstance(o.value, x509.Certificate)]


def test_ovoc_default_file_set(full: Bundle) -> None:
    """OVOC gets server.crt (leaf), server.key (PKCS#1), root.crt and ca1/ca2 leaf side first."""
    artifacts = render_target(full, PROFILES["ovoc"])
    assert artifacts.names() == ["server.crt", "server.key", "root.crt", "ca1.crt", "ca2.crt"]
    assert _certs(artifacts.get("server.crt")) == [full.leaf]
    assert _certs(artifacts.get("root.crt")) == [full.root]
    assert _certs(artifacts.get("ca1.crt")) == [full.chain[0]]
    assert _certs(artifacts.get("ca2.crt")) == [full.chain[1]]
    key = artifacts.get("server.key")
    assert key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert b"ENCRYPTED" not in key
    assert [a.secret for a in artifacts] == [False, True, False, False, False]


def test_ovoc_overrides(full: Bundle) -> None:
    """Overridden names, PKCS#8 and a chain in the certificate file are honoured."""
    profile = OvocProfile(
        cert_file="sem.crt", key_file="sem.key", intermediate_pattern="int{n}.pem",
        key_format="pkcs8", cert_includes_chain=True,
    )
    artifacts = render_target(full, profile)
    assert artifacts.names() == ["sem.crt", "sem.key", "root.crt", "int1.pem", "int2.pem"]
    assert _certs(artifacts.get("sem.crt")) == [full.leaf, *full.chain]
    assert artifacts.get("sem.key").startswith(b"-----BEGIN PRIVATE KEY-----")


def test_ovoc_ec_key_is_sec1(issued_ec: Issued) -> None:
    """An EC key goes to OVOC as SEC1, with a warning that OVOC is known for RSA."""
    bundle = Bundle(issued_ec.leaf, issued_ec.chain, issued_ec.root, issued_ec.key)
    artifacts = render_target(bundle, OvocProfile())
    assert artifacts.get("server.key").startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert [f.code for f in OvocProfile().preflight(bundle)] == ["KEY_TYPE"]


def test_ovoc_needs_root_and_key(full: Bundle) -> None:
    """Without root OVOC refuses with CertificateError; without key with PrivateKeyError."""
    rootless = Bundle(full.leaf, full.chain, None, full.private_key)
    with pytest.raises(CertificateError, match=r"no root CA certificate; OVOC needs 'root\.crt'"):
        render_target(rootless, OvocProfile())
    with pytest.raises(PrivateKeyError, match=r"'\*\.example\.com' has no private key"):
        render_target(Bundle(full.leaf, full.chain, full.root), OvocProfile())


def test_ovoc_preflight(full: Bundle) -> None:
    """OVOC preflight reports a missing root and a missing key as errors, nothing when complete."""
    assert OvocProfile().preflight(full) == []
    findings = OvocProfile().preflight(Bundle(full.leaf, full.chain))
    assert {(f.code, f.severity) for f in findings} == {
        ("KEY_MISSING", "error"), ("ROOT_MISSING", "error")
    }


def test_profile_findings_replace_general_ones_of_the_same_code(full: Bundle) -> None:
    """A device finding replaces the general finding of its code; errors sort first."""
    from certfleet.pki.model import Finding

    keyless = Bundle(full.leaf, full.chain, full.root)
    general = [Finding("NO_CLIENT_AUTH", "info", "i"),
               Finding("KEY_MISSING", "warning", "no key"),
               Finding("EXPIRES_SOON", "warning", "w")]
    merged = profile_findings(keyless, PROFILES["ovoc"], general)
    assert [(f.code, f.severity) for f in merged] == [
        ("KEY_MISSING", "error"), ("EXPIRES_SOON", "warning"), ("NO_CLIENT_AUTH", "info")]
    assert profile_findings(full, PROFILES["ovoc"], []) == []


def test_preflight_codes_are_documented(full: Bundle, issued_ec: Issued) -> None:
    """Every code a profile's preflight emits is listed in profiles.FINDING_CODES."""
    ec_bundle = Bundle(issued_ec.leaf, issued_ec.chain, issued_ec.root, issued_ec.key)
    emitted = {
        f.code
        for profile in PROFILES.values()
        for bundle in (full, Bundle(full.leaf), ec_bundle)
        for f in profile.preflight(bundle)
    }
    emitted |= {f.code for f in keystore_password_findings("ks ü")}
    assert emitted == set(FINDING_CODES)


AWKWARD_ASCII = "Ks pa$$ 'q' \"d\" `id` \\ ~!"


@pytest.mark.parametrize("password", [AWKWARD_ASCII, "abcdef", "~" * 64])
def test_keystore_password_safe_set_is_accepted(password: str) -> None:
    """Printable ASCII (spaces inside, quotes, $, backticks, backslash) raises nothing."""
    assert keystore_password_findings(password) == []
    assert OvocProfile().keystore_password_findings(password) == []


@pytest.mark.parametrize(("password", "words"), [
    (None, "missing"), ("", "missing"), ("abc12", "shorter than 6"),
    ("Ks ü password", "U+00FC"), ("tab\there", "U+0009"), ("emoji \U0001F512 pw", "U+1F512"),
    (" leading", "space"), ("trailing ", "space"),
])
def test_keystore_password_ovoc_cannot_take(password: str | None, words: str) -> None:
    """Each unsafe password is one error naming why, with the safe set in the hint."""
    findings = keystore_password_findings(password)
    assert [(f.code, f.severity) for f in findings] == [("OVOC_KEYSTORE_PASSWORD", "error")]
    assert words in findings[0].message
    assert "printable ASCII" in (findings[0].hint or "")


def _keytool_reads_openssl_pkcs12(full: Bundle, password: str, tmp_path: Path) -> bool:
    """OVOC's two steps with the real tools: openssl pkcs12 -export, keytool -importkeystore."""
    openssl, keytool = require_tool("openssl"), require_tool("keytool")
    tmp_path.mkdir()
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(full.leaf.public_bytes(serialization.Encoding.PEM))
    assert full.private_key is not None
    key.write_bytes(full.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    env = {**os.environ, "KS_PW": password}
    p12, jks = tmp_path / "sem.p12", tmp_path / "sem.jks"
    subprocess.run([openssl, "pkcs12", "-export", "-in", str(cert), "-inkey", str(key),
                    "-name", "sem", "-out", str(p12), "-passout", "env:KS_PW"],
                   env=env, check=True, capture_output=True)
    result = subprocess.run([keytool, "-importkeystore", "-noprompt", "-srckeystore", str(p12),
                             "-srcstoretype", "PKCS12", "-srcstorepass:env", "KS_PW",
                             "-destkeystore", str(jks), "-deststoretype", "JKS",
                             "-deststorepass:env", "KS_PW"],
                            env=env, capture_output=True, text=True)
    return result.returncode == 0


def test_keystore_password_rule_matches_openssl_and_keytool(full: Bundle,
                                                             tmp_path: Path) -> None:
    """The rule's oracle: keytool opens OpenSSL's PKCS#12 under printable ASCII, not under
    a non-ASCII password (what OVOC's import does with the password)."""
    assert _keytool_reads_openssl_pkcs12(full, AWKWARD_ASCII, tmp_path / "ascii")
    assert not _keytool_reads_openssl_pkcs12(full, "Ks ü password", tmp_path / "utf8")


def test_sbc_default_file_set(full: Bundle) -> None:
    """SBC gets the leaf, a PKCS#1 key and intermediates+root as trusted roots."""
    artifacts = render_target(full, PROFILES["sbc"])
    assert artifacts.names() == ["certificate.pem", "private_key.pem", "trusted_roots.pem"]
    assert _certs(artifacts.get("certificate.pem")) == [full.leaf]
    assert artifacts.get("private_key.pem").startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert _certs(artifacts.get("trusted_roots.pem")) == [*full.chain, full.root]


@pytest.mark.parametrize(
    ("certificate", "trusted_roots", "cert_count", "trusted"),
    [("fullchain", "root", 3, 1), ("leaf", "none", 1, None), ("leaf", "chain+root", 1, 3)],
)
def test_sbc_options(
    full: Bundle, certificate: str, trusted_roots: str, cert_count: int, trusted: int | None
) -> None:
    """The certificate and trusted-roots options pick what each file carries."""
    profile = profile_from_mapping(
        "sbc", {"certificate": certificate, "trusted_roots": trusted_roots}
    )
    artifacts = render_target(full, profile)
    assert len(_certs(artifacts.get("certificate.pem"))) == cert_count
    if trusted is None:
        assert "trusted_roots.pem" not in artifacts.names()
    else:
        assert len(_certs(artifacts.get("trusted_roots.pem"))) == trusted


def test_sbc_without_root(full: Bundle) -> None:
    """An SBC bundle without root still renders; preflight warns ROOT_MISSING."""
    bundle = Bundle(full.leaf, (), None, full.private_key)
    assert render_target(bundle, SbcProfile()).names() == ["certificate.pem", "private_key.pem"]
    findings = SbcProfile().preflight(bundle)
    assert [(f.code, f.severity) for f in findings] == [("ROOT_MISSING", "warning")]
    assert SbcProfile(trusted_roots="none").preflight(bundle) == []


def test_profile_from_mapping() -> None:
    """Inventory mappings override fields; dashes and underscores both work."""
    profile = profile_from_mapping("ovoc", {"key-file": "k.pem", "cert_includes_chain": True})
    assert profile == OvocProfile(key_file="k.pem", cert_includes_chain=True)
    assert profile_from_mapping("sbc", {"certificate": "fullchain"}) == SbcProfile(
        certificate="fullchain"
    )


@pytest.mark.parametrize(
    ("kind", "mapping", "message"),
    [
        ("f5", {}, r"kind 'f5' is unknown"),
        ("ovoc", {"cert_name": "x"}, r"setting 'cert_name' is unknown"),
        ("ovoc", {"cert_includes_chain": "yes"}, r"'cert_includes_chain' must be a bool"),
        ("ovoc", {"intermediate_pattern": "ca.crt"}, r"'ca\.crt' has no \{n\}"),
        ("ovoc", {"key_file": "../server.key"}, r"key_file '\.\./server\.key' is not a plain"),
        ("ovoc", {"key_file": "root.crt"}, r"not all different"),
        ("ovoc", {"cert_file": "ca2.crt"}, r"not all different"),
        ("sbc", {"trusted_roots": "all"}, r"trusted_roots 'all' is not one of"),
        ("sbc", {"key_format": "der"}, r"key_format 'der' is not one of"),
    ],
)
def test_profile_from_mapping_errors(kind: str, mapping: dict[str, object], message: str) -> None:
    """Bad inventory settings raise ConfigError naming the kind, key or value."""
    with pytest.raises(ConfigError, match=message):
        profile_from_mapping(kind, mapping)


def test_artifacts_api(tmp_path: Path) -> None:
    """Artifacts list, fetch, map and write their files; secrets become 0600."""
    artifacts = Artifacts((Artifact("a.crt", b"cert", False), Artifact("a.key", b"key", True)))
    assert artifacts.as_dict() == {"a.crt": b"cert", "a.key": b"key"}
    assert "key" not in repr(artifacts.files[1]).replace("a.key", "")
    with pytest.raises(KeyError, match=r"no artifact 'b\.crt'"):
        artifacts.get("b.crt")
    written = artifacts.write_to_dir(tmp_path / "out")
    assert [p.name for p in written] == ["a.crt", "a.key"]
    assert (tmp_path / "out" / "a.key").read_bytes() == b"key"
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / "out" / "a.key").stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match=r"a\.crt' exists; refusing to overwrite"):
        artifacts.write_to_dir(tmp_path / "out", overwrite=False)
    with pytest.raises(ValueError, match="more than once"):
        Artifacts((Artifact("a", b"", False), Artifact("a", b"", False)))


@pytest.mark.oracle
def test_openssl_accepts_ovoc_file_set(full: Bundle, tmp_path: Path) -> None:
    """openssl verifies server.crt against root.crt + ca*.crt, checks server.key, and they match."""
    openssl = require_tool("openssl")
    render_target(full, OvocProfile()).write_to_dir(tmp_path)
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes((tmp_path / "ca1.crt").read_bytes() + (tmp_path / "ca2.crt").read_bytes())
    verify = subprocess.run(
        [openssl, "verify", "-CAfile", str(tmp_path / "root.crt"), "-untrusted", str(untrusted),
         str(tmp_path / "server.crt")],
        capture_output=True, text=True, check=True,
    )
    assert verify.stdout.strip().endswith(": OK")
    check = subprocess.run(
        [openssl, "rsa", "-check", "-noout", "-in", str(tmp_path / "server.key")],
        capture_output=True, text=True, check=True,
    )
    assert "RSA key ok" in check.stdout
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
    key = load_bytes((tmp_path / "server.key").read_bytes(), "server.key")[0].value
    assert spki_sha256(key) == spki_sha256(full.leaf)
