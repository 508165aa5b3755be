"""Device kinds come from the ``certfleet.drivers`` entry points, plugins included.

The plugin test installs a distribution the way pip would leave it on a path:
a ``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt`` next to the
plugin's module, in a temporary folder put on ``sys.path``. Nothing in
``certfleet.estate`` or ``certfleet.cli`` knows the kind: the inventory takes its
keys, ``certfleet plan`` and ``certfleet deploy`` build its driver.
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
from certfleet.errors import ConfigError
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import LabCA
from certfleet.lab.tls import CertSlot, LabTLSListener

PLUGIN = '''
"""A device kind from another package: "installs" into a loopback TLS listener."""
from certfleet.drivers.base import Backup, Driver
from certfleet.drivers.registry import DriverKind, KeySpec, SecretSpec
from cryptography.hazmat.primitives import serialization

SLOTS = {}  # slot name -> certfleet.lab.tls.CertSlot, filled by the test
SEEN = []   # (device, token) the driver was built with


class SlotDriver(Driver):
    kind = "slotdemo"

    def __init__(self, name, listeners, slot, **options):
        super().__init__(name, listeners, **options)
        self.slot = slot

    async def connect(self):
        return None

    async def close(self):
        return None

    async def backup(self):
        backup = Backup(self.name, self.kind)
        backup.files = {"cert": self.slot.cert_pem, "key": self.slot.key_pem}
        return backup

    async def install(self, bundle):
        key = bundle.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        leaf = bundle.leaf.public_bytes(serialization.Encoding.PEM)
        self.slot.set(leaf, key)

    async def restore(self, backup):
        self.slot.set(backup.files["cert"], backup.files["key"])


def from_device(device, credentials, context):
    SEEN.append((device.name, credentials.require("token")))
    return SlotDriver(device.name, device.listeners, SLOTS[device.options["slot"]],
                      on_event=context.on_event, verify_timeout=device.verify_timeout)


KIND = DriverKind(
    name="slotdemo",
    from_device=from_device,
    schema={"slot": KeySpec("string", "a slot name", required=True),
            "token": KeySpec("secret", "a secret reference")},
    secrets={"token": SecretSpec("API token")},
    steps=("swap the slot", "verify by handshake"),
)
NOT_A_KIND = object()
'''


def _install(folder: Path, entry_points: str) -> None:
    dist = folder / "certfleet_slotdemo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: certfleet-slotdemo\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[certfleet.drivers]\n{entry_points}")
    (folder / "certfleet_slotdemo.py").write_text(PLUGIN)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    folder = tmp_path / "site"
    folder.mkdir()
    _install(folder, "slotdemo = certfleet_slotdemo:KIND\n"
                     "broken = certfleet_slotdemo_missing:KIND\n"
                     "wrong = certfleet_slotdemo:NOT_A_KIND\n")
    monkeypatch.syspath_prepend(str(folder))
    registry.reset()
    try:
        yield importlib.import_module("certfleet_slotdemo")
    finally:
        sys.modules.pop("certfleet_slotdemo", None)
        registry.reset()


def test_builtin_kinds_are_registered_without_importing_their_drivers() -> None:
    registry.reset()
    assert {"ovoc", "sbc", "sftp"} <= set(registry.kind_names())
    assert registry.get_kind("sbc").rollback_needs_key
    assert registry.get_kind("sftp").schema["reload_command"].required
    with pytest.raises(ConfigError, match="no driver for device kind 'router'"):
        registry.get_kind("router")


def test_a_broken_plugin_is_named(plugin: object) -> None:
    with pytest.raises(ConfigError) as broken:
        registry.get_kind("broken")
    assert "kind 'broken'" in broken.value.message
    assert "certfleet-slotdemo 1.0" in broken.value.message
    assert "ModuleNotFoundError" in broken.value.message
    with pytest.raises(ConfigError, match="is not a DriverKind named 'wrong'"):
        registry.get_kind("wrong")
    text = _inventory(kind="broken", port=1, slot="x")
    with pytest.raises(ConfigError, match=r"devices\.edge\.kind: the driver plugin"):
        parse_inventory(text)


def _inventory(*, kind: str = "slotdemo", port: int, slot: str, extra: str = "") -> str:
    return f"""
[certificates.site]
cn = "edge.example.com"
sans = ["edge.example.com"]
key_type = "ec-p256"

[defaults.slotdemo]
token = "env:SLOTDEMO_TOKEN"

[devices.edge]
kind = "{kind}"
address = "127.0.0.1"
fqdn = "edge.example.com"
slot = "{slot}"
listeners = [{{ host = "127.0.0.1", port = {port} }}]
verify_timeout = 10
{extra}"""


def test_a_kind_from_an_entry_point_is_validated_planned_and_deployed(
    plugin: object, lab_ca: LabCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = lab_ca.issue(("edge.example.com",), key_type="ec-p256")
    new = lab_ca.issue(("edge.example.com",), key_type="ec-p256")
    slot = CertSlot(old.leaf_pem, old.key_pem())
    listener = LabTLSListener(slot).start()
    try:
        plugin.SLOTS["edge-slot"] = slot  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match=r"devices\.edge\.slott: unknown key 'slott'"):
            parse_inventory(_inventory(port=listener.port, slot="edge-slot",
                                       extra='slott = "typo"'))
        with pytest.raises(ConfigError, match=r"devices\.edge\.slot: must be a slot name"):
            parse_inventory(_inventory(port=listener.port, slot="edge-slot").replace(
                'slot = "edge-slot"', "slot = 3"))
        with pytest.raises(ConfigError, match="literal secret"):
            parse_inventory(_inventory(port=listener.port, slot="edge-slot",
                                       extra='token = "hunter2"'))
        path = tmp_path / "certfleet.toml"
        path.write_text(_inventory(port=listener.port, slot="edge-slot"))
        inventory = parse_inventory(path.read_text(), path)
        assert inventory.devices["edge"].options == {"slot": "edge-slot",
                                                     "token": "env:SLOTDEMO_TOKEN"}
        state = tmp_path / "state"
        with Store.open(state) as store:
            download = tmp_path / "new.pem"
            download.write_bytes(new.fullchain_pem + new.root_pem + new.key_pem())
            import_certificate(inventory, store, "site", [download])
        monkeypatch.setenv("SLOTDEMO_TOKEN", "t0ken")
        runner = CliRunner()
        common = ["--inventory", str(path), "--state-dir", str(state), "--json"]
        plan = runner.invoke(app, ["plan", *common])
        assert plan.exit_code == 0, plan.output
        row = json.loads(plan.output)["devices"][0]
        assert (row["kind"], row["action"]) == ("slotdemo", "deploy")
        assert row["steps"] == ["swap the slot", "verify by handshake"]
        deployed = runner.invoke(app, ["deploy", *common])
        assert deployed.exit_code == 0, deployed.output
        assert json.loads(deployed.output)["devices"][0]["status"] == "installed"
        assert slot.cert_pem == new.leaf_pem
        assert ("edge", "t0ken") in plugin.SEEN  # type: ignore[attr-defined]
    finally:
        listener.stop()
        slot.close()
