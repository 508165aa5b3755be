"""``certfleet sbc deploy``: a listener to verify, or --no-verify said in words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner, Result

from certfleet.cli import sbc as sbc_cli
from certfleet.lab.ca import Issued
from certfleet.lab.sbc import LabSbc


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    application = typer.Typer()
    application.command("noop")(lambda: None)  # keeps "sbc" a sub-command
    sbc_cli.register(application)
    return application


@pytest.fixture(scope="module")
def old_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture()
def sbc(old_key: rsa.RSAPrivateKey) -> Iterator[LabSbc]:
    with LabSbc("sbc-verify", key=old_key) as device:
        yield device


@pytest.fixture()
def files(tmp_path: Path, issued: Issued, old_key: rsa.RSAPrivateKey) -> list[str]:
    cert, key, old = tmp_path / "new.crt", tmp_path / "new.key", tmp_path / "old.key"
    cert.write_bytes(issued.fullchain_pem + issued.root_pem)
    key.write_bytes(issued.key_pem("pkcs1"))
    old.write_bytes(old_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return [str(cert), str(key), "--previous-key", str(old)]


def _deploy(app: typer.Typer, sbc: LabSbc, files: list[str], *args: str) -> Result:
    runner = CliRunner(env={"SBC_PW": sbc.password})
    return runner.invoke(app, [
        "sbc", "deploy", files[0], files[1], "--url", sbc.url, "--password-env", "SBC_PW",
        "--pin-sha256", sbc.management_sha256, *files[2:], "--verify-timeout", "10", *args])


def test_without_a_listener_refused_before_any_request(
    app: typer.Typer, sbc: LabSbc, files: list[str]
) -> None:
    """--context 1 without --verify: exit 2 naming the flags; the SBC sees no request."""
    result = _deploy(app, sbc, files, "--context", "1")
    assert result.exit_code == 2, result.output
    assert "--verify" in result.output and "--no-verify" in result.output
    assert sbc.requests == []


def test_no_verify_says_not_verified(
    app: typer.Typer, sbc: LabSbc, files: list[str], issued: Issued
) -> None:
    """--no-verify installs and says NOT verified, in the text and in JSON."""
    text = _deploy(app, sbc, files, "--context", "1", "--no-verify")
    assert text.exit_code == 0, text.output
    assert "NOT verified" in text.output
    assert "installed and verified" not in text.output
    again = _deploy(app, sbc, files, "--context", "1", "--no-verify", "--force", "--json",
                    "--allow-no-rollback")
    outcome = json.loads(again.stdout)
    assert "NOT verified" in outcome["message"]
    assert {s["status"] for s in outcome["steps"] if s["step"] == "verify"} >= {"skipped"}


def test_management_context_verifies_the_rest_port(
    app: typer.Typer, sbc: LabSbc, files: list[str]
) -> None:
    """--context 0 (management) without --verify: the REST port is the listener verified."""
    result = _deploy(app, sbc, files, "--context", "0", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert "verified by handshake on 1 listener(s)" in outcome["message"]
    assert outcome["served_after"] == {f"127.0.0.1:{sbc.port}": outcome["target_sha256"]}
    assert sbc.management_sha256 == outcome["target_sha256"]


def test_verify_and_no_verify_contradict(
    app: typer.Typer, sbc: LabSbc, files: list[str]
) -> None:
    result = _deploy(app, sbc, files, "--context", "1", "--no-verify",
                     "--verify", f"127.0.0.1:{sbc.sip_port}")
    assert result.exit_code == 2
    assert "contradict" in result.output
