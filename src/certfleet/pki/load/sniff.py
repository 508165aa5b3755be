"""The content sniffer: what a blob of bytes holds, told from its content alone.

PEM blocks by label, DER by shape, base64 without PEM lines, and the files
that are no certificate at all (empty, archives, web pages, SSH keys) named
as what they are. Containers are read by :mod:`.containers`.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...errors import CertfleetError, CertificateError
from ..model import LoadedObject
from ..quiet import quietly
from .common import (
    PARSE_ERRORS,
    Collector,
    check_key,
    corrupt,
    decrypt,
    is_panic,
    missing_password,
    nothing_found,
)
from .containers import load_encrypted_pkcs8, load_jks, load_pkcs12, pkcs7_certificates
from .der import DerError, der_shape, der_tlv, first_tlv, strip_der_padding

__all__ = ["load_bytes"]

# Labels are letters, digits and spaces; "#" for "PKCS #7 SIGNED DATA" (IIS, old OpenSSL).
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9][A-Z0-9 #]*?)-----(.*?)-----END \1-----", re.DOTALL
)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9][A-Z0-9 #]*?)-----")
_JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")
_IGNORED_LABELS = frozenset(
    {
        "EC PARAMETERS",
        "DH PARAMETERS",
        "X9.42 DH PARAMETERS",
        "DSA PARAMETERS",
        "PUBLIC KEY",
        "RSA PUBLIC KEY",
        "X509 CRL",
        "PARAMETERS",
    }
)


def _decode_text(data: bytes) -> bytes:
    """Strip a UTF-8 BOM; turn UTF-16 text (with BOM) into bytes; unify line ends."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            return data
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data


def _pem_body(body: bytes) -> tuple[dict[str, str], bytes]:
    """RFC 1421 headers (``Proc-Type``, ``DEK-Info``) and the decoded base64 of a block."""
    headers: dict[str, str] = {}
    lines = [line.strip() for line in body.split(b"\n") if line.strip()]
    i = 0
    while i < len(lines) and b":" in lines[i]:
        name, _, value = lines[i].decode("ascii", "replace").partition(":")
        headers[name.strip()] = value.strip()
        i += 1
    # Whitespace inside a line (text copied out of a PDF or an e-mail) is not base64.
    b64 = re.sub(rb"\s+", b"", b"".join(lines[i:]))
    # Some tools drop the trailing "=" padding; restore it rather than refuse the block.
    if not b64.endswith(b"="):
        b64 += b"=" * (-len(b64) % 4)
    der = base64.b64decode(b64, validate=True)
    return headers, der


def _load_pem(text: bytes, password: bytes | None, out: Collector) -> bool:
    """Load every PEM block of ``text``; False when there is none."""
    source = out.source
    found = False
    covered: list[tuple[int, int]] = []
    for number, match in enumerate(_PEM_BLOCK.finditer(text), start=1):
        found = True
        covered.append(match.span())
        label = match.group(1).decode("ascii")
        what = f"PEM block {number} ({label})"
        if label in _IGNORED_LABELS:
            out.skipped.append(label)
            continue
        try:
            headers, der = _pem_body(match.group(2))
        except (binascii.Error, ValueError) as exc:
            raise corrupt(source, what, exc) from exc
        if not der:
            raise corrupt(source, what)
        try:
            _load_pem_block(label, headers, der, password, out, what)
        except CertfleetError:
            raise
        except PARSE_ERRORS as exc:
            raise corrupt(source, what, exc) from exc
    for begin in _PEM_BEGIN.finditer(text):
        if not any(start <= begin.start() < end for start, end in covered):
            label = begin.group(1).decode("ascii")
            raise CertificateError(
                f"{source!r} has a {label} block without its END line: the file looks cut off",
                hint="download or copy the file again, completely",
                path=source,
            )
    return found


