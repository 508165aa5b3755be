"""demo --acme and lab up --acme: the unattended story on the lab, and a missing Pebble."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from _tools import require_tool
from certfleet.cli.app import app


def test_demo_acme_tells_the_unattended_story() -> None:
    """Nothing due → due → ordered from Pebble, deployed, verified → nothing; the notice shown."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    result = CliRunner().invoke(app, ["demo", "--acme"])
    assert result.exit_code == 0, result.output[-3000:]
    output = result.output
    assert output.count("renew: 0 ordered; exit code 0") == 2
    assert output.count("renew: 1 ordered; exit code 0") == 1
    assert "renewed: certfleet: wildcard renewed" in output
    assert "is served by: ovoc, sbc1, sbc2, sbc3-ha." in output


@pytest.mark.parametrize("command", [["demo", "--acme"], ["lab", "up", "--acme"]])
def test_acme_without_pebble_says_how_to_install(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Pebble on PATH, --acme exits 2 naming the package to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "pebble" in result.output and "apt-get install pebble" in result.output
