"""`--redeploy`, `--ignore-finding CODE` and `--force` (an alias of --redeploy only) on the
lab estate, and OVOC's keystore password decided before any change."""

from __future__ import annotations

import json

import pytest

from certfleet.cli.redeploy import FORCE_NOTICE
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.fsutil import write_private_file
from certfleet.inventory import load_inventory
from certfleet.lab.estate import WILDCARD, LabEstate
from certfleet.pki.profiles import not_overridable
from lab_support import run_in_lab as _run


@pytest.fixture
def lab(seeded_lab: LabEstate) -> LabEstate:
    return seeded_lab


def _import_v2(lab: LabEstate, *, root: bool = True) -> str:
    renewed = lab.ca.issue(WILDCARD, key_type=lab.key_type)
    path = lab.directory / "v2.pem"
    write_private_file(path, renewed.fullchain_pem + (renewed.root_pem if root else b"")
                       + renewed.key_pem())
    with Store.open(lab.directory / "state") as store:
        version = import_certificate(load_inventory(lab.inventory_path), store, "wildcard",
                                     [path]).version
    return version.leaf_sha256


def _plans(lab: LabEstate, *args: str) -> dict[str, dict[str, object]]:
    code, out, err = _run(lab, "plan", "--json", *args)
    assert code == 0, out + err
    return {p["name"]: p for p in json.loads(out)["devices"]}


def test_lab_up_then_redeploy_installs_on_every_device(lab: LabEstate) -> None:
    code, out, err = _run(lab, "deploy", "--redeploy", "--json")
    assert code == 0, out + err
    status = {r["device"]: r["status"] for r in json.loads(out)["devices"]}
    assert status == {"ovoc": "installed", "sbc1": "installed", "sbc2-ha": "installed"}
    assert FORCE_NOTICE not in err


def test_force_is_redeploy_and_says_so_once(lab: LabEstate) -> None:
    assert {p["action"] for p in _plans(lab).values()} == {"skip"}
    code, out, err = _run(lab, "plan", "--force", "--json")
    assert code == 0, out + err
    assert {p["action"] for p in json.loads(out)["devices"]} == {"deploy"}
    assert err.count(FORCE_NOTICE) == 1, err
    assert {p["action"] for p in _plans(lab, "--redeploy").values()} == {"deploy"}


def test_an_ignorable_finding_ignored(lab: LabEstate) -> None:
    """sbc1 named outside the certificate: refused (NAME_NOT_COVERED) unless ignored."""
    text = lab.inventory_path.read_text().replace('fqdn = "sbc1.', 'fqdn = "sbc1.elsewhere.', 1)
    lab.inventory_path.write_text(text)
    plans = _plans(lab, "--redeploy")
    assert plans["sbc1"]["action"] == "blocked"
    assert "NAME_NOT_COVERED" in str(plans["sbc1"]["reason"])
    assert plans["ovoc"]["action"] == plans["sbc2-ha"]["action"] == "deploy"
    # --force alone no longer goes past the error
    code, out, err = _run(lab, "deploy", "--force", "--only", "sbc1", "--json")
    assert code == 2, out + err
    (refused,) = json.loads(out)["devices"]
    assert refused["status"] == "refused"
    assert "--ignore-finding NAME_NOT_COVERED" in refused["hint"], refused
    code, out, err = _run(lab, "deploy", "--redeploy", "--only", "sbc1",
                          "--ignore-finding", "NAME_NOT_COVERED", "--json")
    assert code == 0, out + err
    (result,) = json.loads(out)["devices"]
    assert result["device"] == "sbc1" and result["status"] == "installed", result


def test_non_ignorable_findings_are_refused_naming_why(lab: LabEstate) -> None:
    for code_name in ("KEY_MISSING", "OVOC_KEYSTORE_PASSWORD"):
        code, out, err = _run(lab, "deploy", "--ignore-finding", code_name)
        assert code == 2, out + err
        assert f"--ignore-finding {code_name}: this finding cannot be ignored" in err, err
        assert str(not_overridable(code_name)) in err
    code, out, err = _run(lab, "plan", "--ignore-finding", "NO_SUCH_CODE")
    assert code == 2 and "no such finding code" in err, err
    # ROOT_MISSING: an error only for OVOC, whose files need root.crt
    assert lab.ovoc is not None
    staged = lab.ovoc.staged_files()
    _import_v2(lab, root=False)
    plans = _plans(lab, "--ignore-finding", "ROOT_MISSING")
    assert plans["ovoc"]["action"] == "blocked"
    assert "ROOT_MISSING cannot be ignored: OVOC's import needs root.crt" in str(
        plans["ovoc"]["reason"])
    assert plans["sbc1"]["action"] == "deploy"
    code, out, err = _run(lab, "deploy", "--ignore-finding", "ROOT_MISSING")
    assert code == 2, out + err
    assert lab.ovoc.staged_files() == staged and lab.ovoc.import_count == 0


def test_keystore_password_ovoc_cannot_take_refused_before_any_change(
        lab: LabEstate, monkeypatch: pytest.MonkeyPatch) -> None:
    """plan says blocked; deploy exits 2 and changes no device (checked on the lab's side)."""
    assert lab.ovoc is not None
    monkeypatch.setenv("CERTFLEET_LAB_OVOC_KEYSTORE_PASSWORD", "pässwort-1234")
    served = lab.sbcs["sbc1"].served_sha256("sip")
    staged = lab.ovoc.staged_files()
    _import_v2(lab)
    plans = _plans(lab)
    assert plans["ovoc"]["action"] == "blocked"
    assert "OVOC_KEYSTORE_PASSWORD" in str(plans["ovoc"]["reason"])
    assert "pässwort" not in json.dumps(plans)
    code, out, err = _run(lab, "deploy", "--json")
    assert code == 2, out + err
    status = {r["device"]: r["status"] for r in json.loads(out)["devices"]}
    assert status == {"ovoc": "refused", "sbc1": "not-attempted", "sbc2-ha": "not-attempted"}
    assert "pässwort" not in out + err
    assert lab.ovoc.staged_files() == staged and lab.ovoc.import_count == 0
    assert lab.sbcs["sbc1"].served_sha256("sip") == served


def test_a_keystore_password_asked_at_run_time_does_not_block_a_plan(lab: LabEstate) -> None:
    """plan asks for no secret: a keystore password set to prompt is not judged missing."""
    text = lab.inventory_path.read_text()
    text = text.replace('keystore_password = "env:CERTFLEET_LAB_OVOC_KEYSTORE_PASSWORD"',
                        'keystore_password = "prompt"')
    lab.inventory_path.write_text(text)
    plans = _plans(lab, "--redeploy")
    assert plans["ovoc"]["action"] == "deploy", plans["ovoc"]
