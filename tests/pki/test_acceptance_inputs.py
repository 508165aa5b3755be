"""Inputs built the way CAs, Windows tools and OpenSSL build them: each one loads or is named.

Every test here is the regression test of a defect found by feeding the
loader, assembler and checks such files; the files are made at run time.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID

from _tools import require_tool
from certfleet.errors import CertificateError, PasswordError
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki import load as load_module
from certfleet.pki.bundle import assemble
from certfleet.pki.checks import check_bundle
from certfleet.pki.describe import describe_object
from certfleet.pki.export import export_bundle
from certfleet.pki.load import MAX_KDF_ITERATIONS, MAX_SCRYPT_MEMORY, load_bytes, load_files
from certfleet.pki.load import limits as limits_module
from certfleet.pki.model import LoadedObject, cert_sha256
from pki_support import odd_certificate

PW = b"Acc3ptance pw"
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


# --- DER helpers (tests build the odd files real tools write) ------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(body)]) + body
    return bytes([tag]) + length + content


def _header(data: bytes, pos: int = 0) -> tuple[int, int]:
    """(start of content, end of content) of the TLV at ``pos``."""
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return pos, pos + length


def _children(data: bytes) -> list[bytes]:
    """The full TLVs of the children of the constructed value ``data``."""
    start, end = _header(data)
    out = []
    while start < end:
        _, child_end = _header(data, start)
        out.append(data[start:child_end])
        start = child_end
    return out


def _content(tlv: bytes) -> bytes:
    start, end = _header(tlv)
    return tlv[start:end]


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.insert(0, 0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(chunk)
    return _tlv(0x06, body)


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def _pfx_safes(pfx: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """(version, data OID, ContentInfos of the AuthenticatedSafe) of an unencrypted PFX."""
    version, auth_safe = _children(pfx)[:2]
    content_type, explicit = _children(auth_safe)
    octets = _content(explicit)
    return version, content_type, _children(_content(octets))


def _pfx_from_safes(version: bytes, content_type: bytes, safes: list[bytes]) -> bytes:
    """A PFX without MAC holding ``safes``, as a tool that splices bags would write it."""
    auth = _tlv(0x30, b"".join(safes))
    return _tlv(0x30, version + _tlv(0x30, content_type + _tlv(0xA0, _tlv(0x04, auth))))


def _pem(der: bytes, label: str, width: int = 64, eol: str = "\n") -> bytes:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + width] for i in range(0, len(b64), width)] if width else [b64]
    text = eol.join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])
    return text.encode()


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> LabCA:
    return LabCA(name="Acceptance", intermediates=2)


@pytest.fixture(scope="module")
def leaf(ca: LabCA) -> Issued:
    return ca.issue(("www.example.com", "example.com"), key_type="ec-p256")


@pytest.fixture(scope="module")
def other(ca: LabCA) -> Issued:
    return ca.issue(("other.example.com",), key_type="ec-p256")


def _kinds(objects: list[LoadedObject]) -> list[str]:
    return [o.type for o in objects]


# --- files that are not certificates: named, not called corrupt ------------------------


def test_zip_archive_is_named(leaf: Issued) -> None:
    """A ZIP of the CA's download (even with PEM stored uncompressed) says: unpack it first."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("server.crt", leaf.leaf_pem)
        archive.writestr("chain.crt", leaf.chain_pem)
    with pytest.raises(CertificateError, match=r"'certs.zip' is a ZIP archive; unpack it first"):
        load_bytes(buffer.getvalue(), "certs.zip")


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\x00" * 8, b"\xef\xbb\xbf\r\n"])
def test_empty_file_is_named(data: bytes) -> None:
    """An empty (or blank) file is called empty, not 'no certificate'."""
    with pytest.raises(CertificateError, match=r"'empty.crt' is empty$"):
        load_bytes(data, "empty.crt")


def test_html_error_page_is_named() -> None:
    """An HTML error page saved as .crt is named as such, with a hint to download again."""
    page = b"\r\n<!DOCTYPE html>\r\n<html><head><title>404</title></head><body>Not found</body>"
    with pytest.raises(CertificateError, match=r"is an HTML page, not a certificate") as info:
        load_bytes(page, "server.crt")
    assert "download" in (info.value.hint or "")


def test_xml_document_is_named() -> None:
    """SAML metadata or another XML file is called an XML document, not an HTML page."""
    xml = (b'<?xml version="1.0"?>\n<md:EntityDescriptor>'
           b"<ds:X509Certificate>MIIB</ds:X509Certificate></md:EntityDescriptor>")
    with pytest.raises(CertificateError, match=r"is an XML document, not a certificate"):
        load_bytes(xml, "metadata.xml")


