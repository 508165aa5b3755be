"""Preflight checks: every finding code raised by a real generated case."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.errors import CertificateError, PasswordError
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.bundle import assemble
from certfleet.pki.checks import FINDING_CODES, check_bundle, has_errors, preflight
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle, Finding

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


def _der_tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        head = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + content


SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")
SHA1_RSA = bytes.fromhex("06092a864886f70d010105")


def resign_sha1(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """The same certificate signed with SHA-1 (cryptography no longer builds those)."""
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(SHA256_RSA) == 1
    tbs = tbs.replace(SHA256_RSA, SHA1_RSA)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = _der_tlv(0x30, SHA1_RSA + b"\x05\x00")
    der = _der_tlv(0x30, tbs + algorithm + _der_tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def self_signed(
    cn: str = "sbc1.example.com",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed end-entity certificate, as an SBC makes for itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        _self_signed_builder(name, key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _self_signed_builder(name: x509.Name, key: ec.EllipticCurvePrivateKey
                         ) -> x509.CertificateBuilder:
    """Subject and issuer ``name``, a random serial, valid from yesterday for a year."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
    )


def forged_intermediate(real: x509.Certificate, root_key: ec.EllipticCurvePrivateKey
                        ) -> x509.Certificate:
    """Same subject as ``real`` but another key and no key identifier: signatures fail."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, hashes.SHA256())
    )


def pems(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def run(data: bytes, hosts: tuple[str, ...] = (), now: dt.datetime = NOW,
        days: int = 30) -> list[Finding]:
    return check_bundle(assemble(load_bytes(data, "input.pem")), hosts,
                        expiry_warn_days=days, now=now)


def by_code(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


@pytest.fixture(scope="module")
def rsa_ca() -> LabCA:
    """A lab CA with RSA keys, so that SHA-1 signatures can be made by hand."""
    return LabCA(name="certfleet RSA", key_type="rsa2048")


@pytest.fixture(scope="module")
def clean(lab_ca: LabCA) -> Issued:
    """A leaf with serverAuth and clientAuth: a bundle with nothing to report."""
    return lab_ca.issue(("*.example.com", "example.com"), key_type="ec-p256",
                        eku=SERVER_AND_CLIENT)


# Each case builds the input that must raise its code. Together they cover FINDING_CODES.
Case = Callable[[pytest.FixtureRequest], list[Finding]]


def _key_mismatch(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    other: Issued = r.getfixturevalue("issued_ec")
    return run(clean.fullchain_pem + other.key_pem())


def _chain_incomplete(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    return run(clean.leaf_pem + clean.key_pem())


def _bad_signature(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    ca: LabCA = r.getfixturevalue("lab_ca")
    fake = forged_intermediate(clean.chain[0], ca.root_key)  # type: ignore[arg-type]
    return run(clean.leaf_pem + pems(fake) + clean.key_pem())


def _expired(r: pytest.FixtureRequest) -> list[Finding]:
    ca: LabCA = r.getfixturevalue("lab_ca")
    leaf = ca.issue(key_type="ec-p256", eku=SERVER_AND_CLIENT,
                    not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=3))
    return run(leaf.fullchain_pem + leaf.key_pem())


def _not_yet_valid(r: pytest.FixtureRequest) -> list[Finding]:
    ca: LabCA = r.getfixturevalue("lab_ca")
    leaf = ca.issue(key_type="ec-p256", eku=SERVER_AND_CLIENT,
                    not_before=NOW + dt.timedelta(days=2), days=90)
    return run(leaf.fullchain_pem + leaf.key_pem())


def _name_not_covered(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    return run(clean.fullchain_pem + clean.key_pem(), hosts=("a.b.example.com",))


def _weak_key(r: pytest.FixtureRequest) -> list[Finding]:
    ca: LabCA = r.getfixturevalue("lab_ca")
    leaf = ca.issue(key_type="rsa1024", eku=SERVER_AND_CLIENT)
    return run(leaf.fullchain_pem + leaf.key_pem())


def _weak_signature(r: pytest.FixtureRequest) -> list[Finding]:
    ca: LabCA = r.getfixturevalue("rsa_ca")
    leaf = ca.issue(key_type="ec-p256", eku=SERVER_AND_CLIENT)
    sha1_leaf = resign_sha1(leaf.leaf, ca.issuer[1])  # type: ignore[arg-type]
    return run(pems(sha1_leaf) + leaf.chain_pem + leaf.key_pem())


def _no_server_auth(r: pytest.FixtureRequest) -> list[Finding]:
    ca: LabCA = r.getfixturevalue("lab_ca")
    leaf = ca.issue(key_type="ec-p256", eku=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    return run(leaf.fullchain_pem + leaf.key_pem())


def _expires_soon(r: pytest.FixtureRequest) -> list[Finding]:
    ca: LabCA = r.getfixturevalue("lab_ca")
    leaf = ca.issue(key_type="ec-p256", eku=SERVER_AND_CLIENT, days=10)
    return run(leaf.fullchain_pem + leaf.key_pem())


def _key_missing(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    return run(clean.fullchain_pem)


def _chain_unrelated(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    ca2: LabCA = r.getfixturevalue("lab_ca2")
    return run(clean.fullchain_pem + clean.key_pem() + pems(ca2.intermediate_certs[0]))


def _self_signed_leaf(r: pytest.FixtureRequest) -> list[Finding]:
    cert, key = self_signed()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return run(pems(cert) + key_pem)


def _chain_reordered(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    return run(clean.key_pem() + clean.chain_pem + clean.leaf_pem)


def _chain_duplicate(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    return run(clean.fullchain_pem + clean.leaf_pem + clean.key_pem())


def _root_included(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    return run(clean.fullchain_pem + clean.root_pem + clean.key_pem())


def _no_client_auth(r: pytest.FixtureRequest) -> list[Finding]:
    ca: LabCA = r.getfixturevalue("lab_ca")
    leaf = ca.issue(key_type="ec-p256")  # serverAuth only, as public CAs issue since 2025
    return run(leaf.fullchain_pem + leaf.key_pem())


def _client_auth_dropped(r: pytest.FixtureRequest) -> list[Finding]:
    from certfleet.pki.checks import check_client_auth_dropped

    ca: LabCA = r.getfixturevalue("lab_ca")
    served = ca.issue(eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    renewal = ca.issue()  # serverAuth only
    return check_client_auth_dropped(served.leaf, renewal.leaf, where="sbc1 (teams)")


def _csr_given(r: pytest.FixtureRequest) -> list[Finding]:
    clean: Issued = r.getfixturevalue("clean")
    assert clean.key is not None
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(clean.leaf.subject)
        .sign(clean.key, hashes.SHA256())
    )
    findings = run(csr.public_bytes(serialization.Encoding.PEM) + clean.chain_pem
                   + clean.key_pem())
    assert by_code(findings, "KEY_MISMATCH") == []
    return findings


def _not_rfc5280(r: pytest.FixtureRequest) -> list[Finding]:
    from pki_support import odd_certificate

    der, key_pem = odd_certificate()  # serial -1234
    findings = run(ssl.DER_cert_to_PEM_cert(der).encode() + key_pem)
    assert any("serial number is negative" in f.message for f in findings)
    return findings


CASES: dict[str, Case] = {
    "NOT_RFC5280": _not_rfc5280,
    "KEY_MISMATCH": _key_mismatch,
    "CHAIN_INCOMPLETE": _chain_incomplete,
    "BAD_SIGNATURE": _bad_signature,
    "EXPIRED": _expired,
    "NOT_YET_VALID": _not_yet_valid,
    "NAME_NOT_COVERED": _name_not_covered,
    "WEAK_KEY": _weak_key,
    "WEAK_SIGNATURE": _weak_signature,
    "NO_SERVER_AUTH": _no_server_auth,
    "EXPIRES_SOON": _expires_soon,
    "KEY_MISSING": _key_missing,
    "CHAIN_UNRELATED": _chain_unrelated,
    "SELF_SIGNED_LEAF": _self_signed_leaf,
    "CHAIN_REORDERED": _chain_reordered,
    "CHAIN_DUPLICATE": _chain_duplicate,
    "ROOT_INCLUDED": _root_included,
    "NO_CLIENT_AUTH": _no_client_auth,
    "CSR_GIVEN": _csr_given,
    "CLIENT_AUTH_DROPPED": _client_auth_dropped,
}


def test_every_code_has_a_case() -> None:
    """Each documented finding code is exercised below, and nothing undocumented is."""
    assert set(CASES) == set(FINDING_CODES)
    for severity, description in FINDING_CODES.values():
        assert severity in ("error", "warning", "info") and description


@pytest.mark.parametrize("code", sorted(CASES))
def test_code_raised_by_real_case(request: pytest.FixtureRequest, code: str) -> None:
    """The case built for a code reports it, with the documented severity and a hint."""
    findings = CASES[code](request)
    hits = by_code(findings, code)
    assert hits, f"{code} not in {[f.code for f in findings]}"
    severity = FINDING_CODES[code][0]
    assert all(f.severity == severity for f in hits)
    assert all(f.message and f.hint for f in hits)
    assert has_errors(findings) is any(f.severity == "error" for f in findings)
    ranks = [("error", "warning", "info").index(f.severity) for f in findings]
    assert ranks == sorted(ranks)


def test_clean_bundle_has_no_findings(clean: Issued) -> None:
    """Leaf, intermediate and key in order, both usages: nothing at all to report."""
    findings = run(clean.fullchain_pem + clean.key_pem(), hosts=("sbc1.example.com",
                                                                 "example.com"))
    assert findings == []
    assert not has_errors(findings)


def test_messages_quote_values(clean: Issued, lab_ca: LabCA) -> None:
    """Messages quote the subject, the host, the missing issuer and its AIA URL."""
    incomplete = by_code(run(clean.leaf_pem + clean.key_pem()), "CHAIN_INCOMPLETE")[0]
    assert "'CN=certfleet Lab Intermediate CA 1,O=certfleet lab'" in incomplete.message
    assert "http://ca.lab.invalid/" in incomplete.message
    host = by_code(run(clean.fullchain_pem, hosts=("a.b.example.com",)), "NAME_NOT_COVERED")[0]
    assert "'a.b.example.com'" in host.message and "*.example.com" in host.message
    weak = by_code(_weak_key_findings(lab_ca), "WEAK_KEY")[0]
    assert "RSA 1024 bits" in weak.message
    client_only = lab_ca.issue(("c.example.com",), key_type="ec-p256",
                               eku=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    usage = by_code(run(client_only.fullchain_pem), "NO_SERVER_AUTH")[0]
    assert "lists clientAuth" in usage.message


def _weak_key_findings(ca: LabCA) -> list[Finding]:
    leaf = ca.issue(("w.example.com",), key_type="rsa1024")
    return run(leaf.fullchain_pem)


def test_wildcard_hosts(clean: Issued) -> None:
    """Per host: the wildcard covers one label and the apex is listed; others are errors."""
    findings = run(clean.fullchain_pem + clean.key_pem(),
                   hosts=("ovoc.example.com", "EXAMPLE.com", "x.y.example.com", "other.org"))
    assert sorted(f.message.split("'")[1] for f in by_code(findings, "NAME_NOT_COVERED")) == [
        "other.org", "x.y.example.com"
    ]


def test_expiry_window_and_intermediates(lab_ca: LabCA, clean: Issued) -> None:
    """EXPIRES_SOON follows expiry_warn_days; intermediates are checked too."""
    leaf = lab_ca.issue(key_type="ec-p256", eku=SERVER_AND_CLIENT, days=40)
    data = leaf.fullchain_pem + leaf.key_pem()
    assert by_code(run(data), "EXPIRES_SOON") == []
    assert len(by_code(run(data, days=45), "EXPIRES_SOON")) == 1
    # Far in the future the leaf has expired and the intermediate is about to.
    late = clean.chain[0].not_valid_after_utc - dt.timedelta(days=5)
    findings = run(clean.fullchain_pem + clean.key_pem(), now=late)
    assert [f.subject for f in by_code(findings, "EXPIRES_SOON")] == [
        "CN=certfleet Lab Intermediate CA 1,O=certfleet lab"
    ]
    assert by_code(findings, "EXPIRED")[0].subject == "CN=*.example.com"


def test_naive_now_is_utc(clean: Issued) -> None:
    """A naive ``now`` is taken as UTC."""
    naive = clean.leaf.not_valid_after_utc.replace(tzinfo=None) + dt.timedelta(hours=1)
    assert by_code(run(clean.fullchain_pem + clean.key_pem(), now=naive), "EXPIRED")


def test_sha1_self_signed_root_is_fine(rsa_ca: LabCA) -> None:
    """A SHA-1 signature on a self-signed root is not reported; the chain still links."""
    leaf = rsa_ca.issue(key_type="ec-p256", eku=SERVER_AND_CLIENT)
    root = resign_sha1(rsa_ca.root, rsa_ca.root_key)  # type: ignore[arg-type]
    findings = run(leaf.fullchain_pem + pems(root) + leaf.key_pem())
    assert [f.code for f in findings] == ["ROOT_INCLUDED"]


def test_sha1_intermediate_is_reported_and_ordered(rsa_ca: LabCA) -> None:
    """A SHA-1 intermediate: WEAK_SIGNATURE, yet the chain is still assembled in order."""
    leaf = rsa_ca.issue(key_type="ec-p256", eku=SERVER_AND_CLIENT)
    intermediate = resign_sha1(rsa_ca.chain[0][0], rsa_ca.root_key)  # type: ignore[arg-type]
    bundle = assemble(load_bytes(pems(rsa_ca.root, intermediate) + leaf.leaf_pem))
    assert bundle.chain == (intermediate,) and bundle.root == rsa_ca.root
    findings = check_bundle(bundle, now=NOW)
    assert [f.subject for f in by_code(findings, "WEAK_SIGNATURE")] == [
        intermediate.subject.rfc4514_string()
    ]
    assert by_code(findings, "BAD_SIGNATURE") == []


def test_bad_signature_reported_once(clean: Issued, lab_ca: LabCA) -> None:
    """A forged intermediate: one BAD_SIGNATURE, from assembly, not repeated by the checks."""
    fake = forged_intermediate(clean.chain[0], lab_ca.root_key)  # type: ignore[arg-type]
    bundle = assemble(load_bytes(clean.leaf_pem + pems(fake)))
    assert bundle.chain == (fake,)
    assert len(by_code(check_bundle(bundle, now=NOW), "BAD_SIGNATURE")) == 1


def test_check_bundle_on_a_hand_made_bundle(clean: Issued, issued_ec: Issued) -> None:
    """A Bundle built by hand with a foreign key gets KEY_MISMATCH from the checks."""
    bundle = Bundle(clean.leaf, clean.chain, None, issued_ec.key, key_source="x.key")
    (finding,) = by_code(check_bundle(bundle, now=NOW), "KEY_MISMATCH")
    assert "'x.key'" in finding.message


def test_preflight_reads_files(tmp_path: Path, clean: Issued) -> None:
    """preflight loads, assembles and checks; an encrypted key needs the password."""
    (tmp_path / "server.crt").write_bytes(clean.fullchain_pem)
    assert clean.key is not None
    (tmp_path / "server.key").write_bytes(clean.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ))
    paths = [tmp_path / "server.crt", tmp_path / "server.key"]
    bundle, findings = preflight(paths, b"pw", ["ovoc.example.com"], now=NOW)
    assert bundle.key_format == "pkcs8-encrypted" and bundle.key_encrypted
    assert findings == []
    with pytest.raises(PasswordError):
        preflight(paths)


def test_missing_middle_intermediate_with_root_given(lab_ca2: LabCA) -> None:
    """Leaf, lower intermediate and root but not the upper one: CHAIN_INCOMPLETE names it."""
    leaf = lab_ca2.issue(("mid.example.com",), key_type="ec-p256", eku=SERVER_AND_CLIENT)
    lower, upper = leaf.chain
    findings = run(leaf.leaf_pem + pems(lower) + leaf.root_pem + leaf.key_pem())
    (incomplete,) = by_code(findings, "CHAIN_INCOMPLETE")
    assert repr(upper.subject.rfc4514_string()) in incomplete.message


def test_other_complete_chain_is_only_unrelated(clean: Issued, lab_ca2: LabCA) -> None:
    """Another CA's intermediates and root in the input: CHAIN_UNRELATED, not INCOMPLETE."""
    other = pems(*lab_ca2.intermediate_certs, lab_ca2.root)
    findings = run(clean.fullchain_pem + clean.key_pem() + other)
    assert by_code(findings, "CHAIN_INCOMPLETE") == []
    assert len(by_code(findings, "CHAIN_UNRELATED")) == 3


