"""The loader: every input shape a CA, a Windows tool or a Java keystore hands over."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import jks
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from _tools import require_tool, tool_missing
from certfleet.errors import CertificateError, PasswordError
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.load import load_bytes, load_files
from certfleet.pki.model import LoadedObject, cert_sha256, key_description, spki_sha256

DATA = Path(__file__).parent / "data"
PW = b"S3cret pass"
Enc = serialization.Encoding
Fmt = serialization.PrivateFormat


def kinds(objects: list[LoadedObject]) -> list[tuple[str, str, bool]]:
    return [(o.type, o.format, o.encrypted) for o in objects]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Enc.DER)


def bag(text: bytes) -> bytes:
    """What `openssl pkcs12 -nodes` writes before each block."""
    return b"Bag Attributes\n    localKeyID: 01 02 03\n    friendlyName: lab\n" + text


@pytest.fixture(scope="module")
def csr(issued: Issued) -> x509.CertificateSigningRequest:
    """A CSR for the wildcard leaf's key."""
    assert issued.key is not None
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(issued.leaf.subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.example.com")]), False)
        .sign(issued.key, hashes.SHA256())
    )


# --- PEM ---------------------------------------------------------------------------


def test_pem_with_bag_attributes_crlf_and_bom(issued: Issued) -> None:
    """A Windows export: UTF-8 BOM, CRLF, Bag Attributes before every block, key last."""
    text = b"\xef\xbb\xbf" + b"".join(
        bag(pem) for pem in (issued.leaf_pem, issued.chain_pem, issued.root_pem)
    ) + b"Key Attributes: <No Attributes>\n" + issued.key_pem("pkcs1")
    data = text.replace(b"\n", b"\r\n")
    objects = load_bytes(data, "export.pem")
    assert kinds(objects) == [("certificate", "pem", False)] * 3 + [
        ("private_key", "pkcs1", False)
    ]
    assert [o.index for o in objects] == [0, 1, 2, 3]
    assert {o.source for o in objects} == {"export.pem"}
    assert cert_sha256(objects[0].value) == cert_sha256(issued.leaf)  # type: ignore[arg-type]
    assert spki_sha256(objects[3].value) == spki_sha256(issued.leaf)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_pem_in_utf16_with_bom(issued: Issued, codec: str) -> None:
    """UTF-16 text with a BOM, as some Windows tools save it, loads like ASCII PEM."""
    text = "\ufeff" + issued.fullchain_pem.decode("ascii").replace("\n", "\r\n")
    data = text.encode(codec) if codec != "utf-16" else text[1:].encode(codec)
    assert kinds(load_bytes(data, "u16.pem")) == [("certificate", "pem", False)] * 2


def test_other_certificate_labels(issued: Issued) -> None:
    """X509 CERTIFICATE and TRUSTED CERTIFICATE (with OpenSSL's trust data) load as certs."""
    b64 = base64.encodebytes(der(issued.leaf)).decode()
    # X509_CERT_AUX: trust { serverAuth } after the certificate, as `openssl x509 -trustout`.
    aux = bytes.fromhex("300c300a06082b06010505070301")
    trusted = base64.encodebytes(der(issued.root) + aux).decode()
    text = (
        f"-----BEGIN X509 CERTIFICATE-----\n{b64}-----END X509 CERTIFICATE-----\n"
        f"-----BEGIN TRUSTED CERTIFICATE-----\n{trusted}-----END TRUSTED CERTIFICATE-----\n"
    )
    objects = load_bytes(text.encode(), "labels.pem")
    assert [cert_sha256(o.value) for o in objects] == [  # type: ignore[arg-type]
        cert_sha256(issued.leaf),
        cert_sha256(issued.root),
    ]


def test_trusted_certificate_from_openssl(tmp_path: Path, issued: Issued) -> None:
    """`openssl x509 -trustout` output loads as the same certificate (oracle)."""
    openssl = require_tool("openssl")
    (tmp_path / "root.pem").write_bytes(issued.root_pem)
    out = subprocess.run(
        [openssl, "x509", "-in", str(tmp_path / "root.pem"), "-trustout",
         "-addtrust", "serverAuth"],
        check=True, capture_output=True,
    ).stdout
    assert b"BEGIN TRUSTED CERTIFICATE" in out
    (obj,) = load_bytes(out, "trusted.pem")
    assert cert_sha256(obj.value) == cert_sha256(issued.root)  # type: ignore[arg-type]


