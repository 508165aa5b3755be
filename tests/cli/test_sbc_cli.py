"""``certfleet sbc``: deploy, backup, status and trust against the lab SBC, with oracles."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner, Result

from _tools import require_tool
from certfleet.lab.ca import Issued
from certfleet.lab.sbc import LabSbc, LabSbcPair
from sbc_support import deploy_files

Invoke = Callable[..., Result]


@pytest.fixture()
def sbc(old_key: rsa.RSAPrivateKey) -> Iterator[LabSbc]:
    with LabSbc("sbc-cli", key=old_key) as device:
        yield device


@pytest.fixture()
def files(tmp_path: Path, issued: Issued, old_key: rsa.RSAPrivateKey) -> dict[str, Path]:
    """The renewed wildcard as a CA download (fullchain + root), its key, and the old key."""
    cert, key, old = deploy_files(tmp_path, issued, old_key)
    return {"cert": cert, "key": key, "old": old}


def runner_for(sbc_app: typer.Typer, password: str) -> Invoke:
    runner = CliRunner(env={"SBC_PW": password})

    def invoke(*args: str) -> Result:
        return runner.invoke(sbc_app, ["sbc", *args], catch_exceptions=False)

    return invoke


def _conn(device: LabSbc) -> list[str]:
    return ["--url", device.url, "--password-env", "SBC_PW",
            "--pin-sha256", device.management_sha256]


def _verify(device: LabSbc) -> list[str]:
    return ["--verify", f"127.0.0.1:{device.port}", "--verify", f"127.0.0.1:{device.sip_port}"]


def _fingerprint(openssl: str, port: int) -> str:
    out = subprocess.run(
        f"{openssl} s_client -connect 127.0.0.1:{port} -servername x </dev/null 2>/dev/null "
        f"| {openssl} x509 -fingerprint -sha256 -noout",
        shell=True, capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip().split("=", 1)[1].replace(":", "").lower()


@pytest.mark.oracle
def test_deploy_two_contexts_seen_by_openssl_and_curl(
    sbc_app: typer.Typer, sbc: LabSbc, files: dict[str, Path], tmp_path: Path, issued: Issued
) -> None:
    """deploy --json exits 0; openssl and curl see the certificate the driver installed."""
    openssl, curl = require_tool("openssl"), require_tool("curl")
    result = runner_for(sbc_app, sbc.password)(
        "deploy", str(files["cert"]), str(files["key"]), *_conn(sbc),
        "--context", "0", "--context", "1", *_verify(sbc), "--previous-key", str(files["old"]),
        "--verify-timeout", "10", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["outcome"] == "installed" and outcome["exit_code"] == 0
    target = outcome["target_sha256"]
    assert set(outcome["served_after"].values()) == {target}
    assert _fingerprint(openssl, sbc.port) == target
    assert _fingerprint(openssl, sbc.sip_port) == target
    root = tmp_path / "root.pem"
    root.write_bytes(issued.root_pem)
    config = tmp_path / "curl.cfg"
    config.write_text(f'user = "{sbc.user}:{sbc.password}"\n')
    config.chmod(0o600)
    # Management now presents the new wildcard with its intermediate: curl verifies it
    # against the CA's root under a name the wildcard covers.
    read = subprocess.run(
        [curl, "-sS", "--fail", "--cacert", str(root), "-K", str(config),
         "--resolve", f"sbc1.example.com:{sbc.port}:127.0.0.1",
         f"https://sbc1.example.com:{sbc.port}/api/v1/files/tls/1/certificate"],
        capture_output=True, check=True, timeout=30)
    installed = subprocess.run([openssl, "x509", "-fingerprint", "-sha256", "-noout"],
                               input=read.stdout, capture_output=True, check=True, timeout=30)
    assert installed.stdout.decode().split("=", 1)[1].strip().replace(":", "").lower() == target


def test_first_deploy_needs_allow_no_rollback(
    sbc_app: typer.Typer, sbc: LabSbc, files: dict[str, Path]
) -> None:
    """Without --previous-key the deploy is refused (exit 2) before any change, saying why."""
    before = sbc.context(0).sha256
    invoke = runner_for(sbc_app, sbc.password)
    refused = invoke("deploy", str(files["cert"]), str(files["key"]), *_conn(sbc),
                     "--context", "0")
    assert refused.exit_code == 2
    assert "--allow-no-rollback" in refused.output and "--previous-key" in refused.output
    assert sbc.context(0).sha256 == before
    done = invoke("deploy", str(files["cert"]), str(files["key"]), *_conn(sbc), "--context", "0",
                  "--verify", f"127.0.0.1:{sbc.port}", "--allow-no-rollback",
                  "--verify-timeout", "10")
    assert done.exit_code == 0, done.output
    assert "installed" in done.stdout


def test_ha_pair_deploy_verified_on_both_units(
    sbc_app: typer.Typer, files: dict[str, Path], old_key: rsa.RSAPrivateKey
) -> None:
    """A deploy to the active of an HA pair (409 during sync) shows on both units' listeners."""
    with LabSbcPair("ha-cli", key=old_key, sync_busy=1) as pair:
        active, standby = pair.units
        result = runner_for(sbc_app, active.password)(
            "deploy", str(files["cert"]), str(files["key"]), *_conn(active),
            "--context", "0", "--context", "1", *_verify(active), *_verify(standby),
            "--previous-key", str(files["old"]), "--verify-timeout", "10",
            "--busy-delay", "0.01", "--json")
        assert result.exit_code == 0, result.output
        target = json.loads(result.stdout)["target_sha256"]
        assert standby.served_sha256("management") == target
        assert standby.served_sha256("sip") == target
        assert any(status == 409 for _, _, status in active.requests)
        assert standby.saved_context(1).sha256 == target


