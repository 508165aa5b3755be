"""The lab's HTTPS server: a client that vanishes mid-request is quiet, a handler bug is not."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from certfleet.lab.ca import Issued
from certfleet.lab.tls import CertSlot, LabHTTPSServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/bug":
            raise ValueError("a bug in the lab handler")
        self.send_response(200)
        self.end_headers()
        self.wfile.flush()
        for _ in range(200):  # a long answer: the client resets the connection meanwhile
            self.wfile.write(b"x" * 65536)
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, format: str, *args: object) -> None:
        return


def _request(port: int, path: str, *, reset: bool) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(raw)
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    if reset:
        tls.recv(100)  # the handler has begun: the status line arrived
        # Close with an RST, as a killed process or a dropped route does.
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()


@pytest.mark.parametrize(("path", "reset", "printed"), [
    ("/wait", True, False),
    ("/bug", False, True),
], ids=["client-reset", "handler-bug"])
def test_lab_server_prints_only_its_own_errors(
    issued: Issued, capfd: pytest.CaptureFixture[str], path: str, reset: bool, printed: bool,
) -> None:
    slot = CertSlot(issued.leaf_pem, issued.key_pem(), issued.chain_pem)
    handled = threading.Event()

    class Server(LabHTTPSServer):
        def handle_error(self, request: object, client_address: object) -> None:
            try:
                super().handle_error(request, client_address)
            finally:
                handled.set()

    with Server(_Handler, slot) as server:
        _request(server.port, path, reset=reset)
        assert handled.wait(10), "the request never failed in the server"
    slot.close()
    err = capfd.readouterr().err
    assert ("Traceback" in err) is printed, err
    if printed:
        assert "a bug in the lab handler" in err