def test_ec_parameters_and_text_are_ignored(issued_ec: Issued) -> None:
    """`openssl ecparam -genkey` output: the EC PARAMETERS block is skipped, the key kept."""
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    data = b"subject=CN = sbc1\nissuer=whatever\n" + params + issued_ec.key_pem("sec1")
    assert kinds(load_bytes(data, "ec.key")) == [("private_key", "sec1", False)]


def test_csr_pem_and_new_label_and_der(csr: x509.CertificateSigningRequest) -> None:
    """CSRs load from PEM (both labels) and DER."""
    pem = csr.public_bytes(Enc.PEM)
    new = pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    assert kinds(load_bytes(pem + new)) == [("csr", "pem", False)] * 2
    (obj,) = load_bytes(csr.public_bytes(Enc.DER))
    assert (obj.type, obj.format) == ("csr", "der")
    assert spki_sha256(obj.value) == spki_sha256(csr)


def test_mixed_file_keeps_file_order(issued: Issued, csr: x509.CertificateSigningRequest) -> None:
    """Key, CSR, chain and leaf in one file come back in file order."""
    data = issued.key_pem() + csr.public_bytes(Enc.PEM) + issued.chain_pem + issued.leaf_pem
    assert [o.type for o in load_bytes(data)] == [
        "private_key", "csr", "certificate", "certificate"
    ]


# --- DER and PKCS#7 ------------------------------------------------------------------


def test_der_certificate(issued: Issued) -> None:
    """A binary .cer is a DER certificate."""
    (obj,) = load_bytes(der(issued.leaf), "server.cer")
    assert (obj.type, obj.format) == ("certificate", "der")


@pytest.mark.parametrize("encoding", ["pem", "der"])
@pytest.mark.parametrize("wrong_order", [False, True])
def test_pkcs7(issued: Issued, encoding: str, wrong_order: bool) -> None:
    """A .p7b in PEM or DER yields its certificates with format pkcs7."""
    data = issued.p7b(wrong_order=wrong_order, der=encoding == "der")
    objects = load_bytes(data, "chain.p7b")
    assert kinds(objects) == [("certificate", "pkcs7", False)] * 2
    digests = {cert_sha256(o.value) for o in objects}  # type: ignore[arg-type]
    assert digests == {cert_sha256(issued.chain[0]), cert_sha256(issued.root)}


# --- private keys ----------------------------------------------------------------------

KEY_CASES = [
    # (key fixture, encoding, private format, encrypted, expected format)
    ("issued", Enc.PEM, Fmt.TraditionalOpenSSL, False, "pkcs1"),
    ("issued", Enc.PEM, Fmt.PKCS8, False, "pkcs8"),
    ("issued", Enc.PEM, Fmt.PKCS8, True, "pkcs8-encrypted"),
    ("issued", Enc.PEM, Fmt.TraditionalOpenSSL, True, "pem-encrypted"),
    ("issued", Enc.DER, Fmt.TraditionalOpenSSL, False, "der"),
    ("issued", Enc.DER, Fmt.PKCS8, False, "der"),
    ("issued", Enc.DER, Fmt.PKCS8, True, "der"),
    ("issued_ec", Enc.PEM, Fmt.TraditionalOpenSSL, False, "sec1"),
    ("issued_ec", Enc.PEM, Fmt.PKCS8, False, "pkcs8"),
    ("issued_ec", Enc.PEM, Fmt.PKCS8, True, "pkcs8-encrypted"),
    ("issued_ec", Enc.PEM, Fmt.TraditionalOpenSSL, True, "pem-encrypted"),
    ("issued_ec", Enc.DER, Fmt.TraditionalOpenSSL, False, "der"),
    ("issued_ec", Enc.DER, Fmt.PKCS8, True, "der"),
]


@pytest.mark.parametrize(("which", "encoding", "fmt", "encrypted", "expected"), KEY_CASES)
def test_private_key_formats(
    request: pytest.FixtureRequest,
    which: str,
    encoding: Enc,
    fmt: Fmt,
    encrypted: bool,
    expected: str,
) -> None:
    """Every key serialisation loads with its format and encrypted flag named."""
    issued: Issued = request.getfixturevalue(which)
    assert issued.key is not None
    protection: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(PW) if encrypted else serialization.NoEncryption()
    )
    data = issued.key.private_bytes(encoding, fmt, protection)
    (obj,) = load_bytes(data, "server.key", PW if encrypted else None)
    assert (obj.type, obj.format, obj.encrypted) == ("private_key", expected, encrypted)
    assert spki_sha256(obj.value) == spki_sha256(issued.leaf)


