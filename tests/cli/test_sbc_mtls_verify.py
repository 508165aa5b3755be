"""``certfleet sbc deploy --verify`` on a Teams listener that requires a client certificate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from certfleet.lab.ca import Issued
from certfleet.lab.sbc import LabSbc
from sbc_support import deploy_files


@pytest.fixture(params=[4, 8], ids=["TLSv1.2", "TLSv1.3"])
def sbc(request: pytest.FixtureRequest, old_key: rsa.RSAPrivateKey) -> Iterator[LabSbc]:
    with LabSbc("sbc-teams", key=old_key, teams_listener=True,
                tls_versions={2: request.param}) as device:
        yield device


def test_deploy_verified_on_a_mutual_tls_listener(
    sbc_app: typer.Typer, sbc: LabSbc, issued: Issued, old_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """Exit 0, and the Teams listener (client certificate required) serves the new leaf."""
    cert, key, old = deploy_files(tmp_path, issued, old_key)
    result = CliRunner(env={"SBC_PW": sbc.password}).invoke(sbc_app, [
        "sbc", "deploy", str(cert), str(key), "--url", sbc.url, "--password-env", "SBC_PW",
        "--pin-sha256", sbc.management_sha256, "--context", "2",
        "--verify", f"127.0.0.1:{sbc.teams_port}", "--previous-key", str(old),
        "--verify-timeout", "10", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["outcome"] == "installed"
    assert outcome["served_after"] == {f"127.0.0.1:{sbc.teams_port}": outcome["target_sha256"]}
    assert sbc.served_sha256("teams") == outcome["target_sha256"]
