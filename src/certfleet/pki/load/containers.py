"""Containers: PKCS#7 chains, encrypted PKCS#8 keys, PKCS#12 files and Java keystores.

The libraries behind them are imported when a container is met, not before:
a PEM certificate never pays for PKCS#12 or pyjks.
"""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...errors import CertfleetError, CertificateError
from .common import Collector, check_key, corrupt, decrypt, missing_password, wrong_password
from .limits import PbeScan, refuse_absurd_mac

__all__ = ["load_encrypted_pkcs8", "load_jks", "load_pkcs12", "pkcs7_certificates"]


def pkcs7_certificates(der: bytes, source: str) -> list[x509.Certificate]:
    """The certificates of a PKCS#7 (.p7b); one without any is named as such."""
    from cryptography.hazmat.primitives.serialization import pkcs7

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


def load_encrypted_pkcs8(
    der: bytes, password: bytes | None, source: str, what: str
) -> object:
    """Decrypt an EncryptedPrivateKeyInfo after checking what its KDF asks for."""
    if password is None:
        raise missing_password(source, what)
    PbeScan(der).refuse_absurd(source, what)
    return decrypt(lambda: serialization.load_der_private_key(der, password), source, what)


def load_pkcs12(data: bytes, password: bytes | None, out: Collector) -> None:
    """PKCS#12 with the password, then with b"" and None (files without one)."""
    source = out.source
    what = "PKCS#12 file"
    refuse_absurd_mac(data, source)
    scan = PbeScan(data)
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
    from cryptography.hazmat.primitives.serialization import pkcs12

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
                raise corrupt(source, what, exc) from exc
            continue
        used = candidate
        break
    if p12 is None:
        raise wrong_password(source, what) if password else missing_password(source, what)
    # A file without a MAC and without encryption opens with any password.
    encrypted = bool(used) and (scan.encrypted or not scan.walked)
    if p12.key is not None:
        out.add("private_key", "pkcs12", check_key(p12.key, source, what), encrypted)
    if p12.cert is not None:
        out.add("certificate", "pkcs12", p12.cert.certificate, encrypted)
    for extra in p12.additional_certs:
        out.add("certificate", "pkcs12", extra.certificate, encrypted)


def load_jks(data: bytes, password: bytes | None, out: Collector) -> None:
    """JKS / JCEKS via pyjks; the store and key passwords are both ``password``."""
    import jks  # imported here: pyjks pulls in pyasn1, a cost other formats need not pay

    source = out.source
    what = "Java keystore"
    try:
        text_password = password.decode("utf-8") if password is not None else None
    except UnicodeDecodeError as exc:
        raise wrong_password(source, what) from exc
    try:
        store = jks.KeyStore.loads(
            data, text_password, try_decrypt_keys=text_password is not None
        )
    except jks.util.KeystoreSignatureException as exc:
        raise wrong_password(source, what) from exc
    except CertfleetError:
        raise
    except Exception as exc:  # pyjks and pyasn1 raise many unrelated types on bad data
        raise corrupt(source, what, exc) from exc
    try:
        for alias in sorted(store.private_keys):
            entry = store.private_keys[alias]
            if not entry.is_decrypted():
                if text_password is None:
                    raise missing_password(source, f"{what} entry {alias!r}")
                raise wrong_password(source, f"{what} entry {alias!r}")
            key = serialization.load_der_private_key(entry.pkey_pkcs8, None)
            out.add("private_key", "jks", check_key(key, source, what), True)
            for _cert_type, cert_der in entry.cert_chain:
                out.add("certificate", "jks", x509.load_der_x509_certificate(cert_der), True)
        for alias in sorted(store.certs):
            cert_der = store.certs[alias].cert
            out.add("certificate", "jks", x509.load_der_x509_certificate(cert_der))
    except CertfleetError:
        raise
    except Exception as exc:  # entries are pyjks objects: any of its errors may surface
        raise corrupt(source, what, exc) from exc
