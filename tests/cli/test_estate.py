"""The estate commands end to end against lab SBCs on loopback (real HTTPS, real TLS)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.estate.store import Store
from certfleet.lab.ca import Issued
from certfleet.lab.estate import LabEstate
from handshake import unit_served
from lab_support import invoke

runner = CliRunner()


def _run(lab: LabEstate, state: Path, *args: str) -> tuple[int, str]:
    result = invoke(lab, state, *args)
    return result.exit_code, result.stdout


def test_init_writes_skeleton_and_refuses_overwrite(tmp_path: Path) -> None:
    """`certfleet init` writes a valid inventory once and never overwrites it."""
    path = tmp_path / "certfleet.toml"
    first = runner.invoke(app, ["init", "--inventory", str(path)])
    assert first.exit_code == 0, first.output
    assert "[devices.sbc1]" in path.read_text()
    second = runner.invoke(app, ["init", "--inventory", str(path)])
    assert second.exit_code == 2
    assert "already exists" in second.output


def test_renewal_flow(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """csr, import, plan, deploy, verify, status, history and rollback, as a user runs them."""
    state = tmp_path / "state"
    old = tmp_path / "old.pem"
    old.write_bytes(sbc_lab.old.fullchain_pem + sbc_lab.old.key_pem())
    code, _ = _run(sbc_lab, state, "import", "wildcard", str(old))
    assert code == 0

    # Before: everything serves v1, with a few days left; verify passes.
    code, out = _run(sbc_lab, state, "status", "--json")
    assert code == 0
    devices = json.loads(out)["devices"]
    assert {d["name"] for d in devices} == {"sbc1", "sbc2-ha"}
    listener = devices[0]["listeners"][0]
    assert set(listener) >= {"listener", "reachable", "error", "sha256", "subject", "issuer",
                             "not_after", "days_left", "hostname_ok", "is_current"}
    assert listener["is_current"] and listener["hostname_ok"] and listener["days_left"] <= 6
    assert all(d["agree"] for d in devices)

    # Renew: csr (key kept in the store), CA issues, import matches the key by public key.
    code, out = _run(sbc_lab, state, "csr", "wildcard", "--json")
    assert code == 0, out
    csr = json.loads(out)["csr_pem"].encode()
    from cryptography import x509

    issued = sbc_lab.ca.issue(csr=x509.load_pem_x509_csr(csr))
    (tmp_path / "leaf.crt").write_bytes(issued.leaf_pem)
    (tmp_path / "chain.p7b").write_bytes(issued.p7b(wrong_order=True))
    code, out = _run(sbc_lab, state, "import", "wildcard", str(tmp_path / "leaf.crt"),
                     str(tmp_path / "chain.p7b"), "--json")
    assert code == 0, out
    assert json.loads(out)["key_from_store"] is True

    code, out = _run(sbc_lab, state, "verify")
    assert code == 1  # nothing serves v2 yet

    code, out = _run(sbc_lab, state, "plan", "--json")
    assert code == 0
    plans = json.loads(out)["devices"]
    assert {p["action"] for p in plans} == {"deploy"} and all(p["rollback"] for p in plans)

    code, out = _run(sbc_lab, state, "deploy", "--json", "--canary", "sbc1")
    assert code == 0, out
    report = json.loads(out)
    assert [d["status"] for d in report["devices"]] == ["installed", "installed"]

    code, out = _run(sbc_lab, state, "verify", "--json")
    assert code == 0, out
    code, out = _run(sbc_lab, state, "deploy", "--json")
    assert [d["status"] for d in json.loads(out)["devices"]] == ["skipped", "skipped"]

    code, out = _run(sbc_lab, state, "history", "--json", "--device", "sbc1")
    rows = json.loads(out)["deployments"]
    assert [r["outcome"] for r in rows] == ["skipped", "installed"]
    assert any(s["step"] == "install" for s in rows[1]["steps"])

    # Roll sbc1 back to what it served before: verify then fails for it.
    code, out = _run(sbc_lab, state, "rollback", "sbc1", "--json")
    assert code == 0, out
    unit = sbc_lab.sbcs["sbc1"]
    assert unit.served_sha256("sip") == json.loads(out)["backup"]["served_sha256"]
    assert unit_served(unit) == json.loads(out)["backup"]["served_sha256"]  # stdlib handshake
    code, out = _run(sbc_lab, state, "verify", "--json")
    assert code == 1
    bad = [d["name"] for d in json.loads(out)["devices"] if not d["is_current"]]
    assert bad == ["sbc1"]

    with Store.open(state) as store:
        assert store.audit_log()  # every command left its line


def test_deploy_refused_while_locked(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """A deploy while a live process holds the lock is refused, naming it; unlock cannot take it."""
    state = tmp_path / "state"
    old = tmp_path / "old.pem"
    old.write_bytes(sbc_lab.old.fullchain_pem + sbc_lab.old.key_pem())
    assert _run(sbc_lab, state, "import", "wildcard", str(old))[0] == 0
    with Store.open(state) as store:
        store.acquire_lock("deploy")
        result = runner.invoke(app, ["deploy", "--inventory", str(sbc_lab.inventory_path),
                                     "--state-dir", str(state)])
        assert result.exit_code == 2  # refused: nothing was touched
        assert "holds the lock" in result.output
        held = runner.invoke(app, ["unlock", "--state-dir", str(state)])
        assert held.exit_code == 2 and "holds the lock" in held.output  # a live holder stays
    # the holder is gone: its lock went with it
    result = runner.invoke(app, ["unlock", "--state-dir", str(state)])
    assert result.exit_code == 0 and "no lock is held" in result.output
    code, out = _run(sbc_lab, state, "deploy", "--json")
    assert code == 0, out
    assert {d["status"] for d in json.loads(out)["devices"]} == {"skipped"}


def _import_old_and_renewed(lab: LabEstate, state: Path, tmp_path: Path) -> Issued:
    """`certfleet import` last year's certificate (with its key and root), then a renewal."""
    old = tmp_path / "old.pem"
    old.write_bytes(lab.old.fullchain_pem + lab.old.root_pem + lab.old.key_pem())
    assert _run(lab, state, "import", "wildcard", str(old))[0] == 0
    renewed = lab.ca.issue(("*.example.com", "example.com"), key_type="ec-p256")
    new = tmp_path / "new.pem"
    new.write_bytes(renewed.fullchain_pem + renewed.root_pem + renewed.key_pem())
    assert _run(lab, state, "import", "wildcard", str(new))[0] == 0
    return renewed