def test_unencrypted_key_ignores_a_given_password(issued: Issued) -> None:
    """A password given for other files does not break an unencrypted key."""
    (obj,) = load_bytes(issued.key_pem("pkcs1"), "server.key", PW)
    assert (obj.format, obj.encrypted) == ("pkcs1", False)


def test_legacy_encrypted_pem_with_crlf(issued: Issued) -> None:
    """`Proc-Type: 4,ENCRYPTED` keys survive CRLF line ends."""
    assert issued.key is not None
    data = issued.key.private_bytes(
        Enc.PEM, Fmt.TraditionalOpenSSL, serialization.BestAvailableEncryption(PW)
    )
    assert b"Proc-Type: 4,ENCRYPTED" in data
    (obj,) = load_bytes(data.replace(b"\n", b"\r\n"), "legacy.key", PW)
    assert (obj.format, obj.encrypted) == ("pem-encrypted", True)


@pytest.mark.parametrize("fmt", [Fmt.PKCS8, Fmt.TraditionalOpenSSL])
def test_encrypted_key_without_password(issued: Issued, fmt: Fmt) -> None:
    """An encrypted key and no password: PasswordError saying so, with the flag to use."""
    assert issued.key is not None
    data = issued.key.private_bytes(Enc.PEM, fmt, serialization.BestAvailableEncryption(PW))
    with pytest.raises(PasswordError, match=r"'server\.key'.*encrypted and no password") as info:
        load_bytes(data, "server.key")
    assert info.value.hint is not None and "--password-env" in info.value.hint
    assert getattr(info.value, "reason", None) == "missing"


@pytest.mark.parametrize("encoding", [Enc.PEM, Enc.DER])
def test_encrypted_key_wrong_password(issued: Issued, encoding: Enc) -> None:
    """A wrong password: PasswordError naming the file and saying the password is wrong."""
    assert issued.key is not None
    data = issued.key.private_bytes(encoding, Fmt.PKCS8, serialization.BestAvailableEncryption(PW))
    with pytest.raises(PasswordError, match=r"'k'.*password is wrong") as info:
        load_bytes(data, "k", b"not it")
    assert getattr(info.value, "reason", None) == "wrong"
    assert "not it" not in str(info.value)


# --- PKCS#12 ------------------------------------------------------------------------------


def triple_des(password: bytes) -> serialization.KeySerializationEncryption:
    return (
        Fmt.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password)
    )


@pytest.mark.parametrize("cipher", ["aes", "3des"])
def test_pkcs12_key_and_chain(issued: Issued, cipher: str) -> None:
    """AES and legacy 3DES .pfx files yield the key, the leaf and the chain."""
    protection = serialization.BestAvailableEncryption(PW) if cipher == "aes" else triple_des(PW)
    data = pkcs12.serialize_key_and_certificates(
        b"lab", issued.key, issued.leaf, [*issued.chain, issued.root], protection
    )
    objects = load_bytes(data, "server.pfx", PW)
    assert kinds(objects) == [("private_key", "pkcs12", True)] + [
        ("certificate", "pkcs12", True)
    ] * 3
    assert cert_sha256(objects[1].value) == cert_sha256(issued.leaf)  # type: ignore[arg-type]
    assert spki_sha256(objects[0].value) == spki_sha256(issued.leaf)


def test_pkcs12_rc2_40_file() -> None:
    """An RC2-40 .pfx made with `openssl pkcs12 -legacy` (stored once as a file) loads."""
    data = (DATA / "rc2-40.pfx").read_bytes()
    objects = load_bytes(data, "rc2-40.pfx", b"certfleet")
    assert [o.type for o in objects] == ["private_key", "certificate", "certificate"]
    assert spki_sha256(objects[0].value) == spki_sha256(objects[1].value)


