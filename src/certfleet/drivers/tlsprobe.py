"""Ask a TLS listener which certificate it serves.

This is observation, not trust: the handshake accepts any certificate because
its purpose is to report what is served (the estate view, verification after
a deploy, ``scan``). Trust decisions for management connections live in the
drivers.

The handshake runs in pyOpenSSL over memory BIOs, fed by asyncio streams, so
thousands run concurrently in one thread. The chain is recorded as the server
sends it, during the handshake: a listener that asks for a client certificate
and then refuses us (mutual TLS, as Microsoft Teams Direct Routing does) still
tells what it serves, on TLS 1.2 (where it aborts the handshake) and TLS 1.3
(where it refuses after the client's Finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from OpenSSL import SSL

from ..errors import DeviceConnectionError, DeviceTimeoutError, VerificationError
from ..model import Listener as Listener
from ..pki.model import cert_sha256
from ..pki.quiet import quiet_crypto_warnings

if TYPE_CHECKING:
    from OpenSSL import crypto

__all__ = [
    "Listener",
    "ProbeResult",
    "fetch_served_certificate",
    "handshake",
    "probe",
    "wait_for_served",
]

_READ_SIZE = 65536
# After a TLS 1.3 handshake in which the server asked for a client certificate, how
# long to wait for its verdict (an alert, or session tickets) before taking it as accepted.
_VERDICT_WAIT = 2.0


@dataclass(frozen=True)
class ProbeResult:
    """What one handshake showed.

    ``certificate`` is the leaf served (None when none was read, then
    ``error`` says why); ``chain`` every certificate in the order sent.
    ``client_cert_requested``: the server asked for a client certificate;
    ``handshake_completed``: the server accepted the handshake (False when it
    refused us for want of a client certificate, though the chain was read).
    ``error_kind``: ``timeout``, ``connect`` or ``tls`` when ``error`` is set.
    ``failure`` names what went wrong, apart from the TLS handshake itself:
    ``refused`` (the TCP connection was refused), ``unresolved`` (the name does
    not resolve), ``unreachable`` (no route, network down), ``connect-timeout``
    (no answer to the TCP connection), ``tls-timeout`` (connected, no TLS
    answer in time), ``tls`` (connected, the handshake failed); None when the
    certificate was read and the handshake completed.
    """

    listener: Listener
    certificate: x509.Certificate | None
    error: str | None = None
    chain: tuple[x509.Certificate, ...] = ()
    client_cert_requested: bool = False
    handshake_completed: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    error_kind: str | None = None
    failure: str | None = None

    @property
    def answered(self) -> bool:
        """A TCP connection was made (whatever the TLS handshake then did)."""
        return self.failure not in ("refused", "unresolved", "unreachable", "connect-timeout")

    @property
    def sha256(self) -> str | None:
        return cert_sha256(self.certificate) if self.certificate is not None else None

    @property
    def observed(self) -> bool:
        """The served certificate was read (whether or not the server then refused us)."""
        return self.certificate is not None

    @property
    def mtls(self) -> bool:
        """Served certificate read and a client certificate asked for (mutual TLS)."""
        return self.certificate is not None and self.client_cert_requested


class _State:
    """Per-connection notes taken by the OpenSSL callbacks."""

    __slots__ = ("cert_requested", "verified")

    def __init__(self) -> None:
        self.cert_requested = False
        self.verified: list[tuple[int, crypto.X509]] = []


def _on_verify(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int,
) -> bool:
    state = conn.get_app_data()
    if isinstance(state, _State):
        state.verified.append((depth, cert))
    return True  # observation: accept whatever is served


def _on_info(conn: SSL.Connection, where: int, ret: int) -> None:
    if where & SSL.SSL_CB_LOOP and b"certificate request" in (conn.get_state_string() or b""):
        state = conn.get_app_data()
        if isinstance(state, _State):
            state.cert_requested = True


_CONTEXT: SSL.Context | None = None


def _context() -> SSL.Context:
    global _CONTEXT
    if _CONTEXT is None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        # Observe old devices too: every protocol version and cipher OpenSSL still has.
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
        with contextlib.suppress(SSL.Error):
            ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        ctx.set_verify(SSL.VERIFY_PEER, _on_verify)
        ctx.set_info_callback(_on_info)
        _CONTEXT = ctx
    return _CONTEXT


def _sni(name: str) -> bytes | None:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return None
    except ValueError:
        pass
    try:
        return name.rstrip(".").encode("idna")
    except UnicodeError:
        return None


def _flush(conn: SSL.Connection, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            data = conn.bio_read(_READ_SIZE)
        except SSL.WantReadError:
            return
        if not data:
            return
        writer.write(data)


def _ssl_reason(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        parts = [str(item[-1]) for item in args[0] if isinstance(item, tuple) and item]
        if parts:
            return "; ".join(parts)
    if isinstance(exc, SSL.SysCallError):
        return "the connection was closed during the handshake"
    return str(exc) or type(exc).__name__


class _Closed(Exception):
    """The peer closed the connection."""


async def _exchange(
    conn: SSL.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Send what OpenSSL has to send, then feed it what the peer answers."""
    _flush(conn, writer)
    await writer.drain()
    data = await reader.read(_READ_SIZE)
    if not data:
        raise _Closed
    conn.bio_write(data)


