"""Never silent: an unexpected exception in deploy, renew, issue, rollback or status --notify
ends in a crash report, a failure notification, one line on stderr and exit 1 or 3.

The exception is injected into certfleet's own code at several points of a run on the
lab estate (before any change, during a deployment after the certificate was installed).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.cli.lab import _seed_previous
from certfleet.estate.store import Store
from certfleet.lab.estate import LabEstate


class Injected(RuntimeError):
    """The unexpected exception of these tests."""


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LabEstate]:
    estate = LabEstate(tmp_path / "lab", sbcs=1, ha=False)
    try:
        estate.start()
        with Store.open(tmp_path / "state") as store:
            _seed_previous(estate, store)
        with estate.inventory_path.open("a") as handle:
            handle.write('\n[notify]\nurls = ["env:LAB_NOTIFY_URL"]\n')
        monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{tmp_path / 'notify.jsonl'}")
        with estate.environment():
            yield estate
    finally:
        estate.stop()


def _invoke(lab: LabEstate, tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--inventory", str(lab.inventory_path),
                                    "--state-dir", str(tmp_path / "state")])


def _told(tmp_path: Path) -> list[dict[str, str]]:
    sink = tmp_path / "notify.jsonl"
    return [json.loads(x) for x in sink.read_text().splitlines()] if sink.exists() else []


def _new_version(lab: LabEstate, tmp_path: Path) -> None:
    issued = lab.ca.issue(days=200)
    (tmp_path / "new.pem").write_bytes(issued.fullchain_pem + issued.root_pem
                                       + issued.key_pem())
    assert _invoke(lab, tmp_path, "import", "wildcard", str(tmp_path / "new.pem")).exit_code == 0


def _check_crash(lab: LabEstate, tmp_path: Path, result: Any, command: str,
                 code: int) -> tuple[str, dict[str, str]]:
    """The four outcomes of a crash; the report's text and the notification."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [x for x in result.stderr.splitlines() if "crash report" in x]
    assert len(lines) == 1 and "Injected" in lines[0], result.stderr
    (report,) = (tmp_path / "state").glob("crash-*.txt")
    assert str(report) in lines[0]
    if os.name == "posix":
        assert stat.S_IMODE(report.stat().st_mode) == 0o600
    text = report.read_text()
    assert f"command: certfleet {command}" in text
    assert "command line: " in text and "certfleet: " in text and "python: " in text
    assert "Traceback (most recent call last)" in text and "Injected: boom" in text
    assert "last step: " in text
    for value in lab.env.values():  # the lab's passwords and pins
        assert value not in text
    assert "PRIVATE KEY" not in text
    failures = [n for n in _told(tmp_path) if n["event"] == "failure"]
    assert len(failures) == 1
    assert "CRASHED" in failures[0]["title"] and str(report) in failures[0]["body"]
    assert "Next: certfleet " in failures[0]["body"]
    return text, failures[0]


def test_deploy_crash_before_any_change(
    lab: LabEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception before any device is touched: report, notification, one line, exit 1."""
    _new_version(lab, tmp_path)

    def boom(*args: object, **kwargs: object) -> int:
        raise Injected("boom")

    monkeypatch.setattr(Store, "start_run", boom)
    result = _invoke(lab, tmp_path, "deploy")
    text, told = _check_crash(lab, tmp_path, result, "deploy", 1)
    assert "no deployment was in progress" in text
    assert "No device was being changed" in told["body"]


def test_deploy_crash_after_a_change(
    lab: LabEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception while a deployment is in progress (the device installed, its outcome not
    recorded): the report names the device and step, exit 3, and the notice says rollback."""
    _new_version(lab, tmp_path)
    original = Store.finish_deployment

    def boom(self: Store, deployment_id: int, outcome: Any, **kwargs: Any) -> None:
        if outcome.outcome == "installed" and outcome.steps and outcome.steps[0].device == "sbc1":
            raise Injected("boom")
        original(self, deployment_id, outcome, **kwargs)

    monkeypatch.setattr(Store, "finish_deployment", boom)
    result = _invoke(lab, tmp_path, "deploy")
    text, told = _check_crash(lab, tmp_path, result, "deploy", 3)
    assert "device may have been changed: yes: deployment in progress on sbc1" in text
    assert "last step: sbc1: " in text
    assert "sbc1: a deployment was in progress at step " in told["body"]
    assert "certfleet rollback sbc1" in told["body"]
    assert "certfleet rollback sbc1" in result.stderr


def test_status_notify_crash(
    lab: LabEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status --notify that fails unexpectedly: report, notification, exit 1, --json error."""
    import certfleet.notify

    def boom(*args: object, **kwargs: object) -> list[Any]:
        raise Injected("boom")

    monkeypatch.setattr(certfleet.notify, "pending_bands", boom)
    result = _invoke(lab, tmp_path, "status", "--notify", "--json")
    _check_crash(lab, tmp_path, result, "status --notify", 1)
    data = json.loads(result.stdout)
    assert data["exit_code"] == 1 and data["crash_report"].endswith(".txt")


def test_rollback_crash(lab: LabEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rollback that fails unexpectedly before it restores anything: exit 1, the four outcomes."""
    import certfleet.estate.rollback

    def boom(*args: object, **kwargs: object) -> Any:
        raise Injected("boom")

    monkeypatch.setattr(certfleet.estate.rollback, "rollback_device", boom)
    result = _invoke(lab, tmp_path, "rollback", "sbc1")
    _check_crash(lab, tmp_path, result, "rollback", 1)


def test_certfleet_errors_are_not_crashes(lab: LabEstate, tmp_path: Path) -> None:
    """A run that ends well and a certfleet error (an unknown device) are no crash: their own
    exit code and output, no crash report."""
    assert _invoke(lab, tmp_path, "status", "--notify").exit_code == 0
    assert _invoke(lab, tmp_path, "deploy").exit_code == 0
    assert not list((tmp_path / "state").glob("crash-*.txt"))
    result = _invoke(lab, tmp_path, "rollback", "no-such-device")
    assert result.exit_code in (1, 2)
    assert not list((tmp_path / "state").glob("crash-*.txt"))
    assert "Traceback" not in result.output
