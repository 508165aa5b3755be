"""``certfleet sbc deploy``: a listener to verify, or --no-verify said in words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner, Result

from certfleet.lab.ca import Issued
from certfleet.lab.sbc import LabSbc
from sbc_support import deploy_files


@pytest.fixture()
def sbc(old_key: rsa.RSAPrivateKey) -> Iterator[LabSbc]:
    with LabSbc("sbc-verify", key=old_key) as device:
        yield device


@pytest.fixture()
def files(tmp_path: Path, issued: Issued, old_key: rsa.RSAPrivateKey) -> list[str]:
    cert, key, old = deploy_files(tmp_path, issued, old_key)
    return [str(cert), str(key), "--previous-key", str(old)]


def _deploy(sbc_app: typer.Typer, sbc: LabSbc, files: list[str], *args: str) -> Result:
    runner = CliRunner(env={"SBC_PW": sbc.password})
    return runner.invoke(sbc_app, [
        "sbc", "deploy", files[0], files[1], "--url", sbc.url, "--password-env", "SBC_PW",
        "--pin-sha256", sbc.management_sha256, *files[2:], "--verify-timeout", "10", *args])


def test_without_a_listener_refused_before_any_request(
    sbc_app: typer.Typer, sbc: LabSbc, files: list[str]
) -> None:
    """--context 1 without --verify: exit 2 naming the flags; the SBC sees no request."""
    result = _deploy(sbc_app, sbc, files, "--context", "1")
    assert result.exit_code == 2, result.output
    assert "--verify" in result.output and "--no-verify" in result.output
    assert sbc.requests == []


def test_no_verify_says_not_verified(
    sbc_app: typer.Typer, sbc: LabSbc, files: list[str], issued: Issued
) -> None:
    """--no-verify installs and says NOT verified, in the text and in JSON."""
    text = _deploy(sbc_app, sbc, files, "--context", "1", "--no-verify")
    assert text.exit_code == 0, text.output
    assert "NOT verified" in text.output
    assert "installed and verified" not in text.output
    again = _deploy(sbc_app, sbc, files, "--context", "1", "--no-verify", "--force", "--json",
                    "--allow-no-rollback")
    outcome = json.loads(again.stdout)
    assert "NOT verified" in outcome["message"]
    assert {s["status"] for s in outcome["steps"] if s["step"] == "verify"} >= {"skipped"}


def test_management_context_verifies_the_rest_port(
    sbc_app: typer.Typer, sbc: LabSbc, files: list[str]
) -> None:
    """--context 0 (management) without --verify: the REST port is the listener verified."""
    result = _deploy(sbc_app, sbc, files, "--context", "0", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert "verified by handshake on 1 listener(s)" in outcome["message"]
    assert outcome["served_after"] == {f"127.0.0.1:{sbc.port}": outcome["target_sha256"]}
    assert sbc.management_sha256 == outcome["target_sha256"]


def test_verify_and_no_verify_contradict(
    sbc_app: typer.Typer, sbc: LabSbc, files: list[str]
) -> None:
    result = _deploy(sbc_app, sbc, files, "--context", "1", "--no-verify",
                     "--verify", f"127.0.0.1:{sbc.sip_port}")
    assert result.exit_code == 2
    assert "contradict" in result.output