def _stray_self_signed(cn: str, ca: bool) -> x509.Certificate:
    """A self-signed certificate of another organisation, with no key identifiers."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Elsewhere Inc"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])
    builder = _self_signed_builder(name, key)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize("ca", [True, False], ids=["self-signed-ca", "self-signed-device"])
def test_stray_self_signed_is_only_unrelated(clean: Issued, ca: bool) -> None:
    """Leaf + intermediate complete, plus a self-signed certificate with no name or key-id
    link: one CHAIN_UNRELATED warning, no CHAIN_INCOMPLETE, no error."""
    stray = _stray_self_signed("Elsewhere Root", ca)
    findings = run(clean.fullchain_pem + clean.key_pem() + pems(stray))
    assert by_code(findings, "CHAIN_INCOMPLETE") == []
    assert not has_errors(findings)
    (aside,) = by_code(findings, "CHAIN_UNRELATED")
    assert aside.severity == "warning" and "Elsewhere Root" in aside.message
    assert "intermediate between them is missing" not in aside.message


def test_csr_alone_is_named_a_request(clean: Issued) -> None:
    """Only a CSR: the error names the request, not "no certificate"."""
    assert clean.key is not None
    csr = x509.CertificateSigningRequestBuilder().subject_name(clean.leaf.subject).sign(
        clean.key, hashes.SHA256())
    with pytest.raises(CertificateError, match="this is the certificate request, not the"):
        run(csr.public_bytes(serialization.Encoding.PEM))


def test_key_of_a_csr_given_with_an_old_certificate(clean: Issued) -> None:
    """Old leaf + new CSR + its key: KEY_MISMATCH says the key belongs to the request."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(clean.leaf.subject).sign(
        key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    findings = run(clean.fullchain_pem + csr.public_bytes(serialization.Encoding.PEM) + key_pem)
    (mismatch,) = by_code(findings, "KEY_MISMATCH")
    assert "belongs to the certificate request" in mismatch.message
