"""The ``sftp`` kind through a real OpenSSH daemon: files, reload command, rollback.

The test plays a Linux reverse proxy with the machine's own OpenSSH:

* ``/usr/sbin/sshd -D -e -f <own config>`` on 127.0.0.1 and a free port, with its own
  host key; root logs in with a key of the test's own (``AuthorizedKeysFile`` in the
  test's folder, no password, no system user added);
* the "proxy" is a loopback HTTPS server of this process; its reload command (run over
  SSH by the driver) is a small script that asks this process, over a Unix socket, to
  load the files at the configured paths, as ``nginx -s reload`` would: a pair that
  does not load fails the command (exit 1), and the server keeps what it had.

Needs root (to run sshd and log in as root); skipped otherwise, but failing when CI=true.
"""

from __future__ import annotations

import asyncio
import shutil
import socketserver
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _tools import require_tool
from certfleet.cli.app import app
from certfleet.drivers.sftp import SftpDriver
from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.tls import CertSlot, LabHTTPSServer
from certfleet.pki.load import load_bytes
from certfleet.pki.model import cert_sha256
from sbc_support import bundle_of
from sshd_support import NoContentHandler, keygen, require_root, run_sshd

pytestmark = pytest.mark.sshd

NAMES = ("proxy.example.com",)
RELOAD_SCRIPT = """\
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
answer = s.recv(4096).decode()
print(answer.strip())
sys.exit(0 if answer.startswith("ok") else 1)
"""


@dataclass
class Proxy:
    """The reverse proxy host: its files, its HTTPS listener and its reloads."""

    port: int
    host_key_line: str
    client_key: Path
    site: Path
    https: LabHTTPSServer
    slot: CertSlot
    reload_command: str
    initial: Issued
    reloads: list[str] = field(default_factory=list)
    refuse_next: list[bool] = field(default_factory=list)

    def path(self, name: str) -> Path:
        return self.site / name

    def write_initial(self) -> None:
        """Put the first certificate back on disk and in the listener; nothing else."""
        for stale in self.site.iterdir():
            stale.unlink()
        self.path("cert.pem").write_bytes(self.initial.leaf_pem)
        self.path("key.pem").write_bytes(self.initial.key_pem("pkcs8"))
        self.path("key.pem").chmod(0o600)
        self.slot.set(self.initial.leaf_pem, self.initial.key_pem("pkcs8"))
        self.reloads.clear()
        self.refuse_next.clear()

    def served(self) -> str:
        listener = Listener("127.0.0.1", self.https.port, server_name=NAMES[0])
        return cert_sha256(asyncio.run(fetch_served_certificate(listener)))