def test_truncated_der_is_named(leaf: Issued) -> None:
    """A DER .cer cut short says the file looks cut off."""
    der = leaf.leaf.public_bytes(DER)
    with pytest.raises(CertificateError, match=r"looks cut off"):
        load_bytes(der[: len(der) // 2], "cut.cer")


def test_parser_debug_dump_is_not_shown() -> None:
    """A corrupt block is described in words, not with the parser's internal debug dump."""
    data = _pem(_tlv(0x30, _tlv(0x30, b"\x01\x02") + _tlv(0x30, b"") + _tlv(0x03, b"\x00")),
                "CERTIFICATE")
    with pytest.raises(CertificateError) as info:
        load_bytes(data, "bad.pem")
    assert "ParseError" not in info.value.message and "{" not in info.value.message
    assert "not valid DER" in info.value.message


# --- certificate containers as Windows and CA portals write them --------------------------


def test_certificate_label_holding_pkcs7(leaf: Issued) -> None:
    """A "Base 64" .p7b from Windows CA web enrollment (CERTIFICATE label) gives its chain."""
    p7 = pkcs7.serialize_certificates([leaf.leaf, *leaf.chain, leaf.root], DER)
    objects = load_bytes(_pem(p7, "CERTIFICATE", eol="\r\n"), "certnew.p7b")
    assert {cert_sha256(o.value) for o in objects} == {  # type: ignore[arg-type]  # certs only
        cert_sha256(c) for c in (leaf.leaf, *leaf.chain, leaf.root)
    }
    assert {o.format for o in objects} == {"pkcs7"}


@pytest.mark.parametrize("what", ["cer", "p7b"])
def test_bare_base64_without_pem_lines(leaf: Issued, what: str) -> None:
    """Base64 copied from a portal without BEGIN/END lines is read (certificate or PKCS#7)."""
    der = (
        leaf.leaf.public_bytes(DER) if what == "cer"
        else pkcs7.serialize_certificates([leaf.leaf, *leaf.chain], DER)
    )
    text = base64.encodebytes(der).replace(b"\n", b"\r\n")
    objects = load_bytes(text, f"copied.{what}")
    assert cert_sha256(leaf.leaf) in {cert_sha256(o.value) for o in objects}  # type: ignore[arg-type]  # certs only


def test_bare_base64_of_nothing_known_is_still_refused() -> None:
    """Base64 text that decodes to no known structure is refused as before."""
    with pytest.raises(CertificateError, match="contains no certificate"):
        load_bytes(base64.b64encode(os.urandom(120)), "noise.txt")


# --- PKCS#12 as Windows, certutil and OpenSSL write it -------------------------------------


def _bags_pfx(
    key: ec.EllipticCurvePrivateKey | None,
    cert: x509.Certificate | None,
    cas: list[x509.Certificate] | None,
) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"bag", key, cert, cas, serialization.NoEncryption()
    )


def test_pfx_with_two_keys_is_refused_by_name(leaf: Issued, other: Issued) -> None:
    """A .pfx holding two key+certificate pairs is refused, not read as one of them."""
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    assert isinstance(other.key, ec.EllipticCurvePrivateKey)
    version, oid, first = _pfx_safes(_bags_pfx(leaf.key, leaf.leaf, list(leaf.chain)))
    _, _, second = _pfx_safes(_bags_pfx(other.key, other.leaf, None))
    pfx = _pfx_from_safes(version, oid, first + second)
    with pytest.raises(CertificateError, match=r"holds 2 private keys \('bag', 'bag'\)") as info:
        load_bytes(pfx, "two.pfx", PW)
    assert "on its own" in (info.value.hint or "")


def test_java_keystore_with_two_aliases_names_them(tmp_path: Path) -> None:
    """A keytool PKCS#12 keystore with two key entries is refused naming both aliases."""
    keytool = require_tool("keytool")
    for alias in ("sbc-a", "sbc-b"):
        subprocess.run(
            [keytool, "-genkeypair", "-alias", alias, "-keyalg", "EC", "-groupname",
             "secp256r1", "-dname", f"CN={alias}.example.com", "-keystore", "store.p12",
             "-storetype", "pkcs12", "-storepass:env", "PFXPW"],
            cwd=tmp_path, check=True, capture_output=True, timeout=120,
            env={**os.environ, "PFXPW": PW.decode()},
        )
    with pytest.raises(CertificateError, match=r"holds 2 private keys \('sbc-a', 'sbc-b'\)"):
        load_bytes((tmp_path / "store.p12").read_bytes(), "store.p12", PW)


def test_pfx_leaf_last_and_without_local_key_id(leaf: Issued) -> None:
    """A .pfx listing the chain first and the leaf last, not linked to the key, assembles."""
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    version, oid, certs = _pfx_safes(_bags_pfx(None, None, [*leaf.chain, leaf.root, leaf.leaf]))
    _, _, keys = _pfx_safes(_bags_pfx(leaf.key, None, None))
    objects = load_bytes(_pfx_from_safes(version, oid, certs + keys), "leaf-last.pfx")
    bundle = assemble(objects)
    assert bundle.leaf == leaf.leaf and bundle.private_key is not None
    assert list(bundle.chain) == list(leaf.chain) and bundle.root == leaf.root


def test_unprotected_pfx_opened_with_a_password_is_not_encrypted(leaf: Issued) -> None:
    """A .pfx without MAC or encryption is reported unencrypted even when a password is given."""
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    version, oid, safes = _pfx_safes(_bags_pfx(leaf.key, leaf.leaf, None))
    no_mac = _pfx_from_safes(version, oid, safes)  # as `openssl pkcs12 -nomac` writes it
    objects = load_bytes(no_mac, "plain.pfx", PW)
    assert [o.encrypted for o in objects] == [False, False]
    protected = pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.leaf, None, serialization.BestAvailableEncryption(PW)
    )
    assert all(o.encrypted for o in load_bytes(protected, "protected.pfx", PW))


