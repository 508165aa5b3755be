"""Shared material of the lab SBC: constants, the lab CA and key, certificate helpers.

The lab emulates an independent device, so it uses ``cryptography`` directly
and never ``certfleet.pki``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..ca import LabCA

API_PREFIX = "/api/v1"
DEFAULT_CONTEXTS = ("default", "SIP-TLS", "Teams")
DEFAULT_BINDINGS: Mapping[str, int] = {"management": 0, "sip": 1}
LabKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# ---- shared lab material ---------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _shared_material() -> tuple[LabCA, rsa.RSAPrivateKey]:
    """One CA and one RSA key for every lab SBC of a process: starting 100 is cheap."""
    ca = LabCA(name="certfleet Lab SBC")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ca, key


def _device_certificate(ca: LabCA, key: LabKey, name: str) -> x509.Certificate:
    """The factory certificate of a lab device: its name, localhost and 127.0.0.1."""
    return ca.issue(
        [f"{name}.lab.invalid", "localhost"], key=key, ip_addresses=["127.0.0.1"], days=90
    ).leaf


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _key_pem(key: PrivateKeyTypes) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def _public_der(key_or_cert: PrivateKeyTypes | x509.Certificate) -> bytes:
    data: bytes = key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@functools.lru_cache(maxsize=512)
def _stored_key(key_pem: bytes) -> tuple[bytes, int]:
    """(SubjectPublicKeyInfo DER, key size) of a key the lab stores.

    Cached and loaded without RSA validation: stored keys were validated on
    upload (or made by the lab), and a validated RSA load costs ~30 ms of
    CPU, which a lab of 100 devices cannot pay on every request.
    """
    key = serialization.load_pem_private_key(key_pem, None, unsafe_skip_rsa_key_validation=True)
    size = getattr(key, "key_size", None) or getattr(getattr(key, "curve", None), "key_size", 0)
    return _public_der(key), int(size or 0)


@functools.lru_cache(maxsize=64)
def _uploaded_key(data: bytes, password: bytes | None) -> PrivateKeyTypes:
    """An uploaded key, fully validated once: an estate uploads the same key to every device."""
    return serialization.load_pem_private_key(data, password)


@functools.lru_cache(maxsize=64)
def _stored_pem(data: bytes, password: bytes | None) -> bytes:
    """How the lab stores an uploaded key: unencrypted PKCS#8."""
    return _key_pem(_uploaded_key(data, password))


def _split_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in ``data`` (PEM). Raises ValueError when there is none."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError("not a PEM certificate")
    return list(x509.load_pem_x509_certificates(data))


def _chain_for(certs: list[x509.Certificate], store: Sequence[bytes]) -> list[x509.Certificate]:
    """The chain a context sends: uploaded extras, then intermediates from its trusted store.

    Mediant SBCs send the intermediates they find in the context's trusted
    root store; the lab does the same (self-signed roots are never sent).
    """
    chain = list(certs[1:])
    pool = [x509.load_pem_x509_certificate(pem) for pem in store]
    current = chain[-1] if chain else certs[0]
    for _ in range(8):
        issuer = next((c for c in pool if c.subject == current.issuer
                       and c.subject != c.issuer and c not in chain), None)
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return chain

