"""What an SBC holds and reports, read without a connection: TLS context rows
of the INI file, certificates in a GET answer, a context's state, key state.

Pure functions of bytes and text (no REST, no TLS): used by the driver
(:mod:`certfleet.drivers.sbc`) and its rehearsal.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import ConfigError, PrivateKeyError
from ..pki.model import PrivateKey, cert_sha256

__all__ = ["NO_ROLLBACK_HINT", "SbcContext", "normalize_sha256", "tls_contexts_in_ini"]

NO_ROLLBACK_HINT = (
    "the SBC never returns its private key, so the previous certificate can only be put back "
    "with the key that goes with it: pass --previous-key FILE (the key installed now), or "
    "--allow-no-rollback for a first deploy (options of certfleet deploy, plan and sbc "
    "deploy); keep this deploy's key (certfleet deploy keeps it in its store): it is the "
    "previous key of the next one"
)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TLS_ROW = re.compile(
    r"""^\s*TLSContexts\s+(\d+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^,;"']*))""",
    re.MULTILINE | re.IGNORECASE)
_TLS_TABLE = re.compile(
    r"^\s*\[\s*TLSContexts\s*\][^\n]*\n(.*?)(?:^\s*\[|\Z)",
    re.MULTILINE | re.DOTALL | re.IGNORECASE)


def normalize_sha256(value: str) -> str:
    """``AB:CD:…`` or hex → 64 lowercase hex digits. Raises ConfigError."""
    text = value.strip().lower().replace(":", "").replace(" ", "")
    if text.startswith("sha256/") or text.startswith("sha256:"):
        text = text[7:]
    if not _SHA256_RE.match(text):
        raise ConfigError(
            f"pin {value!r} is not a SHA-256 fingerprint (64 hex digits)",
            hint="take it from: openssl s_client -connect HOST:PORT </dev/null | "
            "openssl x509 -fingerprint -sha256 -noout",
        )
    return text


def tls_contexts_in_ini(ini: str) -> dict[int, str]:
    """Index → name of the rows of the INI's ``TLSContexts`` table.

    Lenient (spacing, case, quoting, a missing closing ``[ \\TLSContexts ]``);
    text it cannot read gives fewer rows or none, never an exception.
    """
    table = _TLS_TABLE.search(ini.replace("\r\n", "\n").replace("\r", "\n"))
    if table is None:
        return {}
    rows: dict[int, str] = {}
    for match in _TLS_ROW.finditer(table.group(1)):
        name = next((g for g in match.groups()[1:] if g is not None), "")
        rows[int(match.group(1))] = name.strip()
    return rows


_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    """Every readable certificate in ``pem``, block by block: CRLF, leading text or
    blank lines, a broken block among good ones, PEM inside a JSON answer."""
    out: list[x509.Certificate] = []
    for match in _PEM_CERT.finditer(pem):
        # Also PEM inside a JSON string: escaped line ends and slashes.
        text = match.group(1).replace(b"\\r", b"").replace(b"\\n", b"").replace(b"\\/", b"/")
        body = b"".join(text.split())
        # A block larger than any real certificate is parsed, not kept.
        cert = (_load_certificate(body) if len(body) <= _KEPT_BLOCK_BYTES
                else _load_certificate.__wrapped__(body))
        if cert is not None:
            out.append(cert)
    return out


# The same certificates come back from every device of an estate (the wildcard, the
# CA's roots): each is parsed once, and what is read from it kept with it. Certificate
# objects are immutable, so sharing them between devices changes nothing.
_KEPT_BLOCK_BYTES = 64 * 1024


@functools.lru_cache(maxsize=256)
def _load_certificate(body: bytes) -> x509.Certificate | None:
    """The certificate of one PEM block's base64 ``body``, None when it does not load."""
    block = b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"
    try:
        return x509.load_pem_x509_certificate(block)
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def _described(cert: x509.Certificate) -> tuple[str, str, str]:
    """(SHA-256, subject, issuer) of ``cert``, as RFC 4514 strings."""
    return cert_sha256(cert), cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()


def sha256_of(cert: x509.Certificate) -> str:
    """:func:`~certfleet.pki.model.cert_sha256`, computed once per certificate."""
    return _described(cert)[0]


def _leaf(certs: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The device certificate of a GET answer that may carry its chain (in any order)."""
    for cert in certs:
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return cert
        except x509.ExtensionNotFound:
            return cert
    return certs[0] if certs else None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class TrustedRootDict(TypedDict):
    subject: str
    sha256: str


class SbcContextDict(TypedDict):
    """A TLS context as ``certfleet sbc status --json`` prints it."""

    index: int
    name: str | None
    subject: str | None
    issuer: str | None
    sha256: str | None
    not_after: str | None
    key_valid: bool | None
    key_size: int | None
    trusted_roots: list[TrustedRootDict]


@dataclass(frozen=True)
class SbcContext:
    """What one TLS context holds, as the SBC reports it."""

    index: int
    name: str | None
    certificate: x509.Certificate | None
    trusted_roots: tuple[x509.Certificate, ...]
    key_valid: bool | None
    key_size: int | None

    @functools.cached_property
    def sha256(self) -> str | None:
        return sha256_of(self.certificate) if self.certificate is not None else None

    def to_dict(self) -> SbcContextDict:
        cert = self.certificate
        _, subject, issuer = _described(cert) if cert is not None else (None, None, None)
        return {
            "index": self.index,
            "name": self.name,
            "subject": subject,
            "issuer": issuer,
            "sha256": self.sha256,
            "not_after": cert.not_valid_after_utc.isoformat() if cert is not None else None,
            "key_valid": self.key_valid,
            "key_size": self.key_size,
            "trusted_roots": [
                {"subject": _described(c)[1], "sha256": _described(c)[0]}
                for c in self.trusted_roots
            ],
        }


def _key_valid(data: object) -> bool | None:
    """The ``valid`` of a key state answer: true/false however spelled, None if unknown."""
    value = data.get("valid") if isinstance(data, dict) else None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "1", "valid", "ok"):
            return True
        if text in ("false", "no", "0", "invalid"):
            return False
    return None


def _load_key_pem(data: bytes) -> PrivateKey:
    """A previous private key from PEM bytes. Raises PrivateKeyError."""
    from ..pki.load import load_bytes

    keys = [o.value for o in load_bytes(data, "previous key", None) if o.type == "private_key"]
    if not keys:
        raise PrivateKeyError(
            "the previous key file holds no private key",
            hint="pass the unencrypted PEM key installed on the SBC now to --previous-key "
            "(of certfleet deploy or sbc deploy)",
        )
    return keys[0]  # type: ignore[return-value]  # load_bytes types value as a union
