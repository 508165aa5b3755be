"""``certfleet ovoc deploy`` and ``certfleet ovoc doctor`` against the lab OVOC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.ovoc import LabOvoc

runner = CliRunner()
KEYSTORE = "keystore-Pa55w0rd"
ENCRYPTED_KEY_DIAGNOSIS = (
    "OVOC will reject these files: server.key is an encrypted PKCS#8 key; OVOC needs an "
    "unencrypted PEM key (PKCS#1, 'Apache compatible')"
)


@pytest.fixture(scope="module")
def new_cert() -> Issued:
    return LabCA("OVOC CLI Test").issue(["ovoc.example.com"], key_type="rsa2048")


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[LabOvoc]:
    with LabOvoc(restart_delay=0.05) as running:
        monkeypatch.setenv("OVOC_SSH_PW", running.acems_password)
        monkeypatch.setenv("OVOC_ROOT_PW", running.root_password)
        monkeypatch.setenv("OVOC_KS_PW", KEYSTORE)
        yield running


def connection(lab: LabOvoc) -> list[str]:
    return ["--host", "127.0.0.1", "--ssh-port", str(lab.ssh_port),
            "--password-env", "OVOC_SSH_PW", "--host-key-sha256", lab.host_key_sha256]


def deploy_args(lab: LabOvoc, files: list[Path], *extra: str) -> list[str]:
    return ["ovoc", "deploy", *map(str, files), *connection(lab),
            "--su-password-env", "OVOC_ROOT_PW", "--keystore-password-env", "OVOC_KS_PW",
            "--verify-port", str(lab.https_port), "--verify-timeout", "5",
            "--prompt-timeout", "5", "--import-timeout", "5", *extra]


def write_pem_set(tmp_path: Path, issued: Issued, *, key: bool = True) -> list[Path]:
    cert = tmp_path / "wildcard.crt"
    cert.write_bytes(issued.leaf_pem + issued.chain_pem + issued.root_pem)
    files = [cert]
    if key:
        key_file = tmp_path / "wildcard.key"
        key_file.write_bytes(issued.key_pem("pkcs8"))
        files.append(key_file)
    return files


def test_deploy_happy_path_json(lab: LabOvoc, new_cert: Issued, tmp_path: Path) -> None:
    """deploy --json installs, verifies and prints the outcome with exit 0."""
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert), "--json"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["outcome"] == "installed" and data["exit_code"] == 0
    assert lab.served_certificate() == new_cert.leaf
    assert KEYSTORE not in result.stdout and lab.root_password not in result.stdout


def test_deploy_from_pfx_and_ca_crt(lab: LabOvoc, new_cert: Issued, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The story's input (a .pfx plus the CA's .crt files) lands as PEM files OVOC imports."""
    assert new_cert.key is not None
    pfx = tmp_path / "export.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"wildcard", new_cert.key, new_cert.leaf, None,
        serialization.BestAvailableEncryption(b"pfx-secret")))
    chain = tmp_path / "DigiCertCA.crt"
    chain.write_bytes(new_cert.chain_pem)
    root = tmp_path / "TrustedRoot.crt"
    root.write_bytes(new_cert.root_pem)
    monkeypatch.setenv("PFX_PW", "pfx-secret")
    result = runner.invoke(app, deploy_args(lab, [pfx, chain, root],
                                            "--input-password-env", "PFX_PW"))
    assert result.exit_code == 0, result.output
    assert "installed" in result.stdout
    assert lab.staged_files()["server.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert lab.served_certificate() == new_cert.leaf


def test_deploy_human_output(lab: LabOvoc, new_cert: Issued, tmp_path: Path) -> None:
    """Human output lists the steps and ends with the outcome line and a Tip."""
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert)))
    assert result.exit_code == 0, result.output
    for step in ("connect", "backup", "stage", "import", "verify"):
        assert step in result.stdout
    assert "installed" in result.stdout and "Tip:" in result.stdout


def test_deploy_refused_by_preflight(lab: LabOvoc, new_cert: Issued, tmp_path: Path) -> None:
    """No key in the input: exit 2 before touching OVOC."""
    before = lab.staged_files()
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert, key=False),
                                            "--json"))
    assert result.exit_code == 2, result.output
    data = json.loads(result.stdout)
    assert data["outcome"] == "refused"
    assert "KEY_MISSING" in [f["code"] for f in data["findings"]]
    assert lab.staged_files() == before and lab.import_count == 0


