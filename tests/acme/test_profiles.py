"""The ACME profiles extension: ``profile`` is sent in the new order, and refused with a clear
error when the CA's directory does not offer it (Debian's Pebble 2.4 offers none)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.lab.pebble import LabPebble
from pebble_support import write_inventory


class ProfileDirectory:
    """A directory offering ``tlsserver`` and ``shortlived`` that records new-order payloads."""

    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Replay-Nonce", "bm9uY2U")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._json(200, {})

            def do_GET(self) -> None:
                self._json(200, {"newNonce": outer.url + "/nonce", "newOrder": outer.url + "/order",
                                 "newAccount": outer.url + "/acct",
                                 "meta": {"profiles": {"tlsserver": "45 days",
                                                       "shortlived": "6 days"}}})

            def do_POST(self) -> None:
                jws = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                payload = jws["payload"] + "=" * (-len(jws["payload"]) % 4)
                outer.orders.append(json.loads(base64.urlsafe_b64decode(payload)))
                self._json(201, {"status": "pending", "identifiers": [], "authorizations": [],
                                 "finalize": outer.url + "/fin"},
                           {"Location": outer.url + "/order/1"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def directory() -> Iterator[ProfileDirectory]:
    server = ProfileDirectory()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_profile_is_sent_in_the_order(directory: ProfileDirectory) -> None:
    """A profile the CA offers goes into the new-order payload as ``profile``."""
    from types import SimpleNamespace

    from acme import client as acme_client
    from cryptography.hazmat.primitives.asymmetric import ec
    from josepy.jwa import ES256
    from josepy.jwk import JWKEC

    from certfleet.acme.client import ClientWithReplaces
    from certfleet.acme.issuer import order_certificate

    net = acme_client.ClientNetwork(JWKEC(key=ec.generate_private_key(ec.SECP256R1())), alg=ES256)
    client = ClientWithReplaces(acme_client.ClientV2.get_directory(directory.url + "/dir", net),
                                net)
    session = SimpleNamespace(client=client, key=net.key)
    order_certificate(session, ["a.example.com"], b"", None, timeout=5, profile="shortlived",
                      stop_before_finalize=True)
    (payload,) = directory.orders
    assert payload["profile"] == "shortlived"


def test_profile_not_offered_is_refused(directory: ProfileDirectory) -> None:
    """A profile the directory does not list: an AcmeError naming the ones it offers; no order."""
    from types import SimpleNamespace

    from acme import client as acme_client
    from cryptography.hazmat.primitives.asymmetric import ec
    from josepy.jwa import ES256
    from josepy.jwk import JWKEC

    from certfleet.acme import AcmeError
    from certfleet.acme.client import ClientWithReplaces
    from certfleet.acme.issuer import order_certificate

    net = acme_client.ClientNetwork(JWKEC(key=ec.generate_private_key(ec.SECP256R1())), alg=ES256)
    client = ClientWithReplaces(acme_client.ClientV2.get_directory(directory.url + "/dir", net),
                                net)
    with pytest.raises(AcmeError) as caught:
        order_certificate(SimpleNamespace(client=client, key=net.key), ["a.example.com"], b"",
                          None, timeout=5, profile="classic")
    assert "offers no profile 'classic' (it offers: shortlived, tlsserver)" in caught.value.message
    assert directory.orders == []


def test_pebble_without_profiles_refuses_the_issue(pebble: LabPebble, tmp_path: Path) -> None:
    """Pebble 2.4 lists no profiles: issue with profile = "shortlived" exits 1 with one clear
    error and stores nothing."""
    inventory = write_inventory(tmp_path, pebble, acme={"profile": "shortlived"})
    result = CliRunner().invoke(app, ["issue", "wildcard", "--json", "--inventory",
                                      str(inventory), "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert "offers no profile 'shortlived'" in data["error"]
    assert "profile" in data["hint"]
    assert "Traceback" not in result.output
