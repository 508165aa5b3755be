"""Certificates the pki and toolkit tests build by hand."""

from __future__ import annotations

import datetime as dt
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["odd_certificate"]


def odd_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate with serial -1234 and country 'USA' (both seen in the wild,
    both make the parsing library warn), as DER, and its key as PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "USA", _validate=False),
            x509.NameAttribute(NameOID.COMMON_NAME, "odd.example.com"),
        ])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1234)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=300))
            .sign(key, hashes.SHA256())
        )
    der = cert.public_bytes(serialization.Encoding.DER)
    # Serial 1234 is INTEGER 02 02 04 d2; -1234 is 02 02 fb 2e: same length, re-signing
    # is not needed for the loader (the signature simply stops verifying).
    der = der.replace(b"\x02\x02\x04\xd2", b"\x02\x02\xfb\x2e", 1)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return der, key_pem
