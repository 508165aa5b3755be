"""Read certificates, private keys and CSRs from whatever a CA or a tool handed over.

The format is detected from the content, never from the file name: a
``.crt`` may be PEM or DER, a ``.pem`` may hold a chain, a key and a CSR in
any order, a ``.pfx`` may be AES, 3DES or RC2-40 protected. Public API:

- :func:`load_bytes` -- every object in one blob of bytes.
- :func:`load_files` -- every object in several files, in order.

Both raise only :class:`~certfleet.errors.CertificateError` (nothing usable,
a corrupt block, an unreadable file) and
:class:`~certfleet.errors.PasswordError` (encrypted content and the password
is missing or wrong; ``reason`` is ``"missing"`` or ``"wrong"``).
"""

from __future__ import annotations

import base64
import binascii
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

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9][A-Z0-9 ]*?)-----(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9][A-Z0-9 ]*?)-----")
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


def _der_children(data: bytes, start: int, end: int, limit: int = 4) -> list[tuple[int, bytes]]:
    """The first ``limit`` children (tag, content) of a constructed value."""
    children: list[tuple[int, bytes]] = []
    pos = start
    while pos < end and len(children) < limit:
        tag, cstart, cend = _der_tlv(data, pos)
        if cend > end:
            raise _DerError("child overruns parent")
        children.append((tag, data[cstart:cend]))
        pos = cend
    return children


def _der_shape(data: bytes) -> str:
    """Name the DER structure: certificate-like, pkcs7, pkcs12, pkcs8, ... or unknown."""
    try:
        tag, start, end = _der_tlv(data)
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
    """DER without the newline or NUL bytes some download tools append to a .cer."""
    try:
        _, _, end = _der_tlv(data)
    except _DerError:
        return data
    if end < len(data) and not data[end:].strip(b"\r\n\t \x00"):
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


def _corrupt(source: str, what: str, exc: BaseException | None = None) -> CertificateError:
    # cryptography's Rust parser errors are long debug dumps: keep the first words.
    text = str(exc).splitlines()[0] if exc is not None and str(exc) else ""
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
            f"{source!r} {what} holds a {type(key).__name__} key, which cannot serve TLS",
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
    b64 = b"".join(lines[i:])
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
    if label in ("CERTIFICATE", "X509 CERTIFICATE"):
        out.add("certificate", "pem", x509.load_der_x509_certificate(der))
    elif label == "TRUSTED CERTIFICATE":
        # OpenSSL appends an X509_CERT_AUX trust structure after the certificate.
        out.add("certificate", "pem", x509.load_der_x509_certificate(_first_tlv(der)))
    elif label in ("PKCS7", "CERTIFICATE CHAIN"):
        for cert in pkcs7.load_der_pkcs7_certificates(der):
            out.add("certificate", "pkcs7", cert)
    elif label in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        out.add("csr", "pem", x509.load_der_x509_csr(der))
    elif label == "PRIVATE KEY":
        key = serialization.load_der_private_key(der, None)
        out.add("private_key", "pkcs8", _check_key(key, source, what))
    elif label == "ENCRYPTED PRIVATE KEY":
        if password is None:
            raise _missing_password(source, what)
        key = _decrypt(lambda: serialization.load_der_private_key(der, password), source, what)
        out.add("private_key", "pkcs8-encrypted", _check_key(key, source, what), True)
    elif label in ("RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"):
        if headers.get("Proc-Type", "").replace(" ", "") == "4,ENCRYPTED":
            if password is None:
                raise _missing_password(source, what)
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
            certs = pkcs7.load_der_pkcs7_certificates(data)
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
            if password is None:
                raise _missing_password(source, what)
            key = _decrypt(lambda: serialization.load_der_private_key(data, password), source, what)
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
        _, start, end = _der_tlv(data)
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
    encrypted = bool(used)
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
    out = _Collector(source)
    try:
        text = _decode_text(data)
        if b"-----BEGIN " in text:
            normalized = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if not _load_pem(normalized, password, out):
                _load_der(data, password, out)
        else:
            _load_der(data, password, out)
    except CertfleetError:
        raise
    except Exception as exc:  # a last net: parsers raise more types than can be listed
        raise _corrupt(source, f"content ({type(exc).__name__})", exc) from exc
    if not out.objects:
        raise _nothing(source, out.skipped)
    return out.objects


def load_files(
    paths: Sequence[str | os.PathLike[str]], password: bytes | None = None
) -> list[LoadedObject]:
    """Every object of every file in ``paths``; ``source`` is each path as given.

    Raises CertificateError (unreadable file, nothing usable) and PasswordError.
    """
    objects: list[LoadedObject] = []
    for path in paths:
        name = os.fspath(path)
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CertificateError(
                f"cannot read {name!r}: {reason}",
                hint="check the path and that you may read the file",
                path=name,
            ) from exc
        objects.extend(load_bytes(data, name, password))
    return objects