def test_pkcs12_rc2_40_made_by_openssl(tmp_path: Path, issued: Issued) -> None:
    """A fresh RC2-40/3DES .pfx from openssl's legacy provider loads (oracle)."""
    openssl = require_tool("openssl")
    (tmp_path / "full.pem").write_bytes(issued.fullchain_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem())
    made = subprocess.run(
        [openssl, "pkcs12", "-export", "-legacy", "-certpbe", "PBE-SHA1-RC2-40",
         "-keypbe", "PBE-SHA1-3DES", "-in", str(tmp_path / "full.pem"),
         "-inkey", str(tmp_path / "key.pem"), "-out", str(tmp_path / "x.pfx"),
         "-passout", "pass:pw"],
        capture_output=True,
    )
    if made.returncode != 0:
        tool_missing(f"this openssl cannot write RC2-40: {made.stderr.decode()[:100]}")
    objects = load_files([tmp_path / "x.pfx"], b"pw")
    assert sorted(o.type for o in objects) == ["certificate", "certificate", "private_key"]


def test_pkcs12_without_password(issued: Issued) -> None:
    """An unprotected .pfx loads with no password and with an unrelated one given."""
    data = pkcs12.serialize_key_and_certificates(
        b"lab", issued.key, issued.leaf, None, serialization.NoEncryption()
    )
    for password in (None, PW):
        objects = load_bytes(data, "open.pfx", password)
        assert kinds(objects) == [
            ("private_key", "pkcs12", False),
            ("certificate", "pkcs12", False),
        ]


def test_pkcs12_password_missing_and_wrong(issued: Issued) -> None:
    """A protected .pfx: missing and wrong passwords are told apart."""
    data = pkcs12.serialize_key_and_certificates(
        b"lab", issued.key, issued.leaf, None, serialization.BestAvailableEncryption(PW)
    )
    with pytest.raises(PasswordError, match=r"'s\.pfx' PKCS#12 .*no password was given"):
        load_bytes(data, "s.pfx")
    with pytest.raises(PasswordError, match=r"'s\.pfx' PKCS#12 .*password is wrong"):
        load_bytes(data, "s.pfx", b"wrong")


def test_pkcs12_corrupt(issued: Issued) -> None:
    """A damaged .pfx is a CertificateError, not a password problem."""
    data = pkcs12.serialize_key_and_certificates(
        b"lab", issued.key, issued.leaf, None, serialization.BestAvailableEncryption(PW)
    )
    with pytest.raises(CertificateError, match=r"'bad\.pfx'"):
        load_bytes(data[:-40] + bytes(40), "bad.pfx", PW)


# --- JKS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keystore(issued: Issued) -> bytes:
    """A JKS with a private key entry (leaf + intermediate) and a trusted root."""
    assert issued.key is not None
    key_der = issued.key.private_bytes(Enc.DER, Fmt.PKCS8, serialization.NoEncryption())
    entries = [
        jks.PrivateKeyEntry.new("server", [der(issued.leaf), der(issued.chain[0])], key_der),
        jks.TrustedCertEntry.new("root", der(issued.root)),
    ]
    data: bytes = jks.KeyStore.new("jks", entries).saves(PW.decode())
    return data


def test_jks(keystore: bytes, issued: Issued) -> None:
    """A JKS yields the key with its chain, then the trusted certificates."""
    objects = load_bytes(keystore, "server.jks", PW)
    assert kinds(objects) == [
        ("private_key", "jks", True),
        ("certificate", "jks", True),
        ("certificate", "jks", True),
        ("certificate", "jks", False),
    ]
    assert spki_sha256(objects[0].value) == spki_sha256(issued.leaf)
    assert cert_sha256(objects[3].value) == cert_sha256(issued.root)  # type: ignore[arg-type]


def test_jks_is_real_for_keytool(tmp_path: Path, keystore: bytes) -> None:
    """keytool lists the test keystore's two entries (oracle that the JKS is genuine)."""
    keytool = require_tool("keytool")
    path = tmp_path / "server.jks"
    path.write_bytes(keystore)
    out = subprocess.run(
        [keytool, "-list", "-keystore", str(path), "-storepass", PW.decode()],
        check=True, capture_output=True, text=True,
    ).stdout
    assert "PrivateKeyEntry" in out and "trustedCertEntry" in out


