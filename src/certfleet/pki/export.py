"""A bundle written in the format a device or tool wants.

One entry point, :func:`export_bundle`, returns bytes; writing them is the
caller's business (private material through ``certfleet.fsutil``).

PKCS#12 comes in two flavours because the modern one (PBES2, PBKDF2,
AES-256-CBC, HMAC-SHA-256, the OpenSSL 3 default) is unreadable by older
Java releases and many appliances, while the legacy one (3DES, SHA-1 MAC)
is what they read. RC2-40 is not offered: OpenSSL 3 reads it only with
the legacy provider.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ..errors import ConfigError, InputError, PasswordError, PrivateKeyError
from .keygen import native_key_format, private_key_pem, stem_for_name
from .model import Bundle, PrivateKey, certificates_pem, key_description
from .quiet import quietly

__all__ = [
    "FORMATS",
    "KEY_FORMATS",
    "PASSWORD_FORMATS",
    "PFX_KDF_ROUNDS",
    "SECRET_FORMATS",
    "certificate_label",
    "check_export_options",
    "export_bundle",
    "require_key",
]

FORMATS = (
    "pem",
    "chain",
    "fullchain",
    "der",
    "key-pkcs1",
    "key-pkcs8",
    "key-pkcs8-encrypted",
    "pfx",
    "pfx-legacy",
    "jks",
    "p7b",
)
#: Formats that cannot be written without the private key.
KEY_FORMATS = frozenset({"key-pkcs1", "key-pkcs8", "key-pkcs8-encrypted", "pfx", "pfx-legacy"})
#: Formats that need an output password.
PASSWORD_FORMATS = frozenset({"key-pkcs8-encrypted", "pfx", "pfx-legacy", "jks"})
#: Formats whose output carries the private key (when the bundle has one): write them 0600.
SECRET_FORMATS = KEY_FORMATS | {"jks"}
#: PBKDF2 / PKCS#12 KDF iterations: OpenSSL's own default, which every reader accepts.
PFX_KDF_ROUNDS = 2048


def certificate_label(cert: x509.Certificate) -> str:
    """A human name for ``cert``: its CN, else its first DNS SAN, else its subject."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns and str(cns[0].value).strip():
        return str(cns[0].value).strip()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            return dns[0]
    except x509.ExtensionNotFound:
        pass
    return cert.subject.rfc4514_string() or "certificate"


def _with_root(bundle: Bundle) -> list[x509.Certificate]:
    """Intermediates leaf side first, then the root when the bundle has it."""
    certs = list(bundle.chain)
    if bundle.root is not None:
        certs.append(bundle.root)
    return certs


def require_key(bundle: Bundle, needed_by: str) -> PrivateKey:
    """The bundle's private key; PrivateKeyError naming what ``needed_by`` it when absent."""
    if bundle.private_key is None:
        raise PrivateKeyError(
            f"bundle for {certificate_label(bundle.leaf)!r} has no private key; "
            f"{needed_by} needs it",
            hint="add the key file to the input",
        )
    return bundle.private_key


def _require_password(password: bytes | None, fmt: str) -> bytes:
    if not password:
        raise PasswordError(
            f"format {fmt!r} is password protected and no output password was given",
            hint="pass --out-password-env VAR (or --out-password-file FILE)",
        )
    return password


def _pfx(bundle: Bundle, key: PrivateKey, password: bytes, *, legacy: bool) -> bytes:
    from cryptography.hazmat.primitives.serialization import pkcs12  # only when writing one

    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(PFX_KDF_ROUNDS)
    if legacy:
        # SHA-1 MAC and 3DES on purpose: the only pair older Java and appliances verify.
        builder = builder.key_cert_algorithm(
            pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC
        ).hmac_hash(hashes.SHA1())
    else:
        builder = builder.key_cert_algorithm(
            pkcs12.PBES.PBESv2SHA256AndAES256CBC
        ).hmac_hash(hashes.SHA256())
    return pkcs12.serialize_key_and_certificates(
        certificate_label(bundle.leaf).encode("utf-8"),
        key,
        bundle.leaf,
        _with_root(bundle),
        builder.build(password),
    )


