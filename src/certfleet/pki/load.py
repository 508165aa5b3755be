"""Read certificates, private keys and CSRs from whatever a CA or a tool handed over.

The format is detected from the content, never from the file name: a
``.crt`` may be PEM or DER, a ``.pem`` may hold a chain, a key and a CSR in
any order, a ``.pfx`` may be AES, 3DES or RC2-40 protected. Public API:

- :func:`load_bytes` -- every object in one blob of bytes.
- :func:`load_files` -- every object in several files, in order.

Files that are not certificates are named as what they are (empty, a ZIP
archive, an HTML page, cut off, a folder, over 16 MiB); key-derivation costs
read from a file (PKCS#12 MAC and bags, encrypted PKCS#8 PBKDF2 and scrypt)
are capped before any derivation starts.

Both raise only :class:`~certfleet.errors.CertificateError` (nothing usable,
a corrupt block, an unreadable file) and
:class:`~certfleet.errors.PasswordError` (encrypted content and the password
is missing or wrong; ``reason`` is ``"missing"`` or ``"wrong"``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from ..errors import CertfleetError, CertificateError, PasswordError
from .model import LoadedObject, ObjectType, PrivateKey
from .quiet import quietly

__all__ = ["PASSWORD_HINT", "load_bytes", "load_files"]

PASSWORD_HINT = "give the password with --password-env VAR or --password-file PATH"

# The errors parsing libraries raise on malformed input. pyjks and its pyasn1
# dependency raise their own trees on top; those are caught where pyjks is called.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    IndexError,
    KeyError,
    OverflowError,
    UnicodeDecodeError,
    x509.InvalidVersion,
)

# Labels are letters, digits and spaces; "#" for "PKCS #7 SIGNED DATA" (IIS, old OpenSSL).
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9][A-Z0-9 #]*?)-----(.*?)-----END \1-----", re.DOTALL
)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9][A-Z0-9 #]*?)-----")
_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
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


def _is_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException: a Rust panic in a parser, raised as a BaseException.

    Its module (``pyo3_runtime``) cannot be imported, so it is known by name.
    """
    return type(exc).__name__ == "PanicException"


class _DerError(ValueError):
    """The bytes are not the DER shape we were looking for."""


# --- a minimal DER reader: enough to tell the shapes apart before parsing --------


