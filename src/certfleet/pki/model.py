"""Value objects of the pki core: what was loaded, the assembled bundle, findings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

__all__ = [
    "Bundle",
    "Finding",
    "LoadedObject",
    "ObjectType",
    "PrivateKey",
    "PublicKey",
    "Severity",
    "cert_sha256",
    "certificates_pem",
    "key_description",
    "spki_sha256",
]

ObjectType = Literal["certificate", "private_key", "csr"]
Severity = Literal["error", "warning", "info"]

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | dsa.DSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
PublicKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | dsa.DSAPublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
)


def certificates_pem(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> bytes:
    """The certificates as concatenated PEM blocks, in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def cert_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex without colons."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def spki_sha256(key: object) -> str:
    """SHA-256 of the SubjectPublicKeyInfo of a certificate, CSR, public or private key."""
    # Certificates, CSRs and private keys have public_key(); a public key is itself.
    public: Any = key.public_key() if hasattr(key, "public_key") else key
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def key_description(key: object) -> tuple[str, int | None]:
    """(key_type, key_bits) for a public or private key: ("rsa", 2048), ("ec", 256)..."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa", key.key_size
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ec", key.curve.key_size
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return "dsa", key.key_size
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519", 256
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "ed448", 456
    return "unknown", None


@dataclass(frozen=True)
class LoadedObject:
    """One object found in an input file.

    ``format`` for a private key is one of ``pkcs1``, ``pkcs8``,
    ``pkcs8-encrypted``, ``pem-encrypted``, ``sec1``, ``der``, ``pkcs12``,
    ``jks``; for a certificate ``pem``, ``der``, ``pkcs7``, ``pkcs12``,
    ``jks``; for a CSR ``pem`` or ``der``. ``encrypted`` says whether the
    object was stored encrypted (it is always decrypted in ``value``).
    ``index`` is its position among the objects of ``source``.
    """

    source: str
    type: ObjectType
    format: str
    value: x509.Certificate | PrivateKey | x509.CertificateSigningRequest
    encrypted: bool = False
    index: int = 0

    def __repr__(self) -> str:
        return f"<LoadedObject {self.type} {self.format} from {self.source!r}#{self.index}>"


@dataclass(frozen=True)
class Finding:
    """One result of a check. ``code`` is stable and documented in the README."""

    code: str
    severity: Severity
    message: str
    hint: str = ""
    subject: str | None = None  # the certificate or file the finding is about

    def __post_init__(self) -> None:
        if self.severity not in ("error", "warning", "info"):
            raise ValueError(f"severity must be error, warning or info, not {self.severity!r}")

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "subject": self.subject,
        }


@dataclass(frozen=True)
class Bundle:
    """A leaf certificate with its chain, root and private key.

    ``chain`` holds the intermediates, leaf side first, root excluded.
    ``root`` is the self-signed anchor when the input carried it.
    ``unrelated`` holds certificates from the input that belong to no chain
    of the leaf. ``key_format`` / ``key_source`` say how the key was stored.
    """

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    root: x509.Certificate | None = None
    private_key: PrivateKey | None = None
    key_format: str | None = None
    key_encrypted: bool = False
    key_source: str | None = None
    unrelated: tuple[x509.Certificate, ...] = ()
    findings: tuple[Finding, ...] = field(default=(), compare=False)

    @property
    def fullchain(self) -> tuple[x509.Certificate, ...]:
        """Leaf followed by the intermediates (no root)."""
        return (self.leaf, *self.chain)

    @property
    def leaf_sha256(self) -> str:
        return cert_sha256(self.leaf)

    def __repr__(self) -> str:
        subject = self.leaf.subject.rfc4514_string()
        key = "key" if self.private_key is not None else "no key"
        return f"<Bundle {subject!r} chain={len(self.chain)} root={self.root is not None} {key}>"
