"""Notifications that arrive: apprise delivers to real receivers on loopback (a webhook by
``json://`` and e-mail by ``mailto://`` to an SMTP server), and an expiry band counts as told
only once a target took its notice."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.cli.lab import _seed_previous
from certfleet.estate.store import Store
from certfleet.lab.estate import LabEstate
from certfleet.lab.tls import free_port


class Webhook:
    """An HTTP server of the test that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """An SMTP server (aiosmtpd) on loopback that keeps every message."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages.append(email.message_from_bytes(
                    envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.url = (f"mailto://127.0.0.1:{self.port}?from=certfleet@example.com"
                    "&to=ops@example.com&mode=insecure")

    def close(self) -> None:
        self.controller.stop()

    def bodies(self) -> list[str]:
        texts = []
        for message in self.messages:
            part = message.get_body(preferencelist=("plain",))
            assert part is not None
            texts.append(str(part.get_content()))  # type: ignore[attr-defined]
        return texts


@pytest.fixture
def receivers() -> Iterator[tuple[Webhook, Mailbox]]:
    hook, mail = Webhook(), Mailbox()
    try:
        yield hook, mail
    finally:
        hook.close()
        mail.close()


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LabEstate]:
    estate = LabEstate(tmp_path / "lab", sbcs=1, ha=False)
    try:
        estate.start()
        with Store.open(tmp_path / "state") as store:
            _seed_previous(estate, store)
        with estate.inventory_path.open("a") as handle:
            handle.write('\n[notify]\nurls = ["env:HOOK_URL", "env:MAIL_URL"]\n')
        with estate.environment():
            yield estate
    finally:
        estate.stop()


def _invoke(lab: LabEstate, tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--inventory", str(lab.inventory_path),
                                    "--state-dir", str(tmp_path / "state")])


def test_failure_notice_reaches_webhook_and_mailbox(
    lab: LabEstate, tmp_path: Path, receivers: tuple[Webhook, Mailbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SBC that refuses the certificate: apprise posts the failure to the webhook and mails
    it; both bodies name the device, the step and the command to run next."""
    hook, mail = receivers
    monkeypatch.setenv("HOOK_URL", hook.url)
    monkeypatch.setenv("MAIL_URL", mail.url)
    issued = lab.ca.issue(days=200)
    (tmp_path / "new.pem").write_bytes(issued.fullchain_pem + issued.root_pem
                                       + issued.key_pem())
    assert _invoke(lab, tmp_path, "import", "wildcard", str(tmp_path / "new.pem")).exit_code == 0
    lab.sbcs["sbc1"].faults.add("500", method="PUT", path="/files/tls/*/certificate")
    result = _invoke(lab, tmp_path, "deploy")
    assert result.exit_code == 1, result.output
    (posted,) = hook.bodies
    assert "FAILED" in posted["title"]
    (mailed,) = mail.bodies()
    assert "FAILED" in str(mail.messages[0]["Subject"])
    for body in (posted["message"], mailed):
        assert "sbc1: failed at step install, restored: " in body
        assert "Next: certfleet deploy --only sbc1" in body


def test_band_told_only_after_a_delivery(
    lab: LabEstate, tmp_path: Path, receivers: tuple[Webhook, Mailbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken target (slack://bad) and an unreachable one: status --notify sends nothing,
    says so and exits 1; once a URL is fixed the 7-day notices arrive; then none again."""
    hook, mail = receivers
    monkeypatch.setenv("HOOK_URL", "slack://bad")
    monkeypatch.setenv("MAIL_URL", f"json://127.0.0.1:{free_port()}/nobody")
    result = _invoke(lab, tmp_path, "status", "--notify", "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["notify"] == {"due": 2, "sent": 0, "failed": 2}
    text = _invoke(lab, tmp_path, "status", "--notify")
    assert text.exit_code == 1
    assert "notify: 0 notice(s) sent, 2 failed; every target failed" in text.stdout
    assert hook.bodies == [] and mail.messages == []

    monkeypatch.setenv("HOOK_URL", hook.url)
    monkeypatch.setenv("MAIL_URL", mail.url)
    result = _invoke(lab, tmp_path, "status", "--notify", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["notify"] == {"due": 2, "sent": 2, "failed": 0}
    titles = sorted(body["title"] for body in hook.bodies)
    assert len(titles) == 2 and all("expires in" in t for t in titles)
    assert {t.split(" on ")[1].split()[0] for t in titles} == {"ovoc", "sbc1"}
    assert all("Next: certfleet renew --only wildcard" in b["message"] for b in hook.bodies)
    assert len(mail.messages) == 2

    result = _invoke(lab, tmp_path, "status", "--notify", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["notify"] == {"due": 0, "sent": 0, "failed": 0}
    assert len(hook.bodies) == 2


def test_one_good_target_is_enough(
    lab: LabEstate, tmp_path: Path, receivers: tuple[Webhook, Mailbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One target fails, the other takes the notice: the band is told, status exits 0 and
    reports the failure."""
    hook, _ = receivers
    monkeypatch.setenv("HOOK_URL", hook.url)
    monkeypatch.setenv("MAIL_URL", "slack://bad")
    result = _invoke(lab, tmp_path, "status", "--notify")
    assert result.exit_code == 0, result.output
    assert "notify: 2 notice(s) sent, 0 failed" in result.stdout
    assert "not a URL apprise knows" in result.stderr
    assert len(hook.bodies) == 2