def _der_tlv(data: bytes, pos: int = 0) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the TLV at ``pos``."""
    if pos + 2 > len(data):
        raise _DerError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _DerError("multi-byte tags are not used by the formats we read")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise _DerError("truncated")
    return tag, pos, end


def _ber_tlv(data: bytes, pos: int = 0, depth: int = 0) -> tuple[int, int, int, int]:
    """(tag, start of content, end of content, next position) of the value at ``pos``.

    Like :func:`_der_tlv`, and also reads BER's indefinite lengths (a constructed
    value closed by two zero bytes), which old Windows and Java tools write in .pfx
    files and which cryptography reads.
    """
    if pos + 2 <= len(data) and data[pos + 1] == 0x80 and data[pos] & 0x20:
        if depth > 32:
            raise _DerError("nested too deeply")
        start = child = pos + 2
        while data[child : child + 2] != b"\x00\x00":
            if child >= len(data):
                raise _DerError("truncated")
            child = _ber_tlv(data, child, depth + 1)[3]
        return data[pos], start, child, child + 2
    tag, start, end = _der_tlv(data, pos)
    return tag, start, end, end


def _der_children(data: bytes, start: int, end: int, limit: int = 4) -> list[tuple[int, bytes]]:
    """The first ``limit`` children (tag, content) of a constructed value."""
    children: list[tuple[int, bytes]] = []
    pos = start
    while pos < end and len(children) < limit:
        tag, cstart, cend, after = _ber_tlv(data, pos)
        if after > end:
            raise _DerError("child overruns parent")
        children.append((tag, data[cstart:cend]))
        pos = after
    return children


def _der_shape(data: bytes) -> str:
    """Name the DER structure: certificate-like, pkcs7, pkcs12, pkcs8, ... or unknown."""
    try:
        tag, start, end, _ = _ber_tlv(data)
        if tag != 0x30:
            return "unknown"
        kids = _der_children(data, start, end)
    except _DerError:
        return "unknown"
    tags = [t for t, _ in kids]
    if tags[:3] == [0x30, 0x30, 0x03]:
        return "signed"  # certificate, CSR or CRL: SEQ{tbs, algorithm, signature}
    if tags[:2] == [0x30, 0x04]:
        return "pkcs8-encrypted"
    if tags[:1] == [0x06]:
        return "pkcs7"
    if tags[:1] == [0x02]:
        version = int.from_bytes(kids[0][1], "big") if kids[0][1] else -1
        second = tags[1] if len(tags) > 1 else None
        if version == 3 and second == 0x30:
            return "pkcs12"
        if version in (0, 1) and second == 0x30:
            return "pkcs8"
        if version == 0 and second == 0x02:
            return "pkcs1"  # RSA (or DSA) traditional OpenSSL format
        if version == 1 and second == 0x04:
            return "sec1"
    return "unknown"


def _strip_der_padding(data: bytes) -> bytes:
    """DER without the newline, NUL or Ctrl-Z (`copy` in text mode) bytes tools append."""
    try:
        _, _, end = _der_tlv(data)
    except _DerError:
        return data
    if end < len(data) and not data[end:].strip(b"\r\n\t \x00\x1a"):
        return data[:end]
    return data


def _first_tlv(data: bytes) -> bytes:
    """The first DER value of ``data`` (a TRUSTED CERTIFICATE carries trust data after it)."""
    _, _, end = _der_tlv(data)
    return data[:end]


# --- errors ---------------------------------------------------------------------------


def _missing_password(source: str, what: str) -> PasswordError:
    return PasswordError(
        f"{source!r} {what} is encrypted and no password was given",
        hint=PASSWORD_HINT,
        path=source,
        reason="missing",
    )


def _wrong_password(source: str, what: str) -> PasswordError:
    return PasswordError(
        f"{source!r} {what} could not be decrypted: the password is wrong",
        hint="check the password; " + PASSWORD_HINT,
        path=source,
        reason="wrong",
    )


_UNSUPPORTED_CURVE = re.compile(r"Curve ([0-9.]+|\w+) is not supported")
_RUST_PARSE_ERROR = re.compile(r"ParseError \{ kind: (\w+)")


def _corrupt(source: str, what: str, exc: BaseException | None = None) -> CertificateError:
    # cryptography's Rust parser errors are long debug dumps: keep the first words.
    text = str(exc).splitlines()[0] if exc is not None and str(exc) else ""
    if text.startswith("Could not deserialize key data"):
        # The library's catch-all: its own words list every possibility; keep the cause.
        _, _, cause = text.partition("Details: ")
        text = cause or "unrecognised key data"
    if "keys with explicit parameters are only supported" in text:
        return CertificateError(
            f"{source!r} {what} is an EC key with explicit curve parameters of a curve "
            "other than P-256, P-384 or P-521, which certfleet cannot use",
            hint="write the key with a named curve (openssl ec -param_enc named_curve), "
            "or use an RSA or P-256/P-384 key",
            path=source,
        )
    unsupported_curve = _UNSUPPORTED_CURVE.match(text)
    if unsupported_curve is not None:
        return CertificateError(
            f"{source!r} {what} uses the curve {unsupported_curve.group(1)}, "
            "which certfleet cannot use",
            hint="use an RSA key, or an EC key on P-256 or P-384",
            path=source,
        )
    parse_error = _RUST_PARSE_ERROR.search(text)
    if parse_error is not None:
        words = re.sub(r"(?<!^)(?=[A-Z])", " ", parse_error.group(1)).lower()
        text = f"not valid DER ({words})"
    detail = f": {text[:80]}" if text else ""
    return CertificateError(
        f"{source!r} {what} is corrupt or not supported{detail}",
        hint="export the file again from the tool or CA it came from",
        path=source,
    )


def _nothing(source: str, skipped: Sequence[str] = ()) -> CertificateError:
    found = f" (only {', '.join(dict.fromkeys(skipped))})" if skipped else ""
    hint = "give a PEM, DER, PKCS#7 (.p7b), PKCS#12 (.pfx/.p12) or JKS file"
    if any("PUBLIC KEY" in label for label in skipped):
        hint = "a public key is not enough: give the certificate and the private key"
    elif any("OPENSSH" in label or "SSH2" in label for label in skipped):
        hint = "that is an SSH key, not a TLS one: give the certificate and its private key"
    return CertificateError(
        f"{source!r} contains no certificate, key or CSR that certfleet can read{found}",
        hint=hint,
        path=source,
    )


def _check_key(key: object, source: str, what: str) -> PrivateKey:
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise CertificateError(
            f"{source!r} {what} holds a key of type "
            f"{type(key).__name__.removesuffix('PrivateKey')}, which cannot serve TLS "
            "(it cannot sign)",
            hint="use an RSA or EC key",
            path=source,
        )
    return key


# --- the loader -----------------------------------------------------------------------


class _Collector:
    """Accumulates LoadedObjects of one source, numbering them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.objects: list[LoadedObject] = []
        self.skipped: list[str] = []  # PEM labels seen but not loaded

    def add(
        self,
        kind: ObjectType,
        fmt: str,
        value: x509.Certificate | PrivateKey | x509.CertificateSigningRequest,
        encrypted: bool = False,
    ) -> None:
        if isinstance(value, (x509.Certificate, x509.CertificateSigningRequest)):
            _check_parsable(value, self.source, f"{kind} {len(self.objects) + 1}")
        self.objects.append(
            LoadedObject(
                source=self.source,
                type=kind,
                format=fmt,
                value=value,
                encrypted=encrypted,
                index=len(self.objects),
            )
        )