def test_deploy_forced_rejection_restores(lab: LabOvoc, new_cert: Issued,
                                          tmp_path: Path) -> None:
    """--force past a missing key: the previous server.key is kept (nothing replaces it),
    OVOC refuses the pair, the previous cert is restored, exit 1."""
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert, key=False),
                                            "--force", "--json"))
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["outcome"] == "restored"
    assert "server.key does not belong to server.crt" in data["diagnosis"]
    assert lab.served_certificate() == lab.initial.leaf


def test_deploy_encrypted_input_without_password(lab: LabOvoc, new_cert: Issued,
                                                 tmp_path: Path) -> None:
    """An encrypted input key without --input-password-env is bad input: exit 2."""
    assert new_cert.key is not None
    key = tmp_path / "enc.key"
    key.write_bytes(new_cert.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    files = [*write_pem_set(tmp_path, new_cert, key=False), key]
    result = runner.invoke(app, deploy_args(lab, files, "--json"))
    assert result.exit_code == 2, result.output
    assert lab.import_count == 0


def test_deploy_unknown_host_key(lab: LabOvoc, new_cert: Issued, tmp_path: Path) -> None:
    """A wrong pin stops with exit 2 and prints the fingerprint to pin."""
    args = deploy_args(lab, write_pem_set(tmp_path, new_cert))
    args[args.index(lab.host_key_sha256)] = "SHA256:" + "A" * 43
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert lab.host_key_sha256 in result.stdout.replace("\n", "")


def test_deploy_missing_password_env(lab: LabOvoc, new_cert: Issued, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset password variable is bad input: exit 2, named in the message."""
    monkeypatch.delenv("OVOC_ROOT_PW")
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert), "--json"))
    assert result.exit_code == 2
    assert "OVOC_ROOT_PW" in json.loads(result.stdout)["message"]


def test_doctor_accepts_good_files(lab: LabOvoc) -> None:
    """doctor on the lab's staged files: ok, exit 0, files listed."""
    result = runner.invoke(app, ["ovoc", "doctor", *connection(lab), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["diagnosis"] is None
    assert {f["name"] for f in data["files"]} == {"server.crt", "server.key", "root.crt",
                                                  "ca1.crt"}
    assert all(f["size"] > 0 for f in data["files"])


def test_doctor_explains_encrypted_key(lab: LabOvoc, new_cert: Issued) -> None:
    """doctor diagnoses the story's failure in one line, exit 1, read-only."""
    assert new_cert.key is not None
    lab.stage_files({
        "server.crt": new_cert.leaf_pem, "ca1.crt": new_cert.chain_pem,
        "root.crt": new_cert.root_pem,
        "server.key": new_cert.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw")),
    })
    before = lab.staged_files()
    result = runner.invoke(app, ["ovoc", "doctor", *connection(lab), "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["diagnosis"] == ENCRYPTED_KEY_DIAGNOSIS
    assert lab.staged_files() == before and lab.import_count == 0
    human = runner.invoke(app, ["ovoc", "doctor", *connection(lab)])
    assert human.exit_code == 1
    assert "server.key is an encrypted PKCS#8 key" in human.stdout.replace("\n", " ")


def test_doctor_missing_staging_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor with no staging folder: OVOC would reject, exit 1."""
    with LabOvoc(staging="missing") as lab:
        monkeypatch.setenv("OVOC_SSH_PW", lab.acems_password)
        result = runner.invoke(app, ["ovoc", "doctor", *connection(lab), "--json"])
        assert result.exit_code == 1, result.output
        assert "does not exist" in json.loads(result.stdout)["diagnosis"]


def test_doctor_cannot_connect(lab: LabOvoc) -> None:
    """doctor with a wrong SSH password: exit 3."""
    args = ["ovoc", "doctor", *connection(lab), "--json"]
    result = runner.invoke(app, args, env={"OVOC_SSH_PW": "wrong"})
    assert result.exit_code == 3, result.output
    assert "refused" in json.loads(result.stdout)["error"]


def test_doctor_bad_usage(lab: LabOvoc) -> None:
    """doctor without its password variable set: exit 2."""
    result = runner.invoke(app, ["ovoc", "doctor", *connection(lab), "--json"],
                           env={"OVOC_SSH_PW": None})  # type: ignore[dict-item]
    assert result.exit_code == 2, result.output


def test_deploy_not_restored_saves_backup(lab: LabOvoc, new_cert: Issued,
                                          tmp_path: Path) -> None:
    """Web server never back: exit 3, the previous files saved 0600 and named in the Tip."""
    lab.web_fail_restarts = 10
    backups = tmp_path / "backups"
    args = deploy_args(lab, write_pem_set(tmp_path, new_cert), "--json",
                       "--backup-dir", str(backups))
    args[args.index("--verify-timeout") + 1] = "1"
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["outcome"] == "failed"
    saved = next(backups.iterdir())
    assert str(saved) in data["hint"] and "EmsServerManager" in data["hint"]
    assert (saved / "server.key").read_bytes() == lab.initial.key_pem("sec1")
    assert (saved / "server.key").stat().st_mode & 0o077 == 0
    assert json.loads((saved / "backup.json").read_text())["has_private_key"] is True


def test_doctor_accepts_deploy_flags(lab: LabOvoc) -> None:
    """doctor takes deploy's su/keystore flags too (ignored: it never runs su)."""
    result = runner.invoke(app, ["ovoc", "doctor", *connection(lab), "--su-password-env",
                                 "OVOC_ROOT_PW", "--keystore-password-env", "OVOC_KS_PW",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert lab.import_count == 0


def _inputs(kind: str, issued: Issued, tmp_path: Path) -> list[Path]:
    """Input files that OVOC would reject, as users bring them."""
    other = LabCA("OVOC CLI Other").issue(["ovoc.example.com"], key_type="rsa2048")
    cert = tmp_path / "wildcard.crt"
    cert.write_bytes(issued.leaf_pem + issued.chain_pem + issued.root_pem)
    key = tmp_path / "wildcard.key"
    if kind == "mismatched-key":
        key.write_bytes(other.key_pem("pkcs1"))
        return [cert, key]
    if kind == "no-certificate":
        key.write_bytes(issued.key_pem("pkcs1"))
        return [key]
    if kind == "unparseable-certificate":
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        key.write_bytes(issued.key_pem("pkcs1"))
        return [cert, key]
    assert kind == "pfx-without-password" and issued.key is not None
    pfx = tmp_path / "export.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"x", issued.key, issued.leaf, None, serialization.BestAvailableEncryption(b"pw")))
    return [pfx, cert]


@pytest.mark.parametrize("kind", ["mismatched-key", "no-certificate", "unparseable-certificate",
                                  "pfx-without-password"])
def test_deploy_refuses_what_ovoc_would_reject(lab: LabOvoc, new_cert: Issued, tmp_path: Path,
                                               kind: str) -> None:
    """Every input OVOC would reject is refused before any change: exit 2."""
    before = lab.staged_files()
    result = runner.invoke(app, deploy_args(lab, _inputs(kind, new_cert, tmp_path), "--json"))
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["outcome"] == "refused"
    assert lab.staged_files() == before and lab.import_count == 0
    assert lab.served_certificate() == lab.initial.leaf


def test_deploy_forced_mismatched_key_restores(lab: LabOvoc, new_cert: Issued,
                                               tmp_path: Path) -> None:
    """--force past a key that is not the certificate's: OVOC refuses, rolled back, exit 1."""
    files = _inputs("mismatched-key", new_cert, tmp_path)
    result = runner.invoke(app, deploy_args(lab, files, "--force", "--json"))
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["outcome"] == "restored"
    assert "SEM PKCS#12 file" in data["message"]
    assert lab.served_certificate() == lab.initial.leaf
    assert lab.staged_files()["server.crt"] == lab.initial.leaf_pem


def test_deploy_with_menu_file(new_cert: Issued, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--menu reads labels for another firmware from a TOML file and the deploy walks them."""
    import copy

    from certfleet.lab.ems_emulator import load_menus

    menus = copy.deepcopy(load_menus())
    menus["menus"]["main"]["options"][3].update(key="8", label="Administration")
    menu_file = tmp_path / "menu.toml"
    menu_file.write_text('[menu]\nlabels = ["Administration", "Server Certificate Updates", '
                         '"Import Server Certificates from Certificate Authority (CA)"]\n'
                         'numbers = ["", "11", "3"]\n')
    with LabOvoc(menus=menus, restart_delay=0.05) as lab:
        monkeypatch.setenv("OVOC_SSH_PW", lab.acems_password)
        monkeypatch.setenv("OVOC_ROOT_PW", lab.root_password)
        monkeypatch.setenv("OVOC_KS_PW", KEYSTORE)
        files = write_pem_set(tmp_path, new_cert)
        result = runner.invoke(app, deploy_args(lab, files, "--json", "--menu", str(menu_file),
                                                "--settle-time", "0.1", "--enter", "cr"))
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["outcome"] == "installed"
        assert lab.served_certificate() == new_cert.leaf


def test_deploy_with_bad_menu_file(lab: LabOvoc, new_cert: Issued, tmp_path: Path) -> None:
    """A menu file that is not TOML or names an unknown setting, or a bad --enter, is refused."""
    broken = tmp_path / "menu.toml"
    broken.write_text("labels = [unclosed\n")
    unknown = tmp_path / "menu.json"
    unknown.write_text('{"colour": "red"}')
    for extra, words in ((["--menu", str(broken)], "is not valid TOML"),
                         (["--menu", str(unknown)], "'colour' is unknown"),
                         (["--enter", "tab"], "neither lf nor cr")):
        result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert),
                                                "--json", *extra))
        assert result.exit_code == 2, result.output
        assert words in json.loads(result.output)["message"]
    assert lab.import_count == 0


def test_deploy_refuses_non_ascii_keystore_password(lab: LabOvoc, new_cert: Issued,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A keystore password OVOC cannot take: exit 2 before any connection, saying why and
    which characters are safe, with --force too."""
    monkeypatch.setenv("OVOC_KS_PW", "Kennwort-ü-2026")
    before = lab.staged_files()
    for extra in ((), ("--force",)):
        result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert),
                                                *extra))
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "OVOC_KEYSTORE_PASSWORD" in text and "U+00FC" in text
        assert "printable ASCII" in text and "Tip:" in text
        assert "Kennwort" not in text
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert), "--json"))
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["outcome"] == "refused"
    assert [f["code"] for f in data["findings"]] == ["OVOC_KEYSTORE_PASSWORD"]
    assert lab.staged_files() == before and lab.import_count == 0


def test_device_text_is_printed_as_text(new_cert: Issued, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A banner, verdict and question holding '[root@ovoc ~]#', '[/bold]' and escape
    sequences print as is: no markup, no traceback, exit codes as usual."""
    import copy

    from certfleet.lab.ems_emulator import load_menus

    menus = copy.deepcopy(load_menus())
    menus["banner"] = ["", "Welcome [root@ovoc ~]# to [/bold] OVOC [bold red]lab[/]", "",
                       "\x1b]0;title\x07 [/] end of banner", ""]
    menus["import"]["success"][0] += " [/bold] [root@ovoc ~]#"
    with LabOvoc(menus=menus, restart_delay=0.05) as lab:
        monkeypatch.setenv("OVOC_SSH_PW", lab.acems_password)
        monkeypatch.setenv("OVOC_ROOT_PW", lab.root_password)
        monkeypatch.setenv("OVOC_KS_PW", KEYSTORE)
        transcript = tmp_path / "session.txt"
        result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert),
                                                "--transcript", str(transcript)))
        assert result.exit_code == 0, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        flat = " ".join(result.output.split())
        assert "generated successfully [/bold] [root@ovoc ~]#" in flat
        assert "Welcome [root@ovoc ~]# to [/bold] OVOC [bold red]lab[/]" in \
            transcript.read_text()
        lab.faults.inject_prompt = "Select [/bold] keystore [JKS/PKCS12] \x1b[1m[root@ovoc ~]#: "
        result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert),
                                                "--prompt-timeout", "1.5"))
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Select [/bold] keystore [JKS/PKCS12] [root@ovoc ~]#:" in \
            " ".join(result.output.split())
        assert "\x1b" not in result.output
        lab.stage_files({"[red]\x1b[31m.crt": b"x"})
        result = runner.invoke(app, ["ovoc", "doctor", *connection(lab)])
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "[red]\\x1b[31m.crt" in result.output


def test_ctrl_c_at_the_menu_rolls_back(lab: LabOvoc, new_cert: Issued, tmp_path: Path) -> None:
    """A real SIGINT while EmsServerManager shows the certificates menu: the deploy rolls
    back and exits 1 (restored); a second one during the rollback exits 3, never a
    traceback."""
    import os
    import signal

    sent: list[str] = []

    def at_menu(title: str) -> None:
        if title == "Server Certificates Update" and len(sent) < limit:
            sent.append(title)
            os.kill(os.getpid(), signal.SIGINT)

    lab.faults.on_menu = at_menu
    limit = 1
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert), "--json"))
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, KeyboardInterrupt)
    data = json.loads(result.stdout)
    assert data["outcome"] == "restored" and "interrupted" in data["message"]
    assert lab.served_certificate() == lab.initial.leaf
    sent.clear()
    limit = 2
    result = runner.invoke(app, deploy_args(lab, write_pem_set(tmp_path, new_cert)))
    assert result.exit_code == 3, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    # The second interrupt reaches either the CLI (KeyboardInterrupt: "NOT verified") or
    # the rollback itself (it stops: "NOT in its previous state"), by Python version.
    assert "interrupted" in result.output
    assert "NOT verified" in result.output or "NOT in its previous state" in result.output