def _jks(bundle: Bundle, password: bytes) -> bytes:
    import jks  # pyjks: imported here, only this format needs it

    try:
        store_password = password.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PasswordError(
            "the output password for the JKS keystore is not valid UTF-8",
            hint="use a password made of UTF-8 text",
        ) from exc
    der = serialization.Encoding.DER
    if bundle.private_key is not None:
        key_der = bundle.private_key.private_bytes(
            der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        certs = [c.public_bytes(der) for c in (bundle.leaf, *_with_root(bundle))]
        entry = jks.PrivateKeyEntry.new(
            stem_for_name(certificate_label(bundle.leaf)), certs, key_der, "pkcs8"
        )
        entries = [entry]
    else:
        # Without a key the keystore can only be a trust store: one trusted
        # certificate entry per certificate, leaf first.
        entries = []
        aliases: set[str] = set()
        for cert in (bundle.leaf, *_with_root(bundle)):
            base = stem_for_name(certificate_label(cert))
            alias, n = base, 1
            while alias in aliases:
                n += 1
                alias = f"{base}-{n}"
            aliases.add(alias)
            entries.append(jks.TrustedCertEntry.new(alias, cert.public_bytes(der)))
    store = jks.KeyStore.new("jks", entries)
    # saves() encrypts unencrypted key entries with the store password, so the
    # key password equals the store password, as keytool expects by default.
    data: bytes = store.saves(store_password)
    return data


def check_export_options(fmt: str, password: bytes | None) -> None:
    """Check ``fmt`` and ``password`` before any work: what :func:`export_bundle` checks first.

    Raises ConfigError for an unknown format or a password given to a format
    that is not encrypted, PasswordError when an encrypted format has none.
    """
    if fmt not in FORMATS:
        raise ConfigError(
            f"export format {fmt!r} is unknown",
            hint=f"use one of {', '.join(FORMATS)}",
        )
    if password is not None and fmt not in PASSWORD_FORMATS:
        raise ConfigError(
            f"export format {fmt!r} is not encrypted, but an output password was given",
            hint="drop the output password, or use key-pkcs8-encrypted, pfx, pfx-legacy or jks",
        )
    if fmt in PASSWORD_FORMATS:
        _require_password(password, fmt)


@quietly
def export_bundle(bundle: Bundle, fmt: str, password: bytes | None = None) -> bytes:
    """``bundle`` as the bytes of format ``fmt`` (one of :data:`FORMATS`).

    - ``pem`` / ``der``: the leaf; ``chain``: the intermediates, leaf side
      first; ``fullchain``: leaf then intermediates; ``p7b``: leaf,
      intermediates and root (when present) as PEM PKCS#7 (a DER SET, so
      readers see them sorted by encoding, not in chain order).
    - ``key-pkcs1``: RSA as ``BEGIN RSA PRIVATE KEY``, EC as SEC1
      ``BEGIN EC PRIVATE KEY`` (the "Apache compatible" form);
      ``key-pkcs8``: ``BEGIN PRIVATE KEY``; ``key-pkcs8-encrypted``:
      ``BEGIN ENCRYPTED PRIVATE KEY`` with ``password``.
    - ``pfx``: key, leaf, intermediates and root, AES-256-CBC/PBKDF2 with a
      SHA-256 MAC; ``pfx-legacy``: the same with 3DES and a SHA-1 MAC.
      The friendly name is the leaf's CN.
    - ``jks``: one private key entry (alias from the leaf CN, chain leaf to
      root), store and key password both ``password``; without a key,
      trusted certificate entries only.

    Raises ConfigError for an unknown format or a password given to a
    format that is not encrypted, InputError for ``chain`` without
    intermediates, PrivateKeyError when a key format has no key,
    PasswordError when an encrypted format has no password.
    """
    check_export_options(fmt, password)
    if fmt in KEY_FORMATS:
        return _export_key(bundle, fmt, require_key(bundle, f"format {fmt!r}"), password)

    if fmt == "pem":
        return certificates_pem([bundle.leaf])
    if fmt == "der":
        return bundle.leaf.public_bytes(serialization.Encoding.DER)
    if fmt == "chain":
        if not bundle.chain:
            raise InputError(
                f"bundle for {certificate_label(bundle.leaf)!r} has no intermediates "
                "to write as a chain",
                hint="add the CA's intermediate certificate file to the input, "
                "or export fullchain/pem instead",
            )
        return certificates_pem(bundle.chain)
    if fmt == "fullchain":
        return certificates_pem(bundle.fullchain)
    if fmt == "p7b":
        from cryptography.hazmat.primitives.serialization import pkcs7

        return pkcs7.serialize_certificates(
            [bundle.leaf, *_with_root(bundle)], serialization.Encoding.PEM
        )
    assert fmt == "jks" and password is not None  # FORMATS is exhausted above
    return _jks(bundle, password)


def _export_key(bundle: Bundle, fmt: str, key: PrivateKey, password: bytes | None) -> bytes:
    if fmt == "key-pkcs1":
        native = native_key_format(key)
        if native == "pkcs8":
            raise PrivateKeyError(
                f"a {key_description(key)[0]} key has no PKCS#1/SEC1 form",
                hint="export key-pkcs8 instead",
            )
        return private_key_pem(key, native)
    if fmt == "key-pkcs8":
        return private_key_pem(key, "pkcs8")
    assert password is not None  # the remaining key formats are in PASSWORD_FORMATS
    if fmt == "key-pkcs8-encrypted":
        return private_key_pem(key, "pkcs8", passphrase=password)
    return _pfx(bundle, key, password, legacy=fmt == "pfx-legacy")