def _check_parsable(
    value: x509.Certificate | x509.CertificateSigningRequest, source: str, what: str
) -> None:
    """Parse now what cryptography parses lazily, so that later steps never trip on it.

    Names, extensions and signature parameters are decoded on first access; a
    duplicate extension or a malformed name would otherwise surface in the
    middle of assembling or checking. An unsupported key or signature algorithm
    is fine here: the checks report those.
    """
    try:
        value.subject.rfc4514_string()
        list(value.extensions)
        if isinstance(value, x509.Certificate):
            value.issuer.rfc4514_string()
            _ = value.not_valid_before_utc, value.not_valid_after_utc
            # Last: an UnsupportedAlgorithm here ends the checks without refusing.
            _ = value.signature_hash_algorithm, value.signature_algorithm_parameters
    except UnsupportedAlgorithm:
        pass
    except Exception as exc:  # cryptography raises ValueError, DuplicateExtension, ...
        raise _corrupt(source, what, exc) from exc


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


def _load_pem(text: bytes, password: bytes | None, out: _Collector) -> bool:
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
            raise _corrupt(source, what, exc) from exc
        if not der:
            raise _corrupt(source, what)
        try:
            _load_pem_block(label, headers, der, password, out, what)
        except CertfleetError:
            raise
        except _PARSE_ERRORS as exc:
            raise _corrupt(source, what, exc) from exc
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
    out: _Collector,
    what: str,
) -> None:
    source = out.source
    key: object
    if label in ("CERTIFICATE", "X509 CERTIFICATE") and _der_shape(der) in ("pkcs7", "pkcs12"):
        # Windows CA web enrollment writes a "Base 64" .p7b chain under this label, and
        # `certutil -encode` wraps whatever it encodes (a .pfx too) in it.
        _load_der(der, password, out)
    elif label in ("CERTIFICATE", "X509 CERTIFICATE"):
        out.add("certificate", "pem", x509.load_der_x509_certificate(der))
    elif label == "TRUSTED CERTIFICATE":
        # OpenSSL appends an X509_CERT_AUX trust structure after the certificate.
        out.add("certificate", "pem", x509.load_der_x509_certificate(_first_tlv(der)))
    elif label in ("PKCS7", "CERTIFICATE CHAIN", "PKCS #7 SIGNED DATA", "CMS"):
        for cert in _pkcs7_certificates(der, source):
            out.add("certificate", "pkcs7", cert)
    elif label in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        out.add("csr", "pem", x509.load_der_x509_csr(der))
    elif label == "PRIVATE KEY":
        key = serialization.load_der_private_key(der, None)
        out.add("private_key", "pkcs8", _check_key(key, source, what))
    elif label == "ENCRYPTED PRIVATE KEY":
        key = _load_encrypted_pkcs8(der, password, source, what)
        out.add("private_key", "pkcs8-encrypted", _check_key(key, source, what), True)
    elif label in ("RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"):
        if headers.get("Proc-Type", "").replace(" ", "") == "4,ENCRYPTED":
            if password is None:
                raise _missing_password(source, what)
            _check_dek_info(headers.get("DEK-Info", ""), source, what)
            pem = _rebuild_pem(label, headers, der)
            key = _decrypt(lambda: serialization.load_pem_private_key(pem, password), source, what)
            out.add("private_key", "pem-encrypted", _check_key(key, source, what), True)
        else:
            key = serialization.load_der_private_key(der, None)
            fmt = "sec1" if label == "EC PRIVATE KEY" else "pkcs1"
            out.add("private_key", fmt, _check_key(key, source, what))
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
        raise _corrupt(source, what, ValueError("the DEK-Info header naming its cipher is missing"))
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
        raise _corrupt(source, what, ValueError("the DEK-Info IV is malformed"))