def _openssl(*args: str, cwd: Path) -> None:
    openssl = require_tool("openssl")
    subprocess.run(
        [openssl, *args], cwd=cwd, check=True, capture_output=True, timeout=60,
        env={**os.environ, "PFXPW": PW.decode()},
    )


def test_windows_export_wizard_pfx(tmp_path: Path, leaf: Issued) -> None:
    """RC2-40 certificates, 3DES key, friendly name, chain: what the Windows wizard exports."""
    (tmp_path / "leaf.pem").write_bytes(leaf.leaf_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem())
    (tmp_path / "chain.pem").write_bytes(leaf.chain_pem + leaf.root_pem)
    _openssl(
        "pkcs12", "-export", "-legacy", "-keypbe", "PBE-SHA1-3DES", "-certpbe",
        "PBE-SHA1-RC2-40", "-macalg", "sha1", "-in", "leaf.pem", "-inkey", "key.pem",
        "-certfile", "chain.pem", "-name", "Web Server (2026)", "-out", "win.pfx",
        "-passout", "env:PFXPW", cwd=tmp_path,
    )
    bundle = assemble(load_bytes((tmp_path / "win.pfx").read_bytes(), "win.pfx", PW))
    assert bundle.leaf == leaf.leaf and bundle.key_encrypted
    assert list(bundle.chain) == list(leaf.chain) and bundle.root == leaf.root
    with pytest.raises(PasswordError):
        load_bytes((tmp_path / "win.pfx").read_bytes(), "win.pfx", b"wrong")


# --- key-derivation costs read from the file ------------------------------------------------

_HMAC_SHA256 = _tlv(0x30, _oid("1.2.840.113549.2.9") + b"\x05\x00")
_AES256_CBC = _tlv(0x30, _oid("2.16.840.1.101.3.4.1.42") + _tlv(0x04, bytes(16)))


def _epki_pbkdf2(rounds: int) -> bytes:
    kdf = _tlv(0x30, _oid("1.2.840.113549.1.5.12") + _tlv(
        0x30, _tlv(0x04, bytes(8)) + _int(rounds) + _HMAC_SHA256))
    pbes2 = _tlv(0x30, _oid("1.2.840.113549.1.5.13") + _tlv(0x30, kdf + _AES256_CBC))
    return _tlv(0x30, pbes2 + _tlv(0x04, bytes(48)))


def _epki_scrypt(cost: int, block: int = 8, parallel: int = 1) -> bytes:
    kdf = _tlv(0x30, _oid("1.3.6.1.4.1.11591.4.11") + _tlv(
        0x30, _tlv(0x04, bytes(16)) + _int(cost) + _int(block) + _int(parallel)))
    pbes2 = _tlv(0x30, _oid("1.2.840.113549.1.5.13") + _tlv(0x30, kdf + _AES256_CBC))
    return _tlv(0x30, pbes2 + _tlv(0x04, bytes(48)))


