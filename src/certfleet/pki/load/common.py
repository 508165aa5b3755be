"""What every reader of the loader shares: its errors and the collector of objects."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from ...errors import CertificateError, PasswordError
from ..model import LoadedObject, ObjectType, PrivateKey

__all__ = [
    "PARSE_ERRORS",
    "PASSWORD_HINT",
    "Collector",
    "check_key",
    "corrupt",
    "decrypt",
    "is_panic",
    "missing_password",
    "nothing_found",
    "wrong_password",
]

PASSWORD_HINT = "give the password with --password-env VAR or --password-file PATH"

# The errors parsing libraries raise on malformed input. pyjks and its pyasn1
# dependency raise their own trees on top; those are caught where pyjks is called.
PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    IndexError,
    KeyError,
    OverflowError,
    UnicodeDecodeError,
    x509.InvalidVersion,
)
_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def is_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException: a Rust panic in a parser, raised as a BaseException.

    Its module (``pyo3_runtime``) cannot be imported, so it is known by name.
    """
    return type(exc).__name__ == "PanicException"


def missing_password(source: str, what: str) -> PasswordError:
    return PasswordError(
        f"{source!r} {what} is encrypted and no password was given",
        hint=PASSWORD_HINT,
        path=source,
        reason="missing",
    )


def wrong_password(source: str, what: str) -> PasswordError:
    return PasswordError(
        f"{source!r} {what} could not be decrypted: the password is wrong",
        hint="check the password; " + PASSWORD_HINT,
        path=source,
        reason="wrong",
    )


_UNSUPPORTED_CURVE = re.compile(r"Curve ([0-9.]+|\w+) is not supported")
_RUST_PARSE_ERROR = re.compile(r"ParseError \{ kind: (\w+)")


def corrupt(source: str, what: str, exc: BaseException | None = None) -> CertificateError:
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


def nothing_found(source: str, skipped: Sequence[str] = ()) -> CertificateError:
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


def check_key(key: object, source: str, what: str) -> PrivateKey:
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise CertificateError(
            f"{source!r} {what} holds a key of type "
            f"{type(key).__name__.removesuffix('PrivateKey')}, which cannot serve TLS "
            "(it cannot sign)",
            hint="use an RSA or EC key",
            path=source,
        )
    return key


class Collector:
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
        raise corrupt(source, what, exc) from exc


def decrypt(load: Callable[[], object], source: str, what: str) -> object:
    """Run a decrypting loader; a ValueError there means the password is wrong."""
    try:
        return load()
    except UnsupportedAlgorithm as exc:
        raise corrupt(source, what, exc) from exc
    except (ValueError, TypeError) as exc:
        raise wrong_password(source, what) from exc
    except BaseException as exc:
        if is_panic(exc):  # the parser met a malformed input it did not expect
            raise corrupt(source, what, ValueError("the parser rejected it")) from exc
        raise
