"""ARI (RFC 9773): the renewal window decides, and a renewal order names what it replaces.

Debian's Pebble has no ``renewalInfo``: these tests run against a small ACME
directory of their own (plain HTTP on loopback) that serves only what ARI
needs — a directory with ``renewalInfo``, nonces, the renewal-info
resource, and a new-order endpoint that records the payload so that the
``replaces`` field the ``acme`` library does not send can be checked.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certfleet.acme.client import ari_cert_id
from certfleet.acme.config import AcmeConfig, acme_config
from certfleet.estate.importer import import_certificate
from certfleet.estate.renew import is_due
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import LabCA


class AriDirectory:
    """The test's ACME directory: see the module docstring."""

    def __init__(self, *, renewal_info: bool = True) -> None:
        self.window: tuple[dt.datetime, dt.datetime] | None = None
        self.renewal_info = renewal_info
        self.ari_paths: list[str] = []
        self.orders: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Replay-Nonce", base64.urlsafe_b64encode(
                    threading.get_ident().to_bytes(8, "big")).decode().rstrip("="))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:  # newNonce
                self.send_response(200)
                self.send_header("Replay-Nonce", "bm9uY2U")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                if self.path == "/dir":
                    body = {"newNonce": outer.url + "/nonce", "newAccount": outer.url + "/acct",
                            "newOrder": outer.url + "/order"}
                    if outer.renewal_info:
                        body["renewalInfo"] = outer.url + "/ari"
                    self._json(200, body)
                elif self.path.startswith("/ari/") and outer.window is not None:
                    outer.ari_paths.append(self.path.removeprefix("/ari/"))
                    start, end = outer.window
                    self._json(200, {"suggestedWindow": {
                        "start": start.isoformat().replace("+00:00", "Z"),
                        "end": end.isoformat().replace("+00:00", "Z")}},
                        {"Retry-After": "21600"})
                else:
                    self._json(404, {"type": "urn:ietf:params:acme:error:malformed"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                jws = json.loads(self.rfile.read(min(length, 65536)))
                payload = jws["payload"] + "=" * (-len(jws["payload"]) % 4)
                if self.path == "/order":
                    outer.orders.append(json.loads(base64.urlsafe_b64decode(payload)))
                    self._json(201, {"status": "pending", "identifiers": [],
                                     "authorizations": [], "finalize": outer.url + "/fin"},
                               {"Location": outer.url + "/order/1"})
                else:
                    self._json(404, {"type": "urn:ietf:params:acme:error:malformed"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AriDirectory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ari() -> Iterator[AriDirectory]:
    with AriDirectory() as server:
        yield server


def _estate(tmp_path: Path, url: str, days: int) -> tuple[Any, Store, x509.Certificate]:
    text = (
        '[certificates.wildcard]\ncn = "*.example.com"\nsans = ["*.example.com", "example.com"]\n'
        "renew_before_days = 30\n\n"
        f'[certificates.wildcard.acme]\ndirectory = "{url}/dir"\n\n'
        '[certificates.wildcard.dns]\nprovider = "manual"\n'
    )
    inventory = parse_inventory(text, tmp_path / "certfleet.toml")
    issued = LabCA().issue(days=days)
    (tmp_path / "issued.pem").write_bytes(issued.fullchain_pem + issued.root_pem
                                          + issued.key_pem())
    store = Store.open(tmp_path / "state")
    import_certificate(inventory, store, "wildcard", [tmp_path / "issued.pem"])
    return inventory, store, issued.leaf


def _config(inventory: Any) -> AcmeConfig:
    config = acme_config(inventory, "wildcard")
    assert config is not None
    return config


def test_ari_window_open_makes_it_due(ari: AriDirectory, tmp_path: Path) -> None:
    """A window that has opened makes a certificate with 60 days left due, asked by its ARI id."""
    inventory, store, leaf = _estate(tmp_path, ari.url, 60)
    now = dt.datetime.now(dt.UTC)
    ari.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
    with store:
        due = is_due(inventory, store, "wildcard", _config(inventory))
    assert due.due and "renewal window (ARI) opened" in due.reason
    assert ari.ari_paths == [ari_cert_id(leaf)]


def test_ari_window_later_overrides_days(ari: AriDirectory, tmp_path: Path) -> None:
    """A window in the future keeps a certificate with 5 days left (under 30) not due."""
    inventory, store, _ = _estate(tmp_path, ari.url, 5)
    now = dt.datetime.now(dt.UTC)
    ari.window = (now + dt.timedelta(days=2), now + dt.timedelta(days=2, hours=1))
    with store:
        due = is_due(inventory, store, "wildcard", _config(inventory))
    assert not due.due and "opens" in due.reason


def test_no_renewal_info_falls_back_to_days(tmp_path: Path) -> None:
    """Without renewalInfo in the directory, renew_before_days decides (5 days left: due)."""
    with AriDirectory(renewal_info=False) as server:
        inventory, store, _ = _estate(tmp_path, server.url, 5)
        with store:
            due = is_due(inventory, store, "wildcard", _config(inventory))
    assert due.due and "renew_before_days = 30" in due.reason
    assert server.ari_paths == []


@pytest.mark.parametrize("renewal_info", [True, False])
def test_new_order_carries_replaces(tmp_path: Path, renewal_info: bool) -> None:
    """The new-order payload names the replaced certificate when the CA offers ARI, else not."""
    from acme import client as acme_client
    from cryptography.hazmat.primitives.asymmetric import ec
    from josepy.jwa import ES256
    from josepy.jwk import JWKEC

    from certfleet.acme.client import ClientWithReplaces

    leaf = LabCA().issue().leaf
    with AriDirectory(renewal_info=renewal_info) as server:
        net = acme_client.ClientNetwork(JWKEC(key=ec.generate_private_key(ec.SECP256R1())),
                                        alg=ES256)
        client = ClientWithReplaces(acme_client.ClientV2.get_directory(server.url + "/dir", net),
                                    net)
        client.order(b"", ["*.example.com", "example.com"], replaces=ari_cert_id(leaf))
    (payload,) = server.orders
    assert [i["value"] for i in payload["identifiers"]] == ["*.example.com", "example.com"]
    if renewal_info:
        assert payload["replaces"] == ari_cert_id(leaf)
        aki, _, serial = payload["replaces"].partition(".")
        key_id = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert base64.urlsafe_b64decode(aki + "=" * (-len(aki) % 4)) == key_id.key_identifier
        assert base64.urlsafe_b64decode(serial + "=" * (-len(serial) % 4)) == (
            leaf.serial_number.to_bytes((leaf.serial_number.bit_length() + 8) // 8, "big"))
    else:
        assert "replaces" not in payload


def test_no_ari_answer_falls_back_to_days(ari: AriDirectory, tmp_path: Path) -> None:
    """renewalInfo that answers 404 (a certificate of another CA): the days rule decides."""
    inventory, store, _ = _estate(tmp_path, ari.url, 60)
    with store:
        due = is_due(inventory, store, "wildcard", _config(inventory))
    assert not due.due and "more than renew_before_days = 30 (no ARI answer: " in due.reason


def _import_leaf(tmp_path: Path, url: str, issued: Any) -> tuple[Any, Store]:
    """An estate ordering from ``url`` whose current version is ``issued``."""
    text = (
        '[certificates.wildcard]\ncn = "*.example.com"\nsans = ["*.example.com", "example.com"]\n'
        "renew_before_days = 30\n\n"
        f'[certificates.wildcard.acme]\ndirectory = "{url}/dir"\n\n'
        '[certificates.wildcard.dns]\nprovider = "manual"\n'
    )
    inventory = parse_inventory(text, tmp_path / "certfleet.toml")
    (tmp_path / "issued.pem").write_bytes(issued.fullchain_pem + issued.root_pem
                                          + issued.key_pem())
    store = Store.open(tmp_path / "state")
    import_certificate(inventory, store, "wildcard", [tmp_path / "issued.pem"])
    return inventory, store


def test_ari_cert_id_without_aki_is_none() -> None:
    """A certificate without an Authority Key Identifier has no ARI identifier (no exception)."""
    leaf = LabCA().issue(authority_key_id=False).leaf
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ari_cert_id(leaf) is None


@pytest.mark.parametrize("days", [5, 60])
def test_no_aki_skips_ari_and_days_decide(ari: AriDirectory, tmp_path: Path, days: int) -> None:
    """A stored certificate without AKI: ARI is not asked, the reason says why, the days rule
    decides, and a renewal order would name no certificate it replaces."""
    now = dt.datetime.now(dt.UTC)
    ari.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
    inventory, store = _import_leaf(tmp_path, ari.url,
                                    LabCA().issue(days=days, authority_key_id=False))
    with store:
        due = is_due(inventory, store, "wildcard", _config(inventory))
        forced = is_due(inventory, store, "wildcard", _config(inventory), force=True)
    assert due.due is (days == 5)
    assert "renew_before_days = 30" in due.reason
    assert "(ARI skipped: the certificate has no Authority Key Identifier)" in due.reason
    assert due.replaces is None and forced.replaces is None
    assert ari.ari_paths == []


def test_another_cas_certificate_is_not_replaced(ari: AriDirectory, tmp_path: Path) -> None:
    """A certificate the CA does not know (its renewalInfo answers 404): the days rule decides
    (5 days left: due) and the order names no certificate it replaces."""
    inventory, store = _import_leaf(tmp_path, ari.url, LabCA().issue(days=5))
    with store:
        due = is_due(inventory, store, "wildcard", _config(inventory))
    assert due.due and "(no ARI answer: " in due.reason
    assert due.replaces is None


def test_ari_answer_sets_replaces(ari: AriDirectory, tmp_path: Path) -> None:
    """A CA that answered ARI for the certificate gets its ARI id as the order's replaces,
    for a due run and for --force alike."""
    issued = LabCA().issue(days=60)
    inventory, store = _import_leaf(tmp_path, ari.url, issued)
    now = dt.datetime.now(dt.UTC)
    ari.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
    with store:
        due = is_due(inventory, store, "wildcard", _config(inventory))
        forced = is_due(inventory, store, "wildcard", _config(inventory), force=True)
    assert due.due and due.replaces == ari_cert_id(issued.leaf)
    assert forced.replaces == ari_cert_id(issued.leaf)


def test_expired_certificate_is_not_asked(ari: AriDirectory) -> None:
    """ARI is never asked about an expired certificate; the skip names the reason."""
    from certfleet.acme.ari import ari_lookup

    now = dt.datetime.now(dt.UTC)
    ari.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
    leaf = LabCA().issue(not_before=now - dt.timedelta(days=10),
                         not_after=now - dt.timedelta(days=1)).leaf
    text = (f'[certificates.w]\ncn = "a.example.com"\n\n[certificates.w.acme]\n'
            f'directory = "{ari.url}/dir"\n\n[certificates.w.dns]\nprovider = "manual"\n')
    config = acme_config(parse_inventory(text, Path("certfleet.toml")), "w")
    assert config is not None
    lookup = ari_lookup(config, leaf)
    assert lookup.window is None and lookup.cert_id is None
    assert "expired" in lookup.note
    assert ari.ari_paths == []


@pytest.mark.parametrize(("hours", "age", "due"), [
    (144, 90, False),   # 6 days, 54 h left: more than a third (48 h)
    (144, 100, True),   # 44 h left
    (160, 100, False),  # 160 hours, 60 h left: more than 53 h
    (160, 110, True),   # 50 h left
])
def test_short_lived_certificates(tmp_path: Path, hours: int, age: int, due: bool) -> None:
    """A 6-day or 160-hour certificate is due once a third of its lifetime remains, counted
    in hours."""
    with AriDirectory(renewal_info=False) as server:
        inventory, store = _short(tmp_path, server.url, hours, age, None)
        with store:
            result = is_due(inventory, store, "wildcard", _config(inventory))
    assert result.due is due, result.reason
    assert "hour(s) left" in result.reason and "a third of the lifetime" in result.reason


def test_renew_before_days_longer_than_lifetime_is_named(tmp_path: Path) -> None:
    """renew_before_days = 30 on a 6-day certificate: due as configured, and the reason says
    every run orders and how to fix it."""
    with AriDirectory(renewal_info=False) as server:
        inventory, store = _short(tmp_path, server.url, 144, 10, 30)
        with store:
            result = is_due(inventory, store, "wildcard", _config(inventory))
    assert result.due
    assert "not shorter than the 144 hour(s) lifetime: every run orders" in result.reason


def _short(tmp_path: Path, url: str, hours: int, age: int,
           renew_before: int | None) -> tuple[Any, Store]:
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(hours=age)
    issued = LabCA().issue(not_before=start, not_after=start + dt.timedelta(hours=hours))
    text = (
        '[certificates.wildcard]\ncn = "*.example.com"\n'
        'sans = ["*.example.com", "example.com"]\n'
        + (f"renew_before_days = {renew_before}\n" if renew_before else "")
        + f'\n[certificates.wildcard.acme]\ndirectory = "{url}/dir"\n\n'
        '[certificates.wildcard.dns]\nprovider = "manual"\n'
    )
    inventory = parse_inventory(text, tmp_path / "certfleet.toml")
    (tmp_path / "issued.pem").write_bytes(issued.fullchain_pem + issued.root_pem
                                          + issued.key_pem())
    store = Store.open(tmp_path / "state")
    import_certificate(inventory, store, "wildcard", [tmp_path / "issued.pem"])
    return inventory, store