@pytest.mark.parametrize("armour", ["pem", "der"])
def test_pkcs8_absurd_pbkdf2_rounds_refused_at_once(armour: str) -> None:
    """An encrypted PKCS#8 key asking for 2**31-1 PBKDF2 rounds is refused without deriving."""
    der = _epki_pbkdf2(2**31 - 1)
    data = _pem(der, "ENCRYPTED PRIVATE KEY") if armour == "pem" else der
    # The message names the rounds asked for: it is the refusal before any derivation
    # (deriving first would end in a wrong-password error, after hours of work).
    with pytest.raises(CertificateError, match=r"2,147,483,647 key-derivation rounds"):
        load_bytes(data, "slow.key", PW)


def test_pkcs8_absurd_scrypt_cost_refused_at_once() -> None:
    """An scrypt-encrypted PKCS#8 key asking for gigabytes of memory is refused."""
    with pytest.raises(CertificateError, match=r"scrypt parameters needing 131,072 MiB"):
        load_bytes(_pem(_epki_scrypt(2**27), "ENCRYPTED PRIVATE KEY"), "slow.key", PW)


def test_pkcs8_limits_leave_real_keys_alone(tmp_path: Path, leaf: Issued) -> None:
    """OpenSSL's PBES2 (600,000 rounds is still fine) and scrypt keys load; the caps are wide."""
    assert MAX_KDF_ITERATIONS >= 600_000 and MAX_SCRYPT_MEMORY >= 16 * 1024 * 1024
    (tmp_path / "key.pem").write_bytes(leaf.key_pem())
    _openssl("pkcs8", "-topk8", "-in", "key.pem", "-scrypt", "-out", "scrypt.key",
             "-passout", "env:PFXPW", cwd=tmp_path)
    _openssl("pkcs8", "-topk8", "-in", "key.pem", "-v2", "aes-256-cbc", "-iter", "4096",
             "-out", "pbes2.key", "-passout", "env:PFXPW", cwd=tmp_path)
    for name in ("scrypt.key", "pbes2.key"):
        (key,) = load_bytes((tmp_path / name).read_bytes(), name, PW)
        assert key.encrypted and key.format == "pkcs8-encrypted"


def test_pkcs12_bag_rounds_are_capped(monkeypatch: pytest.MonkeyPatch, leaf: Issued) -> None:
    """The key bag's own PBKDF2 rounds are capped like the MAC's (checked before deriving)."""
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(5000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .build(PW)
    )
    pfx = pkcs12.serialize_key_and_certificates(b"x", leaf.key, leaf.leaf, None, encryption)
    version, auth_safe, mac_data = _children(pfx)
    digest, salt, _ = _children(mac_data)
    low_mac = _tlv(0x30, version + auth_safe + _tlv(0x30, digest + salt + _int(1)))
    monkeypatch.setattr(limits_module, "MAX_KDF_ITERATIONS", 4096)
    with pytest.raises(CertificateError, match=r"5,000 key-derivation rounds"):
        load_bytes(low_mac, "bags.pfx", PW)


# --- legacy encrypted PEM that the parser would choke on -----------------------------------


@pytest.mark.parametrize(
    ("dek", "message"),
    [
        ("AES-256-CBC,00", "corrupt"),
        ("DES-EDE3-CBC,zz", "corrupt"),
        ("CAMELLIA-9-CBC,00112233445566778899AABBCCDDEEFF", "cannot decrypt"),
        ("Proc-Type-only", "DEK-Info header naming its cipher is missing"),
    ],
)
def test_legacy_pem_with_bad_dek_info(leaf: Issued, dek: str, message: str) -> None:
    """A short or odd DEK-Info IV is a CertificateError, never a crash of the parser."""
    body = base64.encodebytes(os.urandom(128)).decode()
    header = "" if dek == "Proc-Type-only" else f"DEK-Info: {dek}\n"
    data = (
        f"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n{header}\n"
        f"{body}-----END EC PRIVATE KEY-----\n"
    ).encode()
    with pytest.raises(CertificateError, match=message):
        load_bytes(data, "legacy.key", PW)


# --- cross-signed CAs: the assembler picks a whole valid path ------------------------------

_NOW = dt.datetime.now(dt.UTC)


