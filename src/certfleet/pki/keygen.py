"""Private keys and certificate signing requests, made off the devices.

A wildcard certificate shared by OVOC and every SBC must be requested from a
key that lives off the devices (an SBC-generated CSR would leave the key on
that one SBC). This module makes that key and CSR; writing them to disk is
the caller's business (see ``certfleet csr``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from .model import PrivateKey, key_description

__all__ = [
    "KEY_TYPES",
    "CsrSubject",
    "KeyFormat",
    "build_csr",
    "csr_pem",
    "generate_private_key",
    "native_key_format",
    "normalize_dns_name",
    "private_key_pem",
    "profile_key_pem",
    "stem_for_name",
]

KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384")
KeyFormat = Literal["pkcs1", "pkcs8", "sec1"]

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ec-p256": ec.SECP256R1,
    "ec-p384": ec.SECP384R1,
}
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# X.520 upper bound for commonName (RFC 5280 ub-common-name); CAs refuse longer.
_CN_MAX = 64


def generate_private_key(key_type: str) -> PrivateKey:
    """A fresh private key of ``key_type`` (one of :data:`KEY_TYPES`).

    Raises ValueError naming the allowed values for any other type.
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    return ec.generate_private_key(_CURVES[key_type]())


def normalize_dns_name(name: str) -> str:
    """``name`` lower-cased, without a trailing dot, checked as a certificate DNS name.

    An internationalised name is converted to its xn-- form (IDNA).
    A wildcard is allowed as the whole left-most label only (``*.example.com``).
    Raises ValueError quoting the name for empty labels, spaces, other
    characters, a misplaced wildcard or a name longer than DNS allows.
    """
    if not name or not name.strip():
        raise ValueError("a DNS name is empty")
    if name != name.strip() or " " in name:
        raise ValueError(f"DNS name {name!r} contains a space")
    lowered = name.lower() if name.isascii() else _to_a_labels(name)
    if lowered.endswith(".") and not lowered.endswith(".."):
        lowered = lowered[:-1]
    if len(lowered) > 253:
        raise ValueError(f"DNS name {name!r} is longer than 253 characters")
    labels = lowered.split(".")
    for position, label in enumerate(labels):
        if not label:
            raise ValueError(f"DNS name {name!r} has an empty label")
        if "*" in label:
            if label != "*" or position != 0:
                raise ValueError(
                    f"DNS name {name!r} has a wildcard outside the whole left-most label"
                )
            if len(labels) < 2:
                raise ValueError(f"DNS name {name!r} is a wildcard without a domain")
            continue
        if not _LABEL.match(label):
            raise ValueError(
                f"DNS name {name!r} has label {label!r} that is not letters, digits and "
                "inner hyphens (at most 63 characters)"
            )
    return lowered


def _to_a_labels(name: str) -> str:
    """An internationalised name in its ASCII (xn--) form, as CAs and clients compare it.

    ``Bücher.example`` becomes ``xn--bcher-kva.example``; a label the IDNA codec
    cannot convert is refused with ValueError quoting the name.
    """
    labels = []
    for label in name.split("."):
        if label.isascii():
            labels.append(label.lower())
            continue
        try:
            labels.append(label.encode("idna").decode("ascii").lower())
        except UnicodeError:
            raise ValueError(
                f"DNS name {name!r} is not ASCII and cannot be converted to its xn-- "
                "form; write it in that form"
            ) from None
    return ".".join(labels)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(normalize_dns_name(name))


@dataclass(frozen=True)
class CsrSubject:
    """The subject fields of a CSR besides its common name (None: not in the subject)."""

    organization: str | None = None
    organizational_unit: str | None = None
    locality: str | None = None
    state: str | None = None
    country: str | None = None
    email: str | None = None


class CsrSubjectFields(TypedDict, total=False):
    """:class:`CsrSubject` as keyword arguments."""

    organization: str | None
    organizational_unit: str | None
    locality: str | None
    state: str | None
    country: str | None
    email: str | None


