"""certfleet schedule (systemd, cron, windows) and the notification module (bands, targets)."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _tools import require_tool
from certfleet.acme.config import NotifyConfig
from certfleet.cli.app import app
from certfleet.estate.status import DeviceStatus, ListenerStatus
from certfleet.notify import (
    Notification,
    due_bands,
    failure_notification,
    send,
)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "my estate" / "certfleet.toml"
    path.parent.mkdir()
    path.write_text('[certificates.wildcard]\ncn = "*.example.com"\n')
    return path


def schedule(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["schedule", *args])
    return result.exit_code, result.output


def test_systemd_units_twice_a_day_randomised(inventory: Path) -> None:
    """A oneshot service (status --notify, then renew) and a timer at 00/12 with a random delay."""
    (inventory.parent / "secrets.env").write_text("")  # --env-file must exist (0600)
    (inventory.parent / "secrets.env").chmod(0o600)
    code, text = schedule("systemd", "--inventory", str(inventory), "--env-file",
                          str(inventory.parent / "secrets.env"))
    assert code == 0, text
    assert "OnCalendar=*-*-* 00,12:00:00" in text and "RandomizedDelaySec=43200" in text
    assert "Persistent=true" in text and "Type=oneshot" in text
    renew = next(line for line in text.splitlines() if line.startswith("ExecStart=/"))
    argv = shlex.split(renew.removeprefix("ExecStart="))
    assert argv[1:] == ["-m", "certfleet", "renew", "--inventory", str(inventory.resolve())]
    assert any(line.startswith("ExecStart=-") and "status --notify" in line
               for line in text.splitlines())
    assert f"EnvironmentFile={inventory.parent.resolve() / 'secrets.env'}" in text
    # systemd's own checker as the oracle (CI installs systemd for it)
    analyze = require_tool("systemd-analyze")
    units = inventory.parent / "units"
    units.mkdir()
    for block in text.split("# ")[1:3]:
        name, _, body = block.partition("\n")
        (units / name.strip()).write_text(body)
    assert sorted(p.name for p in units.iterdir()) == [
        "certfleet-renew.service", "certfleet-renew.timer"]
    result = subprocess.run([analyze, "verify", str(units / "certfleet-renew.timer")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr


def test_cron_line_is_five_fields_and_quotes_paths(inventory: Path) -> None:
    """One crontab line: minute, two hours 12 apart, the renew command with a quoted path."""
    code, text = schedule("cron", "--inventory", str(inventory))
    assert code == 0, text
    # The crontab line; the command that tests it follows on stderr.
    line = next(x for x in text.splitlines() if x.endswith("# certfleet-renew")).strip()
    minute, hours, *rest = line.split()
    assert 0 <= int(minute) < 60
    first, second = (int(h) for h in hours.split(","))
    assert second == first + 12 and rest[:3] == ["*", "*", "*"]
    assert f"'{inventory.resolve()}'" in line and line.endswith("# certfleet-renew")


def test_windows_schtasks_command(inventory: Path) -> None:
    """The schtasks /Create command: every 12 hours, the renew command as the task."""
    code, text = schedule("windows", "--inventory", str(inventory))
    assert code == 0, text
    assert text.startswith("schtasks /Create /TN certfleet-renew /SC HOURLY /MO 12 /ST ")
    assert "renew --inventory" in text


def test_schedule_names_the_shared_store(inventory: Path) -> None:
    """--state-url goes into every command of the job (and its trial command); a URL that
    holds a password is refused (exit 2) without echoing it."""
    url = "postgresql://team@db.example.com/certfleet"
    code, text = schedule("cron", "--inventory", str(inventory), "--state-url", url)
    assert code == 0, text
    line = next(x for x in text.splitlines() if x.endswith("# certfleet-renew"))
    assert line.count(f"--state-url {url}") == 2  # status --notify, then renew
    trial = next(x for x in text.splitlines() if x.startswith("test it as the scheduler"))
    assert f"--state-url {url}" in trial
    code, text = schedule("windows", "--inventory", str(inventory), "--state-url", url)
    assert code == 0 and f"--state-url {url}" in text
    code, text = schedule("cron", "--inventory", str(inventory), "--state-url",
                          "postgresql://team:s3cret@db.example.com/certfleet")
    assert code == 2, text
    assert "holds a password" in text and "s3cret" not in text


def test_schedule_refuses_unknown_kind_and_missing_inventory(tmp_path: Path) -> None:
    """Bad input: one line, exit 2."""
    code, text = schedule("launchd", "--inventory", str(tmp_path / "x.toml"))
    assert code == 2 and "unknown schedule kind 'launchd'" in text
    code, text = schedule("cron", "--inventory", str(tmp_path / "missing.toml"))
    assert code == 2 and "does not exist" in text


def _status(days: int, sha: str = "ab" * 32) -> DeviceStatus:
    not_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=days, hours=1)
    listener = ListenerStatus("127.0.0.1:5061", "sip", True, sha256=sha,
                              subject="CN=*.example.com", not_after=not_after.isoformat(),
                              days_left=days)
    return DeviceStatus("sbc1", "sbc", "wildcard", None, None, [listener])


def test_bands_told_once_each(tmp_path: Path) -> None:
    """30/14/7/1: each band is told once per certificate and device; a new certificate anew."""
    state = tmp_path / "bands.json"
    assert due_bands([_status(40)], state) == []
    (first,) = due_bands([_status(29)], state)
    assert first.event == "expiring" and "expires in 29 day(s)" in first.title
    assert due_bands([_status(20)], state) == []
    assert len(due_bands([_status(13)], state)) == 1
    assert due_bands([_status(13)], state) == []
    assert len(due_bands([_status(6)], state)) == 1
    assert len(due_bands([_status(1)], state)) == 1
    assert due_bands([_status(0)], state) == []
    assert len(due_bands([_status(25, sha="cd" * 32)], state)) == 1
    assert state.stat().st_mode & 0o777 == 0o600


def test_send_writes_file_target_and_survives_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file:// target gets the JSON; an unreachable target is logged, never raised."""
    sink = tmp_path / "n.jsonl"
    monkeypatch.setenv("GOOD_URL", f"file://{sink}")
    monkeypatch.setenv("BAD_URL", "json://127.0.0.1:1/hook")
    logged: list[str] = []
    config = NotifyConfig(("env:BAD_URL", "env:GOOD_URL", "env:UNSET_URL"), ("failure",))
    failed = send(config, failure_notification("wildcard", "the CA said no"), logged.append)
    assert failed == 2
    (told,) = [json.loads(line) for line in sink.read_text().splitlines()]
    assert told["event"] == "failure" and "the CA said no" in told["body"]
    assert "Next: certfleet issue wildcard" in told["body"]
    assert not any("127.0.0.1:1" in line for line in logged)  # the URL holds a token
    assert send(config, Notification("renewed", "t", "b"), logged.append) == 0
    assert len(sink.read_text().splitlines()) == 1
