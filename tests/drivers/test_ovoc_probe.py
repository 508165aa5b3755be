"""OvocDriver.probe() on the lab OVOC: a rehearsal that logs in, walks the menu to the
import entry without selecting it, and changes nothing (checked on the lab's side)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from certfleet.drivers.ovoc import OvocDriver, ProbeReport
from certfleet.drivers.tlsprobe import Listener
from certfleet.lab.ems_emulator import load_menus
from certfleet.lab.ovoc import LabOvoc
from certfleet.lab.tls import free_port

KEYSTORE = "keystore-Pa55w0rd"
IMPORT = "Import Server Certificates from Certificate Authority (CA)"


@pytest.fixture
def lab() -> Iterator[LabOvoc]:
    with LabOvoc(restart_delay=0.05) as running:
        yield running


def probe(lab: LabOvoc, **overrides: Any) -> ProbeReport:
    options: dict[str, Any] = dict(
        ssh_port=lab.ssh_port, password=lab.acems_password, su_password=lab.root_password,
        keystore_password=KEYSTORE, host_key=lab.host_key_sha256,
        listeners=[Listener("127.0.0.1", lab.https_port)], prompt_timeout=5)
    options.update(overrides)
    return asyncio.run(OvocDriver("ovoc-lab", "127.0.0.1", **options).probe())


def assert_untouched(lab: LabOvoc, before: dict[str, bytes]) -> None:
    assert lab.staged_files() == before
    assert lab.import_count == 0 and lab.keystore_password is None


def test_probe_ready_changes_nothing(lab: LabOvoc) -> None:
    """Every check passes; the import entry is found but never selected."""
    before = lab.staged_files()
    report = probe(lab)
    assert report.ready, report.reason
    assert [c.name for c in report.checks] == ["ssh", "sftp", "su", "menu"]
    assert report.labels == {"Security": "Security",
                             "Server Certificate Updates": "Server Certificate Updates",
                             IMPORT: IMPORT}
    assert report.staging is not None and report.staging.ok
    assert_untouched(lab, before)
    transcript = report.transcript or ""
    assert IMPORT in transcript and "Enter the password" not in transcript
    for secret in (lab.acems_password, lab.root_password, KEYSTORE):
        assert secret not in transcript
    data = report.to_dict()
    assert data["ready"] is True and data["fix"] is None


def test_probe_renamed_label_names_the_setting(lab: LabOvoc) -> None:
    """A label found only by its number: not ready, with the label seen and the setting."""
    menus = copy.deepcopy(load_menus())
    menus["menus"]["security"]["options"][10]["label"] = "TLS Certificates"
    with LabOvoc(menus=menus, restart_delay=0.05) as renamed:
        before = renamed.staged_files()
        report = probe(renamed)
        assert not report.ready
        menu = report.checks[-1]
        assert menu.name == "menu" and not menu.ok
        assert "'Server Certificate Updates'" in menu.detail
        assert "'TLS Certificates'" in menu.detail
        assert menu.fix is not None and "[devices.ovoc-lab.menu] labels = " in menu.fix
        assert '"Security", "TLS Certificates", "Import Server' in menu.fix
        assert report.labels["Server Certificate Updates"] == "TLS Certificates"
        assert_untouched(renamed, before)


def test_probe_missing_entry_lists_what_the_menu_shows(lab: LabOvoc) -> None:
    """No entry by label nor number: not ready, naming the entries the menu shows."""
    menus = copy.deepcopy(load_menus())
    menus["menus"]["security"]["options"][10].update(key="31", label="TLS Certificates")
    with LabOvoc(menus=menus, restart_delay=0.05) as renamed:
        before = renamed.staged_files()
        report = probe(renamed)
        assert not report.ready
        assert "no entry 'Server Certificate Updates'" in report.reason
        assert "TLS Certificates" in report.reason
        assert report.fix is not None and "[devices.ovoc-lab.menu] labels" in report.fix
        assert report.labels["Server Certificate Updates"] is None
        assert_untouched(renamed, before)


def test_probe_wrong_root_password(lab: LabOvoc) -> None:
    before = lab.staged_files()
    report = probe(lab, su_password="not-the-root-password")
    assert not report.ready
    assert [(c.name, c.ok) for c in report.checks] == [("ssh", True), ("sftp", True),
                                                        ("su", False)]
    assert "su to 'root'" in report.reason and report.fix is not None
    assert "not-the-root-password" not in (report.transcript or "")
    assert_untouched(lab, before)


def test_probe_changed_host_key(lab: LabOvoc) -> None:
    before = lab.staged_files()
    report = probe(lab, host_key="SHA256:" + "A" * 43)
    assert not report.ready
    assert [(c.name, c.ok) for c in report.checks] == [("ssh", False)]
    assert "does not match the pinned key" in report.reason
    assert lab.host_key_sha256 in report.reason
    assert_untouched(lab, before)


def test_probe_device_down() -> None:
    with LabOvoc(restart_delay=0.05) as lab:
        pass  # stopped: nothing listens on its port any more
    report = probe(lab, ssh_port=free_port(), connect_timeout=3)
    assert not report.ready
    assert [(c.name, c.ok) for c in report.checks] == [("ssh", False)]
    assert report.fix is not None
