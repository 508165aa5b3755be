"""Notifications on the lab estate: status --notify bands, and a deploy's outcome."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.cli.lab import _seed_previous
from certfleet.estate.store import Store
from certfleet.lab.estate import LabEstate
from postgres import STORE_KEY


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


def _run(lab: LabEstate, tmp_path: Path, *args: str) -> int:
    result = CliRunner().invoke(app, [*args, "--inventory", str(lab.inventory_path),
                                      "--state-dir", str(tmp_path / "state")])
    return result.exit_code


def _told(tmp_path: Path) -> list[dict[str, str]]:
    sink = tmp_path / "notify.jsonl"
    return [json.loads(x) for x in sink.read_text().splitlines()] if sink.exists() else []


def test_status_notify_tells_the_band_once(lab: LabEstate, tmp_path: Path) -> None:
    """5 days left: one 'expiring' notice per device; the next status --notify says nothing."""
    assert _run(lab, tmp_path, "status", "--notify") == 0
    told = _told(tmp_path)
    assert sorted(n["title"].split(" on ")[1].split()[0] for n in told) == ["ovoc", "sbc1"]
    assert all(n["event"] == "expiring" and "expires in" in n["title"] for n in told)
    assert "certfleet renew --only wildcard" in told[0]["body"]
    assert _run(lab, tmp_path, "status", "--notify") == 0
    assert len(_told(tmp_path)) == 2
    assert _run(lab, tmp_path, "status") == 0
    assert len(_told(tmp_path)) == 2


def test_deploy_tells_where_it_installed(lab: LabEstate, tmp_path: Path) -> None:
    """certfleet deploy of a new version: one notice naming every device it installed on."""
    issued = lab.ca.issue(days=200)
    (tmp_path / "new.pem").write_bytes(issued.fullchain_pem + issued.root_pem
                                       + issued.key_pem())
    assert _run(lab, tmp_path, "import", "wildcard", str(tmp_path / "new.pem")) == 0
    assert _run(lab, tmp_path, "deploy") == 0
    (told,) = _told(tmp_path)
    assert told["event"] == "renewed"
    assert told["body"] == "wildcard v2 installed and verified on: ovoc, sbc1."


def test_the_bands_told_are_the_teams_on_a_shared_store(
    lab: LabEstate, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a band told from one machine is not told again from another."""
    monkeypatch.setenv("CERTFLEET_STATE_URL", pg_url)
    monkeypatch.setenv("CERTFLEET_STORE_KEY", STORE_KEY)
    first = CliRunner().invoke(app, ["status", "--notify", "--inventory",
                                     str(lab.inventory_path), "--state-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert len(_told(tmp_path)) == 2
    second = CliRunner().invoke(app, ["status", "--notify", "--inventory",
                                      str(lab.inventory_path), "--state-dir", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert len(_told(tmp_path)) == 2