def test_ovoc_rollback_after_deploy(tmp_path: Path) -> None:
    """On the lab OVOC: deploy the renewal, then `rollback ovoc` serves last year's again."""
    lab = LabEstate(tmp_path / "lab", sbcs=0, ha=False, key_type="ec-p256")
    lab.start()
    try:
        with lab.environment():
            state = tmp_path / "state"
            renewed = _import_old_and_renewed(lab, state, tmp_path)
            code, out = _run(lab, state, "deploy", "--json")
            assert code == 0, out
            assert lab.ovoc is not None
            from certfleet.pki.model import cert_sha256

            assert cert_sha256(lab.ovoc.served_certificate()) == cert_sha256(renewed.leaf)
            code, out = _run(lab, state, "rollback", "ovoc", "--json")
            assert code == 0, out
            code, out = _run(lab, state, "verify", "--json")
            assert code == 1
            [device] = json.loads(out)["devices"]
            assert device["listeners"][0]["sha256"] == cert_sha256(lab.old.leaf)
    finally:
        lab.stop()


def test_human_output(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """Tables for status, plan, deploy --dry-run and history render without JSON."""
    state = tmp_path / "state"
    old = tmp_path / "old.pem"
    old.write_bytes(sbc_lab.old.fullchain_pem + sbc_lab.old.key_pem())
    code, out = _run(sbc_lab, state, "import", "wildcard", str(old))
    assert code == 0 and "stored" in out
    code, out = _run(sbc_lab, state, "status")
    assert code == 0 and "Estate status" in out and "sbc2-ha" in out
    code, out = _run(sbc_lab, state, "plan")
    assert code == 0 and "skip" in out
    result = runner.invoke(app, ["deploy", "--dry-run", "--force", "--inventory",
                                 str(sbc_lab.inventory_path), "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    assert "would-deploy" in result.stdout and "dry run" in result.stdout
    code, out = _run(sbc_lab, state, "history")
    assert code == 0 and "History" in out


def test_ovoc_file_named_like_a_backup_manifest_is_left_alone(tmp_path: Path) -> None:
    """A staged file called backup.json (an administrator's note, say) neither breaks the
    backup (whose manifest has that name) nor is touched by deploy and rollback."""
    lab = LabEstate(tmp_path / "lab", sbcs=0, ha=False, key_type="ec-p256")
    lab.start()
    try:
        with lab.environment():
            assert lab.ovoc is not None
            note = b'{"note": "renewed by hand last year"}\n'
            lab.ovoc.stage_files({"backup.json": note})
            state = tmp_path / "state"
            _import_old_and_renewed(lab, state, tmp_path)
            code, out = _run(lab, state, "deploy", "--json")
            assert code == 0, out
            assert lab.ovoc.staged_files()["backup.json"] == note
            with Store.open(state) as store:
                record = store.last_backup("ovoc")
                assert record is not None
                files = store.read_backup(record).files
                assert "backup.json" not in files and "server.crt" in files
            code, out = _run(lab, state, "rollback", "ovoc", "--json")
            assert code == 0, out
            assert lab.ovoc.staged_files()["backup.json"] == note
    finally:
        lab.stop()
