"""Rehearse a deploy on every selected device, changing nothing: ``certfleet probe``.

Each device's driver (:meth:`Driver.rehearsal`) does everything a deploy
would do up to the first change, then backs out: OVOC logs in with the host
key checked, lists the staging folder, ``su``\\ s, walks EmsServerManager down
to the import entry without selecting it; an SBC checks trust, credentials,
HA, the INI, each TLS context and whether a rollback is possible. A kind
without a rehearsal is observed only (a handshake on each listener) and says
so. Devices run in parallel, at most
``concurrency`` at once. The OVOC session transcript (secrets scrubbed) is
kept in the result and in ``probes/NAME.txt`` under the state folder.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CertfleetError
from ..inventory import Device, Inventory

if TYPE_CHECKING:
    from ..drivers.base import Driver
    from .targets import DriverFactory

__all__ = ["DeviceProbe", "probe_device", "probe_devices", "rehearse_device", "transcript_path"]


@dataclass
class DeviceProbe:
    """One device's rehearsal: ready or not, why, the fix, every check."""

    device: str
    kind: str
    ready: bool
    reason: str
    fix: str | None = None
    checks: list[dict[str, object]] = field(default_factory=list)
    transcript: str | None = None
    transcript_file: str | None = None

    def line(self) -> str:
        """One line: ``NAME: ready (...)`` or ``NAME: not ready: why (fix: ...)``."""
        if self.ready:
            return f"{self.device}: ready ({self.reason})"
        return f"{self.device}: not ready: {self.reason}" + (
            f" (fix: {self.fix})" if self.fix else "")

    def to_dict(self) -> dict[str, object]:
        return {"device": self.device, "kind": self.kind, "ready": self.ready,
                "reason": self.reason, "fix": self.fix, "checks": self.checks,
                "transcript": self.transcript, "transcript_file": self.transcript_file}


def transcript_path(state_root: Path, device: str) -> Path:
    """Where the last probe's transcript of ``device`` is kept."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", device) or "_"
    return state_root / "probes" / f"{safe}.txt"


async def probe_devices(
    devices: Sequence[Device],
    inventory: Inventory,
    factory: DriverFactory,
    *,
    concurrency: int | None = None,
    allow_no_rollback: bool = False,
    state_root: Path | None = None,
) -> list[DeviceProbe]:
    """Rehearse on every device, ``concurrency`` at once; in the order of ``devices``.

    Never raises CertfleetError: a device that cannot be rehearsed is not ready.
    """
    limit = asyncio.Semaphore(max(1, concurrency or inventory.concurrency))

    async def one(device: Device) -> DeviceProbe:
        async with limit:
            result = await probe_device(device, inventory, factory,
                                        allow_no_rollback=allow_no_rollback)
        if result.transcript and state_root is not None:
            from ..fsutil import write_private_file

            path = transcript_path(state_root, device.name)
            try:
                write_private_file(path, result.transcript.encode())
                result.transcript_file = str(path)
            except OSError:
                result.transcript_file = None  # still in the result itself
        return result

    return list(await asyncio.gather(*(one(d) for d in devices)))


async def probe_device(
    device: Device, inventory: Inventory, factory: DriverFactory, *,
    allow_no_rollback: bool = False,
) -> DeviceProbe:
    """Rehearse on one device (see the module docstring). Never raises CertfleetError."""
    try:
        driver = factory(device, inventory, None)
    except CertfleetError as exc:  # secrets, profile, CA file, menu settings, unknown kind
        return DeviceProbe(device.name, device.kind, False, exc.message, exc.hint,
                           [{"name": "settings", "ok": False, "detail": exc.message,
                             "fix": exc.hint}])
    result = await _rehearse(device, driver, allow_no_rollback)
    return result if result is not None else await _observe_only(device)


async def rehearse_device(
    device: Device, inventory: Inventory, factory: DriverFactory, *,
    allow_no_rollback: bool = False,
) -> DeviceProbe | None:
    """Rehearse on one device as :func:`probe_device` does; None for a kind without one.

    Deploy calls this on every device it is about to change, before the first
    change on any of them. Never raises CertfleetError.
    """
    try:
        driver = factory(device, inventory, None)
    except CertfleetError as exc:
        return DeviceProbe(device.name, device.kind, False, exc.message, exc.hint)
    return await _rehearse(device, driver, allow_no_rollback)


async def _rehearse(device: Device, driver: Driver,
                    allow_no_rollback: bool) -> DeviceProbe | None:
    try:
        found = await driver.rehearsal(list(device.hosts), allow_no_rollback=allow_no_rollback)
    except Exception as exc:  # a defect: reported, never a traceback
        return DeviceProbe(device.name, device.kind, False,
                           f"the rehearsal failed: {type(exc).__name__}: {exc}",
                           "this is a defect of certfleet: please report it")
    if found is None:
        return None
    return DeviceProbe(device.name, device.kind, found.ready, found.reason, found.fix,
                       list(found.checks), transcript=found.transcript)


async def _observe_only(device: Device) -> DeviceProbe:
    from ..drivers.tlsprobe import probe

    results = await probe(device.listeners, timeout=10.0)
    checks: list[dict[str, object]] = [
        {"name": f"listener {r.listener}", "ok": r.certificate is not None,
         "detail": r.error or "answers", "fix": None} for r in results]
    down = [c for c in checks if not c["ok"]]
    note = f"no rehearsal for kind {device.kind!r}"
    if down:
        return DeviceProbe(device.name, device.kind, False,
                           f"{note}; " + "; ".join(f"{c['name']}: {c['detail']}" for c in down),
                           "start the device or fix its listeners in the inventory", checks)
    return DeviceProbe(device.name, device.kind, True,
                       f"{note}: only observed ({len(checks)} listener(s) answer)", None, checks)
