"""The OVOC driver through a real OpenSSH daemon, real PAM logins and a real ``su``.

The test plays the appliance with the machine's own OpenSSH:

* ``/usr/sbin/sshd -D -e -f <own config>`` on 127.0.0.1 and a free port, with its own
  host key, password logins through PAM, ``PermitRootLogin no`` and ``AllowUsers`` the
  throwaway ``acems`` user (as on OVOC, only that user logs in);
* a second throwaway user stands for ``root``: the driver runs ``su - <user>`` with its
  password. Its ``~/bin`` (on PATH after ``su -``, through ``~/.profile``) holds an
  ``EmsServerManager`` wrapper that runs the stdlib-only relay of
  :mod:`certfleet.lab.ems_emulator` with the system's ``/usr/bin/python3``. The relay
  forwards the real terminal to :class:`RelayEmsServer` in this process, which draws
  the menus and imports the files from the acems user's ``~/server_certs`` (this process
  runs as root and can read them), then swaps the certificate a loopback HTTPS server
  presents: that is the "web server restart" the driver verifies.

Needs root (to add users and run sshd); skipped otherwise, but failing when CI=true.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _tools import in_ci, require_tool
from certfleet.drivers.base import DeployOutcome
from certfleet.drivers.ovoc import OvocDriver
from certfleet.drivers.tlsprobe import Listener
from certfleet.lab import ems_emulator
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.ems_emulator import RelayEmsServer, process_import
from certfleet.lab.tls import CertSlot, LabHTTPSServer
from certfleet.pki.checks import check_bundle
from certfleet.pki.model import Bundle
from ovoc_support import KEYSTORE, ovoc_bundle, ovoc_files
from sshd_support import NoContentHandler, require_root, run_sshd

pytestmark = pytest.mark.sshd

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class Appliance:
    port: int
    host_key_line: str
    acems: str
    acems_password: str
    root_user: str
    root_password: str
    staging: Path
    https: LabHTTPSServer
    slot: CertSlot
    relay: RelayEmsServer
    initial: Issued
    imports: list[bool]


def _require_root_and_tools() -> dict[str, str]:
    require_root("the sshd test needs root to add throwaway users")
    tools = {name: require_tool(name) for name in ("sshd", "ssh-keygen", "useradd", "userdel",
                                                   "chpasswd", "su")}
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        if in_ci():
            pytest.fail(f"{SYSTEM_PYTHON} is needed for the EmsServerManager relay")
        pytest.skip(f"{SYSTEM_PYTHON} is missing")
    return tools


def _add_user(tools: dict[str, str], name: str, password: str) -> pwd.struct_passwd:
    subprocess.run([tools["useradd"], "-m", "-s", "/bin/bash", name], check=True)
    subprocess.run([tools["chpasswd"]], input=f"{name}:{password}\n", text=True, check=True)
    return pwd.getpwnam(name)


@pytest.fixture(scope="module")
def appliance() -> Iterator[Appliance]:
    tools = _require_root_and_tools()
    tag = secrets.token_hex(3)
    acems, root_user = f"cfa{tag}", f"cfr{tag}"
    acems_password, root_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    # Not under pytest's tmp_path: the throwaway users must traverse this folder.
    work = Path(tempfile.mkdtemp(prefix="certfleet-sshd-"))
    work.chmod(0o755)
    created: list[str] = []
    ca = LabCA("OVOC sshd Previous")
    initial = ca.issue(["ovoc.lab.example"], key_type="rsa2048")
    slot = CertSlot(initial.leaf_pem, initial.key_pem("pkcs8"), initial.chain_pem)
    https = LabHTTPSServer(NoContentHandler, slot).start()
    imports: list[bool] = []
    relay: RelayEmsServer | None = None
    try:
        acems_pw = _add_user(tools, acems, acems_password)
        created.append(acems)
        root_pw = _add_user(tools, root_user, root_password)
        created.append(root_user)
        staging = Path(acems_pw.pw_dir) / "server_certs"
        staging.mkdir(mode=0o750)
        for name, data in ovoc_files(initial).items():
            (staging / name).write_bytes(data)
        for path in [staging, *staging.iterdir()]:
            os.chown(path, acems_pw.pw_uid, acems_pw.pw_gid)

        async def on_import(password: str) -> tuple[bool, list[str]]:
            result = process_import(staging, work / "keystore", password)
            imports.append(result.ok)
            if result.ok:
                slot.set(result.cert_pem, result.key_pem, result.chain_pem)
            return result.ok, []

        relay = RelayEmsServer(work / "ems.sock", on_import).start()
        shutil.copy(ems_emulator.__file__, work / "ems_emulator.py")
        (work / "ems_emulator.py").chmod(0o644)
        home = Path(root_pw.pw_dir)
        (home / "bin").mkdir(exist_ok=True)
        wrapper = home / "bin" / "EmsServerManager"
        wrapper.write_text(f"#!/bin/sh\nexec {SYSTEM_PYTHON} {work}/ems_emulator.py "
                           f"--relay {work}/ems.sock\n")
        wrapper.chmod(0o755)
        with (home / ".profile").open("a") as profile:
            profile.write('\nPATH="$HOME/bin:$PATH"\n')
        for path in (home / "bin", wrapper, home / ".profile"):
            os.chown(path, root_pw.pw_uid, root_pw.pw_gid)

        access = ["UsePAM yes", "PasswordAuthentication yes", "KbdInteractiveAuthentication yes",
                  "PubkeyAuthentication no", "PermitRootLogin no", f"AllowUsers {acems}"]
        with run_sshd(tools["sshd"], tools["ssh-keygen"], work, access) as sshd:
            yield Appliance(
                port=sshd.port, host_key_line=sshd.host_key_line,
                acems=acems, acems_password=acems_password, root_user=root_user,
                root_password=root_password, staging=staging, https=https, slot=slot,
                relay=relay, initial=initial, imports=imports,
            )
    finally:
        for name in created:
            subprocess.run([tools["userdel"], "-r", "-f", name], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if relay is not None:
            relay.stop()
        https.stop()
        slot.close()
        shutil.rmtree(work, ignore_errors=True)


def _driver(app: Appliance, **overrides: object) -> OvocDriver:
    options: dict[str, object] = dict(
        ssh_port=app.port, user=app.acems, password=app.acems_password,
        su_user=app.root_user, su_password=app.root_password, keystore_password=KEYSTORE,
        host_key=app.host_key_line, staging_dir=str(app.staging),
        listeners=[Listener("127.0.0.1", app.https.port)], prompt_timeout=20,
        import_timeout=20, verify_timeout=10,
    )
    options.update(overrides)
    return OvocDriver("ovoc-sshd", "127.0.0.1", **options)  # type: ignore[arg-type]


def _deploy(driver: OvocDriver, bundle: Bundle, *, force: bool = False) -> DeployOutcome:
    return asyncio.run(driver.deploy(bundle, check_bundle(bundle), force=force))


def _staged(app: Appliance) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(app.staging.iterdir()) if p.is_file()}


def _served(app: Appliance) -> bytes:
    return app.slot.cert_pem


def test_deploy_through_real_sshd_and_su(appliance: Appliance) -> None:
    """Full deploy via OpenSSH, PAM, su - and the menu: new cert imported and served."""
    new = LabCA("OVOC sshd New").issue(["ovoc.example.com"], key_type="rsa2048")
    outcome = _deploy(_driver(appliance), ovoc_bundle(new))
    assert outcome.outcome == "installed", f"{outcome.message}\n{outcome.transcript}"
    assert _served(appliance) == new.leaf_pem
    staged = _staged(appliance)
    assert staged["server.crt"] == new.leaf_pem
    assert staged["server.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert not any(name.startswith(".certfleet-") for name in staged)
    transcript = outcome.transcript or ""
    assert "PKCS#12 file and JKS Keystore generated successfully" in transcript
    for secret in (appliance.acems_password, appliance.root_password, KEYSTORE):
        assert secret not in transcript
    owner = pwd.getpwuid(os.stat(appliance.staging / "server.key").st_uid).pw_name
    assert owner == appliance.acems


def test_rejection_rolls_back_through_real_sshd(appliance: Appliance) -> None:
    """Forced past a missing key: the previous server.key is kept, OVOC refuses the pair,
    the previous files are re-imported."""
    before_files, before_served = _staged(appliance), _served(appliance)
    other = LabCA("OVOC sshd Other").issue(["ovoc.example.com"], key_type="rsa2048")
    outcome = _deploy(_driver(appliance), ovoc_bundle(other, key=False), force=True)
    assert outcome.outcome == "restored", f"{outcome.message}\n{outcome.transcript}"
    assert "server.key does not belong to server.crt" in outcome.message
    assert _staged(appliance) == before_files
    assert _served(appliance) == before_served
    assert appliance.imports[-2:] == [False, True]


def test_root_login_refused_by_sshd(appliance: Appliance) -> None:
    """The daemon refuses logins other than the acems user (PermitRootLogin no, AllowUsers)."""
    outcome = _deploy(_driver(appliance, user=appliance.root_user,
                              password=appliance.root_password),
                      ovoc_bundle(LabCA("x").issue(["ovoc.example.com"])))
    assert outcome.outcome == "refused"
    assert "was refused" in outcome.message


def test_wrong_su_password_through_real_su(appliance: Appliance) -> None:
    """Real su with a wrong password: refused before any change, message names su."""
    before = _staged(appliance)
    outcome = _deploy(_driver(appliance, su_password="wrong-password-1"),
                      ovoc_bundle(LabCA("y").issue(["ovoc.example.com"])))
    assert outcome.outcome == "refused", outcome.message
    assert "su to" in outcome.message
    assert _staged(appliance) == before


def test_non_ascii_keystore_password_refused_before_staging(
        appliance: Appliance, monkeypatch: pytest.MonkeyPatch) -> None:
    """`certfleet ovoc deploy` with a keystore password keytool cannot take: exit 2 with the
    safe characters named, nothing staged, no import, also through the driver when forced."""
    from typer.testing import CliRunner

    from certfleet.cli.app import app

    before, imports = _staged(appliance), len(appliance.imports)
    new = LabCA("OVOC sshd Umlaut").issue(["ovoc.example.com"], key_type="rsa2048")
    work = Path(tempfile.mkdtemp(prefix="certfleet-sshd-cli-"))
    try:
        pem = work / "new.pem"
        pem.write_bytes(new.leaf_pem + new.chain_pem + new.root_pem + new.key_pem("pkcs8"))
        monkeypatch.setenv("SSHD_PW", appliance.acems_password)
        monkeypatch.setenv("SSHD_ROOT_PW", appliance.root_password)
        monkeypatch.setenv("SSHD_KS_PW", "Ks ü Pa55w0rd")
        result = CliRunner().invoke(app, [
            "ovoc", "deploy", str(pem), "--host", "127.0.0.1", "--ssh-port",
            str(appliance.port), "--user", appliance.acems, "--password-env", "SSHD_PW",
            "--su-user", appliance.root_user, "--su-password-env", "SSHD_ROOT_PW",
            "--keystore-password-env", "SSHD_KS_PW", "--host-key-sha256",
            appliance.host_key_line, "--staging-dir", str(appliance.staging),
            "--verify-port", str(appliance.https.port), "--force"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "OVOC_KEYSTORE_PASSWORD" in text and "printable ASCII" in text
    outcome = _deploy(_driver(appliance, keystore_password="Ks ü Pa55w0rd"), ovoc_bundle(new),
                      force=True)
    assert outcome.outcome == "refused" and outcome.exit_code == 2, outcome.message
    assert _staged(appliance) == before and len(appliance.imports) == imports


def test_awkward_passwords_through_real_sshd_and_su(appliance: Appliance) -> None:
    """Spaces, quotes, $, backticks and backslashes in the SSH, root and keystore passwords
    go through OpenSSH/PAM, the real su and the menu's prompt as typed."""
    chpasswd = require_tool("chpasswd")
    acems_pw = "ac ' $HOME `id` \" \\ pw"
    root_pw = "ro $(id) ` ' \" \\ ~!"
    keystore = "Ks pa$$ 'q' \"d\" `id` \\ ~!"
    new = LabCA("OVOC sshd Awkward").issue(["ovoc.example.com"], key_type="rsa2048")
    subprocess.run([chpasswd], input=f"{appliance.acems}:{acems_pw}\n"
                   f"{appliance.root_user}:{root_pw}\n", text=True, check=True)
    try:
        outcome = _deploy(_driver(appliance, password=acems_pw, su_password=root_pw,
                                  keystore_password=keystore), ovoc_bundle(new))
    finally:
        subprocess.run([chpasswd], input=f"{appliance.acems}:{appliance.acems_password}\n"
                       f"{appliance.root_user}:{appliance.root_password}\n", text=True,
                       check=True)
    assert outcome.outcome == "installed", f"{outcome.message}\n{outcome.transcript}"
    assert _served(appliance) == new.leaf_pem
    transcript = outcome.transcript or ""
    for secret in (acems_pw, root_pw, keystore):
        assert secret not in transcript
