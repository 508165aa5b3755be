"""The OVOC driver against the lab OVOC: deploy, refusals, rollback and faults."""

from __future__ import annotations

import asyncio
import copy
import os
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from certfleet.drivers.base import DeployOutcome
from certfleet.drivers.ovoc import MenuStep, OvocDriver, OvocMenu
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.ems_emulator import load_menus
from certfleet.lab.ovoc import LabOvoc
from certfleet.pki.bundle import assemble
from certfleet.pki.checks import check_bundle
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle, cert_sha256
from ovoc_support import KEYSTORE
from ovoc_support import lab_ovoc_driver as make_driver
from ovoc_support import ovoc_bundle as bundle_of


@pytest.fixture(scope="module")
def ca() -> LabCA:
    return LabCA("OVOC Driver Test")


@pytest.fixture(scope="module")
def new_cert(ca: LabCA) -> Issued:
    return ca.issue(["ovoc.example.com"], key_type="rsa2048")


@pytest.fixture
def lab() -> Iterator[LabOvoc]:
    with LabOvoc(restart_delay=0.05) as running:
        yield running



def deploy(driver: OvocDriver, bundle: Bundle, *, force: bool = False) -> DeployOutcome:
    return asyncio.run(driver.deploy(bundle, check_bundle(bundle), force=force))


def assert_clean_transcript(outcome: DeployOutcome, lab: LabOvoc) -> None:
    text = outcome.transcript or ""
    for secret in (lab.acems_password, lab.root_password, KEYSTORE):
        assert secret not in text