def test_jceks_from_keytool(tmp_path: Path, keystore: bytes, issued: Issued) -> None:
    """A JCEKS converted by keytool loads with the same key (oracle)."""
    keytool = require_tool("keytool")
    (tmp_path / "a.jks").write_bytes(keystore)
    subprocess.run(
        [keytool, "-importkeystore", "-srckeystore", str(tmp_path / "a.jks"),
         "-srcstorepass", PW.decode(), "-srcstoretype", "jks",
         "-destkeystore", str(tmp_path / "b.jceks"), "-deststoretype", "jceks",
         "-deststorepass", PW.decode(), "-destkeypass", PW.decode(), "-noprompt"],
        check=True, capture_output=True,
    )
    objects = load_files([tmp_path / "b.jceks"], PW)
    keys = [o for o in objects if o.type == "private_key"]
    assert len(keys) == 1 and keys[0].format == "jks"
    assert spki_sha256(keys[0].value) == spki_sha256(issued.leaf)


def test_jks_passwords(keystore: bytes) -> None:
    """A JKS with a key entry: no password and a wrong one are PasswordErrors."""
    with pytest.raises(PasswordError, match="no password was given"):
        load_bytes(keystore, "server.jks")
    with pytest.raises(PasswordError, match="password is wrong"):
        load_bytes(keystore, "server.jks", b"nope")


def test_truststore_without_password(issued: Issued) -> None:
    """A JKS holding only trusted certificates can be read without its password."""
    store = jks.KeyStore.new("jks", [jks.TrustedCertEntry.new("root", der(issued.root))])
    data: bytes = store.saves("changeit")
    assert kinds(load_bytes(data, "trust.jks")) == [("certificate", "jks", False)]


# --- garbage and files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world\n", bytes(range(256)), b"\x30\x03\x02\x01\x03", b"\xfe\xed\xfe\xed"],
    ids=["empty", "text", "binary", "tiny-der", "jks-magic-only"],
)
def test_garbage_is_a_certificate_error(data: bytes) -> None:
    """Anything unrecognisable is a CertificateError naming the source."""
    with pytest.raises(CertificateError, match=r"'junk\.bin'"):
        load_bytes(data, "junk.bin")


def test_nothing_usable_message() -> None:
    """Text without a block says it contains no certificate, key or CSR."""
    with pytest.raises(CertificateError, match="contains no certificate, key or CSR"):
        load_bytes(b"just some notes\n", "notes.txt")


def test_corrupt_block_names_its_number(issued: Issued) -> None:
    """A damaged second block is reported with the source and block number."""
    broken = issued.chain_pem.replace(b"\n", b"\n!", 2)
    with pytest.raises(CertificateError, match=r"'chain\.pem' PEM block 2 \(CERTIFICATE\)"):
        load_bytes(issued.leaf_pem + broken, "chain.pem")


def test_truncated_pem_file() -> None:
    """A PEM file cut in the middle of a certificate (a file in tests/pki/data) is refused."""
    with pytest.raises(CertificateError, match=r"'.*truncated\.pem' has a CERTIFICATE block "
                       "without its END line"):
        load_files([DATA / "truncated.pem"])


def test_load_files_sources_and_unreadable(tmp_path: Path, issued: Issued) -> None:
    """load_files keeps each path as the source; a missing file names path and reason."""
    (tmp_path / "leaf.crt").write_bytes(der(issued.leaf))
    (tmp_path / "key.pem").write_bytes(issued.key_pem())
    paths = [tmp_path / "leaf.crt", str(tmp_path / "key.pem")]
    objects = load_files(paths)
    assert [o.source for o in objects] == [str(p) for p in paths]
    missing = tmp_path / "nope.pem"
    with pytest.raises(CertificateError, match=r"cannot read '.*nope\.pem': No such file"):
        load_files([missing])
    with pytest.raises(CertificateError, match="cannot read"):
        load_files([tmp_path])


def test_p384_key_keeps_its_size(lab_ca2: LabCA) -> None:
    """An EC P-384 key loads as a 384-bit EC key."""
    leaf = lab_ca2.issue(("x.example.com",), key_type="ec-p384")
    (obj,) = load_bytes(leaf.key_pem("sec1"), "k")
    assert key_description(obj.value) == ("ec", 384)


@pytest.mark.parametrize(
    ("label", "hint"),
    [("PUBLIC KEY", "public key is not enough"), ("OPENSSH PRIVATE KEY", "SSH key")],
)
def test_only_unusable_blocks_are_named(label: str, hint: str) -> None:
    """A file with only a public or SSH key says what it found and what to give instead."""
    data = f"-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n".encode()
    with pytest.raises(CertificateError, match=f"only {label}") as info:
        load_bytes(data, "id.pub")
    assert info.value.hint is not None and hint in info.value.hint


