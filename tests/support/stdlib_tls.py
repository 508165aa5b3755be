"""A TLS server written with the standard library's ``ssl`` only, on 127.0.0.1: it
presents the certificate file it is given, whatever certfleet's parser thinks of it."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["serving"]


@contextmanager
def serving(cert: Path, key: Path) -> Iterator[int]:
    """Serve ``cert`` (PEM) with ``key`` until the block ends; yields the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)  # how often the loop looks at the stop flag, not a test bound
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(30)
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        sock.close()
        thread.join(30)