def _load_pem_block(
    label: str,
    headers: dict[str, str],
    der: bytes,
    password: bytes | None,
    out: Collector,
    what: str,
) -> None:
    source = out.source
    key: object
    if label in ("CERTIFICATE", "X509 CERTIFICATE") and der_shape(der) in ("pkcs7", "pkcs12"):
        # Windows CA web enrollment writes a "Base 64" .p7b chain under this label, and
        # `certutil -encode` wraps whatever it encodes (a .pfx too) in it.
        _load_der(der, password, out)
    elif label in ("CERTIFICATE", "X509 CERTIFICATE"):
        out.add("certificate", "pem", x509.load_der_x509_certificate(der))
    elif label == "TRUSTED CERTIFICATE":
        # OpenSSL appends an X509_CERT_AUX trust structure after the certificate.
        out.add("certificate", "pem", x509.load_der_x509_certificate(first_tlv(der)))
    elif label in ("PKCS7", "CERTIFICATE CHAIN", "PKCS #7 SIGNED DATA", "CMS"):
        for cert in pkcs7_certificates(der, source):
            out.add("certificate", "pkcs7", cert)
    elif label in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        out.add("csr", "pem", x509.load_der_x509_csr(der))
    elif label == "PRIVATE KEY":
        key = serialization.load_der_private_key(der, None)
        out.add("private_key", "pkcs8", check_key(key, source, what))
    elif label == "ENCRYPTED PRIVATE KEY":
        key = load_encrypted_pkcs8(der, password, source, what)
        out.add("private_key", "pkcs8-encrypted", check_key(key, source, what), True)
    elif label in ("RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"):
        if headers.get("Proc-Type", "").replace(" ", "") == "4,ENCRYPTED":
            if password is None:
                raise missing_password(source, what)
            _check_dek_info(headers.get("DEK-Info", ""), source, what)
            pem = _rebuild_pem(label, headers, der)
            key = decrypt(lambda: serialization.load_pem_private_key(pem, password), source, what)
            out.add("private_key", "pem-encrypted", check_key(key, source, what), True)
        else:
            key = serialization.load_der_private_key(der, None)
            fmt = "sec1" if label == "EC PRIVATE KEY" else "pkcs1"
            out.add("private_key", fmt, check_key(key, source, what))
    elif label == "PKCS12":
        _load_der(der, password, out)
    else:  # OPENSSH PRIVATE KEY, SSH2 ...: not TLS material
        out.skipped.append(label)


# The ciphers of legacy encrypted PEM keys (RFC 1421 DEK-Info) that cryptography
# decrypts, and their IV sizes. OpenSSL also writes DES-CBC, AES-192-CBC, CAMELLIA
# and ARIA: those are named as such, not taken for a wrong password.
_DEK_IV_BYTES = {
    "DES-EDE3-CBC": 8,
    "AES-128-CBC": 16,
    "AES-256-CBC": 16,
}


def _check_dek_info(value: str, source: str, what: str) -> None:
    """Refuse a DEK-Info header the decrypting library would choke on (it panics on a short IV)."""
    cipher, _, iv = value.replace(" ", "").partition(",")
    cipher = cipher.upper()
    if not cipher:
        raise corrupt(source, what, ValueError("the DEK-Info header naming its cipher is missing"))
    if cipher not in _DEK_IV_BYTES:
        raise CertificateError(
            f"{source!r} {what} is encrypted with {cipher!r}, "
            "which certfleet cannot decrypt",
            hint="convert the key with a current tool to PKCS#8 (AES-256) or give it "
            "unencrypted",
            path=source,
        )
    try:
        iv_bytes = bytes.fromhex(iv)
    except ValueError:
        iv_bytes = b""
    if len(iv_bytes) != _DEK_IV_BYTES[cipher]:
        raise corrupt(source, what, ValueError("the DEK-Info IV is malformed"))