def build_csr(
    private_key: PrivateKey,
    common_name: str,
    sans: Sequence[str] = (),
    subject: CsrSubject | None = None,
    **fields: Unpack[CsrSubjectFields],
) -> x509.CertificateSigningRequest:
    """A CSR for ``common_name`` and ``sans``, signed with SHA-256.

    ``subject`` (or the same as keyword ``fields``): the other subject fields.

    The subject alternative names always start with the common name (CAs and
    TLS clients ignore the CN); duplicates are dropped. IP addresses become
    IP SANs, everything else a DNS name (wildcards as ``*.example.com``).
    Raises ValueError quoting the bad value: an invalid name, a country that
    is not two letters, an e-mail address without ``@``, a CN over 64 characters.
    """
    if isinstance(sans, str):
        raise TypeError("sans must be a sequence of names, not a single string")
    cn = common_name.strip() if common_name else ""
    if not cn:
        raise ValueError("the common name is empty")
    if len(cn) > _CN_MAX:
        raise ValueError(
            f"common name {cn!r} is longer than {_CN_MAX} characters; "
            "use a shorter CN and put the long name in a SAN"
        )
    names: list[x509.GeneralName] = []
    for raw in (cn, *sans):
        general = _general_name(raw)
        if general not in names:
            names.append(general)
    first = names[0]
    subject_cn = str(first.value) if isinstance(first, x509.DNSName) else cn

    if subject is None:
        subject = CsrSubject(**fields)
    elif fields:
        raise TypeError("build_csr takes a subject or keyword fields, not both")
    attributes = _subject_attributes(subject, subject_cn)

    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    # Ed25519/Ed448 sign without a separate digest; everything else uses SHA-256.
    algorithm = (
        None
        if isinstance(private_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        else hashes.SHA256()
    )
    return builder.sign(private_key, algorithm)


def _subject_attributes(subject: CsrSubject, subject_cn: str) -> list[x509.NameAttribute[str]]:
    """The CSR's subject, country first, the e-mail address last. Raises ValueError."""
    country, email = subject.country, subject.email
    attributes: list[x509.NameAttribute[str]] = []
    if country is not None:
        if len(country) != 2 or not country.isascii() or not country.isalpha():
            raise ValueError(f"country {country!r} is not a two-letter ISO 3166 code")
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country.upper()))
    for oid, value, what in (
        (NameOID.STATE_OR_PROVINCE_NAME, subject.state, "state"),
        (NameOID.LOCALITY_NAME, subject.locality, "locality"),
        (NameOID.ORGANIZATION_NAME, subject.organization, "organization"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, subject.organizational_unit,
         "organizational unit"),
    ):
        if value is not None:
            if not value.strip():
                raise ValueError(f"{what} {value!r} is empty")
            attributes.append(x509.NameAttribute(oid, value.strip()))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, subject_cn))
    if email is not None:
        if "@" not in email or " " in email or not email.isascii():
            raise ValueError(f"e-mail address {email!r} is not of the form user@domain")
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return attributes


def native_key_format(key: PrivateKey) -> KeyFormat:
    """The traditional (OpenSSL "Apache compatible") format of ``key``.

    ``pkcs1`` for RSA, ``sec1`` for EC, ``pkcs8`` for types without one.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return "pkcs1"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "sec1"
    return "pkcs8"


def profile_key_pem(key: PrivateKey, key_format: str) -> bytes:
    """``key`` as a device profile's ``key_format`` asks for it, unencrypted.

    ``"pkcs1"`` means the traditional form (PKCS#1 for RSA, SEC1 for EC; PKCS#8
    for key types without one); anything else is PKCS#8.
    """
    native = native_key_format(key)
    return private_key_pem(key, native if key_format == "pkcs1" and native != "pkcs8" else "pkcs8")


def private_key_pem(key: PrivateKey, fmt: str = "pkcs8", passphrase: bytes | None = None) -> bytes:
    """``key`` as PEM in ``fmt``: ``pkcs1`` (RSA), ``sec1`` (EC) or ``pkcs8``.

    With a ``passphrase`` the result is always encrypted PKCS#8
    (``BEGIN ENCRYPTED PRIVATE KEY``, PBES2/AES-256), whatever ``fmt`` says:
    the legacy ``Proc-Type: 4,ENCRYPTED`` form is not written. Raises
    ValueError for an unknown format, a format that does not fit the key
    type, or an empty passphrase.
    """
    if fmt not in ("pkcs1", "pkcs8", "sec1"):
        raise ValueError(f"key format {fmt!r} is not one of pkcs1, pkcs8, sec1")
    if passphrase is not None:
        if not passphrase:
            raise ValueError("the passphrase for the private key is empty")
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    if fmt == "pkcs8":
        private_format = serialization.PrivateFormat.PKCS8
    else:
        if native_key_format(key) != fmt:
            kind = key_description(key)[0].upper()
            raise ValueError(f"key format {fmt!r} does not fit the {kind} key")
        private_format = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    )


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR as PEM (``BEGIN CERTIFICATE REQUEST``), what every CA portal accepts."""
    return csr.public_bytes(serialization.Encoding.PEM)


def stem_for_name(name: str) -> str:
    """A file-name (and keystore-alias) safe form of a certificate name.

    ``*`` becomes ``wildcard`` (``*.example.com`` -> ``wildcard.example.com``),
    the result is lower-cased, and anything but letters, digits, ``.``, ``-``
    and ``_`` becomes ``_`` so that the name is valid on Windows too.
    """
    stem = name.strip().lower().replace("*", "wildcard")
    stem = re.sub(r"[^a-z0-9._-]", "_", stem).strip(".")
    return stem or "certificate"
