"""A man in the middle on 127.0.0.1 for the pinning tests.

The first ``relay`` TCP connections are relayed byte for byte to the real
(lab) device; every later connection is answered by the proxy itself with TLS
and another certificate, and every byte it receives after the handshake is
recorded. A client that checks its trust inside the handshake closes those
connections without writing anything.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path


class MitmProxy:
    def __init__(self, target_port: int, cert_pem: bytes, key_pem: bytes, folder: Path,
                 relay: int = 1) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "impostor.pem").write_bytes(cert_pem)
        (folder / "impostor.key").write_bytes(key_pem)
        folder.joinpath("impostor.key").chmod(0o600)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(folder / "impostor.pem", folder / "impostor.key")
        self.target_port = target_port
        self.relay_left = relay
        self.relayed = 0
        self.impostor_handshakes = 0
        self.impostor_connections = 0
        self.received: list[bytearray] = []  # per impostor connection, after its handshake
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> MitmProxy:
        thread = threading.Thread(target=self._accept, name="mitm-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        self._server.close()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every connection handled so far is finished (the counters are final)."""
        with self._lock:
            handlers = self._threads[1:]
        for thread in handlers:
            thread.join(timeout)

    def drop_all(self) -> None:
        """End every connection open now, both ways (a device or firewall dropping them)."""
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @property
    def bytes_received(self) -> int:
        with self._lock:
            return sum(len(item) for item in self.received)

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        with self._lock:
            self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(30)
            with self._lock:
                self._sockets.append(conn)
                relay = self.relay_left > 0
                if relay:
                    self.relay_left -= 1
                    self.relayed += 1
                else:
                    self.impostor_connections += 1
            self._start(self._relay if relay else self._impostor, conn)

    def _relay(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        with self._lock:
            self._sockets.append(upstream)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        self._start(pump, upstream, conn)
        pump(conn, upstream)

    def _impostor(self, conn: socket.socket) -> None:
        record = bytearray()
        try:
            tls = self._tls.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return  # the client refused the handshake itself (CA verification)
        with self._lock:
            self.impostor_handshakes += 1
            self.received.append(record)
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := tls.recv(65536):
                with self._lock:
                    record.extend(data)
        tls.close()