@pytest.mark.parametrize(
    ("fault", "method", "path", "code", "outcome"),
    [
        ("500", "PUT", "/files/tls/1/certificate", 1, "restored"),
        ("drop", "PUT", "/files/tls/0/privateKey", 1, "restored"),
        ("409", "POST", "/actions/saveConfiguration", 1, "restored"),
        ("500", "GET", "/files/ini", 2, "refused"),
    ],
)
def test_faults_exit_codes(
    sbc_app: typer.Typer, sbc: LabSbc, files: dict[str, Path],
    fault: str, method: str, path: str, code: int, outcome: str,
) -> None:
    """Every fault ends in a known state with the matching exit code."""
    # Three 409s outlast two retries of the first save; the restore's save passes.
    sbc.faults.add(fault, method=method, path=path, times=3 if fault == "409" else 1)
    result = runner_for(sbc_app, sbc.password)(
        "deploy", str(files["cert"]), str(files["key"]), *_conn(sbc), "--context", "0",
        "--context", "1", *_verify(sbc), "--previous-key", str(files["old"]),
        "--verify-timeout", "30", "--busy-retries", "2", "--busy-delay", "0.01", "--json")
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["outcome"] == outcome
    assert sbc.saved_context(0).key_matches


def test_failure_without_rollback_exits_3(
    sbc_app: typer.Typer, sbc: LabSbc, files: dict[str, Path]
) -> None:
    """With --allow-no-rollback a failure after a change exits 3 and says so."""
    sbc.faults.add("500", method="PUT", path="/files/tls/0/certificate")
    result = runner_for(sbc_app, sbc.password)(
        "deploy", str(files["cert"]), str(files["key"]), *_conn(sbc), "--context", "0",
        "--allow-no-rollback")
    assert result.exit_code == 3
    assert "answered 500: the SBC failed" in result.output


def test_wrong_password_and_wrong_pin(
    sbc_app: typer.Typer, sbc: LabSbc, files: dict[str, Path]
) -> None:
    """A wrong password and a wrong pin are refused (exit 2) with clear messages."""
    wrong_pw = runner_for(sbc_app, "not-it")(
        "deploy", str(files["cert"]), str(files["key"]), *_conn(sbc), "--context", "0",
        "--allow-no-rollback")
    assert wrong_pw.exit_code == 2
    assert "answered 401: the SBC refused user 'Admin'" in wrong_pw.output
    assert "not-it" not in wrong_pw.output
    wrong_pin = runner_for(sbc_app, sbc.password)(
        "deploy", str(files["cert"]), str(files["key"]), "--url", sbc.url,
        "--password-env", "SBC_PW", "--pin-sha256", "00" * 32, "--context", "0",
        "--allow-no-rollback")
    assert wrong_pin.exit_code == 2
    assert sbc.management_sha256 in wrong_pin.output.replace("\n", "")


def test_bad_input_is_refused_before_connecting(
    sbc_app: typer.Typer, sbc: LabSbc, tmp_path: Path, files: dict[str, Path]
) -> None:
    """A non-certificate input file exits 2 and the device sees no request."""
    junk = tmp_path / "junk.crt"
    junk.write_bytes(b"this is not a certificate\n")
    result = runner_for(sbc_app, sbc.password)(
        "deploy", str(junk), *_conn(sbc), "--context", "0", "--allow-no-rollback")
    assert result.exit_code == 2
    assert sbc.requests == []


def test_device_400_is_quoted(
    sbc_app: typer.Typer, sbc: LabSbc, files: dict[str, Path]
) -> None:
    """A 400 on the first change is quoted and ends refused (exit 2): nothing was changed."""
    sbc.faults.add("400", method="PUT", path="/files/tls/0/privateKey")
    result = runner_for(sbc_app, sbc.password)(
        "deploy", str(files["cert"]), str(files["key"]), *_conn(sbc), "--context", "0",
        "--previous-key", str(files["old"]), "--verify-timeout", "1")
    assert result.exit_code == 2, result.output
    assert "answered 400: the SBC refused the file: 'Bad request'" in result.output
    assert "nothing was changed" in result.output