def _ca_cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey, *, days: int = 365, ca: bool = True,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - dt.timedelta(days=1))
        .not_valid_after(_NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def cross() -> dict[str, object]:
    """Old and new roots, the new root cross-signed by the old, an intermediate twice."""
    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    old_k, new_k, int_k, leaf_k = key(), key(), key(), key()
    return {
        "old": _ca_cert("Old Root", old_k, "Old Root", old_k, days=100),
        "new": _ca_cert("New Root", new_k, "New Root", new_k),
        "new_by_old": _ca_cert("New Root", new_k, "Old Root", old_k, days=50),
        "int": _ca_cert("Int CA", int_k, "New Root", new_k),
        "int_by_old": _ca_cert("Int CA", int_k, "Old Root", old_k),
        "leaf": _ca_cert("host.example.com", leaf_k, "Int CA", int_k, ca=False),
        "key": leaf_k,
    }


def _objects(*values: object) -> list[LoadedObject]:
    return [
        LoadedObject(
            source="bundle.pem",
            type="certificate" if isinstance(v, x509.Certificate) else "private_key",
            format="pem",
            value=v,  # type: ignore[arg-type]  # the test passes certificates and EC keys
            index=i,
        )
        for i, v in enumerate(values)
    ]


def test_cross_signed_root_does_not_hide_the_present_root(cross: dict[str, object]) -> None:
    """Leaf, intermediate, the cross-signed and the self-signed new root: no CHAIN_INCOMPLETE."""
    bundle = assemble(_objects(cross["leaf"], cross["key"], cross["int"],
                               cross["new_by_old"], cross["new"]))
    assert list(bundle.chain) == [cross["int"]] and bundle.root == cross["new"]
    findings = check_bundle(bundle)
    codes = [f.code for f in findings]
    assert "CHAIN_INCOMPLETE" not in codes and not [f for f in findings if f.severity == "error"]
    (aside,) = [f for f in findings if f.code == "CHAIN_UNRELATED"]
    assert "same CA" in aside.message and "'CN=Old Root'" in aside.message


def test_two_intermediates_same_key_prefer_the_longer_lived_path(
    cross: dict[str, object],
) -> None:
    """Intermediate issued by both roots, both roots present: the path to the newer root wins."""
    bundle = assemble(_objects(cross["int_by_old"], cross["int"], cross["old"], cross["new"],
                               cross["leaf"], cross["key"]))
    assert list(bundle.chain) == [cross["int"]] and bundle.root == cross["new"]
    assert set(map(id, bundle.unrelated)) == {id(cross["int_by_old"]), id(cross["old"])}
    messages = [f.message for f in bundle.findings if f.code == "CHAIN_UNRELATED"]
    assert any("same CA" in m for m in messages)
    assert any("alternative (cross-signed) path" in m for m in messages)


def test_cross_signed_path_is_used_when_it_is_the_only_complete_one(
    cross: dict[str, object],
) -> None:
    """Old root, cross-signed new root, intermediate twice over: chain goes through the cross."""
    bundle = assemble(_objects(cross["old"], cross["new_by_old"], cross["int"], cross["int"],
                               cross["leaf"], cross["key"]))
    assert list(bundle.chain) == [cross["int"], cross["new_by_old"]]
    assert bundle.root == cross["old"]
    assert "CHAIN_DUPLICATE" in {f.code for f in bundle.findings}


def test_only_the_cas_chain_is_not_ok(leaf: Issued) -> None:
    """A CA's .p7b alone (no server certificate) is an error, not 'OK' on a CA certificate."""
    objects = load_bytes(pkcs7.serialize_certificates([*leaf.chain, leaf.root], DER), "ca.p7b")
    findings = check_bundle(assemble(objects))
    (error,) = [f for f in findings if f.severity == "error"]
    assert error.code == "NO_SERVER_AUTH" and "no server certificate" in error.message


# --- certificates that make the parsing library warn -------------------------------------


@pytest.fixture(scope="module", name="odd_certificate")
def odd_certificate_fixture() -> tuple[bytes, bytes]:
    """A self-signed certificate with serial -1234 and country 'USA' (both seen in the wild)."""
    return odd_certificate()


def test_library_warnings_do_not_escape(odd_certificate: tuple[bytes, bytes]) -> None:
    """Load, describe, assemble, check and export raise no Python warning on such a certificate."""
    der, key_pem = odd_certificate
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objects = load_bytes(der, "odd.cer") + load_bytes(key_pem, "odd.key")
        described = [describe_object(o) for o in objects]
        bundle = assemble(objects)
        check_bundle(bundle)
        export_bundle(bundle, "fullchain")
    assert described[0]["serial"] == "-4d2"


@pytest.mark.parametrize(("flag", "cipher"), [("-aes192", "AES-192-CBC"),
                                              ("-camellia256", "CAMELLIA-256-CBC")])
def test_legacy_pem_cipher_cryptography_cannot_decrypt(
    tmp_path: Path, leaf: Issued, flag: str, cipher: str
) -> None:
    """A key OpenSSL encrypted with a cipher the library lacks is named, not a 'wrong password'."""
    (tmp_path / "key.pem").write_bytes(leaf.key_pem("sec1"))
    _openssl("ec", "-in", "key.pem", flag, "-out", "enc.key", "-passout", "env:PFXPW",
             cwd=tmp_path)
    with pytest.raises(CertificateError, match=f"encrypted with '{cipher}'"):
        load_bytes((tmp_path / "enc.key").read_bytes(), "enc.key", PW)


@pytest.mark.parametrize("flag", ["-aes256", "-des3"])
def test_legacy_pem_traditional_keys_from_openssl(tmp_path: Path, leaf: Issued, flag: str) -> None:
    """`openssl ec -aes256` / `-des3` (Proc-Type: 4,ENCRYPTED) decrypt with the password."""
    (tmp_path / "key.pem").write_bytes(leaf.key_pem("sec1"))
    _openssl("ec", "-in", "key.pem", flag, "-out", "enc.key", "-passout", "env:PFXPW",
             cwd=tmp_path)
    (key,) = load_bytes((tmp_path / "enc.key").read_bytes(), "enc.key", PW)
    assert key.format == "pem-encrypted" and key.encrypted
    with pytest.raises(PasswordError):
        load_bytes((tmp_path / "enc.key").read_bytes(), "enc.key", b"wrong")


def test_certutil_encoded_pfx_under_certificate_label(leaf: Issued) -> None:
    """`certutil -encode server.pfx` wraps the PKCS#12 in a CERTIFICATE block: it loads."""
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    pfx = pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.leaf, list(leaf.chain), serialization.BestAvailableEncryption(PW)
    )
    objects = load_bytes(_pem(pfx, "CERTIFICATE", eol="\r\n"), "server.txt", PW)
    assert _kinds(objects) == ["private_key", "certificate", "certificate", "certificate"]
    with pytest.raises(PasswordError):
        load_bytes(_pem(pfx, "CERTIFICATE"), "server.txt")


