"""The canary rule: none by default; ``--canary NAME``; ``--canary auto`` (and renew) picks the
kind preferred as the canary (OVOC), and its failure stops the run before any SBC changes."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

from certfleet.estate.deploy import choose_canary, run_deploy
from certfleet.estate.devices import make_factory
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from lab_support import import_old_and_renewed, started_lab


def _served(port: int) -> str:
    """SHA-256 of what 127.0.0.1:PORT serves, read by the standard library's ssl."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=30)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def test_auto_canary_is_the_ovoc_and_none_without_one(tmp_path: Path) -> None:
    """choose_canary: the OVOC wherever it stands in the inventory; no preferred kind, no canary."""
    text = """
[certificates.w]
cn = "*.example.com"
[devices.sbc1]
kind = "sbc"
address = "sbc1.example.com"
certificate = "w"
[devices.ovoc]
kind = "ovoc"
address = "ovoc.example.com"
certificate = "w"
[devices.files]
kind = "sftp"
address = "files.example.com"
certificate = "w"
cert_path = "/etc/ssl/app.crt"
key_path = "/etc/ssl/app.key"
reload_command = "systemctl reload app"
"""
    inventory = parse_inventory(text, tmp_path / "certfleet.toml")
    devices = list(inventory.devices.values())
    assert choose_canary(devices) == "ovoc"
    assert choose_canary([d for d in devices if d.kind != "ovoc"]) is None


def test_a_failed_auto_canary_stops_the_run_before_any_sbc(tmp_path: Path) -> None:
    """--canary auto on the lab: OVOC first; its import fails verification, no SBC is attempted."""
    with started_lab(tmp_path, sbcs=2, key_type="ec-p256") as lab:
        assert lab.ovoc is not None
        lab.ovoc.web_fail_restarts = 1  # the web server stays down after the import
        text = lab.inventory_path.read_text().replace(
            "[devices.ovoc]\n", "[devices.ovoc]\nverify_timeout = 3\n")
        inventory = parse_inventory(text, lab.inventory_path)
        sbc_ports = [sbc.listener_ports["sip"] for sbc in lab.sbcs.values()]
        before = [_served(port) for port in sbc_ports]
        with Store.open(tmp_path / "state") as store:
            import_old_and_renewed(lab, store, inventory, tmp_path)
            report = asyncio.run(run_deploy(inventory, store, make_factory(store), canary="auto"))
        status = {r.device: r.status for r in report.results}
        assert status == {"ovoc": "restored", "sbc1": "not-attempted", "sbc2-ha": "not-attempted"}
        assert report.exit_code == 1
        assert [_served(port) for port in sbc_ports] == before
        for sbc in lab.sbcs.values():
            assert [r for r in sbc.requests if r[0] not in ("GET", "HEAD")] == []