def test_insecure_warns(sbc_app: typer.Typer, sbc: LabSbc) -> None:
    """--insecure works but prints a loud warning."""
    result = runner_for(sbc_app, sbc.password)(
        "status", "--url", sbc.url, "--password-env", "SBC_PW", "--insecure", "--json")
    assert result.exit_code == 0
    assert "WARNING" in result.stderr and "--insecure" in result.stderr


def test_backup_and_status(sbc_app: typer.Typer, sbc: LabSbc, tmp_path: Path) -> None:
    """backup writes the INI and every context's files; status --json lists the contexts."""
    invoke = runner_for(sbc_app, sbc.password)
    out = tmp_path / "backup"
    saved = invoke("backup", *_conn(sbc), "--out-dir", str(out))
    assert saved.exit_code == 0, saved.output
    assert "[ TLSContexts ]" in (out / "config.ini").read_text()
    for index in (0, 1, 2):
        assert (out / f"tls{index}-certificate.pem").read_bytes() == sbc.context(index).cert_pem
    manifest = json.loads((out / "backup.json").read_text())
    assert manifest["kind"] == "sbc" and manifest["has_private_key"] is False
    status = invoke("status", *_conn(sbc), "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert [c["name"] for c in data["contexts"]] == ["default", "SIP-TLS", "Teams"]
    first = data["contexts"][0]
    assert first["serves_management"] is True and first["key_valid"] is True
    assert first["sha256"] == sbc.management_sha256
    assert data["device"]["productType"] == "Mediant VE SBC"
    human = invoke("status", *_conn(sbc))
    assert human.exit_code == 0 and "SIP-TLS" in human.stdout


def _ungenerated(ini: str) -> list[str]:
    return [line for line in ini.splitlines() if not line.startswith(";Generated:")]


def test_trust_audit_and_add(sbc_app: typer.Typer, sbc: LabSbc, tmp_path: Path) -> None:
    """audit exits 1 listing the missing Teams roots; add backs up, uploads them; audit then
    exits 0."""
    invoke = runner_for(sbc_app, sbc.password)
    audit = invoke("trust", "audit", *_conn(sbc), "--set", "teams-2026", "--context", "2",
                   "--json")
    assert audit.exit_code == 1
    data = json.loads(audit.stdout)
    assert data == {"set": "teams-2026", "context": 2, "present": [], "missing": data["missing"]}
    assert len(data["missing"]) == 7 and "DigiCert Global Root G2" in data["missing"]
    roots_before = sbc.saved_context(2).trusted_roots
    ini_before = sbc.ini(saved=True)
    added = invoke("trust", "add", *_conn(sbc), "--set", "teams-2026", "--context", "2",
                   "--backup-dir", str(tmp_path / "bk"))
    assert added.exit_code == 0, added.output
    # the backup was taken before the change: the roots as they were, and the INI
    assert f"saved to {tmp_path / 'bk'}" in " ".join(added.output.split())
    assert (tmp_path / "bk" / "tls2-trusted_roots.pem").read_bytes() == b"".join(roots_before)
    # the INI as it was, but for the ";Generated:" time the SBC stamps on every download
    saved_ini = (tmp_path / "bk" / "config.ini").read_bytes().decode()
    assert _ungenerated(saved_ini) == _ungenerated(ini_before)
    assert json.loads((tmp_path / "bk" / "backup.json").read_text())["device"] == "127.0.0.1"
    assert sbc.saved_context(2).trusted_roots[-1].startswith(b"-----BEGIN CERTIFICATE-----")
    assert len(sbc.saved_context(2).trusted_roots) == 2 + 7
    again = invoke("trust", "audit", *_conn(sbc), "--set", "teams-2026", "--context", "2",
                   "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["missing"] == []
    unknown = invoke("trust", "audit", *_conn(sbc), "--set", "teams-1999", "--context", "2")
    assert unknown.exit_code == 2 and "teams-2026" in unknown.output


def test_trust_add_backs_up_under_the_state_folder(sbc_app: typer.Typer, sbc: LabSbc,
                                                   tmp_path: Path) -> None:
    """Without --backup-dir the backup goes to a new folder under the state folder;
    --json says where; nothing missing means no change and no backup."""
    runner = CliRunner(env={"SBC_PW": sbc.password, "CERTFLEET_STATE_DIR": str(tmp_path)})
    args = ["sbc", "trust", "add", *_conn(sbc), "--set", "teams-2026", "--context", "1",
            "--json"]
    first = runner.invoke(sbc_app, args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    where = Path(data["backup"])
    assert where.parent.parent == tmp_path / "device-backups"
    assert (where / "tls1-trusted_roots.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    again = runner.invoke(sbc_app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["backup"] is None
