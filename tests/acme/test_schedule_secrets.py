"""certfleet schedule reads the inventory: a job whose runs would find none of its env:
secrets is refused, an --env-file is checked, and the command that tests the job is printed."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app

INVENTORY = """\
[certificates.wildcard]
cn = "*.example.com"

[certificates.wildcard.acme]
directory = "https://127.0.0.1:1/dir"

[certificates.wildcard.dns]
provider = "rfc2136"
server = "127.0.0.1"
tsig_name = "certfleet"
tsig_secret = "env:TSIG_SECRET"

[notify]
urls = ["env:NOTIFY_URL"]
# password = "env:NOT_A_REFERENCE"
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "estate" / "certfleet.toml"
    path.parent.mkdir()
    path.write_text(INVENTORY)
    return path


def schedule(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["schedule", *args])
    return result.exit_code, result.stdout, result.stderr


def _env_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("kind", ["systemd", "cron"])
def test_refused_without_env_file(inventory: Path, kind: str) -> None:
    """env: secrets and no --env-file: exit 2 naming every variable, nothing printed to install."""
    code, out, err = schedule(kind, "--inventory", str(inventory))
    assert code == 2
    assert out == ""
    assert "NOTIFY_URL, TSIG_SECRET" in err and "--env-file" in err
    assert "NOT_A_REFERENCE" not in err
    assert "Traceback" not in err


def test_env_file_must_exist(inventory: Path) -> None:
    """An --env-file that does not exist: exit 2, the variables it must define named."""
    code, _, err = schedule("systemd", "--inventory", str(inventory), "--env-file",
                            str(inventory.parent / "nope.env"))
    assert code == 2 and "does not exist" in err and "TSIG_SECRET" in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_env_file_readable_by_others_is_refused(inventory: Path) -> None:
    """An --env-file readable by others: exit 2 with the chmod that fixes it."""
    env = _env_file(inventory.parent / "secrets.env", "TSIG_SECRET=a\nNOTIFY_URL=b\n", 0o644)
    code, _, err = schedule("cron", "--inventory", str(inventory), "--env-file", str(env))
    assert code == 2 and "readable by others" in err
    assert f"chmod 600 {env}" in err


def test_env_file_must_define_every_variable(inventory: Path) -> None:
    """An --env-file that lacks a referenced variable: exit 2 naming it."""
    env = _env_file(inventory.parent / "secrets.env", "# secrets\nexport TSIG_SECRET=abc\n")
    code, _, err = schedule("systemd", "--inventory", str(inventory), "--env-file", str(env))
    assert code == 2
    assert "does not define NOTIFY_URL" in err and "TSIG_SECRET" not in err.split("define")[1]


@pytest.mark.parametrize("kind", ["systemd", "cron"])
def test_complete_env_file_prints_the_job_and_its_test(inventory: Path, kind: str) -> None:
    """A 0600 --env-file defining every variable: exit 0, the job, and one command that runs a
    dry run in the scheduler's environment with that file loaded."""
    env = _env_file(inventory.parent / "secrets.env",
                    "TSIG_SECRET='abc'\nNOTIFY_URL=json://127.0.0.1/x\n")
    code, out, err = schedule(kind, "--inventory", str(inventory), "--env-file", str(env))
    assert code == 0, err
    assert str(env.resolve()) in out
    (line,) = [x for x in err.splitlines() if x.startswith("test it as the scheduler runs it")]
    command = shlex.split(line.split(": ", 1)[1])
    assert command[0] == ("systemd-run" if kind == "systemd" else "env")
    text = " ".join(command)
    assert str(env.resolve()) in text
    assert "-m certfleet renew --dry-run --inventory" in text
    if kind == "cron":
        assert command[1] == "-i"  # cron's bare environment, not the caller's


def test_inventory_without_env_secrets_needs_no_env_file(tmp_path: Path) -> None:
    """No env: reference: the schedule is printed without --env-file, with its test command."""
    path = tmp_path / "certfleet.toml"
    path.write_text('[certificates.wildcard]\ncn = "*.example.com"\n')
    code, out, err = schedule("cron", "--inventory", str(path))
    assert code == 0 and out.strip().endswith("# certfleet-renew")
    assert "renew --dry-run" in err
