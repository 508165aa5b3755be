"""Plain-data descriptions of certificates, keys and CSRs (what ``inspect --json`` prints)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from .bundle import is_ca, issuer_text, safe_spki_sha256, subject_text
from .model import LoadedObject, cert_sha256, key_description
from .names import certificate_names
from .quiet import quietly

__all__ = ["describe_certificate", "describe_csr", "describe_key", "describe_object", "iso_utc"]


def iso_utc(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with a Z: ``2026-11-26T20:00:00Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _public_key_description(obj: x509.Certificate | x509.CertificateSigningRequest) -> tuple[
    str, int | None
]:
    try:
        return key_description(obj.public_key())
    except (ValueError, UnsupportedAlgorithm):
        return "unknown", None


@quietly
def describe_certificate(cert: x509.Certificate) -> dict[str, object]:
    """subject, issuer, serial, sha256, spki_sha256, validity, sans, is_ca, key type/bits."""
    key_type, key_bits = _public_key_description(cert)
    return {
        "type": "certificate",
        "subject": subject_text(cert),
        "issuer": issuer_text(cert),
        "serial": format(cert.serial_number, "x"),
        "sha256": cert_sha256(cert),
        "spki_sha256": safe_spki_sha256(cert),
        "not_before": iso_utc(cert.not_valid_before_utc),
        "not_after": iso_utc(cert.not_valid_after_utc),
        "sans": _sans(cert),
        "is_ca": is_ca(cert),
        "key_type": key_type,
        "key_bits": key_bits,
    }


def _sans(obj: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """Every DNS and IP subjectAltName (no CN fallback: that is certificate_names)."""
    try:
        obj.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    return certificate_names(obj)


@quietly
def describe_csr(csr: x509.CertificateSigningRequest) -> dict[str, object]:
    """subject, sans, key type/bits and spki_sha256 of a CSR."""
    key_type, key_bits = _public_key_description(csr)
    return {
        "type": "csr",
        "subject": subject_text(csr),
        "sans": _sans(csr),
        "key_type": key_type,
        "key_bits": key_bits,
        "spki_sha256": safe_spki_sha256(csr),
    }


def describe_key(obj: LoadedObject) -> dict[str, object]:
    """key type/bits, format, encrypted and spki_sha256 of a loaded private key."""
    key_type, key_bits = key_description(obj.value)
    return {
        "type": "private_key",
        "key_type": key_type,
        "key_bits": key_bits,
        "format": obj.format,
        "encrypted": obj.encrypted,
        "spki_sha256": safe_spki_sha256(obj.value),
    }


@quietly
def describe_object(obj: LoadedObject) -> dict[str, object]:
    """The ``inspect --json`` entry of one loaded object, with ``source`` and ``format``."""
    if isinstance(obj.value, x509.Certificate):
        data = describe_certificate(obj.value)
        data["format"] = obj.format
        data["encrypted"] = obj.encrypted
    elif isinstance(obj.value, x509.CertificateSigningRequest):
        data = describe_csr(obj.value)
        data["format"] = obj.format
    else:
        data = describe_key(obj)
    return {"source": obj.source, "index": obj.index, **data}
