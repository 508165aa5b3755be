"""`certfleet adopt` and `deploy --previous-key` against lab SBCs on loopback (real TLS)."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509

from certfleet.estate.store import Store
from certfleet.lab.estate import LabEstate
from certfleet.pki.model import cert_sha256
from handshake import unit_served
from lab_support import invoke


def _run(lab: LabEstate, state: Path, *args: str) -> tuple[int, str]:
    result = invoke(lab, state, *args)
    return result.exit_code, result.output


def _old_pem(lab: LabEstate, tmp_path: Path) -> Path:
    path = tmp_path / "last-year.pem"
    path.write_bytes(lab.old.fullchain_pem + lab.old.key_pem())
    return path


def _renew(lab: LabEstate, state: Path, tmp_path: Path) -> None:
    """csr, the lab CA issues it, import: the new version is the target."""
    code, out = _run(lab, state, "csr", "wildcard", "--json")
    assert code == 0, out
    issued = lab.ca.issue(csr=x509.load_pem_x509_csr(json.loads(out)["csr_pem"].encode()))
    (tmp_path / "new.crt").write_bytes(issued.leaf_pem + issued.chain_pem)
    code, out = _run(lab, state, "import", "wildcard", str(tmp_path / "new.crt"))
    assert code == 0, out


def test_adopt_reports_each_device_and_makes_the_first_deploy_reversible(
    sbc_lab: LabEstate, tmp_path: Path
) -> None:
    """Adopt what the SBC serves (match), renew, deploy with rollback, roll back: exit 0."""
    state = tmp_path / "state"
    code, out = _run(sbc_lab, state, "adopt", "wildcard", str(_old_pem(sbc_lab, tmp_path)),
                     "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["new"] is True and data["target"] is True
    assert data["version"]["origin"] == "adopt" and data["version"]["number"] == 1
    assert data["served_by"] == ["sbc1", "sbc2-ha"]
    assert [d["state"] for d in data["devices"]] == ["match", "match"]
    # Before any import the adopted version is the target the SBC serves already.
    code, out = _run(sbc_lab, state, "plan", "--json")
    assert [p["action"] for p in json.loads(out)["devices"]] == ["skip", "skip"]
    # Adopting again stores nothing new.
    code, out = _run(sbc_lab, state, "adopt", "wildcard", str(_old_pem(sbc_lab, tmp_path)))
    assert code == 0 and "already stored" in out and "serves it" in out

    _renew(sbc_lab, state, tmp_path)
    code, out = _run(sbc_lab, state, "plan", "--json")
    plans = json.loads(out)["devices"]
    assert all(p["action"] == "deploy" and p["rollback"] and p["target_version"] == 2
               for p in plans)
    code, out = _run(sbc_lab, state, "deploy", "--json")
    assert code == 0, out
    assert [d["status"] for d in json.loads(out)["devices"]] == ["installed", "installed"]
    code, out = _run(sbc_lab, state, "rollback", "sbc1", "--json")
    assert code == 0, out
    assert sbc_lab.sbcs["sbc1"].served_sha256("sip") == cert_sha256(sbc_lab.old.leaf)
    assert unit_served(sbc_lab.sbcs["sbc1"]) == cert_sha256(sbc_lab.old.leaf)  # stdlib


def test_adopt_after_import_leaves_the_target(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """Adopting last year's after this year's import: the imported version stays the target."""
    state = tmp_path / "state"
    _renew(sbc_lab, state, tmp_path)
    code, out = _run(sbc_lab, state, "adopt", "wildcard", str(_old_pem(sbc_lab, tmp_path)))
    assert code == 0, out
    assert "wildcard v2" in out and "the deploy target stays wildcard v1" in out
    with Store.open(state) as store:
        current = store.current_version("wildcard")
        assert current is not None and current.number == 1 and current.origin == "import"
    code, out = _run(sbc_lab, state, "plan", "--json")
    assert all(p["target_version"] == 1 and p["rollback"] for p in json.loads(out)["devices"])


def test_keys_adopted_under_another_name_serve_plan_and_deploy(
    sbc_lab: LabEstate, tmp_path: Path
) -> None:
    """Newcomer finding 2: the key stored under a second inventory name makes plan say
    rollback yes and deploy then agrees (it used to refuse). No device of that name serves
    it: stored all the same, said plainly, exit 0."""
    text = sbc_lab.inventory_path.read_text()
    sbc_lab.inventory_path.write_text(
        text + '\n[certificates.old]\ncn = "*.example.com"\nkey_type = "ec-p256"\n')
    state = tmp_path / "state"
    code, out = _run(sbc_lab, state, "adopt", "old", str(_old_pem(sbc_lab, tmp_path)))
    assert code == 0, out
    assert "no device of old serves it" in out
    _renew(sbc_lab, state, tmp_path)
    with Store.open(state) as store:
        assert [v.label for v in store.versions()] == ["old v1", "wildcard v1"]
    code, out = _run(sbc_lab, state, "plan", "--json")
    assert all(p["rollback"] for p in json.loads(out)["devices"])
    code, out = _run(sbc_lab, state, "deploy", "--json")
    assert code == 0, out
    assert {d["status"] for d in json.loads(out)["devices"]} == {"installed"}
    code, out = _run(sbc_lab, state, "rollback", "sbc1", "--json")
    assert code == 0, out


def test_adopt_refuses_bad_input(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """No key, a key of another certificate, an unknown name: exit 2, nothing stored."""
    state = tmp_path / "state"
    cert_only = tmp_path / "cert.pem"
    cert_only.write_bytes(sbc_lab.old.fullchain_pem)
    code, out = _run(sbc_lab, state, "adopt", "wildcard", str(cert_only))
    assert code == 2 and "no private key" in out
    other = sbc_lab.ca.issue(("other.example.com",), key_type="ec-p256")
    mismatched = tmp_path / "mismatch.pem"
    mismatched.write_bytes(sbc_lab.old.fullchain_pem + other.key_pem())
    code, out = _run(sbc_lab, state, "adopt", "wildcard", str(mismatched))
    assert code == 2 and "does not belong" in out
    code, out = _run(sbc_lab, state, "adopt", "nosuch", str(_old_pem(sbc_lab, tmp_path)))
    assert code == 2
    with Store.open(state) as store:
        assert store.versions() == []


def test_deploy_previous_key_for_one_run(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """Newcomer finding 1: the refusal's tip names --previous-key, and deploy has it."""
    state = tmp_path / "state"
    _renew(sbc_lab, state, tmp_path)
    code, out = _run(sbc_lab, state, "deploy", "--json")
    assert code == 2
    for device in json.loads(out)["devices"]:
        assert device["status"] == "refused" and "no rollback possible" in device["message"]
        assert "--previous-key FILE" in device["hint"] and "certfleet adopt" in device["hint"]
    assert sbc_lab.sbcs["sbc1"].served_sha256("sip") == cert_sha256(sbc_lab.old.leaf)
    assert unit_served(sbc_lab.sbcs["sbc1"]) == cert_sha256(sbc_lab.old.leaf)  # stdlib
    key = tmp_path / "old.key"
    key.write_bytes(sbc_lab.old.key_pem())
    code, out = _run(sbc_lab, state, "plan", "--json", "--previous-key", str(key))
    assert all(p["rollback"] for p in json.loads(out)["devices"])
    code, out = _run(sbc_lab, state, "deploy", "--json", "--previous-key", str(key))
    assert code == 0, out
    assert {d["status"] for d in json.loads(out)["devices"]} == {"installed"}
    code, out = _run(sbc_lab, state, "rollback", "sbc1", "--json")
    assert code == 0, out  # the backup holds the key given for that run
    code, out = _run(sbc_lab, state, "deploy", "--previous-key-password-env", "NOPE")
    assert code == 2 and "--previous-key-password-env is given without --previous-key" in out


def test_rollback_after_allow_no_rollback_touches_nothing_and_exits_2(
    sbc_lab: LabEstate, tmp_path: Path
) -> None:
    """Newcomer finding 3: after `deploy --allow-no-rollback`, `rollback sbc1` said "NOT
    restored" (exit 3) on a device it never touched. It changes nothing and exits 2, saying
    why (the backup holds no key) and what to do."""
    state = tmp_path / "state"
    _renew(sbc_lab, state, tmp_path)
    code, out = _run(sbc_lab, state, "deploy", "--json", "--allow-no-rollback")
    assert code == 0, out
    sbc1 = sbc_lab.sbcs["sbc1"]
    served = sbc1.served_sha256("sip")
    changes = len([r for r in sbc1.requests if r[0] in ("PUT", "POST")])
    code, out = _run(sbc_lab, state, "rollback", "sbc1")
    assert code == 2, out
    assert "NOT restored" not in out and "Traceback" not in out, out
    assert "cannot be restored" in out and "nothing was changed" in out, out
    assert sbc1.served_sha256("sip") == served
    assert len([r for r in sbc1.requests if r[0] in ("PUT", "POST")]) == changes