def _reload_server(proxy_ref: list[Proxy], sock: Path) -> socketserver.UnixStreamServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            proxy = proxy_ref[0]
            if proxy.refuse_next and proxy.refuse_next.pop(0):
                proxy.reloads.append("refused")
                self.request.sendall(b"error: configuration test failed\n")
                return
            cert = proxy.path("cert.pem").read_bytes()
            key = proxy.path("key.pem").read_bytes()
            chain = proxy.path("chain.pem")
            try:
                proxy.slot.set(cert, key, chain.read_bytes() if chain.exists() else b"")
            except Exception as exc:
                proxy.reloads.append("failed")
                self.request.sendall(f"error: {exc}\n".encode())
                return
            proxy.reloads.append("ok")
            self.request.sendall(b"ok: reloaded\n")

    server = socketserver.UnixStreamServer(str(sock), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def proxy_host(lab_ca: LabCA) -> Iterator[Proxy]:
    require_root("the sshd test needs root to run sshd and log in as root")
    sshd_path, ssh_keygen = require_tool("sshd"), require_tool("ssh-keygen")
    work = Path(tempfile.mkdtemp(prefix="certfleet-sftp-"))
    site = work / "site"
    site.mkdir()
    initial = lab_ca.issue(NAMES, key_type="ec-p256")
    slot = CertSlot(initial.leaf_pem, initial.key_pem("pkcs8"))
    https = LabHTTPSServer(NoContentHandler, slot).start()
    holder: list[Proxy] = []
    reload_server = _reload_server(holder, work / "reload.sock")
    (work / "reload.py").write_text(RELOAD_SCRIPT)
    try:
        client_key = work / "client_ed25519"
        keygen(ssh_keygen, client_key)
        shutil.copy(client_key.with_suffix(".pub"), work / "authorized_keys")
        access = ["UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                  "PubkeyAuthentication yes", f"AuthorizedKeysFile {work}/authorized_keys",
                  "PermitRootLogin prohibit-password", "AllowUsers root"]
        with run_sshd(sshd_path, ssh_keygen, work, access) as sshd:
            proxy = Proxy(
                port=sshd.port, host_key_line=sshd.host_key_line,
                client_key=client_key, site=site, https=https, slot=slot,
                reload_command=f"{sys.executable} {work}/reload.py {work}/reload.sock",
                initial=initial,
            )
            holder.append(proxy)
            yield proxy
    finally:
        reload_server.shutdown()
        reload_server.server_close()
        https.stop()
        slot.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def proxy(proxy_host: Proxy) -> Proxy:
    proxy_host.write_initial()
    return proxy_host


def _driver(proxy: Proxy, **overrides: object) -> SftpDriver:
    options: dict[str, object] = dict(
        paths={"cert": str(proxy.path("cert.pem")), "key": str(proxy.path("key.pem")),
               "chain": str(proxy.path("chain.pem"))},
        reload_command=proxy.reload_command,
        listeners=[Listener("127.0.0.1", proxy.https.port, server_name=NAMES[0])],
        port=proxy.port, user="root", client_keys=[str(proxy.client_key)],
        host_key=proxy.host_key_line, verify_timeout=10.0, connect_timeout=10.0,
    )
    options.update(overrides)
    return SftpDriver("proxy", "127.0.0.1", **options)  # type: ignore[arg-type]


def test_deploy_replaces_the_files_reloads_and_verifies(proxy: Proxy, lab_ca: LabCA) -> None:
    new = lab_ca.issue(NAMES, key_type="rsa2048")
    outcome = asyncio.run(_driver(proxy).deploy(bundle_of(new)))
    assert outcome.outcome == "installed", outcome.message
    assert proxy.path("cert.pem").read_bytes() == new.leaf_pem
    assert proxy.path("chain.pem").read_bytes() == new.chain_pem
    key = proxy.path("key.pem")
    assert load_bytes(key.read_bytes(), "key.pem")[0].type == "private_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(proxy.path("cert.pem").stat().st_mode) == 0o644
    assert proxy.reloads == ["ok"]
    assert proxy.served() == cert_sha256(new.leaf)
    assert sorted(p.name for p in proxy.site.iterdir()) == ["cert.pem", "chain.pem", "key.pem"]
    assert [s.step for s in outcome.steps if s.step == "reload"]


def test_a_failed_reload_puts_the_previous_files_back(proxy: Proxy, lab_ca: LabCA) -> None:
    """The reload command refuses: the old files return (the chain, absent before, is
    removed), the command runs again, and the old certificate is served."""
    before = {name: proxy.path(name).read_bytes() for name in ("cert.pem", "key.pem")}
    proxy.refuse_next.append(True)
    new = lab_ca.issue(NAMES, key_type="ec-p256")
    outcome = asyncio.run(_driver(proxy).deploy(bundle_of(new)))
    assert outcome.outcome == "restored", outcome.message
    assert "reload command exited with status 1" in outcome.message
    assert "configuration test failed" in outcome.message
    assert {name: proxy.path(name).read_bytes() for name in before} == before
    assert not proxy.path("chain.pem").exists()
    assert proxy.reloads == ["refused", "ok"]
    assert proxy.served() == cert_sha256(proxy.initial.leaf)


def test_a_wrong_host_key_changes_nothing(proxy: Proxy, lab_ca: LabCA) -> None:
    pin = "SHA256:" + "A" * 43
    outcome = asyncio.run(_driver(proxy, host_key=pin).deploy(bundle_of(lab_ca.issue(NAMES))))
    assert outcome.outcome == "refused", outcome.message
    assert "host key" in outcome.message
    # The hint names the inventory key of this kind, not the flag of 'certfleet ovoc'.
    fingerprint = outcome.message.rsplit("it is ", 1)[1].split()[0]
    assert f'ssh_host_key = "{fingerprint}" in [devices.proxy]' in str(outcome.hint)
    assert "--host-key-sha256" not in str(outcome.hint)
    assert proxy.path("cert.pem").read_bytes() == proxy.initial.leaf_pem
    assert proxy.reloads == []


def test_a_refused_login_names_this_kind_s_settings(
    proxy: Proxy, lab_ca: LabCA, tmp_path: Path
) -> None:
    """A key the host does not accept: refused, untouched, and the hint speaks of the
    device's password or client_key, not of OVOC's acems."""
    other = tmp_path / "other_ed25519"
    keygen(require_tool("ssh-keygen"), other)
    outcome = asyncio.run(_driver(proxy, client_keys=[str(other)]).deploy(
        bundle_of(lab_ca.issue(NAMES))))
    assert outcome.outcome == "refused", outcome.message
    assert "SSH login as 'root'" in outcome.message and "was refused" in outcome.message
    assert outcome.hint == ("check the user and the password "
                            "(password or client_key in [devices.proxy])")
    assert proxy.path("cert.pem").read_bytes() == proxy.initial.leaf_pem
    assert proxy.reloads == []


def test_estate_deploy_to_an_sftp_inventory_device(
    proxy: Proxy, lab_ca: LabCA, tmp_path: Path
) -> None:
    """``kind = "sftp"`` in the inventory: plan and deploy through the CLI and the registry."""
    key_file = tmp_path / "id_proxy"
    key_file.write_bytes(proxy.client_key.read_bytes())
    key_file.chmod(0o600)
    text = f"""
[certificates.site]
cn = "{NAMES[0]}"
sans = ["{NAMES[0]}"]
key_type = "ec-p256"

[devices.proxy]
kind = "sftp"
address = "127.0.0.1"
fqdn = "{NAMES[0]}"
ssh_port = {proxy.port}
user = "root"
client_key = "id_proxy"
ssh_host_key = "{proxy.host_key_line}"
cert_path = "{proxy.path('cert.pem')}"
key_path = "{proxy.path('key.pem')}"
fullchain_path = "{proxy.path('fullchain.pem')}"
reload_command = "{proxy.reload_command}"
listeners = [{{ host = "127.0.0.1", port = {proxy.https.port} }}]
verify_timeout = 10
"""
    inventory_path = tmp_path / "certfleet.toml"
    inventory_path.write_text(text)
    inventory = parse_inventory(text, inventory_path)
    device = inventory.devices["proxy"]
    assert device.port == proxy.port and device.options["client_key"] == "id_proxy"
    state = tmp_path / "state"
    new = lab_ca.issue(NAMES, key_type="ec-p256")
    with Store.open(state) as store:
        old_file, new_file = tmp_path / "old.pem", tmp_path / "new.pem"
        old_file.write_bytes(proxy.initial.fullchain_pem + proxy.initial.key_pem())
        new_file.write_bytes(new.fullchain_pem + new.root_pem + new.key_pem())
        import_certificate(inventory, store, "site", [old_file])
        import_certificate(inventory, store, "site", [new_file])
    runner = CliRunner()
    common = ["--inventory", str(inventory_path), "--state-dir", str(state), "--json"]
    plan = runner.invoke(app, ["plan", *common])
    assert plan.exit_code == 0, plan.output
    assert '"kind": "sftp"' in plan.output and "run the reload command" in plan.output
    result = runner.invoke(app, ["deploy", *common])
    assert result.exit_code == 0, result.output
    assert '"installed"' in result.output
    assert proxy.path("fullchain.pem").read_bytes() == new.fullchain_pem
    assert proxy.served() == cert_sha256(new.leaf)
    assert proxy.reloads == ["ok"]


def test_a_failed_upload_leaves_the_files_and_no_temporary_file(
    proxy: Proxy, lab_ca: LabCA
) -> None:
    """The chain's folder does not exist: the upload stops there, the files uploaded
    so far under temporary names are removed, nothing is renamed or reloaded."""
    paths = {"cert": str(proxy.path("cert.pem")), "key": str(proxy.path("key.pem")),
             "chain": str(proxy.site / "missing" / "chain.pem")}
    outcome = asyncio.run(_driver(proxy, paths=paths).deploy(bundle_of(lab_ca.issue(NAMES))))
    assert outcome.outcome == "restored", outcome.message
    assert "uploading" in outcome.message
    assert sorted(p.name for p in proxy.site.iterdir()) == ["cert.pem", "key.pem"]
    assert proxy.path("cert.pem").read_bytes() == proxy.initial.leaf_pem
    assert proxy.reloads == []
    assert proxy.served() == cert_sha256(proxy.initial.leaf)