async def _verdict(
    conn: SSL.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    wait: float,
) -> str | None:
    """After a TLS 1.3 handshake with a certificate request: the server's refusal, if any."""
    _flush(conn, writer)
    await writer.drain()
    try:
        async with asyncio.timeout(wait):
            data = await reader.read(_READ_SIZE)
    except TimeoutError:
        return None
    if not data:
        return "the server closed the connection after the handshake"
    conn.bio_write(data)
    try:
        conn.recv(_READ_SIZE)
    except (SSL.WantReadError, SSL.ZeroReturnError):
        return None
    except SSL.Error as exc:
        return _ssl_reason(exc)
    return None


def _chain(conn: SSL.Connection, state: _State) -> tuple[x509.Certificate, ...]:
    with contextlib.suppress(Exception):
        sent = conn.get_peer_cert_chain(as_cryptography=True)
        if sent:
            return tuple(sent)
    with contextlib.suppress(Exception):
        leaf = conn.get_peer_certificate(as_cryptography=True)
        if leaf is not None:
            return (leaf,)
    # What the verification callback saw, leaf first.
    seen: dict[int, x509.Certificate] = {}
    for depth, cert in state.verified:
        with contextlib.suppress(Exception):
            seen.setdefault(depth, cert.to_cryptography())
    return tuple(seen[depth] for depth in sorted(seen))


def _unparsed(conn: SSL.Connection, state: _State) -> str | None:
    """Why the certificate the server sent could not be parsed (None: none was sent).

    OpenSSL accepts certificates that ``cryptography`` refuses (a PrintableString
    with ``_`` or ``@`` in a name, say): such a server did present a certificate.
    """
    sent: list[crypto.X509] = []
    with contextlib.suppress(Exception):
        sent = list(conn.get_peer_cert_chain() or ())
    if not sent:
        with contextlib.suppress(Exception):
            leaf = conn.get_peer_certificate()
            sent = [leaf] if leaf is not None else []
    if not sent:
        sent = [cert for _depth, cert in sorted(state.verified, key=lambda item: item[0])]
    if not sent:
        return None
    from OpenSSL import crypto

    try:
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, sent[0])
    except Exception as exc:  # any wrapper failure: "could not be parsed"
        return f"{type(exc).__name__}: {exc}"
    try:
        with quiet_crypto_warnings():
            x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return _parse_reason(exc)
    return None