def _pkcs7_certificates(der: bytes, source: str) -> list[x509.Certificate]:
    """The certificates of a PKCS#7 (.p7b); one without any is named as such."""
    try:
        return pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        if "no certificate" not in str(exc):
            raise
    raise CertificateError(
        f"{source!r} is a PKCS#7 (.p7b) file without any certificate",
        hint="download the chain again (in the Windows export wizard: include all "
        "certificates in the certification path)",
        path=source,
    )


def _rebuild_pem(label: str, headers: dict[str, str], der: bytes) -> bytes:
    """A canonical PEM block (LF, 64 columns) of an encrypted traditional key."""
    b64 = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [f"-----BEGIN {label}-----"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("")
    lines += [b64[i : i + 64] for i in range(0, len(b64), 64)]
    lines.append(f"-----END {label}-----")
    return ("\n".join(lines) + "\n").encode("ascii")


def _decrypt(load: Callable[[], object], source: str, what: str) -> object:
    """Run a decrypting loader; a ValueError there means the password is wrong."""
    try:
        return load()
    except UnsupportedAlgorithm as exc:
        raise _corrupt(source, what, exc) from exc
    except (ValueError, TypeError) as exc:
        raise _wrong_password(source, what) from exc
    except BaseException as exc:
        if _is_panic(exc):  # the parser met a malformed input it did not expect
            raise _corrupt(source, what, ValueError("the parser rejected it")) from exc
        raise


def _load_der(data: bytes, password: bytes | None, out: _Collector) -> bool:
    """Load one binary object; False when its shape is not one we know."""
    source = out.source
    if data[:4] in _JKS_MAGIC:
        _load_jks(data, password, out)
        return True
    data = _strip_der_padding(data)
    shape = _der_shape(data)
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
            certs = _pkcs7_certificates(data, source)
            for cert in certs:
                out.add("certificate", "pkcs7", cert)
            return bool(certs)
        if shape == "pkcs12":
            _load_pkcs12(data, password, out)
            return True
        if shape in ("pkcs8", "pkcs1", "sec1"):
            key = serialization.load_der_private_key(data, None)
            out.add("private_key", "der", _check_key(key, source, "DER private key"))
            return True
        if shape == "pkcs8-encrypted":
            what = "DER private key"
            key = _load_encrypted_pkcs8(data, password, source, what)
            out.add("private_key", "der", _check_key(key, source, what), True)
            return True
    except CertfleetError:
        raise
    except _PARSE_ERRORS as exc:
        raise _corrupt(source, f"DER data ({shape})", exc) from exc
    return False


# Real tools use 2,048 to 600,000 key-derivation rounds. The MAC's round count is
# read from the file itself, so a crafted 3 KB .pfx asking for 2**31 rounds would
# keep the loader busy for minutes per password tried: refuse it up front.
MAX_KDF_ITERATIONS = 10_000_000


def _pkcs12_mac_iterations(data: bytes) -> int:
    """The MacData iteration count of a PFX (RFC 7292 section 4), 1 when absent."""
    try:
        _, start, end, _ = _ber_tlv(data)
        kids = _der_children(data, start, end, limit=3)
        if len(kids) < 3 or kids[2][0] != 0x30:
            return 1
        mac = kids[2][1]
        parts = _der_children(mac, 0, len(mac), limit=3)
    except _DerError:
        return 1
    if len(parts) == 3 and parts[2][0] == 0x02:
        return int.from_bytes(parts[2][1], "big", signed=True)
    return 1


# Password-based encryption as PKCS#8 and PKCS#12 name it. The round counts (and
# scrypt's memory cost) are read from the file, like the MAC's: cap them too.
_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_PBE_PREFIXES = ("1.2.840.113549.1.12.1.", "1.2.840.113549.1.5.")  # PKCS#12 PBE, PBES1
_OID_FRIENDLY_NAME = "1.2.840.113549.1.9.20"
_KEY_BAGS = ("1.2.840.113549.1.12.10.1.1", "1.2.840.113549.1.12.10.1.2")
#: scrypt's memory (128 * N * r * p bytes): OpenSSL's default is 16 MiB, refuse over 256 MiB.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_WALK_NODES = 20_000


def _oid_text(content: bytes) -> str:
    """Dotted text of the content of a DER OBJECT IDENTIFIER."""
    if not content:
        raise _DerError("empty OID")
    first = content[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def _der_int(tag: int, content: bytes) -> int | None:
    if tag != 0x02 or not content or len(content) > 16:
        return None
    return int.from_bytes(content, "big", signed=True)


class _PbeScan:
    """What the password-based encryption of a PKCS#8 or PKCS#12 file asks for.

    A bounded walk over the DER (into OCTET STRINGs that hold DER) that notes
    every PBE algorithm identifier, its rounds and scrypt cost, and the key bags.
    """

    def __init__(self, data: bytes) -> None:
        self.encrypted = False
        self.rounds = 0
        self.scrypt_memory = 0
        self.key_bags = 0
        self.key_names: list[str] = []
        self.walked = False  # False: the structure could not be walked, nothing is known
        self._nodes = 0
        try:
            self._walk(data, 0, len(data), 0)
            self.walked = True
        except _DerError:
            pass

    def _walk(self, data: bytes, start: int, end: int, depth: int) -> None:
        if depth > 12:
            return
        pos = start
        while pos < end:
            self._nodes += 1
            if self._nodes > _WALK_NODES:
                return
            tag, cstart, cend, after = _ber_tlv(data, pos)
            if tag == 0x30:
                self._sequence(data, cstart, cend)
            if tag & 0x20:
                self._walk(data, cstart, cend, depth + 1)
            elif tag == 0x04 and cend > cstart and data[cstart] in (0x30, 0x31):
                try:
                    inner_end = _ber_tlv(data, cstart)[3]
                except _DerError:
                    inner_end = -1
                if inner_end == cend:
                    self._walk(data, cstart, cend, depth + 1)
            pos = after

    def _sequence(self, data: bytes, start: int, end: int) -> None:
        try:
            kids = _der_children(data, start, end, limit=2)
        except _DerError:
            return
        if not kids or kids[0][0] != 0x06:
            return
        oid = _oid_text(kids[0][1])
        if oid in _KEY_BAGS:
            self.key_bags += 1
            with contextlib.suppress(_DerError):
                self._key_bag_name(data, start, end)
            return
        if len(kids) < 2 or kids[1][0] != 0x30:
            return
        params = kids[1][1]
        if oid == _OID_PBES2:
            self.encrypted = True
        elif oid == _OID_PBKDF2 or oid.startswith(_PBE_PREFIXES):
            self.encrypted = True
            values = _der_children(params, 0, len(params), limit=2)
            if len(values) == 2:
                self.rounds = max(self.rounds, _der_int(*values[1]) or 0)
        elif oid == _OID_SCRYPT:
            self.encrypted = True
            values = _der_children(params, 0, len(params), limit=4)
            numbers = [_der_int(*v) for v in values[1:]]
            if len(numbers) == 3 and all(n is not None for n in numbers):
                cost, block, parallel = (n or 0 for n in numbers)
                self.scrypt_memory = max(self.scrypt_memory, 128 * cost * block * parallel)

    def _key_bag_name(self, data: bytes, start: int, end: int) -> None:
        """Note the friendlyName (a keystore alias) of a key bag, when it has one."""
        kids = _der_children(data, start, end, limit=3)
        if len(kids) < 3 or kids[2][0] != 0x31:
            return
        attrs = kids[2][1]
        for tag, attr in _der_children(attrs, 0, len(attrs), limit=8):
            parts = _der_children(attr, 0, len(attr), limit=2) if tag == 0x30 else []
            if len(parts) == 2 and parts[0][0] == 0x06 and _oid_text(parts[0][1]) == (
                _OID_FRIENDLY_NAME
            ):
                values = _der_children(parts[1][1], 0, len(parts[1][1]), limit=1)
                if values and values[0][0] == 0x1E:  # BMPString
                    self.key_names.append(values[0][1].decode("utf-16-be", "replace")[:64])

    def refuse_absurd(self, source: str, what: str) -> None:
        """Raise CertificateError when the file asks for more work than any tool uses."""
        if self.rounds > MAX_KDF_ITERATIONS:
            raise CertificateError(
                f"{source!r}: the {what} asks for {self.rounds:,} key-derivation rounds, "
                f"more than certfleet accepts ({MAX_KDF_ITERATIONS:,})",
                hint="export the file again with the tool's default settings",
                path=source,
            )
        if self.scrypt_memory > MAX_SCRYPT_MEMORY:
            mib = self.scrypt_memory // (1024 * 1024)
            raise CertificateError(
                f"{source!r}: the {what} asks for scrypt parameters needing {mib:,} MiB, "
                f"more than certfleet accepts ({MAX_SCRYPT_MEMORY // (1024 * 1024)} MiB)",
                hint="export the file again with the tool's default settings",
                path=source,
            )


def _load_encrypted_pkcs8(
    der: bytes, password: bytes | None, source: str, what: str
) -> object:
    """Decrypt an EncryptedPrivateKeyInfo after checking what its KDF asks for."""
    if password is None:
        raise _missing_password(source, what)
    _PbeScan(der).refuse_absurd(source, what)
    return _decrypt(lambda: serialization.load_der_private_key(der, password), source, what)


def _load_pkcs12(data: bytes, password: bytes | None, out: _Collector) -> None:
    """PKCS#12 with the password, then with b"" and None (files without one)."""
    source = out.source
    what = "PKCS#12 file"
    rounds = _pkcs12_mac_iterations(data)
    if rounds > MAX_KDF_ITERATIONS:
        raise CertificateError(
            f"{source!r}: the PKCS#12 file asks for {rounds:,} key-derivation rounds, "
            f"more than certfleet accepts ({MAX_KDF_ITERATIONS:,})",
            hint="export the .pfx again with the tool's default settings",
            path=source,
        )
    scan = _PbeScan(data)
    scan.refuse_absurd(source, what)
    if scan.key_bags > 1:
        names = f" ({', '.join(map(repr, scan.key_names))})" if scan.key_names else ""
        raise CertificateError(
            f"{source!r} holds {scan.key_bags} private keys{names}; certfleet reads one "
            "key and its certificate per PKCS#12 file",
            hint="export each certificate with its key on its own (Windows: select one "
            "certificate in the export wizard; Java: keytool -importkeystore -srcalias "
            "NAME), or give the key and certificates as PEM",
            path=source,
        )
    candidates: list[bytes | None] = [password] if password else []
    candidates += [b"", None]
    p12: pkcs12.PKCS12KeyAndCertificates | None = None
    used: bytes | None = None
    for candidate in candidates:
        try:
            with warnings.catch_warnings():
                # BER-encoded files from old Windows tools load fine; the warning that
                # DER parsing fell back to BER would only alarm the user.
                warnings.simplefilter("ignore", UserWarning)
                p12 = pkcs12.load_pkcs12(data, candidate)
        except ValueError as exc:
            if "password" not in str(exc).lower():
                raise _corrupt(source, what, exc) from exc
            continue
        used = candidate
        break
    if p12 is None:
        raise _wrong_password(source, what) if password else _missing_password(source, what)
    # A file without a MAC and without encryption opens with any password.
    encrypted = bool(used) and (scan.encrypted or not scan.walked)
    if p12.key is not None:
        out.add("private_key", "pkcs12", _check_key(p12.key, source, what), encrypted)
    if p12.cert is not None:
        out.add("certificate", "pkcs12", p12.cert.certificate, encrypted)
    for extra in p12.additional_certs:
        out.add("certificate", "pkcs12", extra.certificate, encrypted)


def _load_jks(data: bytes, password: bytes | None, out: _Collector) -> None:
    """JKS / JCEKS via pyjks; the store and key passwords are both ``password``."""
    import jks  # imported here: pyjks pulls in pyasn1, a cost other formats need not pay

    source = out.source
    what = "Java keystore"
    try:
        text_password = password.decode("utf-8") if password is not None else None
    except UnicodeDecodeError as exc:
        raise _wrong_password(source, what) from exc
    try:
        store = jks.KeyStore.loads(
            data, text_password, try_decrypt_keys=text_password is not None
        )
    except jks.util.KeystoreSignatureException as exc:
        raise _wrong_password(source, what) from exc
    except CertfleetError:
        raise
    except Exception as exc:  # pyjks and pyasn1 raise many unrelated types on bad data
        raise _corrupt(source, what, exc) from exc
    try:
        for alias in sorted(store.private_keys):
            entry = store.private_keys[alias]
            if not entry.is_decrypted():
                if text_password is None:
                    raise _missing_password(source, f"{what} entry {alias!r}")
                raise _wrong_password(source, f"{what} entry {alias!r}")
            key = serialization.load_der_private_key(entry.pkey_pkcs8, None)
            out.add("private_key", "jks", _check_key(key, source, what), True)
            for _cert_type, cert_der in entry.cert_chain:
                out.add("certificate", "jks", x509.load_der_x509_certificate(cert_der), True)
        for alias in sorted(store.certs):
            cert_der = store.certs[alias].cert
            out.add("certificate", "jks", x509.load_der_x509_certificate(cert_der))
    except CertfleetError:
        raise
    except Exception as exc:  # entries are pyjks objects: any of its errors may surface
        raise _corrupt(source, what, exc) from exc


#: Certificates, keys, chains and keystores are kilobytes; a CA bundle of every
#: public root is under 1 MiB. Larger input is the wrong file (an ISO, a backup).
MAX_INPUT_BYTES = 16 * 1024 * 1024


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
    out = _Collector(source)
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
        raise _corrupt(source, f"content ({type(exc).__name__})", exc) from exc
    except BaseException as exc:
        if _is_panic(exc):
            raise _corrupt(source, "content", ValueError("the parser rejected it")) from exc
        raise
    if not out.objects:
        _refuse_text_kind(data, source)
        raise _nothing(source, out.skipped)
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
    return der if _der_shape(_strip_der_padding(der)) != "unknown" else None


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
            _der_tlv(data)
        except _DerError as exc:
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


@quietly
def load_files(
    paths: Sequence[str | os.PathLike[str]], password: bytes | None = None
) -> list[LoadedObject]:
    """Every object of every file in ``paths``; ``source`` is each path as given.

    Raises CertificateError (unreadable file, nothing usable) and PasswordError.
    """
    objects: list[LoadedObject] = []
    for path in paths:
        name = os.fspath(path)
        if Path(name).is_dir():
            # Windows says "Permission denied" when a folder is read: name it plainly.
            raise CertificateError(
                f"cannot read {name!r}: it is a folder, not a file",
                hint="give the certificate, chain and key files inside it, one by one",
                path=name,
            )
        try:
            # At most one byte past the cap: a device like /dev/zero ends there too,
            # while a pipe (`check <(curl ...)`) is read like a file.
            with Path(name).open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CertificateError(
                f"cannot read {name!r}: {reason}",
                hint="check the path and that you may read the file",
                path=name,
            ) from exc
        if len(data) > MAX_INPUT_BYTES:
            raise CertificateError(
                f"{name!r} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB: too large "
                "for a certificate, key or keystore file",
                hint="check that the right file was given",
                path=name,
            )
        objects.extend(load_bytes(data, name, password))
    return objects
