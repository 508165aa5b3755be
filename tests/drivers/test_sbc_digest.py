"""HTTP Digest: a device that answers Basic with a Digest challenge gets Digest, once
asked, for the rest of the session; ``sbc status`` says which one it uses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from certfleet.cli import sbc as sbc_cli
from certfleet.errors import DeviceAuthError
from certfleet.lab.ca import Issued
from certfleet.lab.sbc import LabSbc
from sbc_support import bundle_of, deploy, driver_for, listeners


@pytest.fixture()
def sbc() -> Iterator[LabSbc]:
    with LabSbc("sbc-digest", auth="digest") as device:
        yield device


def test_digest_is_used_after_the_challenge_and_kept(sbc: LabSbc, issued: Issued) -> None:
    driver = driver_for(sbc, contexts=(1,), listeners=listeners(sbc)[1:])  # the SIP listener
    outcome = deploy(driver, bundle_of(issued), allow_no_rollback=True)
    assert outcome.outcome == "installed", outcome.message
    assert driver.auth_scheme == "digest"
    assert sbc.context(1).sha256 == bundle_of(issued).leaf_sha256
    # one 401 for the preemptive Basic, then each request answered on Digest
    refused = [r for r in sbc.requests if r[2] == 401]
    assert refused[0][1].endswith("/status")
    assert any(r[0] == "PUT" and r[2] == 200 for r in sbc.requests)


def test_wrong_password_with_digest_is_refused_once(sbc: LabSbc) -> None:
    driver = driver_for(sbc, password="not-it")

    async def run() -> None:
        async with driver.session():
            pass

    with pytest.raises(DeviceAuthError, match="answered 401") as caught:
        asyncio.run(run())
    assert "not-it" not in caught.value.message
    # Basic once, then Digest (httpx answers the challenge itself): no loop
    assert len([r for r in sbc.requests if r[2] == 401]) <= 3


def test_status_says_which_auth(sbc: LabSbc) -> None:
    app = typer.Typer()
    app.command("noop")(lambda: None)
    sbc_cli.register(app)
    runner = CliRunner(env={"SBC_PW": sbc.password})
    conn = ["--url", sbc.url, "--password-env", "SBC_PW", "--pin-sha256", sbc.management_sha256]
    result = runner.invoke(app, ["sbc", "status", *conn, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["auth"] == "digest"
    human = runner.invoke(app, ["sbc", "status", *conn])
    assert "REST auth Digest" in human.output
    sbc.auth = "basic"
    basic = runner.invoke(app, ["sbc", "status", *conn, "--json"])
    assert json.loads(basic.output)["auth"] == "basic"