@pytest.mark.parametrize("tail", [b"\n", b"\r\n", b"\x00\x00\x00"])
def test_der_with_trailing_newline_or_nuls(issued: Issued, tail: bytes) -> None:
    """A DER .cer with a newline or NUL bytes appended still loads."""
    (obj,) = load_bytes(der(issued.leaf) + tail, "server.cer")
    assert cert_sha256(obj.value) == cert_sha256(issued.leaf)  # type: ignore[arg-type]


def test_der_with_trailing_junk_is_corrupt(issued: Issued) -> None:
    """A DER certificate followed by other bytes is refused as corrupt."""
    with pytest.raises(CertificateError, match=r"'server\.cer' DER data .* corrupt"):
        load_bytes(der(issued.leaf) + b"junk", "server.cer")


def test_pem_without_base64_padding(lab_ca: LabCA) -> None:
    """A PEM block whose trailing '=' padding was dropped still loads."""
    # DER lengths vary with serials and signatures: take the first leaf that needs padding.
    leaves = (lab_ca.issue(("p.example.com",), key_type="ec-p256").leaf for _ in range(60))
    cert = next(c for c in leaves if len(der(c)) % 3)
    body = base64.b64encode(der(cert)).rstrip(b"=")
    data = b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"
    (obj,) = load_bytes(data, "nopad.pem")
    assert cert_sha256(obj.value) == cert_sha256(cert)  # type: ignore[arg-type]


def test_openssl_nodes_output(tmp_path: Path, issued: Issued) -> None:
    """What `openssl pkcs12 -nodes` prints (Bag/Key Attributes, key last) loads (oracle)."""
    openssl = require_tool("openssl")
    pfx = tmp_path / "s.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"lab", issued.key, issued.leaf, list(issued.chain),
        serialization.BestAvailableEncryption(b"pw"),
    ))
    text = subprocess.run(
        [openssl, "pkcs12", "-in", str(pfx), "-nodes", "-passin", "pass:pw"],
        check=True, capture_output=True,
    ).stdout
    assert b"Bag Attributes" in text
    objects = load_bytes(text, "dump.pem")
    assert sorted(o.type for o in objects) == ["certificate", "certificate", "private_key"]


@pytest.mark.parametrize("store_type", ["jks", "pkcs12"])
def test_keytool_generated_keystore(tmp_path: Path, store_type: str) -> None:
    """A keystore made by `keytool -genkeypair` (JKS, or Java's own PKCS#12) loads (oracle)."""
    keytool = require_tool("keytool")
    path = tmp_path / f"java.{store_type}"
    subprocess.run(
        [keytool, "-genkeypair", "-alias", "server", "-keyalg", "EC", "-groupname", "secp256r1",
         "-dname", "CN=ovoc.example.com", "-validity", "30", "-storetype", store_type,
         "-keystore", str(path), "-storepass", "changeit", "-keypass", "changeit"],
        check=True, capture_output=True,
    )
    objects = load_files([path], b"changeit")
    assert [o.type for o in objects] == ["private_key", "certificate"]
    assert objects[0].format == ("jks" if store_type == "jks" else "pkcs12")
    assert spki_sha256(objects[0].value) == spki_sha256(objects[1].value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pkcs8", "-topk8", "-v2", "aes-256-cbc"], "pkcs8-encrypted"),
        (["pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES"], "pkcs8-encrypted"),
        (["pkcs8", "-topk8", "-scrypt"], "pkcs8-encrypted"),
        (["rsa", "-traditional", "-des3"], "pem-encrypted"),
    ],
    ids=["pbes2-aes", "pbes1-3des", "scrypt", "traditional-3des"],
)
def test_openssl_encrypted_keys(tmp_path: Path, issued: Issued, args: list[str],
                                expected: str) -> None:
    """Keys encrypted by openssl with PBES2, PBES1, scrypt or legacy 3DES load (oracle)."""
    openssl = require_tool("openssl")
    (tmp_path / "k.pem").write_bytes(issued.key_pem("pkcs1"))
    out = subprocess.run(
        [openssl, *args, "-in", str(tmp_path / "k.pem"), "-passout", "pass:pw"],
        check=True, capture_output=True,
    ).stdout
    (obj,) = load_bytes(out, "enc.key", b"pw")
    assert (obj.format, obj.encrypted) == (expected, True)
    assert spki_sha256(obj.value) == spki_sha256(issued.leaf)