def _parse_reason(exc: ValueError) -> str:
    """The parser's complaint, on one line and short (it can quote the whole value path)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"


def _negotiated(conn: SSL.Connection) -> tuple[str | None, str | None]:
    version = cipher = None
    with contextlib.suppress(Exception):
        version = conn.get_protocol_version_name() or None
        if version == "unknown":
            version = None
    with contextlib.suppress(Exception):
        cipher = conn.get_cipher_name()
    return version, cipher


async def handshake(listener: Listener, timeout: float = 10.0) -> ProbeResult:
    """One TLS handshake with ``listener``: never raises (errors are in the result).

    ``listener.server_name`` (else its host, unless an IP address) is sent as SNI.
    """
    state = _State()
    conn: SSL.Connection | None = None
    writer: asyncio.StreamWriter | None = None
    completed = False
    failure: str | None = None
    kind: str | None = None
    connected = False
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(listener.host, listener.port)
            except OSError as exc:
                failure, reason = _connect_failure(exc)
                return ProbeResult(listener, None, f"{listener}: {reason}",
                                   error_kind="connect", failure=failure)
            connected = True
            conn = SSL.Connection(_context(), None)
            conn.set_app_data(state)
            conn.set_connect_state()
            sni = _sni(listener.server_name or listener.host)
            if sni:
                conn.set_tlsext_host_name(sni)
            while True:
                try:
                    conn.do_handshake()
                    completed = True
                    break
                except SSL.WantReadError:
                    pass
                except SSL.Error as exc:
                    failure, kind = _ssl_reason(exc), "tls"
                    with contextlib.suppress(Exception):
                        _flush(conn, writer)  # our alert, politely
                    break
                try:
                    await _exchange(conn, reader, writer)
                except _Closed:
                    failure, kind = "the server closed the connection during the handshake", "tls"
                    break
            if completed and state.cert_requested and conn.get_protocol_version_name() == "TLSv1.3":
                refusal = await _verdict(conn, reader, writer, min(_VERDICT_WAIT, timeout))
                if refusal is not None:
                    completed, failure, kind = False, refusal, "tls"
    except TimeoutError:
        kind = "timeout"
        if connected:
            failure = f"TLS handshake with {listener} timed out after {timeout:g} s"
        else:
            failure = (f"{listener}: no answer to the TCP connection within {timeout:g} s "
                       "(timeout: a silent address, or a firewall that drops)")
    except (OSError, SSL.Error) as exc:
        failure = _ssl_reason(exc) if isinstance(exc, SSL.Error) else (exc.strerror or str(exc))
        kind = "tls"
    except Exception as exc:  # an OpenSSL wrapper surprise must not end a scan
        failure, kind = f"{type(exc).__name__}: {exc}", "tls"
    finally:
        if writer is not None:
            if completed and conn is not None:
                with contextlib.suppress(Exception):
                    conn.shutdown()
                    _flush(conn, writer)
            writer.close()
    chain = _chain(conn, state) if conn is not None else ()
    version, cipher = _negotiated(conn) if conn is not None else (None, None)
    leaf = chain[0] if chain else None
    unparsed = _unparsed(conn, state) if conn is not None and leaf is None else None
    if unparsed is not None:
        # A certificate was sent: say so, whether or not the handshake then went on.
        failure, kind = f"{listener}: the certificate could not be parsed ({unparsed})", "tls"
    elif leaf is None and failure is None:
        failure, kind = f"{listener} completed a handshake without presenting a certificate", "tls"
    if leaf is None and failure is not None and kind == "tls" and unparsed is None:
        failure = f"TLS handshake with {listener} failed: {failure}"
    reached = None
    if not (leaf is not None and completed):
        reached = ("tls-timeout" if connected else "connect-timeout") if kind == "timeout" \
            else "tls"
    return ProbeResult(
        listener,
        leaf,
        None if leaf is not None and completed else failure,
        chain=chain,
        client_cert_requested=state.cert_requested,
        handshake_completed=completed,
        tls_version=version,
        cipher=cipher,
        error_kind=None if leaf is not None and completed else kind,
        failure=reached,
    )


def _connect_failure(exc: OSError) -> tuple[str, str]:
    """What a failed TCP connection was, in words: (failure, reason)."""
    import errno

    if isinstance(exc, socket.gaierror):  # name resolution: its own codes
        return "unresolved", f"the name does not resolve ({exc.strerror or exc})"
    text = (os.strerror(exc.errno) if exc.errno else None) or (
        exc.strerror or str(exc) or type(exc).__name__)
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "refused", "connection refused (nothing listens on the port, or a firewall " \
                          "rejects it)"
    unreachable = {getattr(errno, n) for n in ("EHOSTUNREACH", "ENETUNREACH", "ENETDOWN",
                                                "EHOSTDOWN", "EADDRNOTAVAIL") if hasattr(errno, n)}
    if exc.errno in unreachable:
        return "unreachable", f"unreachable ({text})"
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return "connect-timeout", f"no answer to the TCP connection ({text})"
    return "unreachable", f"cannot connect ({text})"


async def fetch_served_certificate(listener: Listener, timeout: float = 10.0) -> x509.Certificate:
    """Handshake with ``listener`` and return the leaf certificate it presents.

    A listener that asks for a client certificate and refuses us still shows
    its certificate. Raises DeviceConnectionError when no certificate could be
    read, DeviceTimeoutError when it takes longer than ``timeout`` seconds.
    """
    result = await handshake(listener, timeout)
    if result.certificate is not None:
        return result.certificate
    if result.error_kind == "timeout":
        raise DeviceTimeoutError(
            result.error or f"TLS handshake with {listener} timed out",
            hint="check that the device is up and the port is right",
            listener=str(listener),
        )
    raise DeviceConnectionError(
        result.error or f"TLS handshake with {listener} failed",
        hint="check that the device is up and the port is right",
        listener=str(listener),
    )


async def probe(listeners: Sequence[Listener], timeout: float = 10.0) -> list[ProbeResult]:
    """Handshake with every listener concurrently; errors are reported, not raised."""
    return list(await asyncio.gather(*(handshake(item, timeout) for item in listeners)))


async def wait_for_served(
    listeners: Sequence[Listener],
    expected_sha256: str,
    timeout: float = 600.0,
    *,
    first_delay: float = 0.2,
    max_delay: float = 15.0,
    handshake_timeout: float = 10.0,
) -> list[ProbeResult]:
    """Poll every listener, with backoff, until all serve ``expected_sha256``.

    Raises VerificationError naming each listener that still serves something
    else (or is unreachable) when ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    delay = first_delay
    pending = list(listeners)
    done: dict[Listener, ProbeResult] = {}
    last: dict[Listener, ProbeResult] = {}
    while True:
        for result in await probe(pending, min(handshake_timeout, max(timeout, 0.1))):
            last[result.listener] = result
            if result.sha256 == expected_sha256:
                done[result.listener] = result
        pending = [item for item in pending if item not in done]
        if not pending:
            return [done[item] for item in listeners]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            problems = []
            for item in pending:
                seen = last.get(item)
                if seen is None or seen.certificate is None:
                    problems.append(f"{item}: {seen.error if seen else 'not reached'}")
                else:
                    problems.append(f"{item} serves {seen.sha256[:16] if seen.sha256 else '?'}…")
            raise VerificationError(
                f"expected certificate {expected_sha256[:16]}… not served after "
                f"{timeout:g} s: " + "; ".join(problems),
                hint="the device may still be restarting; raise --verify-timeout (inventory: "
                "verify_timeout) or check it",
                expected=expected_sha256,
                listeners=[str(item) for item in pending],
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay)
