"""A tiny loopback device and driver for the estate tests.

The device is a real TLS listener on 127.0.0.1 whose certificate can be
swapped (the lab's CertSlot); the driver installs by swapping it, backs up
by keeping what it served, and can be told to fail at any step.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from certfleet.drivers.base import Backup, Driver, EventCallback
from certfleet.drivers.tlsprobe import ProbeResult
from certfleet.errors import DeviceConnectionError, DeviceRefusedError, RollbackError
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store, VersionRecord
from certfleet.inventory import Device, Inventory, parse_inventory
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.tls import CertSlot, LabTLSListener
from certfleet.pki.model import Bundle
from handshake import served_sha256

STEPS = ("connect", "backup", "install", "verify", "restore")
# Where ``raise_at`` / ``hang_at`` act: a hook's start, "installed" after the
# certificate was swapped, "verifying" at the start of the verification.
RAISE_POINTS = ("connect", "backup", "install", "installed", "verifying", "restore")


@dataclass
class LoopDevice:
    """A device: a TLS listener presenting ``slot``; ``fail_at`` injects a failure."""

    name: str
    slot: CertSlot
    listener: LabTLSListener
    fail_at: set[str] = field(default_factory=set)
    # How long verify waits; set short only where the test expects verify to fail.
    verify_timeout: float = 30.0
    installs: int = 0
    # Any exception (not only CertfleetError) raised at a point of RAISE_POINTS.
    raise_at: dict[str, BaseException] = field(default_factory=dict)
    # Points where the driver waits until cancelled; ``hanging`` is set on arrival.
    hang_at: set[str] = field(default_factory=set)
    hanging: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return self.listener.port


class LoopbackDriver(Driver):
    """Installs by swapping the device's certificate slot."""

    kind = "loop"

    def __init__(self, dev: LoopDevice, device: Device, on_event: EventCallback | None) -> None:
        # A generous bound: a healthy device serves the new certificate at once, and
        # verify returns then; only an injected verify failure is waited out (below).
        super().__init__(device.name, device.listeners, on_event=on_event, verify_timeout=30.0)
        self.dev = dev

    async def _point(self, point: str) -> None:
        if point in self.dev.raise_at:
            raise self.dev.raise_at[point]
        if point in self.dev.hang_at:
            self.dev.hanging.set()
            await asyncio.Event().wait()  # until cancelled

    def _maybe_fail(self, step: str) -> None:
        if step in self.dev.fail_at:
            if step == "connect":
                raise DeviceConnectionError(f"{self.name}: injected connect failure")
            if step == "restore":
                raise RollbackError(f"{self.name}: injected restore failure")
            raise DeviceRefusedError(f"{self.name}: injected {step} failure")

    async def connect(self) -> None:
        await self._point("connect")
        self._maybe_fail("connect")

    async def close(self) -> None:
        return None

    async def backup(self) -> Backup:
        await self._point("backup")
        self._maybe_fail("backup")
        return Backup(
            self.name,
            "loop",
            files={"cert.pem": self.dev.slot.cert_pem, "chain.pem": self.dev.slot.chain_pem,
                   "key.pem": self.dev.slot.key_pem},
            has_private_key=True,
        )

    async def install(self, bundle: Bundle) -> None:
        await self._point("install")
        self._maybe_fail("install")
        assert bundle.private_key is not None
        key = bundle.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if "verify" in self.dev.fail_at:
            return  # "installed" but the device keeps serving the old certificate
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle.chain)
        self.dev.slot.set(bundle.leaf.public_bytes(serialization.Encoding.PEM), key, chain)
        self.dev.installs += 1
        await self._point("installed")

    async def verify(self, expected_sha256: str, timeout: float | None = None) -> list[ProbeResult]:
        await self._point("verifying")
        if timeout is None:
            # an injected verify failure never serves the new certificate: no long wait
            timeout = 0.5 if "verify" in self.dev.fail_at else self.dev.verify_timeout
        return await super().verify(expected_sha256, timeout)

    async def restore(self, backup: Backup) -> None:
        await self._point("restore")
        self._maybe_fail("restore")
        self.dev.slot.set(backup.files["cert.pem"], backup.files["key.pem"],
                          backup.files["chain.pem"])


class LoopEstate:
    """N loopback devices plus an inventory describing them."""

    def __init__(self, ca: LabCA, old: Issued, count: int, tmp: Path) -> None:
        self.ca = ca
        self.old = old
        self.devices: dict[str, LoopDevice] = {}
        for index in range(1, count + 1):
            name = f"sbc{index}"
            slot = CertSlot(old.leaf_pem, old.key_pem(), old.chain_pem)
            listener = LabTLSListener(slot).start()
            self.devices[name] = LoopDevice(name, slot, listener)
        self.path = tmp / "certfleet.toml"
        self.path.write_text(self.inventory_text())

    def inventory_text(self) -> str:
        lines = [
            "[certificates.wildcard]",
            'cn = "*.example.com"',
            'sans = ["*.example.com", "example.com"]',
            'key_type = "ec-p256"',
            "",
            "[defaults.sbc]",
            'user = "Admin"',
            'password = "env:LOOP_SBC_PASSWORD"',
            "",
        ]
        for index, (name, dev) in enumerate(self.devices.items()):
            tags = '["even"]' if index % 2 else '["odd"]'
            lines += [
                f"[devices.{name}]",
                'kind = "sbc"',
                'address = "127.0.0.1"',
                f'fqdn = "{name}.example.com"',
                f"port = {dev.port}",
                'certificate = "wildcard"',
                f"listeners = [{dev.port}]",
                f"tags = {tags}",
                "",
            ]
        return "\n".join(lines)

    def inventory(self) -> Inventory:
        return parse_inventory(self.path.read_text(), self.path)

    def write_renewed(self, tmp: Path) -> tuple[Issued, Path]:
        """A renewed wildcard (EC key) from this estate's CA, written with its key and chain
        to ``tmp/renewed.pem``."""
        issued = self.ca.issue(("*.example.com", "example.com"), key_type="ec-p256")
        path = tmp / "renewed.pem"
        path.write_bytes(issued.fullchain_pem + issued.key_pem())
        return issued, path

    def import_renewed(self, store: Store, tmp: Path) -> VersionRecord:
        """Import a renewed wildcard (``write_renewed``) as the new version."""
        _issued, path = self.write_renewed(tmp)
        return import_certificate(self.inventory(), store, "wildcard", [path]).version

    def served(self, name: str) -> str:
        """The SHA-256 of the certificate device ``name`` serves, by a handshake of the
        standard library's ssl (not certfleet's probe)."""
        return served_sha256(self.devices[name].port)

    def factory(
        self, device: Device, inventory: Inventory, on_event: EventCallback | None
    ) -> Driver:
        return LoopbackDriver(self.devices[device.name], device, on_event)

    def stop(self) -> None:
        for dev in self.devices.values():
            dev.listener.stop()
            dev.slot.close()
