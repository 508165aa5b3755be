"""Plan and deploy decide alike, for every device, before the first change."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
from certfleet.estate.deploy import run_deploy
from certfleet.estate.importer import import_certificate
from certfleet.estate.plan import make_plan
from certfleet.estate.store import Store
from certfleet.lab.estate import WILDCARD, LabEstate
from certfleet.pki.model import cert_sha256
from handshake import unit_served
from loopdev import LoopEstate

runner = CliRunner()


def _served(port: int) -> str:
    return cert_sha256(asyncio.run(fetch_served_certificate(Listener("127.0.0.1", port))))


def test_unreachable_device_refuses_the_whole_run(
    loop_estate: LoopEstate, tmp_path: Path
) -> None:
    """sbc2 is down: the run changes no device and exits 2 naming it; --skip-refused goes on."""
    old = cert_sha256(loop_estate.old.leaf)
    loop_estate.devices["sbc2"].listener.stop()
    with Store.open(tmp_path / "state") as store:
        target = loop_estate.import_renewed(store, tmp_path).leaf_sha256
        inventory = loop_estate.inventory()
        plans = {p.name: p for p in asyncio.run(
            make_plan(inventory, store, factory=loop_estate.factory))}
        assert plans["sbc2"].action == "blocked"
        assert plans["sbc2"].reason.startswith("unreachable: ")
        assert plans["sbc2"].unreachable and plans["sbc2"].to_dict()["unreachable"]
        assert plans["sbc1"].action == "deploy"

        report = asyncio.run(run_deploy(inventory, store, loop_estate.factory))
        result = {r.device: r for r in report.results}
        assert report.exit_code == 2
        assert (result["sbc2"].status, result["sbc2"].exit_code) == ("refused", 2)
        assert "unreachable" in result["sbc2"].message
        # the same reason as the plan's
        assert plans["sbc2"].reason in result["sbc2"].message
        for name in ("sbc1", "sbc3"):
            assert result[name].status == "not-attempted"
            assert "sbc2 would refuse" in result[name].message
            assert loop_estate.devices[name].installs == 0
            assert _served(loop_estate.devices[name].port) == old
        assert store.backups() == []

        report = asyncio.run(
            run_deploy(inventory, store, loop_estate.factory, skip_refused=True)
        )
        result = {r.device: r for r in report.results}
        assert result["sbc2"].status == "refused"
        assert result["sbc1"].status == result["sbc3"].status == "installed"
        assert _served(loop_estate.devices["sbc1"].port) == target
        # Devices were changed: never exit 2 (which says nothing was touched).
        assert report.exit_code == 1


def test_unreachable_is_said_by_verify_plan_and_deploy(
    loop_estate: LoopEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands: plan and deploy name it unreachable; verify exits 1 with UNREACHABLE."""
    monkeypatch.setenv("LOOP_SBC_PASSWORD", "unused")
    loop_estate.devices["sbc3"].listener.stop()
    state = tmp_path / "state"
    with Store.open(state) as store:
        # last year's certificate with its key first: a rollback of sbc1 and sbc2 is possible
        old = tmp_path / "old.pem"
        old.write_bytes(loop_estate.old.fullchain_pem + loop_estate.old.key_pem())
        import_certificate(loop_estate.inventory(), store, "wildcard", [old])
        loop_estate.import_renewed(store, tmp_path)
    args = ["--inventory", str(loop_estate.path), "--state-dir", str(state)]

    verify = runner.invoke(app, ["verify", *args])
    assert verify.exit_code == 1
    lines = {line.split(":")[0]: line for line in verify.stdout.splitlines()}
    assert "UNREACHABLE" in lines["sbc3"] and "NOT CURRENT" not in lines["sbc3"]
    assert "NOT CURRENT" in lines["sbc1"]
    data = json.loads(runner.invoke(app, ["verify", "--json", *args]).stdout)
    assert data["unreachable"] == ["sbc3"]
    states = {d["name"]: d["state"] for d in data["devices"]}
    assert states == {"sbc1": "not-current", "sbc2": "not-current", "sbc3": "unreachable"}

    plan = runner.invoke(app, ["plan", *args])
    assert plan.exit_code == 0 and "unreachable" in plan.stdout

    deploy = runner.invoke(app, ["deploy", *args])
    assert deploy.exit_code == 2, deploy.output
    assert "unreachable" in deploy.stdout and "sbc3" in deploy.stdout
    report = json.loads(runner.invoke(app, ["deploy", "--json", *args]).stdout)
    status = {d["device"]: d for d in report["devices"]}
    assert status["sbc3"]["status"] == "refused"
    assert status["sbc3"]["message"].startswith("sbc3: unreachable: 127.0.0.1:")
    assert status["sbc1"]["status"] == "not-attempted"
    assert "--skip-refused" in status["sbc1"]["hint"]
    assert all(dev.installs == 0 for dev in loop_estate.devices.values())


