"""Loopback TLS servers whose certificate can be swapped while they run.

The lab devices present what they hold, as real devices do: every new
handshake uses the certificate slot's current contents, so a test (or
``openssl s_client``) sees a change the moment the lab device makes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

__all__ = ["CertSlot", "LabHTTPSServer", "LabTLSListener"]


# AudioCodes' TLSVersion of a TLS context: a bit per protocol version, 0 for any.
_TLS_VERSION_BITS = (
    (1, ssl.TLSVersion.TLSv1),
    (2, ssl.TLSVersion.TLSv1_1),
    (4, ssl.TLSVersion.TLSv1_2),
    (8, ssl.TLSVersion.TLSv1_3),
)


def _apply_tls_version(ctx: ssl.SSLContext, tls_version: int) -> None:
    chosen = [version for bit, version in _TLS_VERSION_BITS if tls_version & bit]
    if chosen:
        ctx.minimum_version, ctx.maximum_version = chosen[0], chosen[-1]


class CertSlot:
    """The certificate (+chain) and key a listener presents; thread-safe.

    ``require_client_cert``: refuse a peer without a client certificate
    (mutual TLS, as Teams Direct Routing interfaces do); ``tls_version``:
    the TLSVersion bits of the bound context (4 TLS 1.2 only, 8 TLS 1.3
    only, 0 any).
    """

    def __init__(
        self,
        cert_pem: bytes,
        key_pem: bytes,
        chain_pem: bytes = b"",
        *,
        require_client_cert: bool = False,
        tls_version: int = 0,
    ) -> None:
        self.require_client_cert = require_client_cert
        self.tls_version = tls_version
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="certfleet-lab-tls-"))
        self._generation = 0
        self._context: ssl.SSLContext | None = None
        self.cert_pem = b""
        self.key_pem = b""
        self.chain_pem = b""
        self.set(cert_pem, key_pem, chain_pem)

    def set(self, cert_pem: bytes, key_pem: bytes, chain_pem: bytes = b"") -> None:
        """Present ``cert_pem`` (+ ``chain_pem``) with ``key_pem`` from the next handshake on.

        Raises ssl.SSLError when the key does not match the certificate.
        """
        with self._lock:
            self._generation += 1
            cert_file = self._dir / f"cert{self._generation}.pem"
            key_file = self._dir / f"key{self._generation}.pem"
            cert_file.write_bytes(cert_pem + chain_pem)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key_pem)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(cert_file, key_file)
            finally:
                cert_file.unlink(missing_ok=True)
                key_file.unlink(missing_ok=True)
            _apply_tls_version(ctx, self.tls_version)
            if self.require_client_cert:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cadata=(chain_pem or cert_pem).decode("ascii"))
            self._context = ctx
            self.cert_pem, self.key_pem, self.chain_pem = cert_pem, key_pem, chain_pem

    def context(self) -> ssl.SSLContext:
        with self._lock:
            assert self._context is not None
            return self._context

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


class _TLSMixin:
    slot: CertSlot
    handshake_timeout: float = 10.0

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()  # type: ignore[misc]  # a socketserver mixin
        # The handshake runs in the handler thread (finish_request), so a slow
        # or silent client never blocks the accept loop.
        wrapped = self.slot.context().wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, addr

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object,
    ) -> None:
        if not isinstance(request, ssl.SSLSocket):  # a TCP server's: always one
            return
        try:
            request.settimeout(self.handshake_timeout)
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)  # type: ignore[misc]  # mixin

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object,
    ) -> None:
        """A client that goes away mid-request (a probe that only wanted the handshake, a
        killed deploy) is normal for a device; anything else is a lab bug: print it."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)  # type: ignore[misc]  # mixin


class _Lifecycle:
    """start/stop/context manager for a socketserver run in a daemon thread."""

    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])  # type: ignore[attr-defined]  # the server's

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self.serve_forever,  # type: ignore[attr-defined]  # the server's
            kwargs={"poll_interval": 0.1},
            name=f"lab-{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            # shutdown() waits without a limit for serve_forever to notice; asked from a
            # helper thread, the wait here is bounded and a lab never hangs its caller.
            threading.Thread(target=self.shutdown,  # type: ignore[attr-defined]  # the server's
                             daemon=True).start()
            self._thread.join(10)
            self._thread = None
        self.server_close()  # type: ignore[attr-defined]  # the server's (a mixin)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LabHTTPSServer(_Lifecycle, _TLSMixin, ThreadingHTTPServer):
    """A threaded HTTPS server on 127.0.0.1 presenting ``slot``'s certificate."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        slot: CertSlot,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.slot = slot
        super().__init__((host, port), handler)


class _SipHandler(socketserver.BaseRequestHandler):
    """Answer anything with a SIP 200 OK, like a SIP-TLS port answering OPTIONS."""

    def handle(self) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            self.request.settimeout(2)
            data = self.request.recv(4096)
            if data:
                self.request.sendall(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")


class LabTLSListener(_Lifecycle, _TLSMixin, socketserver.ThreadingTCPServer):
    """A bare TLS listener (the SIP-TLS port's role) presenting ``slot``'s certificate."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, slot: CertSlot, host: str = "127.0.0.1", port: int = 0) -> None:
        self.slot = slot
        super().__init__((host, port), _SipHandler)


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (for servers that need the number up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
