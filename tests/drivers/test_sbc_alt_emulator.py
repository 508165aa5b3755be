"""SbcDriver and ``certfleet sbc`` against a second, independently shaped Mediant emulation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from _alt_sbc import AltSbc, Quirks
from certfleet.drivers.base import DeployOutcome
from certfleet.drivers.sbc import NO_ROLLBACK_HINT, SbcDriver, tls_contexts_in_ini
from certfleet.drivers.tlsprobe import Listener
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.model import Bundle
from sbc_support import bundle_of

PASSWORD = "Adm1n-s3cret!"


def _sha(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _served(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def old(lab_ca: LabCA) -> Issued:
    """The certificate the emulation holds before a deploy (EC, another name)."""
    return lab_ca.issue(("alt-sbc.lab.example",), key_type="ec-p256")


@pytest.fixture(scope="module")
def bundle(issued: Issued) -> Bundle:
    return bundle_of(issued)


def _start(old: Issued, quirks: Quirks | None = None) -> AltSbc:
    return AltSbc(old.leaf_pem, old.key_pem("pkcs8"), chain_pem=old.chain_pem,
                  password=PASSWORD, quirks=quirks)


@pytest.fixture()
def sbc(old: Issued, request: pytest.FixtureRequest) -> Iterator[AltSbc]:
    quirks = getattr(request, "param", None)
    with _start(old, quirks) as device:
        yield device


def _driver(sbc: AltSbc, old: Issued, **options: Any) -> SbcDriver:
    settings: dict[str, Any] = {
        "password": PASSWORD,
        "contexts": (0, 1),
        "listeners": [Listener("127.0.0.1", sbc.https.port, label="management"),
                      Listener("127.0.0.1", sbc.sip.port, label="sip")],
        "pin_sha256": _sha(old.leaf),
        "previous_keys": [old.key],
        "verify_timeout": 5.0,
        "busy_delay": 0.0,
        "timeout": 5.0,
    }
    settings.update(options)
    return SbcDriver("alt-sbc", sbc.url, **settings)


def _deploy(driver: SbcDriver, bundle: Bundle, **options: Any) -> DeployOutcome:
    return asyncio.run(driver.deploy(bundle, **options))


VARIANTS = {
    "json": Quirks(),
    "empty-200": Quirks(answer="empty"),
    "204": Quirks(answer="204", save_codes=[204]),
    "text-plain": Quirks(answer="text"),
    "extra-fields": Quirks(extra_fields=True, key_extra=True),
    "status-ha-object": Quirks(status={"versionID": "7.4", "productType": "SBC",
                                       "highAvailability": {"state": "active"}}),
    "status-ha-string": Quirks(status={"versionID": "7.4", "highAvailability": "Standalone"}),
    "status-empty": Quirks(status={}),
    "cert-crlf": Quirks(cert="crlf"),
    "cert-chain": Quirks(cert="chain"),
    "cert-leading-ws": Quirks(cert="leading"),
    "cert-chain-first": Quirks(cert="chain_first"),
    "cert-junk-block": Quirks(cert="junk"),
    "cert-and-roots-in-json": Quirks(cert="json", roots_at_start=True),
    "roots-pem-list": Quirks(roots_at_start=True, no_roots="404"),
    "ini-404": Quirks(ini="missing"),
    "session-drops-on-management-change": Quirks(drop_on_management_change=True),
    "key-valid-str": Quirks(key_valid="str"),
    "key-valid-int": Quirks(key_valid="int", key_extra=True),
    "roots-404": Quirks(no_roots="404"),
    "save-409-then-200": Quirks(save_codes=[409, 409, 409, 200]),
    "ini-tight": Quirks(ini="tight"),
    "ini-lower": Quirks(ini="lower"),
    "ini-garbage": Quirks(ini="garbage"),
}


@pytest.mark.parametrize("sbc", list(VARIANTS.values()), ids=list(VARIANTS), indirect=True)
def test_deploys_and_both_listeners_serve_the_new_certificate(
    sbc: AltSbc, old: Issued, bundle: Bundle
) -> None:
    """Whatever the answer shapes, key then certificate go in, are saved and served."""
    outcome = _deploy(_driver(sbc, old), bundle)
    assert outcome.outcome == "installed", outcome.message
    assert _served(sbc.https.port) == bundle.leaf_sha256
    assert _served(sbc.sip.port) == bundle.leaf_sha256
    assert sbc.saves == 1
    puts = [p for m, p, _ in sbc.requests if m == "PUT"]
    assert puts.index("/api/v1/files/tls/0/privateKey") < puts.index(
        "/api/v1/files/tls/0/certificate")
    assert outcome.backup is not None and outcome.backup.has_private_key
    assert outcome.backup.meta["contexts"]["0"]["sha256"] == _sha(old.leaf)
    dumped = json.dumps(outcome.to_dict())
    assert PASSWORD not in dumped
    assert base64.b64encode(f"Admin:{PASSWORD}".encode()).decode() not in dumped


@pytest.mark.parametrize(("no_cert", "no_key"), [("404", "invalid"), ("empty", "invalid"),
                                               ("404", "404")])
def test_context_without_certificate_needs_allow_no_rollback(
    old: Issued, bundle: Bundle, no_cert: str, no_key: str
) -> None:
    """A context with no certificate (or key) yet: backup copes, deploy refuses before
    any change, and goes ahead with allow_no_rollback."""
    with _start(old, Quirks(no_cert=no_cert, no_key=no_key)) as sbc:
        first = _deploy(_driver(sbc, old, contexts=(2,), listeners=()), bundle)
        assert first.outcome == "refused", first.message
        assert first.hint == NO_ROLLBACK_HINT
        assert "context 2 has no certificate yet" in first.message
        assert not [r for r in sbc.requests if r[0] in ("PUT", "POST")]
        assert first.backup is not None and first.backup.meta["contexts"]["2"]["sha256"] is None
        unverified = _driver(sbc, old, contexts=(2,), listeners=())
        unverified.allow_unverified = True  # no listener serves context 2: said in words
        again = _deploy(unverified, bundle, allow_no_rollback=True)
        assert again.outcome == "installed", again.message
        assert "NOT verified" in again.message
        assert sbc.contexts[2].matches()


def test_key_never_valid_is_refused_with_a_clear_message(old: Issued, bundle: Bundle) -> None:
    """A key state that never says valid ends the deploy naming the context and the key."""
    with _start(old, Quirks(never_valid=True)) as sbc:
        outcome = _deploy(_driver(sbc, old, contexts=(1,)), bundle)
    assert outcome.outcome != "installed"
    assert "context 1" in outcome.message and "private key" in outcome.message
    assert "\n" not in outcome.message


def test_failure_after_management_change_rolls_back_over_the_new_certificate(
    old: Issued, bundle: Bundle
) -> None:
    """Session dropped on the management context, then an error: the rollback connects
    although the interface already serves the new certificate, and restores the old one."""
    with _start(old, Quirks(drop_on_management_change=True, fail_after_drop=True)) as sbc:
        outcome = _deploy(_driver(sbc, old), bundle)
        assert outcome.outcome == "restored", outcome.message
        assert "answered 500" in outcome.message
        assert _served(sbc.https.port) == _sha(old.leaf)
        assert _served(sbc.sip.port) == _sha(old.leaf)


def test_save_busy_for_ever_is_bounded(old: Issued, bundle: Bundle) -> None:
    """409 on every save: a bounded number of tries, then a failure naming 409, rolled back."""
    with _start(old, Quirks(save_codes=[409])) as sbc:
        outcome = _deploy(_driver(sbc, old, busy_retries=3), bundle)
        saves = [r for r in sbc.requests if r[1].endswith("saveConfiguration")]
    assert outcome.outcome in ("restored", "failed")
    assert "409" in outcome.message and "saveConfiguration" in outcome.message
    assert 4 <= len(saves) <= 8


@pytest.mark.parametrize(("user", "password", "code"),
                         [("Admin", "wrong-" + PASSWORD, "401"), ("monitor", "mon-pass", "403")])
@pytest.mark.parametrize("sbc", [Quirks(), Quirks(echo_auth=True)], ids=["plain", "echo"],
                         indirect=True)
def test_auth_failures_name_device_request_and_status(
    sbc: AltSbc, old: Issued, bundle: Bundle, user: str, password: str, code: str
) -> None:
    """401 (no challenge, even one echoing the credentials) and 403 (non-admin): refused,
    one line, no password or Authorization value in the outcome."""
    outcome = _deploy(_driver(sbc, old, user=user, password=password), bundle)
    assert outcome.outcome == "refused"
    message = outcome.message
    assert "\n" not in message
    assert code in message and "alt-sbc" in message and "GET /api/v1/status" in message
    dumped = json.dumps(outcome.to_dict())
    assert password not in dumped and PASSWORD not in dumped
    secret = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert secret not in dumped


def test_every_error_answer_is_one_line_naming_request_and_status(
    sbc: AltSbc, old: Issued
) -> None:
    """404 and 400 answers map to one line with the device, method, path and status."""
    from certfleet.errors import DeviceRefusedError

    driver = _driver(sbc, old)

    async def run() -> list[str]:
        messages = []
        async with driver.session():
            for call in (driver.read_context(9), driver.add_trusted_root(0, old.leaf)):
                try:
                    await call
                except DeviceRefusedError as exc:
                    messages.append(str(exc))
            try:
                await driver._request("PUT", "/files/tls/0/certificate", what="uploading junk",
                                      upload=b"not a pem")
            except DeviceRefusedError as exc:
                messages.append(str(exc))
        return messages

    messages = asyncio.run(run())
    assert len(messages) == 2
    assert "404" in messages[0] and "GET /api/v1/files/tls/9/" in messages[0]
    assert "400" in messages[1] and "PUT /api/v1/files/tls/0/certificate" in messages[1]
    for text in messages:
        assert "alt-sbc" in text and "\n" not in text and PASSWORD not in text


@pytest.mark.parametrize("url", ["https://Admin:s3cret-pw@sbc1:8443", "http://Admin:s3cret-pw@sbc1"])
def test_url_with_credentials_is_refused_without_quoting_them(url: str) -> None:
    """A URL with user:password@ is refused, and the message does not repeat the password."""
    from certfleet.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        SbcDriver("sbc1", url, password="x")
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in (caught.value.hint or "")


def test_ini_parser_is_lenient_and_never_raises() -> None:
    """Spacing and case of the TLSContexts table vary; unreadable text gives nothing."""
    assert tls_contexts_in_ini('[tlscontexts]\nTLSContexts 3="x", 1;\n[\\tlscontexts]') == {3: "x"}
    assert tls_contexts_in_ini('[ TLSContexts ]\r\n tlscontexts 1 = "a b";\r\n') == {1: "a b"}
    assert tls_contexts_in_ini("\x00\xff[[[ TLSContexts") == {}
    assert tls_contexts_in_ini("") == {}
    assert tls_contexts_in_ini("[ TLSContexts ]\nTLSContexts 0 = 'q', 1;\n[Other]\n"
                               "TLSContexts 7 = \"not in the table\";") == {0: "q"}


# ---- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sbc", [Quirks(ini="garbage", status={"versionID": "7.4"}),
                                 Quirks(ini="missing", status={"highAvailability": "HA"}),
                                 Quirks(status={"highAvailability": {"mode": "HA"}})],
                         ids=["ini-garbage", "ini-404", "ha-object"], indirect=True)
def test_cli_status_reports_less_but_does_not_crash(
    sbc_app: typer.Typer, sbc: AltSbc, old: Issued, tmp_path: Any
) -> None:
    """``sbc status`` on an odd INI or status shows what it can, human and --json."""
    runner = CliRunner(env={"SBC_PW": PASSWORD})
    common = ["sbc", "status", "--url", sbc.url, "--password-env", "SBC_PW",
              "--pin-sha256", _sha(old.leaf)]
    human = runner.invoke(sbc_app, common)
    assert human.exit_code == 0, human.output
    assert "None" not in human.output.splitlines()[0]
    if isinstance(sbc.quirks.status.get("highAvailability"), dict):
        assert "HA mode=HA" in human.output
    as_json = runner.invoke(sbc_app, [*common, "--json"])
    assert as_json.exit_code == 0, as_json.output
    json.loads(as_json.stdout)


def test_cli_never_prints_the_password(
    sbc_app: typer.Typer, sbc: AltSbc, old: Issued, issued: Issued, tmp_path: Any
) -> None:
    """Wrong password and a good deploy: neither stdout nor stderr carries a password."""
    cert = tmp_path / "new.crt"
    cert.write_bytes(issued.fullchain_pem + issued.root_pem)
    key = tmp_path / "new.key"
    key.write_bytes(issued.key_pem("pkcs1"))
    prev = tmp_path / "old.key"
    prev.write_bytes(old.key_pem("pkcs8"))
    args = ["sbc", "deploy", str(cert), str(key), "--url", sbc.url,
            "--password-env", "SBC_PW", "--pin-sha256", _sha(old.leaf), "--previous-key", str(prev),
            "--context", "0", "--verify-timeout", "5"]
    for password in ("wrong-" + PASSWORD, PASSWORD):
        runner = CliRunner(env={"SBC_PW": password})
        for extra in ([], ["--json"]):
            result = runner.invoke(sbc_app, [*args, *extra])
            text = result.output + (result.stderr if result.stderr_bytes is not None else "")
            assert PASSWORD not in text and "Authorization" not in text, text
            assert result.exit_code != 0 or password == PASSWORD, text


@pytest.mark.parametrize("sbc", [Quirks(no_roots="404", ini="lower"), Quirks(ini="missing")],
                         ids=["roots-404", "ini-404"], indirect=True)
def test_cli_backup_and_trust_audit_cope_with_empty_stores(
    sbc_app: typer.Typer, sbc: AltSbc, old: Issued, tmp_path: Any
) -> None:
    """``sbc backup`` saves a context without certificate; ``trust audit`` reads a 404 store."""
    runner = CliRunner(env={"SBC_PW": PASSWORD})
    conn = ["--url", sbc.url, "--password-env", "SBC_PW", "--pin-sha256", _sha(old.leaf)]
    out = tmp_path / "backup"
    contexts = [] if sbc.quirks.ini != "missing" else ["--context", "0", "--context", "2"]
    saved = runner.invoke(sbc_app, ["sbc", "backup", *conn, "--out-dir", str(out), *contexts,
                                "--json"])
    assert saved.exit_code == 0, saved.output
    meta = json.loads(saved.stdout)["meta"]
    assert meta["contexts"]["2"]["sha256"] is None
    assert meta["contexts"]["0"]["sha256"] == _sha(old.leaf)
    audit = runner.invoke(sbc_app, ["sbc", "trust", "audit", *conn, "--set", "teams-2026",
                                "--context", "2", "--json"])
    assert audit.exit_code == 1, audit.output  # every root missing, none crashed
    assert json.loads(audit.stdout)["missing"]


def test_emulation_insists_on_part_file_and_takes_either_upload_order(
    sbc: AltSbc, issued: Issued
) -> None:
    """The emulation itself: part ``file`` (filename optional) or 400; certificate first
    then key also ends with the new certificate served (so the handshakes above are real)."""
    import httpx

    octet = "application/octet-stream"
    with httpx.Client(base_url=sbc.url + "/api/v1", auth=("Admin", PASSWORD),
                      verify=False) as client:  # the emulation's own test: no trust needed
        wrong = client.put("/files/tls/1/certificate",
                           files={"upload": ("c.pem", issued.leaf_pem, octet)})
        assert wrong.status_code == 400
        typed = client.put("/files/tls/1/certificate",
                           files={"file": ("c.pem", issued.leaf_pem, "text/plain")})
        assert typed.status_code == 400
        cert = client.put("/files/tls/1/certificate",
                          files={"file": (None, issued.leaf_pem, octet)})
        assert cert.status_code == 200 and _served(sbc.sip.port) != _sha(issued.leaf)
        key = client.put("/files/tls/1/privateKey",
                         files={"file": ("k.pem", issued.key_pem("pkcs1"), octet)})
        assert key.status_code == 200
    assert _served(sbc.sip.port) == _sha(issued.leaf)
