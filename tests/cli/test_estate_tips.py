"""The estate commands' tips on the lab: a driver's hint names the inventory key, the way a user
of `certfleet deploy` (which has no --password-env or --pin-sha256) sets it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from certfleet.estate.store import Store
from certfleet.inventory import load_inventory
from certfleet.lab.estate import LabEstate
from certfleet.pki.model import cert_sha256
from hint_support import COMMANDS, FLAG, SETTINGS
from lab_support import import_old_and_renewed, invoke

WRONG = {"CERTFLEET_LAB_SBC1_PASSWORD": "not-the-password"}


def _renewed(lab: LabEstate, tmp_path: Path) -> Path:
    """A state folder holding last year's version (with its key) and a renewed one."""
    state = tmp_path / "state"
    with Store.open(state) as store:
        import_old_and_renewed(lab, store, load_inventory(lab.inventory_path), tmp_path)
    return state


def _usable(hint: str, command: str) -> None:
    """Every flag of ``hint`` is an option of ``command``, or named with its inventory key."""
    for flag in FLAG.findall(hint):
        if flag in COMMANDS[command]:
            continue
        assert flag in SETTINGS, f"{flag} is no option of certfleet {command}: {hint!r}"
        assert re.search(rf"inventory: [^)]*\b{SETTINGS[flag][1]}\b", hint), hint


def _unchanged(lab: LabEstate) -> None:
    assert lab.sbcs["sbc1"].served_sha256("sip") == cert_sha256(lab.old.leaf)


def test_deploy_with_a_wrong_password_tips_the_inventory_keys(
    sbc_lab: LabEstate, tmp_path: Path
) -> None:
    state = _renewed(sbc_lab, tmp_path)
    result = invoke(sbc_lab, state, "deploy", "--only", "sbc1", "--json", env=WRONG)
    assert result.exit_code != 0, result.output
    [device] = json.loads(result.stdout)["devices"]
    assert "refused user" in device["message"], device
    assert "(inventory: user and password)" in device["hint"], device
    assert "--password-env" in device["hint"]  # the same driver serves certfleet sbc
    _usable(device["hint"], "deploy")
    _unchanged(sbc_lab)
    # The table shows it as a Tip (as text: nothing of it is taken for markup).
    shown = invoke(sbc_lab, state, "deploy", "--only", "sbc1", env=WRONG)
    assert shown.exit_code == result.exit_code
    assert "Tip:" in shown.output and "inventory:" in shown.output, shown.output
    _unchanged(sbc_lab)


def test_probe_with_a_wrong_password_names_the_inventory_keys(
    sbc_lab: LabEstate, tmp_path: Path
) -> None:
    result = invoke(sbc_lab, tmp_path / "state", "probe", "--only", "sbc1", "--json", env=WRONG)
    assert result.exit_code == 1, result.output
    [device] = json.loads(result.stdout)
    assert not device["ready"] and "(inventory: user and password)" in device["fix"], device
    _usable(device["fix"], "probe")


def test_deploy_with_a_wrong_pin_tips_the_tls_pin_to_write(
    sbc_lab: LabEstate, tmp_path: Path
) -> None:
    state = _renewed(sbc_lab, tmp_path)
    path = sbc_lab.inventory_path
    text = path.read_text()
    assert text.index("[devices.sbc1]") < text.index('ca_file = "lab-sbc-ca.pem"')
    path.write_text(text.replace('ca_file = "lab-sbc-ca.pem"', f'tls_pin = "{"0" * 64}"', 1))
    result = invoke(sbc_lab, state, "deploy", "--only", "sbc1", "--json")
    assert result.exit_code != 0, result.output
    [device] = json.loads(result.stdout)["devices"]
    seen = sbc_lab.sbcs["sbc1"].management_sha256
    assert f'(inventory: tls_pin = "{seen}")' in device["hint"], device
    _usable(device["hint"], "deploy")
    _unchanged(sbc_lab)


def test_the_deploy_table_prints_message_and_tip_as_text() -> None:
    """A hint naming an inventory table, or a device's answer in a message, is text: rich
    takes nothing of it for markup."""
    from rich.console import Console

    from certfleet.cli.estate import render_report
    from certfleet.estate.deploy import DeployReport, DeviceResult

    result = DeviceResult(
        "web1", "sftp", "site", "refused", 2, "web1: the device said '[red]no[/]'",
        hint='add key_path = "/etc/ssl/site.key" to [devices.web1]')
    console = Console(width=300, record=True, color_system=None)
    console.print(render_report(DeployReport(1, [result])))
    shown = console.export_text()
    assert "the device said '[red]no[/]'" in shown, shown
    assert 'Tip: add key_path = "/etc/ssl/site.key" to [devices.web1]' in shown, shown
