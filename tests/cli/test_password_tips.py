"""The Tip for an encrypted input file names the password option of the command in use.

inspect, check, export and import take ``--password-env``/``--password-file``; `certfleet sbc
deploy` and `certfleet ovoc deploy` take the files' password with ``--input-password-env``
(their ``--password-env`` is the device's own password), and `certfleet deploy`/`plan` take
the previous key's with ``--previous-key-password-env``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.lab.ca import LabCA
from hint_support import COMMANDS, FLAG

runner = CliRunner()
SECRET = b"correct horse"


@pytest.fixture
def files(tmp_path: Path, lab_ca: LabCA) -> Path:
    """``site.pfx`` and ``old.key`` (encrypted PKCS#8, another password) under ``tmp_path``,
    and an inventory."""
    issued = lab_ca.issue(["site.example.com"], key_type="ec-p256")
    assert issued.key is not None
    (tmp_path / "site.pfx").write_bytes(pkcs12.serialize_key_and_certificates(
        b"site", issued.key, issued.leaf, None,
        serialization.BestAvailableEncryption(SECRET)))
    (tmp_path / "old.key").write_bytes(issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"another secret")))
    (tmp_path / "certfleet.toml").write_text(
        '[certificates.site]\ncn = "site.example.com"\n\n[devices.sbc1]\nkind = "sbc"\n'
        'address = "127.0.0.1"\nport = 9\npassword = "env:CERTFLEET_TEST_NO_SUCH_VAR"\n'
        'tls_pin = "' + "0" * 64 + '"\ncertificate = "site"\nlisteners = [9]\n')
    return tmp_path


def _tip(args: list[str], command: str) -> str:
    result = runner.invoke(app, args, env={"CERTFLEET_TEST_PW": "x",
                                           "CERTFLEET_TEST_KS": "keystore-123",
                                           "CERTFLEET_TEST_PFX_PW": SECRET.decode()})
    assert result.exit_code == 2, result.output
    tips = [line for line in result.output.splitlines() if line.startswith("Tip:")]
    assert tips, result.output
    for flag in FLAG.findall(tips[-1]):
        assert flag in COMMANDS[command], f"{flag} is no option of certfleet {command}: {tips}"
    return tips[-1]


def test_sbc_deploy_names_input_password_env(files: Path) -> None:
    tip = _tip(["sbc", "deploy", str(files / "site.pfx"), "--url", "https://127.0.0.1:9",
                "--password-env", "CERTFLEET_TEST_PW", "--context", "1", "--no-verify",
                "--allow-no-rollback"], "sbc deploy")
    assert tip == "Tip: give the password with --input-password-env VAR"


def test_sbc_deploy_previous_key_names_input_password_env(files: Path) -> None:
    tip = _tip(["sbc", "deploy", str(files / "site.pfx"), "--url", "https://127.0.0.1:9",
                "--password-env", "CERTFLEET_TEST_PW", "--context", "1", "--no-verify",
                "--input-password-env", "CERTFLEET_TEST_PFX_PW",
                "--previous-key", str(files / "old.key")], "sbc deploy")
    assert tip == "Tip: check the password; give the password with --input-password-env VAR"


def test_ovoc_deploy_names_input_password_env(files: Path) -> None:
    tip = _tip(["ovoc", "deploy", str(files / "site.pfx"), "--host", "127.0.0.1",
                "--ssh-port", "9", "--password-env", "CERTFLEET_TEST_PW",
                "--su-password-env", "CERTFLEET_TEST_PW",
                "--keystore-password-env", "CERTFLEET_TEST_KS"], "ovoc deploy")
    assert tip == "Tip: give the password with --input-password-env VAR"


@pytest.mark.parametrize("command", ["deploy", "plan"])
def test_estate_previous_key_names_its_password_option(files: Path, command: str) -> None:
    tip = _tip([command, "--previous-key", str(files / "old.key"), "--inventory",
                str(files / "certfleet.toml"), "--state-dir", str(files / "state")], command)
    assert tip == "Tip: give the password with --previous-key-password-env VAR"