def _rebuild_pem(label: str, headers: dict[str, str], der: bytes) -> bytes:
    """A canonical PEM block (LF, 64 columns) of an encrypted traditional key."""
    b64 = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [f"-----BEGIN {label}-----"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("")
    lines += [b64[i : i + 64] for i in range(0, len(b64), 64)]
    lines.append(f"-----END {label}-----")
    return ("\n".join(lines) + "\n").encode("ascii")


def _load_der(data: bytes, password: bytes | None, out: Collector) -> bool:
    """Load one binary object; False when its shape is not one we know."""
    source = out.source
    if data[:4] in _JKS_MAGIC:
        load_jks(data, password, out)
        return True
    data = strip_der_padding(data)
    shape = der_shape(data)
    key: object
    try:
        if shape == "signed":
            try:
                out.add("certificate", "der", x509.load_der_x509_certificate(data))
                return True
            except ValueError:
                pass
            try:
                out.add("csr", "der", x509.load_der_x509_csr(data))
                return True
            except ValueError:
                pass
            x509.load_der_x509_crl(data)  # a CRL is not ours; anything else is corrupt
            return False
        if shape == "pkcs7":
            certs = pkcs7_certificates(data, source)
            for cert in certs:
                out.add("certificate", "pkcs7", cert)
            return bool(certs)
        if shape == "pkcs12":
            load_pkcs12(data, password, out)
            return True
        if shape in ("pkcs8", "pkcs1", "sec1"):
            key = serialization.load_der_private_key(data, None)
            out.add("private_key", "der", check_key(key, source, "DER private key"))
            return True
        if shape == "pkcs8-encrypted":
            what = "DER private key"
            key = load_encrypted_pkcs8(data, password, source, what)
            out.add("private_key", "der", check_key(key, source, what), True)
            return True
    except CertfleetError:
        raise
    except PARSE_ERRORS as exc:
        raise corrupt(source, f"DER data ({shape})", exc) from exc
    return False


@quietly
def load_bytes(
    data: bytes, source: str = "<bytes>", password: bytes | None = None
) -> list[LoadedObject]:
    """Every certificate, private key and CSR in ``data``, in file order.

    ``source`` names the data in messages. Raises CertificateError when
    nothing usable is found or a part is corrupt, PasswordError when an
    encrypted part needs a password that is missing or wrong.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    _refuse_wrong_kind(data, source)
    out = Collector(source)
    try:
        text = _decode_text(data)
        if b"-----BEGIN " in text:
            normalized = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if not _load_pem(normalized, password, out):
                _load_der(data, password, out)
        elif not _load_der(data, password, out) and not out.objects:
            raw = _bare_base64(text)
            if raw is not None:
                _load_der(raw, password, out)
    except CertfleetError:
        raise
    except Exception as exc:  # a last net: parsers raise more types than can be listed
        raise corrupt(source, f"content ({type(exc).__name__})", exc) from exc
    except BaseException as exc:
        if is_panic(exc):
            raise corrupt(source, "content", ValueError("the parser rejected it")) from exc
        raise
    if not out.objects:
        _refuse_text_kind(data, source)
        raise nothing_found(source, out.skipped)
    return out.objects


_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def _bare_base64(text: bytes) -> bytes | None:
    """The DER inside base64 text without PEM lines (copied from a portal), else None."""
    body = text.strip(b"\x00\r\n\t ")
    if len(body) < 64 or not _BASE64_TEXT.fullmatch(body):
        return None
    compact = b"".join(body.split())
    compact += b"=" * (-len(compact) % 4)
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return der if der_shape(strip_der_padding(der)) != "unknown" else None


_ARCHIVES = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
)


def _refuse_wrong_kind(data: bytes, source: str) -> None:
    """Name an empty file or an archive instead of calling it corrupt."""
    if not data.strip(b"\x00\r\n\t \xef\xbb\xbf\xff\xfe"):
        raise CertificateError(
            f"{source!r} is empty",
            hint="download or export the file again; check it was saved completely",
            path=source,
        )
    for magic, kind in _ARCHIVES:
        if data.startswith(magic):
            raise CertificateError(
                f"{source!r} is {kind}; unpack it first",
                hint="extract the archive and give the certificate, chain and key files in it",
                path=source,
            )


def _refuse_text_kind(data: bytes, source: str) -> None:
    """Name a cut-off DER file, a web page, an XML file, an SSH or PuTTY key."""
    if data[:1] == b"\x30":
        try:
            der_tlv(data)
        except DerError as exc:
            if str(exc) == "truncated":
                raise CertificateError(
                    f"{source!r} is binary (DER) data shorter than its own header says: "
                    "the file looks cut off",
                    hint="download or copy the file again, completely (in binary mode)",
                    path=source,
                ) from None
    head = _decode_text(data[:4096]).lstrip().lower()
    if head.startswith(b"<?xml") and b"<html" not in head:
        raise CertificateError(
            f"{source!r} is an XML document, not a certificate",
            hint="give the certificate itself (.crt, .cer, .pem, .p7b or .pfx); a "
            "certificate inside XML metadata must be saved to a file of its own first",
            path=source,
        )
    if head.startswith((b"<!doctype html", b"<html", b"<head")) or b"<html" in head:
        raise CertificateError(
            f"{source!r} is an HTML page, not a certificate (an error or login page "
            "saved instead of the file?)",
            hint="open it in a browser to read it, then download the certificate again "
            "(the CA's \"download\" link, not the page)",
            path=source,
        )
    if head.startswith(b"putty-user-key-file"):
        raise CertificateError(
            f"{source!r} is a PuTTY private key (.ppk), not a TLS key",
            hint="give the key the CSR was made with (PEM), or the .pfx of the certificate",
            path=source,
        )
    if head.startswith((b"ssh-rsa ", b"ssh-ed25519 ", b"ecdsa-sha2-")):
        raise CertificateError(
            f"{source!r} is an SSH public key or SSH certificate, not a TLS certificate",
            hint="give the certificate the CA issued and its private key",
            path=source,
        )
