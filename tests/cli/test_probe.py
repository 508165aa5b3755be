"""`certfleet probe` and `plan --probe` on the lab estate: a rehearsal on every device that
changes nothing (checked on the lab's side), one line per device, exit 0 only when all are
ready."""

from __future__ import annotations

import json
import os
from pathlib import Path

import asyncssh
import pytest

from certfleet.lab.estate import LabEstate
from lab_support import run_in_lab as _run


@pytest.fixture
def lab(seeded_lab: LabEstate) -> LabEstate:
    return seeded_lab


def _untouched(lab: LabEstate, staged: dict[str, bytes]) -> None:
    assert lab.ovoc is not None
    assert lab.ovoc.staged_files() == staged  # nothing staged
    assert lab.ovoc.import_count == 0  # no import run


def test_plan_probe_on_the_lab_reports_every_device_ready(lab: LabEstate) -> None:
    assert lab.ovoc is not None
    staged = lab.ovoc.staged_files()
    code, out, err = _run(lab, "plan", "--probe")
    assert code == 0, out + err
    for device in ("ovoc", "sbc1", "sbc2-ha"):
        assert f"{device}: ready" in out, out
    assert "3/3 device(s) ready; nothing was changed" in out
    _untouched(lab, staged)
    transcript = lab.directory / "state" / "probes" / "ovoc.txt"
    text = transcript.read_text()
    assert "Import Server Certificates" in text
    for secret in lab.env.values():
        assert secret not in text
    if os.name == "posix":
        assert transcript.stat().st_mode & 0o777 == 0o600
    code, out, err = _run(lab, "plan", "--probe", "--json")
    assert code == 0, out + err
    data = json.loads(out)
    assert {p["name"] for p in data["devices"]} == {"ovoc", "sbc1", "sbc2-ha"}
    assert [(p["device"], p["ready"]) for p in data["probe"]] == [
        ("ovoc", True), ("sbc1", True), ("sbc2-ha", True)]
    _untouched(lab, staged)


def test_renamed_menu_label_is_not_ready_naming_label_and_setting(lab: LabEstate) -> None:
    """The Done-when case: the label found and the [devices.ovoc.menu] setting; nothing
    staged, no import (checked on the lab's side)."""
    assert lab.ovoc is not None
    lab.ovoc.menus["menus"]["security"]["options"][10]["label"] = "TLS Certificates"
    staged = lab.ovoc.staged_files()
    code, out, err = _run(lab, "plan", "--probe")
    assert code == 1, out + err
    line = next(x for x in out.splitlines() if x.startswith("ovoc: "))
    assert "not ready" in line and "'TLS Certificates'" in line, out
    assert "[devices.ovoc.menu] labels = " in out, out
    assert "sbc1: ready" in out and "sbc2-ha: ready" in out
    _untouched(lab, staged)
    code, out, _ = _run(lab, "probe", "--only", "ovoc", "--json")
    assert code == 1
    (item,) = json.loads(out)
    assert item["device"] == "ovoc" and item["kind"] == "ovoc" and item["ready"] is False
    assert "TLS Certificates" in item["reason"] and "[devices.ovoc.menu]" in item["fix"]
    assert {c["name"] for c in item["checks"]} >= {"ssh", "sftp", "su", "menu"}
    assert item["transcript"] and item["transcript_file"]
    _untouched(lab, staged)


def test_faults_each_not_ready_with_the_fix(lab: LabEstate, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """A wrong root password, a missing TLS context, a device that is down."""
    assert lab.ovoc is not None
    monkeypatch.setenv("CERTFLEET_LAB_OVOC_ROOT_PASSWORD", "not-the-root-password")
    text = lab.inventory_path.read_text()
    text = text.replace("tls_contexts = [1, 2]", "tls_contexts = [1, 2, 7]", 1)  # sbc1
    lab.inventory_path.write_text(text)
    lab.pairs["sbc2-ha"].stop()
    staged = lab.ovoc.staged_files()
    code, out, err = _run(lab, "probe", "--json")
    assert code == 1, out + err
    items = {item["device"]: item for item in json.loads(out)}
    assert set(items) == {"ovoc", "sbc1", "sbc2-ha"}
    assert not any(item["ready"] for item in items.values())
    ovoc = items["ovoc"]
    assert ovoc["reason"].startswith("su:"), ovoc
    assert "not-the-root-password" not in json.dumps(ovoc)
    assert "7" in items["sbc1"]["reason"] and items["sbc1"]["fix"], items["sbc1"]
    down = items["sbc2-ha"]
    assert down["reason"].startswith("reachable:"), down
    _untouched(lab, staged)


def test_changed_host_key_is_not_ready(lab: LabEstate) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    text = lab.inventory_path.read_text()
    assert lab.ovoc is not None
    text = text.replace(lab.ovoc.host_public_key_line, other)
    lab.inventory_path.write_text(text)
    code, out, err = _run(lab, "probe", "--only", "ovoc")
    assert code == 1, out + err
    assert "ovoc: not ready: ssh:" in out and "host key" in out.lower(), out
    # The fix names the inventory key to set (the device came from the inventory).
    assert 'ssh_host_key = "SHA256:' in " ".join(out.split()), out
    assert lab.ovoc.import_count == 0
