"""A device that refuses at login refuses the whole run before any device changes (exit 2)."""

from __future__ import annotations

import hashlib
import json
import ssl
from pathlib import Path

from certfleet.estate.deploy import DeployReport, DeviceResult
from certfleet.estate.store import Store
from certfleet.inventory import load_inventory
from certfleet.pki.model import cert_sha256
from lab_support import import_old_and_renewed, invoke, started_lab


def _served(port: int) -> str:
    """SHA-256 of the certificate served on 127.0.0.1:PORT, read by the standard library."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=30)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def test_a_wrong_password_for_one_sbc_among_four_changes_no_device(tmp_path: Path) -> None:
    """deploy with a wrong password for sbc2: exit 2, every device still serves last year's."""
    with started_lab(tmp_path, sbcs=3) as lab:
        state = tmp_path / "state"
        with Store.open(state) as store:
            import_old_and_renewed(lab, store, load_inventory(lab.inventory_path), tmp_path)
        assert lab.ovoc is not None
        ports = [lab.ovoc.https_port]
        for sbc in lab.sbcs.values():
            ports += [port for role, port in sbc.listener_ports.items() if role != "teams"]
        before = {port: _served(port) for port in ports}
        assert cert_sha256(lab.old.leaf) in before.values()
        result = invoke(lab, state, "deploy", "--json",
                        env={"CERTFLEET_LAB_SBC2_PASSWORD": "not-the-password"})
        assert result.exit_code == 2, result.output
        devices = {d["device"]: d for d in json.loads(result.stdout)["devices"]}
        assert devices["sbc2"]["status"] == "refused", devices["sbc2"]
        assert all(d["status"] in ("refused", "not-attempted") for d in devices.values()), devices
        assert {port: _served(port) for port in ports} == before
        for sbc in lab.sbcs.values():
            writes = [r for r in sbc.requests if r[0] not in ("GET", "HEAD")]
            assert writes == [], (sbc, writes)


def test_a_run_that_changed_a_device_never_exits_2() -> None:
    """One device installed and another refused: the run exits 1, not 2 (untouched)."""
    installed = DeviceResult("a", "sbc", "w", "installed", 0, "done")
    refused = DeviceResult("b", "sbc", "w", "refused", 2, "refused")
    assert DeployReport(1, [installed, refused]).exit_code == 1
    assert DeployReport(1, [refused]).exit_code == 2
    skipped = DeviceResult("c", "sbc", "w", "skipped", 0, "served already")
    assert DeployReport(1, [skipped, refused]).exit_code == 2
