"""`history --device NAME` for a device nobody knows is exit 2 with the known names."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from certfleet.cli.app import app

runner = CliRunner()

INVENTORY = """
[certificates.wildcard]
cn = "*.example.com"

[devices.sbc1]
kind = "sbc"
address = "sbc1.example.com"
certificate = "wildcard"

[devices.ovoc]
kind = "ovoc"
address = "ovoc.example.com"
certificate = "wildcard"
"""


def _history(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    inventory = tmp_path / "certfleet.toml"
    inventory.write_text(INVENTORY)
    result = runner.invoke(app, ["history", "--inventory", str(inventory), "--state-dir",
                                 str(tmp_path / "state"), *args])
    return result.exit_code, result.stdout, result.stderr


def test_an_unknown_device_is_exit_2_naming_the_known_ones(tmp_path: Path) -> None:
    """sbc9 is in neither the inventory nor the history: exit 2, one line, the known names."""
    code, out, err = _history(tmp_path, "--device", "sbc9")
    assert code == 2
    assert "no device named 'sbc9'" in err
    assert "ovoc, sbc1" in err
    assert "Traceback" not in err and out == ""


def test_an_unknown_device_in_json_is_an_error_object(tmp_path: Path) -> None:
    """With --json the refusal is {"error": ...} on stdout, exit 2."""
    code, out, _ = _history(tmp_path, "--device", "sbc9", "--json")
    assert code == 2
    assert "sbc9" in json.loads(out)["error"]


def test_a_known_device_without_history_is_an_empty_history(tmp_path: Path) -> None:
    """sbc1 is in the inventory but was never deployed: an empty list, exit 0."""
    code, out, _ = _history(tmp_path, "--device", "sbc1", "--json")
    assert code == 0
    assert json.loads(out) == {"deployments": []}
