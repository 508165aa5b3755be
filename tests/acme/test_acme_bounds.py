"""What certfleet reads from an ACME server is bounded, as what it reads from an SBC:
a directory that answers with 50 MB is refused (exit 1, a Tip, the bound named) after
reading a small part of it; garbage and redirect loops end the same way."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.acme import AcmeError
from certfleet.acme.account import open_session
from certfleet.acme.config import AcmeConfig
from certfleet.acme.transport import MAX_JSON_BYTES
from certfleet.cli.app import app

#: What the hostile directory would send in all: far more than the bound.
TOTAL = 50 * 1024 * 1024
CHUNK = 64 * 1024


#: Bytes each path's handler sent before it stopped, and whether it has stopped.
SENT: dict[str, int] = {}
FINISHED: dict[str, threading.Event] = {}


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path
        if path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/garbage":
            body = b"\x00\xff<html>not json"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        chunked = path == "/chunked"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(TOTAL))
        self.end_headers()
        sent = 0
        block = b"[" + b" " * (CHUNK - 1)  # generated as it goes, never held whole
        try:
            while sent < TOTAL:
                if chunked:
                    self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                else:
                    self.wfile.write(block)
                sent += len(block)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up: what it wanted to know
        finally:
            SENT[path] = sent
            FINISHED.setdefault(path, threading.Event()).set()
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def ca() -> Iterator[str]:
    """The base URL of the hostile CA on 127.0.0.1."""
    SENT.clear()
    FINISHED.clear()
    for path in ("/chunked", "/length"):
        FINISHED[path] = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def _config(url: str) -> AcmeConfig:
    return AcmeConfig(certificate="wildcard", directory=url)


@pytest.mark.parametrize("path", ["/chunked", "/length"])
def test_an_oversized_directory_is_refused_before_it_is_read(
        ca: str, tmp_path: Path, path: str) -> None:
    url = ca + path
    with pytest.raises(AcmeError) as caught:
        open_session(_config(url), tmp_path)
    message = str(caught.value)
    assert f"cannot read the ACME directory {url}" in message
    assert f"larger than {MAX_JSON_BYTES:,} bytes" in message
    assert "\n" not in message and caught.value.hint
    # The server stops when the client hangs up: it sent a part, not the 50 MB.
    assert FINISHED[path].wait(60), "the server is still sending"
    assert SENT[path] < TOTAL


def test_issue_ends_in_exit_1_with_a_tip(ca: str, tmp_path: Path) -> None:
    inventory = tmp_path / "certfleet.toml"
    inventory.write_text(
        '[certificates.wildcard]\ncn = "*.example.com"\nsans = ["*.example.com"]\n\n'
        f'[certificates.wildcard.acme]\ndirectory = "{ca}/chunked"\n'
        'email = "pki@example.com"\n\n'
        '[certificates.wildcard.dns]\nprovider = "challtestsrv"\n'
        'url = "http://127.0.0.1:9"\n')
    result = CliRunner().invoke(app, ["issue", "wildcard", "--json", "--inventory",
                                      str(inventory), "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert f"larger than {MAX_JSON_BYTES:,} bytes" in str(data["error"])
    assert data["hint"]
    assert FINISHED["/chunked"].wait(60)
    assert SENT["/chunked"] < TOTAL


@pytest.mark.parametrize(("path", "words"), [("/loop", "redirects"), ("/garbage", "")])
def test_garbage_and_redirect_loops_are_acme_errors(
        ca: str, tmp_path: Path, path: str, words: str) -> None:
    with pytest.raises(AcmeError) as caught:
        open_session(_config(ca + path), tmp_path)
    assert f"cannot read the ACME directory {ca + path}" in str(caught.value)
    assert words in str(caught.value) and caught.value.hint


def test_a_root_from_a_ca_issuers_url_is_read_within_its_bound(ca: str) -> None:
    """The AIA caIssuers fetch (the root of an issued chain) stops past 64 kB too."""
    import httpx

    from certfleet.acme.issuer import _read_at_most

    with httpx.Client(timeout=30.0) as client, pytest.raises(ValueError, match="65,536 bytes"):
        _read_at_most(client, ca + "/chunked", 65536)
    assert FINISHED["/chunked"].wait(60)
    assert SENT["/chunked"] < TOTAL