def test_happy_path(lab: LabOvoc, new_cert: Issued) -> None:
    """Files staged under the profile's names, imported with the password, new cert served."""
    previous = lab.staged_files()
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message
    assert outcome.exit_code == 0
    assert lab.served_certificate() == new_cert.leaf
    assert set(outcome.served_after.values()) == {cert_sha256(new_cert.leaf)}
    assert lab.keystore_password == KEYSTORE
    staged = lab.staged_files()
    assert sorted(staged) == ["ca1.crt", "root.crt", "server.crt", "server.key"]
    assert staged["server.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert outcome.backup is not None and outcome.backup.files == previous
    assert outcome.backup.has_private_key
    assert "PKCS#12 file and JKS Keystore generated successfully" in (outcome.transcript or "")
    assert_clean_transcript(outcome, lab)
    assert [s.step for s in outcome.steps if s.status == "ok"][-1] == "verify"


def test_creates_missing_staging_dir_with_safe_mode(new_cert: Issued) -> None:
    """A missing staging folder is created 0750 (not the story's 777) and the deploy works."""
    with LabOvoc(staging="missing", restart_delay=0.05) as lab:
        outcome = deploy(make_driver(lab), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message
        assert stat.S_IMODE(os.stat(lab.staging_dir).st_mode) == 0o750
        assert outcome.backup is not None and outcome.backup.files == {}


def test_tightens_world_writable_staging_dir(lab: LabOvoc, new_cert: Issued) -> None:
    """A staging folder left 777 is tightened to 0750."""
    lab.staging_dir.chmod(0o777)
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message
    assert stat.S_IMODE(os.stat(lab.staging_dir).st_mode) == 0o750


def test_stale_intermediates_are_removed(lab: LabOvoc, new_cert: Issued) -> None:
    """A ca2.crt from an older chain does not survive a deploy of a one-intermediate chain."""
    lab.stage_files({"ca2.crt": new_cert.root_pem, "notes.txt": b"kept"})
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message
    assert sorted(lab.staged_files()) == ["ca1.crt", "notes.txt", "root.crt", "server.crt",
                                          "server.key"]


def test_renumbered_menus_are_walked_by_label(new_cert: Issued) -> None:
    """Menus with other numbers are walked by their labels."""
    menus = copy.deepcopy(load_menus())
    menus["menus"]["main"]["options"][3]["key"] = "8"
    menus["menus"]["security"]["options"][10]["key"] = "14"
    menus["menus"]["certificates"]["options"][2]["key"] = "7"
    with LabOvoc(menus=menus, restart_delay=0.05) as lab:
        outcome = deploy(make_driver(lab), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message
        assert "Choose an option: 14" in (outcome.transcript or "")


def test_reworded_label_falls_back_to_number(new_cert: Issued) -> None:
    """A reworded entry is found by its configured fallback number."""
    menus = copy.deepcopy(load_menus())
    menus["menus"]["security"]["options"][10]["label"] = "TLS Certificates"
    with LabOvoc(menus=menus, restart_delay=0.05) as lab:
        outcome = deploy(make_driver(lab), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message


def test_custom_labels_from_configuration(new_cert: Issued) -> None:
    """Labels given in the menu configuration replace the defaults."""
    menus = copy.deepcopy(load_menus())
    menus["menus"]["security"]["options"][10].update(key="31", label="TLS Certificates")
    menu = OvocMenu(path=(MenuStep("Security"), MenuStep("TLS Certificates"),
                          MenuStep("Import Server Certificates from Certificate Authority")))
    with LabOvoc(menus=menus, restart_delay=0.05) as lab:
        outcome = deploy(make_driver(lab, menu=menu), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message


def test_unknown_host_key_is_refused_with_fingerprint(lab: LabOvoc, new_cert: Issued) -> None:
    """Without a pin the deploy stops before login, showing the SHA256 fingerprint to pin."""
    outcome = deploy(make_driver(lab, host_key=None), bundle_of(new_cert))
    assert outcome.outcome == "refused" and outcome.exit_code == 2
    assert lab.host_key_sha256 in outcome.message
    assert outcome.hint is not None and "--host-key-sha256" in outcome.hint
    assert lab.import_count == 0


def test_changed_host_key_is_refused(lab: LabOvoc, new_cert: Issued) -> None:
    """A pinned key that no longer matches stops the deploy; nothing changes."""
    other = LabOvoc()
    try:
        wrong_pin = other.host_public_key_line
    finally:
        other.stop()
    before = lab.staged_files()
    outcome = deploy(make_driver(lab, host_key=wrong_pin), bundle_of(new_cert))
    assert outcome.outcome == "refused"
    assert "does not match the pinned key" in outcome.message
    assert lab.host_key_sha256 in outcome.message
    assert lab.staged_files() == before


def test_known_hosts_file_and_key_line_pins(lab: LabOvoc, new_cert: Issued,
                                            tmp_path: Any) -> None:
    """A known_hosts file with the [host]:port entry, or the key line itself, is accepted."""
    known = tmp_path / "known_hosts"
    known.write_text(lab.known_hosts_line + "\n")
    outcome = deploy(make_driver(lab, host_key=None, known_hosts=known), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message
    outcome = deploy(make_driver(lab, host_key=lab.host_public_key_line), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message


def test_wrong_ssh_password(lab: LabOvoc, new_cert: Issued) -> None:
    """A refused SSH login is a refusal before any change."""
    outcome = deploy(make_driver(lab, password="wrong"), bundle_of(new_cert))
    assert outcome.outcome == "refused"
    assert "login as 'acems'" in outcome.message


def test_wrong_root_password(lab: LabOvoc, new_cert: Issued) -> None:
    """A wrong su password stops before any file is staged, with a clear message."""
    before = lab.staged_files()
    outcome = deploy(make_driver(lab, su_password="not-the-root-pw"), bundle_of(new_cert))
    assert outcome.outcome == "refused" and outcome.exit_code == 2
    assert "su to 'root'" in outcome.message and "wrong password" in outcome.message
    assert lab.staged_files() == before
    assert "not-the-root-pw" not in (outcome.transcript or "")


def test_preflight_refuses_missing_key(lab: LabOvoc, new_cert: Issued) -> None:
    """Without a key, preflight refuses before connecting: nothing changes on OVOC."""
    before = lab.staged_files()
    outcome = deploy(make_driver(lab), bundle_of(new_cert, key=False))
    assert outcome.outcome == "refused" and outcome.exit_code == 2
    assert "KEY_MISSING" in {f.code for f in outcome.findings}
    assert lab.staged_files() == before and lab.import_count == 0


def test_forced_rejection_is_diagnosed_and_rolled_back(lab: LabOvoc, new_cert: Issued) -> None:
    """Forced past preflight, OVOC's SEM PKCS#12 error is explained and the old cert restored."""
    before_files = lab.staged_files()
    before_cert = lab.served_certificate()
    outcome = deploy(make_driver(lab), bundle_of(new_cert, key=False), force=True)
    assert outcome.outcome == "restored" and outcome.exit_code == 1, outcome.message
    assert "failed to generate SEM PKCS#12 file" in outcome.message
    # the previous server.key is kept (the bundle has none): OVOC refuses the pair
    assert "server.key does not belong to server.crt" in outcome.message
    assert lab.staged_files() == before_files
    assert lab.served_certificate() == before_cert
    assert lab.import_count == 2  # the refused import, then the previous files again
    assert_clean_transcript(outcome, lab)


def test_rejection_with_empty_staging_keeps_previous(new_cert: Issued) -> None:
    """With nothing staged before, a refused import leaves OVOC's previous keystore: restored."""
    with LabOvoc(staging="empty", restart_delay=0.05) as lab:
        before = lab.served_certificate()
        outcome = deploy(make_driver(lab), bundle_of(new_cert, key=False), force=True)
        assert outcome.outcome == "restored", outcome.message
        assert lab.staged_files() == {}
        assert lab.served_certificate() == before


def test_connection_dropped_mid_upload(lab: LabOvoc, new_cert: Issued) -> None:
    """A dropped SFTP upload leaves the staged files untouched and is reported as restored."""
    before_files = lab.staged_files()
    lab.drop_after_upload_bytes = 600
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "restored" and outcome.exit_code == 1, outcome.message
    assert "connection dropped" in outcome.message
    assert lab.staged_files() == before_files  # no temporary file left behind
    assert lab.import_count == 0
    assert lab.served_certificate() == lab.initial.leaf


def test_confirmation_is_answered_yes(lab: LabOvoc, new_cert: Issued) -> None:
    """A yes/no confirmation in the import dialogue is answered 'yes' and the import goes on."""
    lab.faults.inject_prompt = "Overwrite the existing keystore? (yes/no): "
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message
    assert "Overwrite the existing keystore? (yes/no): yes" in (outcome.transcript or "")


def test_unexpected_prompt_times_out_and_rolls_back(lab: LabOvoc, new_cert: Issued) -> None:
    """An unknown question times out with the last screen shown, then the old cert is back."""
    lab.faults.inject_prompt = "Select the keystore type [JKS/PKCS12]: "
    outcome = deploy(make_driver(lab, prompt_timeout=1.5), bundle_of(new_cert))
    assert outcome.outcome == "restored", outcome.message
    assert "Select the keystore type [JKS/PKCS12]:" in outcome.message
    assert "last screen" in outcome.message
    assert lab.served_certificate() == lab.initial.leaf
    assert_clean_transcript(outcome, lab)


def test_web_server_comes_back_only_for_rollback(lab: LabOvoc, new_cert: Issued) -> None:
    """The new cert never served (web server stays down once): rolled back and verified."""
    lab.web_fail_restarts = 1
    outcome = deploy(make_driver(lab, verify_timeout=1.5), bundle_of(new_cert))
    assert outcome.outcome == "restored" and outcome.exit_code == 1, outcome.message
    assert "not served" in outcome.message
    assert lab.served_certificate() == lab.initial.leaf
    assert set(outcome.served_after.values()) == {cert_sha256(lab.initial.leaf)}


def test_web_server_never_comes_back(lab: LabOvoc, new_cert: Issued) -> None:
    """Neither the new nor the previous cert comes up: exit 3 with a hand-restore message."""
    lab.web_fail_restarts = 10
    outcome = deploy(make_driver(lab, verify_timeout=1), bundle_of(new_cert))
    assert outcome.outcome == "failed" and outcome.exit_code == 3
    assert "rollback failed too" in outcome.message
    assert outcome.hint is not None and "by hand" in outcome.hint


def test_missing_keystore_password_is_refused(lab: LabOvoc, new_cert: Issued) -> None:
    """A keystore password under 6 characters is refused before any change."""
    outcome = deploy(make_driver(lab, keystore_password="abc"), bundle_of(new_cert))
    assert outcome.outcome == "refused"
    assert "keystore password" in outcome.message
    assert lab.import_count == 0


@pytest.mark.parametrize("force", [False, True])
def test_non_ascii_keystore_password_is_refused_before_any_change(
        lab: LabOvoc, new_cert: Issued, force: bool) -> None:
    """A keystore password keytool cannot take is refused, forced or not, nothing staged."""
    before = lab.staged_files()
    outcome = deploy(make_driver(lab, keystore_password="Ks ü Pa55w0rd"), bundle_of(new_cert),
                     force=force)
    assert outcome.outcome == "refused" and outcome.exit_code == 2, outcome.message
    assert "OVOC_KEYSTORE_PASSWORD" in {f.code for f in outcome.findings}
    assert "U+00FC" in outcome.message
    assert outcome.hint is not None and "printable ASCII" in outcome.hint
    assert lab.staged_files() == before and lab.import_count == 0


def test_keystore_refusal_is_not_retried_by_the_rollback(lab: LabOvoc, new_cert: Issued) -> None:
    """OVOC refuses the keystore password: said so, the previous files are staged back
    without a second import (it would be refused too), the old certificate verified."""
    from certfleet.lab.ems_emulator import KEYTOOL_PASSWORD_ERROR

    before_files = lab.staged_files()
    lab.faults.keystore_error = KEYTOOL_PASSWORD_ERROR
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "restored" and outcome.exit_code == 1, outcome.message
    assert "did not take the keystore password" in outcome.message
    assert "would be refused too" in outcome.message
    assert lab.import_count == 1
    assert lab.staged_files() == before_files
    assert lab.served_certificate() == lab.initial.leaf
    assert any(s.step == "rollback" and "not imported again" in s.detail for s in outcome.steps)
    assert_clean_transcript(outcome, lab)


def test_awkward_ascii_passwords_pass_through_the_lab(new_cert: Issued) -> None:
    """Spaces, quotes, $, backticks and backslashes in every password reach the device as
    typed (SSH login, su, keystore prompt)."""
    awkward = "Ks pa$$ 'q' \"d\" `id` \\ ~!"
    with LabOvoc(acems_password="ac ' $HOME `x` \"", root_password="ro $(id) ` ' \" \\",
                 restart_delay=0.05) as lab:
        outcome = deploy(make_driver(lab, keystore_password=awkward), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message
        assert lab.keystore_password == awkward
        text = outcome.transcript or ""
        for secret in (lab.acems_password, lab.root_password, awkward):
            assert secret not in text


def test_device_file_names_are_sanitised_before_the_backup(lab: LabOvoc,
                                                           new_cert: Issued) -> None:
    """Names that are no plain file name, and big foreign files, stay on the device:
    never copied into the backup, never touched; the deploy goes on."""
    odd = {"..evil.crt": b"x", ".hidden": b"x", "esc\x1b[31m.crt": b"x", "back\\slash": b"x",
           "con": b"x", "n" * 200: b"x", "big.tar": b"0" * (1024 * 1024 + 1)}
    lab.stage_files(odd)
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message
    assert outcome.backup is not None
    assert sorted(outcome.backup.files) == ["ca1.crt", "root.crt", "server.crt", "server.key"]
    skipped = [s.detail for s in outcome.steps if s.step == "names"]
    assert len(skipped) == len(odd) and all(s.startswith("not copied") for s in skipped)
    staged = lab.staged_files()
    assert all(staged[name] == data for name, data in odd.items())


def test_oversized_profile_file_is_a_clear_refusal(lab: LabOvoc, new_cert: Issued) -> None:
    """A server.key past the read bound: refused before any change, naming the file."""
    lab.stage_files({"server.key": b"k" * (1024 * 1024 + 1)})
    before = lab.staged_files()
    outcome = deploy(make_driver(lab), bundle_of(new_cert))
    assert outcome.outcome == "refused" and outcome.exit_code == 2, outcome.message
    assert "'server.key'" in outcome.message and "larger than 1048576 bytes" in outcome.message
    assert lab.staged_files() == before and lab.import_count == 0


def test_forced_staging_keeps_what_exists(lab: LabOvoc, new_cert: Issued) -> None:
    """Forced past a missing root: the key in the bundle is staged (PKCS#1), the previous
    root.crt is kept, nothing is removed, and OVOC imports it."""
    before = lab.staged_files()
    lab.stage_files({"ca2.crt": before["ca1.crt"]} if "ca1.crt" in before else {})
    data = new_cert.leaf_pem + new_cert.chain_pem + new_cert.key_pem("pkcs8")
    bundle = assemble(load_bytes(data, "input.pem"))
    findings = check_bundle(bundle)
    outcome = asyncio.run(make_driver(lab).deploy(bundle, findings, force=True))
    assert outcome.outcome == "installed", outcome.message
    staged = lab.staged_files()
    assert staged["server.crt"] == new_cert.leaf_pem
    assert staged["server.key"] == new_cert.key_pem("pkcs1")
    assert staged["server.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert staged["root.crt"] == before["root.crt"]
    assert set(staged) >= set(before)
    detail = next(s.detail for s in outcome.steps if (s.step, s.status) == ("stage", "ok"))
    assert "kept" in detail and "root.crt" in detail
    assert lab.served_certificate() == new_cert.leaf


def test_forced_staging_without_a_key_keeps_the_previous_key(lab: LabOvoc,
                                                             new_cert: Issued) -> None:
    """Forced past a missing key: server.key is not removed (nothing replaces it)."""
    before = lab.staged_files()
    driver = make_driver(lab)
    artifacts = driver.render(bundle_of(new_cert, key=False))
    assert "server.key" not in artifacts.names() and "root.crt" in artifacts.names()
    outcome = deploy(driver, bundle_of(new_cert, key=False), force=True)
    assert outcome.outcome == "restored", outcome.message
    assert any("kept server.key" in s.detail for s in outcome.steps)
    assert lab.staged_files() == before
