"""Faults across a lab estate with the real drivers: the rest finish, failures are contained."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.estate.deploy import run_deploy, worst_exit_code
from certfleet.estate.devices import make_factory
from certfleet.estate.store import Store
from certfleet.inventory import Inventory, parse_inventory
from certfleet.lab.estate import LabEstate
from handshake import lab_served
from lab_support import import_old_and_renewed, started_lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabEstate]:
    """A lab OVOC and five lab SBCs (the last an HA pair), secrets in the environment."""
    with started_lab(tmp_path, sbcs=5, key_type="ec-p256") as estate:
        yield estate


def _inventory(lab: LabEstate) -> Inventory:
    # A frozen listener never shows the new certificate: keep that wait short.
    text = lab.inventory_path.read_text().replace("verify_timeout = 30", "verify_timeout = 2")
    text = text.replace('[devices.ovoc]\n', '[devices.ovoc]\nverify_timeout = 3\n')
    return parse_inventory(text, lab.inventory_path)


def test_faults_at_each_step_are_contained(lab: LabEstate, tmp_path: Path) -> None:
    """Connect, install and verify faults on some devices; the others are installed."""
    old_sha = lab.sbcs["sbc1"].served_sha256("sip")
    # connect fails: the rehearsal before any change passes (its GET /status is the
    # first), the deploy's own GET /status is dropped, as by a device that goes away
    lab.sbcs["sbc1"].faults.add("drop", path="/status", nth=2)
    lab.sbcs["sbc2"].faults.add("500", method="PUT", path="/files/tls/*/certificate")  # install
    lab.sbcs["sbc3"].faults.freeze("sip")  # installed but never served: verify fails
    assert lab.ovoc is not None
    lab.ovoc.web_fail_restarts = 1  # the web server stays down after the import
    inventory = _inventory(lab)
    with Store.open(tmp_path / "state") as store:
        target = import_old_and_renewed(lab, store, inventory, tmp_path)
        report = asyncio.run(run_deploy(inventory, store, make_factory(store)))
        status = {r.device: r.status for r in report.results}
        assert status["sbc4"] == status["sbc5-ha"] == "installed"
        assert status["sbc1"] == "refused"
        assert status["sbc2"] == "restored"
        assert status["sbc3"] == "restored"
        assert status["ovoc"] == "restored"
        assert report.exit_code == worst_exit_code([r.exit_code for r in report.results])
        assert report.exit_code == 1
        # what the devices serve now, by the lab's state and by the standard library's
        # own handshake
        assert lab.sbcs["sbc1"].served_sha256("sip") == old_sha
        assert lab.sbcs["sbc2"].served_sha256("sip") == old_sha
        assert lab.sbcs["sbc4"].served_sha256("sip") == target
        served = lab_served(lab)
        assert served["ovoc:https"] == old_sha
        assert served["sbc1:sip"] == served["sbc2:sip"] == served["sbc3:sip"] == old_sha
        assert served["sbc4:sip"] == target
        assert served["sbc5-ha/0:sip"] == target
        # the store holds every device's outcome and steps
        rows = {row["device"]: row for row in store.deployments(run_id=report.run_id)}
        assert set(rows) == {"ovoc", "sbc1", "sbc2", "sbc3", "sbc4", "sbc5-ha"}
        for name, row in rows.items():
            assert row["outcome"] == status[name]
            steps = store.steps(row["id"])
            assert steps, name
            if status[name] != "installed":
                assert any(s["status"] == "failed" for s in steps), (name, steps)
        failed_install = [s for s in store.steps(rows["sbc2"]["id"]) if s["step"] == "rollback"]
        assert [s["status"] for s in failed_install] == ["start", "ok"]
