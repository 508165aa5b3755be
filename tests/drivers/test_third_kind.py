"""A third device kind, installed from a throwaway distribution, needs nothing of the core.

Its device never gives its private key back, so a rollback needs the
previous key (the kind says so: ``rollback_needs_key``, and its driver names
the keys a restore may use: ``rollback_keys``); its file set is its own (the
inventory's ``profile`` table names its two files, which no profile of
:mod:`certfleet.pki.profiles` knows). ``certfleet plan``, ``adopt``,
``deploy`` and ``rollback`` run on it through the lab's TLS listener; nothing
of certfleet is changed or patched.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.drivers import registry
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import LabCA
from certfleet.lab.tls import CertSlot, LabTLSListener

PLUGIN = '''
"""A device that keeps its key to itself: a backup holds only the certificate."""
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.drivers.base import Backup, Driver
from certfleet.drivers.registry import DriverKind, KeySpec

SLOTS = {}  # slot name -> certfleet.lab.tls.CertSlot, filled by the test
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class VaultDriver(Driver):
    kind = "keyvault"

    def __init__(self, name, listeners, slot, folder, files, keys, **options):
        super().__init__(name, listeners, **options)
        self.slot, self.folder, self.files, self.keys = slot, folder, files, list(keys)

    def rollback_keys(self):
        return self.keys

    def _key_for(self, cert_pem):
        wanted = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(*_SPKI)
        return next((k for k in self.keys if k.public_key().public_bytes(*_SPKI) == wanted),
                    None)

    def can_restore(self, backup):
        return self._key_for(backup.files["served.pem"]) is not None

    async def connect(self):
        return None

    async def close(self):
        return None

    async def backup(self):
        return Backup(self.name, self.kind, files={"served.pem": self.slot.cert_pem})

    def _put(self, cert_pem, key):
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / self.files["cert"]).write_bytes(cert_pem)
        (self.folder / self.files["key"]).write_bytes(key_pem)
        self.slot.set((self.folder / self.files["cert"]).read_bytes(),
                      (self.folder / self.files["key"]).read_bytes())

    async def install(self, bundle):
        self._put(bundle.leaf.public_bytes(serialization.Encoding.PEM), bundle.private_key)

    async def restore(self, backup):
        self._put(backup.files["served.pem"], self._key_for(backup.files["served.pem"]))


def from_device(device, credentials, context):
    files = {"cert": "vault-cert.pem", "key": "vault-key.p8", **device.profile}
    return VaultDriver(device.name, device.listeners, SLOTS[device.options["slot"]],
                       Path(device.options["folder"]), files, context.stored_keys(),
                       on_event=context.on_event, verify_timeout=device.verify_timeout)


KIND = DriverKind(
    name="keyvault",
    from_device=from_device,
    schema={"slot": KeySpec("string", "a slot name", required=True),
            "folder": KeySpec("string", "where the device keeps its files", required=True)},
    rollback_needs_key=True,
    rollback_key_note="the vault never gives its private key back",
    steps=("write the vault's two files", "verify by handshake"),
)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    folder = tmp_path / "site"
    dist = folder / "certfleet_keyvault-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: certfleet-keyvault\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[certfleet.drivers]\nkeyvault = certfleet_keyvault:KIND\n")
    (folder / "certfleet_keyvault.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    registry.reset()
    try:
        yield importlib.import_module("certfleet_keyvault")
    finally:
        sys.modules.pop("certfleet_keyvault", None)
        registry.reset()


def _inventory(port: int, folder: Path) -> str:
    return f"""
[certificates.site]
cn = "vault.example.com"
sans = ["vault.example.com"]
key_type = "ec-p256"

[devices.vault]
kind = "keyvault"
address = "127.0.0.1"
fqdn = "vault.example.com"
slot = "vault-slot"
folder = "{folder.as_posix()}"
profile = {{ cert = "chain.pem", key = "private.p8" }}
listeners = [{{ host = "127.0.0.1", port = {port} }}]
verify_timeout = 10
"""


def test_a_third_kind_plans_deploys_and_rolls_back_with_the_previous_key(
    plugin: object, lab_ca: LabCA, tmp_path: Path
) -> None:
    old = lab_ca.issue(("vault.example.com",), key_type="ec-p256")
    new = lab_ca.issue(("vault.example.com",), key_type="ec-p256")
    slot = CertSlot(old.leaf_pem, old.key_pem())
    listener = LabTLSListener(slot).start()
    try:
        plugin.SLOTS["vault-slot"] = slot  # type: ignore[attr-defined]  # the plugin's table
        device_files = tmp_path / "device"
        path = tmp_path / "certfleet.toml"
        path.write_text(_inventory(listener.port, device_files))
        inventory = parse_inventory(path.read_text(), path)
        state = tmp_path / "state"
        with Store.open(state) as store:
            download = tmp_path / "new.pem"
            download.write_bytes(new.fullchain_pem + new.root_pem + new.key_pem())
            import_certificate(inventory, store, "site", [download])
        runner = CliRunner()
        common = ["--inventory", str(path), "--state-dir", str(state), "--json"]

        # The key of what the vault serves is not known: no way back, refused.
        refused = runner.invoke(app, ["plan", *common])
        row = json.loads(refused.output)["devices"][0]
        assert (row["kind"], row["action"]) == ("keyvault", "blocked"), refused.output
        assert "the vault never gives its private key back" in refused.output

        # Last year's certificate with its key: now the deploy has a way back.
        last_year = tmp_path / "old.pem"
        last_year.write_bytes(old.leaf_pem + old.key_pem())
        adopted = runner.invoke(app, ["adopt", "site", str(last_year), *common])
        assert adopted.exit_code == 0, adopted.output
        plan = runner.invoke(app, ["plan", *common])
        assert plan.exit_code == 0, plan.output
        row = json.loads(plan.output)["devices"][0]
        assert (row["kind"], row["action"]) == ("keyvault", "deploy")
        assert row["steps"] == ["write the vault's two files", "verify by handshake"]

        deployed = runner.invoke(app, ["deploy", *common])
        assert deployed.exit_code == 0, deployed.output
        assert json.loads(deployed.output)["devices"][0]["status"] == "installed"
        assert slot.cert_pem == new.leaf_pem
        assert sorted(p.name for p in device_files.iterdir()) == ["chain.pem", "private.p8"]

        rolled = runner.invoke(app, ["rollback", "vault", *common])
        assert rolled.exit_code == 0, rolled.output
        assert json.loads(rolled.output)["ok"] is True
        # Back to last year's certificate, with the key only the store knew.
        assert slot.cert_pem == old.leaf_pem
        assert slot.key_pem == old.key_pem()
    finally:
        listener.stop()
        slot.close()