def test_pem_lines_with_spaces_inside(leaf: Issued) -> None:
    """Base64 lines broken by spaces (copied from a PDF or an e-mail) still decode."""
    text = _pem(leaf.leaf.public_bytes(DER), "CERTIFICATE").decode()
    spaced = "\n".join(
        " ".join(line[i : i + 16] for i in range(0, len(line), 16)) if "-----" not in line
        else line
        for line in text.splitlines()
    )
    (obj,) = load_bytes(spaced.encode(), "spaced.pem")
    assert obj.value == leaf.leaf


def _ber_outer(pfx: bytes) -> bytes:
    """The PFX with its outer SEQUENCEs in BER indefinite lengths, as old tools write them.

    The MAC covers only the AuthenticatedSafe octets, which stay as they are.
    """
    version, auth_safe, mac_data = _children(pfx)
    content_type, explicit = _children(auth_safe)
    octets = _content(explicit)
    eoc = b"\x00\x00"
    inner = b"\x30\x80" + content_type + b"\xa0\x80" + octets + eoc + eoc
    return b"\x30\x80" + version + inner + mac_data + eoc


def test_pfx_in_ber_with_indefinite_lengths(leaf: Issued) -> None:
    """A BER .pfx (indefinite lengths) loads, with its KDF checks, and warns about nothing."""
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    pfx = _ber_outer(pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.leaf, list(leaf.chain), serialization.BestAvailableEncryption(PW)
    ))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objects = load_bytes(pfx, "old.pfx", PW)
    assert _kinds(objects)[0] == "private_key" and all(o.encrypted for o in objects)
    scan = limits_module.PbeScan(pfx)
    assert scan.walked and scan.key_bags == 1 and scan.rounds >= 2048
    with pytest.raises(PasswordError):
        load_bytes(pfx, "old.pfx", b"wrong")


def test_p7b_in_ber_with_indefinite_lengths(leaf: Issued) -> None:
    """A BER .p7b (indefinite lengths around DER certificates) gives its chain, no warning."""
    der = pkcs7.serialize_certificates([*leaf.chain, leaf.root], DER)
    content_type, explicit = _children(der)
    signed = _content(explicit)
    eoc = b"\x00\x00"
    parts = [
        b"\xa0\x80" + b"".join(_children(p)) + eoc if p[0] == 0xA0 else p
        for p in _children(signed)
    ]
    ber = b"\x30\x80" + content_type + b"\xa0\x80\x30\x80" + b"".join(parts) + eoc * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objects = load_bytes(ber, "chain.p7b")
    assert {o.format for o in objects} == {"pkcs7"}
    assert {cert_sha256(o.value) for o in objects} == {  # type: ignore[arg-type]  # certs only
        cert_sha256(c) for c in (*leaf.chain, leaf.root)
    }


