"""Trust checked inside the TLS handshake, before a single request byte is written.

httpx (through httpcore) opens a TCP connection, runs the TLS handshake with
``start_tls`` and only then writes the request. :class:`CheckedTransport`
gives httpcore a network backend whose streams call a check on the peer
certificate right after the handshake: a certificate that fails is never
written to, the stream is closed and the check's exception (a
:class:`~certfleet.errors.HostKeyError`) reaches the caller. Every connection
the client opens goes through it, so a connection opened later (keep-alive
expired, a reconnect after a drop) is checked as the first one was.

Also the place for the SSL contexts of management connections (built once
per trust setting and shared) and for the words of a strict X.509 failure.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterable

import httpcore
import httpx

from .netstream import AsyncioBackend, SocketOption

__all__ = [
    "CheckedTransport",
    "PeerCheck",
    "ca_context",
    "default_context",
    "no_verify_context",
    "strict_failure",
    "verify_error_in",
]

# Called with the DER of the peer certificate (None when there is none); raises to refuse.
PeerCheck = Callable[[bytes | None], None]


class _CheckedStream(httpcore.AsyncNetworkStream):
    """A TCP stream whose ``start_tls`` checks the peer before returning the TLS stream."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, check: PeerCheck) -> None:
        self._stream = stream
        self._check = check

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        try:
            ssl_object = tls.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            self._check(der)
        except BaseException:
            await tls.aclose()
            raise
        return tls


class _CheckingBackend(AsyncioBackend):
    """asyncio's own connections (see :mod:`.netstream`), each one checked by ``check``
    once its TLS handshake is done, before a byte of the request is written."""

    def __init__(self, check: PeerCheck) -> None:
        self._check = check

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _CheckedStream(await super().connect_tcp(
            host, port, timeout, local_address, socket_options), self._check)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport (HTTP/1.1, no proxy from the environment) whose every
    connection runs ``check`` on the peer certificate after the handshake."""

    def __init__(self, ssl_context: ssl.SSLContext, check: PeerCheck,
                 limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        # httpx builds its pool without a network backend argument: build it again
        # with the same settings and the checking backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_CheckingBackend(check),
        )


@functools.lru_cache(maxsize=4)
def no_verify_context() -> ssl.SSLContext:
    """The handshake context of a pinned (or insecure) connection: the pin check
    replaces chain and name verification. Shared: an SSLContext is read-only here."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.lru_cache(maxsize=32)
def ca_context(ca_pem: bytes, x509_strict: bool | None) -> ssl.SSLContext:
    """A verifying context trusting ``ca_pem``. ``x509_strict``: None keeps what
    this Python's ``ssl.create_default_context`` sets (strict from 3.13 on), True
    sets ``VERIFY_X509_STRICT``, False clears it (and only it). Raises ValueError
    or ssl.SSLError when ``ca_pem`` holds no usable certificate."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
    _set_strict(ctx, x509_strict)
    return ctx


@functools.lru_cache(maxsize=4)
def default_context(x509_strict: bool | None) -> ssl.SSLContext:
    """A verifying context trusting what httpx trusts by default (certifi's roots)."""
    ctx = httpx.create_ssl_context(verify=True, trust_env=False)
    _set_strict(ctx, x509_strict)
    return ctx


def _set_strict(ctx: ssl.SSLContext, x509_strict: bool | None) -> None:
    if x509_strict is True:
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    elif x509_strict is False:
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT


def verify_error_in(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind an httpx/httpcore error, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# OpenSSL's words for the checks that VERIFY_X509_STRICT adds → ours.
_STRICT_CHECKS = {
    "missing authority key identifier": "has no Authority Key Identifier",
    "missing subject key identifier": "has no Subject Key Identifier",
    "basic constraints of ca cert not marked critical":
        "has a CA certificate whose Basic Constraints are not marked critical",
    "ca cert does not include key usage extension":
        "has a CA certificate without a Key Usage extension",
    "empty subject alternative name extension": "has an empty Subject Alternative Name",
    "subject name is empty": "has an empty subject",
    "invalid or inconsistent certificate extension": "has an invalid or inconsistent extension",
}


def strict_reason(x509_strict: bool | None) -> str:
    """Why a strict-only check applied: the setting asked for it, or this Python's default."""
    import sys

    if x509_strict:
        return "strict X.509 verification is on (x509_strict)"
    return (f"Python {sys.version_info.major}.{sys.version_info.minor} rejects such "
            "certificates by default (from 3.13 on)")


def strict_failure(error: ssl.SSLCertVerificationError) -> str | None:
    """``"has no Authority Key Identifier"`` when ``error`` comes from a check that
    only strict X.509 verification makes; None for any other verification error."""
    words = str(getattr(error, "verify_message", "") or "").strip().lower()
    return next((ours for theirs, ours in _STRICT_CHECKS.items() if theirs in words), None)