def test_one_sbc_that_would_refuse_changes_no_device(
    sbc_lab: LabEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the lab: sbc2-ha's password is missing; deploy exits 2 naming it, sbc1 unchanged."""
    state = tmp_path / "state"
    args = ["--inventory", str(sbc_lab.inventory_path), "--state-dir", str(state)]
    old = tmp_path / "old.pem"
    old.write_bytes(sbc_lab.old.fullchain_pem + sbc_lab.old.root_pem + sbc_lab.old.key_pem())
    new = tmp_path / "new.pem"
    renewed = sbc_lab.ca.issue(WILDCARD, key_type="ec-p256")
    new.write_bytes(renewed.fullchain_pem + renewed.root_pem + renewed.key_pem())
    for path in (old, new):
        assert runner.invoke(app, ["import", "wildcard", str(path), *args]).exit_code == 0
    sbc1 = sbc_lab.sbcs["sbc1"]
    before = sbc1.served_sha256("sip")
    monkeypatch.delenv("CERTFLEET_LAB_SBC2_HA_PASSWORD")

    plan = json.loads(runner.invoke(app, ["plan", "--json", *args]).stdout)
    actions = {d["name"]: (d["action"], d["reason"]) for d in plan["devices"]}
    assert actions["sbc1"][0] == "deploy"
    assert actions["sbc2-ha"][0] == "blocked"
    assert "CERTFLEET_LAB_SBC2_HA_PASSWORD" in actions["sbc2-ha"][1]

    result = runner.invoke(app, ["deploy", "--json", *args])
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    status = {d["device"]: d for d in report["devices"]}
    assert status["sbc2-ha"]["status"] == "refused"
    assert "CERTFLEET_LAB_SBC2_HA_PASSWORD" in status["sbc2-ha"]["message"]
    assert status["sbc1"]["status"] == "not-attempted"
    assert "sbc2-ha would refuse" in status["sbc1"]["message"]
    assert sbc1.served_sha256("sip") == before
    assert unit_served(sbc1) == before  # by the standard library's own handshake
    assert not [r for r in sbc1.requests if r[0] in ("PUT", "POST")]

    skipped = runner.invoke(app, ["deploy", "--json", "--skip-refused", *args])
    # sbc1 was changed: the run never exits 2 (nothing touched) then, but 1
    assert skipped.exit_code == 1
    status = {d["device"]: d["status"] for d in json.loads(skipped.stdout)["devices"]}
    assert status == {"sbc1": "installed", "sbc2-ha": "refused"}
    assert sbc1.served_sha256("sip") == cert_sha256(renewed.leaf)
    assert unit_served(sbc1) == cert_sha256(renewed.leaf)


def test_refused_canary_with_skip_refused_records_each_device_once(
    loop_estate: LoopEstate, tmp_path: Path
) -> None:
    """The canary would refuse: with --skip-refused the others are not attempted, one row each."""
    loop_estate.devices["sbc2"].listener.stop()
    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory,
                                        canary="sbc2", skip_refused=True))
        status = {r.device: r.status for r in report.results}
        assert status == {"sbc1": "not-attempted", "sbc2": "refused", "sbc3": "not-attempted"}
        rows = store.deployments(run_id=report.run_id)
        assert sorted(row["device"] for row in rows) == ["sbc1", "sbc2", "sbc3"]
        assert report.exit_code == 2