def test_folder_given_as_file(tmp_path: Path) -> None:
    """A folder given where a file belongs is named a folder (Windows would say 'denied')."""
    (tmp_path / "certs").mkdir()
    with pytest.raises(CertificateError, match=r"cannot read '.*certs': it is a folder, not"):
        load_files([tmp_path / "certs"])


def test_root_beyond_a_missing_intermediate_is_explained(leaf: Issued) -> None:
    """Leaf, lower intermediate and root without the upper intermediate: both findings say so."""
    assert len(leaf.chain) == 2
    pem = leaf.leaf_pem + leaf.pem(leaf.chain[0]) + leaf.root_pem + leaf.key_pem()
    findings = check_bundle(assemble(load_bytes(pem, "download.pem")))
    incomplete = next(f for f in findings if f.code == "CHAIN_INCOMPLETE")
    assert "Intermediate CA 1" in incomplete.message and "http://" in incomplete.message
    aside = next(f for f in findings if f.code == "CHAIN_UNRELATED")
    assert "Root CA" in aside.message and "an intermediate between them is missing" in aside.message


def test_csr_names_in_unicode_become_a_labels() -> None:
    """A CSR for '*.Bücher.example.' asks for '*.xn--bcher-kva.example', which checks match."""
    from certfleet.pki.keygen import build_csr, normalize_dns_name
    from certfleet.pki.names import host_matches

    assert normalize_dns_name("*.Bücher.example.") == "*.xn--bcher-kva.example"
    csr = build_csr(ec.generate_private_key(ec.SECP256R1()), "*.Bücher.example.", ["192.0.2.7"])
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.xn--bcher-kva.example"]
    assert host_matches("*.xn--bcher-kva.example", "www.BÜCHER.example")
    with pytest.raises(ValueError, match="xn--"):
        normalize_dns_name("a\u0000ü.example")


@pytest.mark.parametrize("label", ["PKCS7", "PKCS #7 SIGNED DATA", "CMS"])
def test_p7b_pem_labels(leaf: Issued, label: str) -> None:
    """A PEM .p7b under any label real tools use (IIS writes 'PKCS #7 SIGNED DATA') loads."""
    p7 = pkcs7.serialize_certificates([leaf.leaf, *leaf.chain], DER)
    objects = load_bytes(_pem(p7, label, eol="\r\n"), "chain.p7b")
    assert len(objects) == 3 and {o.format for o in objects} == {"pkcs7"}


def test_ec_keys_with_explicit_parameters(tmp_path: Path) -> None:
    """Explicit P-256 parameters load (written back as a named curve); others are named."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-param_enc", "explicit",
             "-out", "p256.key", cwd=tmp_path)
    _openssl("ecparam", "-name", "brainpoolP256r1", "-genkey", "-param_enc", "explicit",
             "-out", "bp.key", cwd=tmp_path)
    _openssl("ecparam", "-name", "secp112r1", "-genkey", "-noout", "-out", "c112.key",
             cwd=tmp_path)
    (key,) = load_bytes((tmp_path / "p256.key").read_bytes(), "p256.key")
    assert isinstance(key.value, ec.EllipticCurvePrivateKey)
    assert key.value.curve.name == "secp256r1"
    with pytest.raises(CertificateError, match="explicit curve parameters") as info:
        load_bytes((tmp_path / "bp.key").read_bytes(), "bp.key")
    assert "named_curve" in (info.value.hint or "")
    with pytest.raises(CertificateError, match=r"uses the curve 1\.3\.132\.0\.6, which certfleet"):
        load_bytes((tmp_path / "c112.key").read_bytes(), "c112.key")


def test_key_agreement_key_is_named_plainly() -> None:
    """An X25519 key (key agreement only) is refused naming its type, not a class name."""
    from cryptography.hazmat.primitives.asymmetric import x25519

    pem = x25519.X25519PrivateKey.generate().private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CertificateError, match=r"key of type X25519, which cannot serve TLS"):
        load_bytes(pem, "x25519.key")


def test_real_world_ber_p7b_from_the_vectors() -> None:
    """amazon-roots.p7b (a BER PKCS#7 published by a CA) loads its certificates."""
    import cryptography_vectors  # a test dependency pinned in pyproject.toml

    path = Path(cryptography_vectors.__file__).parent / "pkcs7" / "amazon-roots.p7b"
    assert path.is_file(), f"cryptography-vectors no longer ships {path.name}"
    objects = load_bytes(path.read_bytes(), "amazon-roots.p7b")
    assert objects and {o.type for o in objects} == {"certificate"}


def test_corrupt_key_names_the_cause_not_the_library_catch_all(leaf: Issued) -> None:
    """A cut PKCS#8 key says what is wrong, without the library's list of possibilities."""
    der = base64.b64decode(b"".join(leaf.key_pem().splitlines()[1:-1]))
    with pytest.raises(CertificateError) as info:
        load_bytes(_pem(der[:60], "PRIVATE KEY"), "cut.key")
    assert "explicit" not in info.value.message and "may be" not in info.value.message
    assert "corrupt or not supported" in info.value.message


def test_dsa_key_and_ed25519_certificate_with_key(ca: LabCA) -> None:
    """A traditional DSA key loads as dsa/pkcs1; an Ed25519 leaf with its key checks clean."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ed25519

    dsa_pem = dsa.generate_private_key(1024).private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (dsa_key,) = load_bytes(dsa_pem, "dsa.key")
    assert describe_object(dsa_key)["key_type"] == "dsa" and dsa_key.format == "pkcs1"

    key = ed25519.Ed25519PrivateKey.generate()
    issuer, issuer_key = ca.issuer
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed.example.com")]))
        .issuer_name(issuer.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - dt.timedelta(hours=1))
        .not_valid_after(_NOW + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("ed.example.com")]), False)
        .sign(issuer_key, hashes.SHA256())
    )
    pem = (cert.public_bytes(PEM) + b"".join(c.public_bytes(PEM) for c in ca.intermediate_certs)
           + ca.root.public_bytes(PEM)
           + key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()))
    bundle = assemble(load_bytes(pem, "ed.pem"))
    assert bundle.private_key is not None and bundle.root == ca.root
    findings = check_bundle(bundle, ["ED.example.com."])
    assert {f.code for f in findings} == {"ROOT_INCLUDED"}


@pytest.mark.parametrize("armour", ["der", "pem"])
def test_p7b_without_certificates_is_named(armour: str) -> None:
    """A degenerate .p7b holding no certificate says so, not the library's wording."""
    signed = _tlv(0x30, _int(1) + _tlv(0x31, b"") + _tlv(0x30, _oid("1.2.840.113549.1.7.1"))
                  + _tlv(0x31, b""))
    der = _tlv(0x30, _oid("1.2.840.113549.1.7.2") + _tlv(0xA0, signed))
    data = der if armour == "der" else _pem(der, "PKCS7")
    with pytest.raises(CertificateError, match=r"is a PKCS#7 \(\.p7b\) file without any cert"):
        load_bytes(data, "empty.p7b")


def test_oversized_input_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """A file over the cap (an ISO given by mistake, /dev/zero) is refused, read no further."""
    big = tmp_path / "backup.iso"
    with big.open("wb") as handle:
        handle.truncate(load_module.MAX_INPUT_BYTES + 10)
    with pytest.raises(CertificateError, match=r"'.*backup\.iso' is larger than 16 MiB"):
        load_files([big])
    if os.path.exists("/dev/zero"):
        with pytest.raises(CertificateError, match="is larger than"):
            load_files(["/dev/zero"])


def test_der_with_ctrl_z_from_copy_in_text_mode(leaf: Issued) -> None:
    """`copy a.cer b.cer` without /b appends Ctrl-Z (0x1A): the .cer still loads."""
    (obj,) = load_bytes(leaf.leaf.public_bytes(DER) + b"\x1a", "copied.cer")
    assert obj.value == leaf.leaf


@pytest.mark.parametrize("width", [76, 0])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_pem_line_widths(leaf: Issued, width: int, eol: str) -> None:
    """MIME's 76-column lines and one long line (as some portals write) both load."""
    (obj,) = load_bytes(_pem(leaf.leaf.public_bytes(DER), "CERTIFICATE", width, eol), "w.pem")
    assert obj.value == leaf.leaf


def test_pem_armour_on_the_same_line_as_base64(leaf: Issued) -> None:
    """BEGIN, base64 and END on one line (pasted into a one-line field) still load."""
    b64 = base64.b64encode(leaf.leaf.public_bytes(DER)).decode()
    text = f"-----BEGIN CERTIFICATE-----{b64}-----END CERTIFICATE-----".encode()
    (obj,) = load_bytes(text, "one.pem")
    assert obj.value == leaf.leaf
