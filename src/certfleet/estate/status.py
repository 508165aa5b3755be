"""What the estate serves now, by handshake on every listener.

Nothing here trusts history: each listener is asked which certificate it
presents, and that is compared with the inventory (does it cover the
device's name?) and the store (is it the current version?).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..inventory import Device, Inventory
from .store import Store

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["DeviceStatus", "ListenerStatus", "band", "collect_status"]


#: Devices probed at once (each its listeners together): an estate of 90,000 devices
#: would otherwise open 90,000 connections at once, past the process's file limit.
PROBE_DEVICES = 256


def band(days_left: int | None, warn_days: int = 30) -> str:
    """The colour band of ``days_left``: unknown, expired, critical (<= 7), warning, ok."""
    if days_left is None:
        return "unknown"
    if days_left < 0:
        return "expired"
    if days_left <= 7:
        return "critical"
    if days_left <= warn_days:
        return "warning"
    return "ok"


@dataclass
class ListenerStatus:
    listener: str
    label: str
    reachable: bool
    error: str | None = None
    sha256: str | None = None
    subject: str | None = None
    issuer: str | None = None
    not_after: str | None = None
    days_left: int | None = None
    hostname_ok: bool | None = None
    is_current: bool | None = None
    # A client certificate was asked for (mutual TLS): the served certificate was
    # still read, so this is a successful observation, shown as "mTLS".
    client_cert_requested: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "listener": self.listener,
            "label": self.label,
            "reachable": self.reachable,
            "error": self.error,
            "sha256": self.sha256,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": self.not_after,
            "days_left": self.days_left,
            "hostname_ok": self.hostname_ok,
            "is_current": self.is_current,
            "client_cert_requested": self.client_cert_requested,
        }


@dataclass
class DeviceStatus:
    name: str
    kind: str
    certificate: str
    current_sha256: str | None
    current_version: int | None
    listeners: list[ListenerStatus] = field(default_factory=list)
    #: The newest deployment recorded for the device (outcome, last_step, run_id,
    #: started, finished, message), from the store's journal; None when none.
    last_deployment: dict[str, Any] | None = None

    @property
    def interrupted(self) -> bool:
        """The newest deploy of this device died mid-way (see ``last_deployment``)."""
        return bool(self.last_deployment and self.last_deployment["outcome"] == "interrupted")

    @property
    def agree(self) -> bool:
        """All listeners reachable and serving the same certificate."""
        served = {item.sha256 for item in self.listeners}
        return all(item.reachable for item in self.listeners) and len(served) == 1

    @property
    def days_left(self) -> int | None:
        days = [item.days_left for item in self.listeners if item.days_left is not None]
        return min(days) if days else None

    @property
    def serving_current(self) -> int:
        return sum(1 for item in self.listeners if item.is_current)

    @property
    def is_current(self) -> bool:
        return bool(self.listeners) and self.serving_current == len(self.listeners)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "certificate": self.certificate,
            "current_sha256": self.current_sha256,
            "current_version": self.current_version,
            "listeners": [item.to_dict() for item in self.listeners],
            "agree": self.agree,
            "days_left": self.days_left,
            "is_current": self.is_current,
            "last_deployment": self.last_deployment,
        }


def _names_cover(cert: x509.Certificate, hosts: Sequence[str]) -> bool | None:
    """Whether every host is covered by a subjectAltName, as clients check (never the CN)."""
    from ..pki.names import covers

    if not hosts:
        return None
    return all(covers(cert, host) for host in hosts)


async def _device_status(
    device: Device, store: Store | None, now: dt.datetime, timeout: float
) -> DeviceStatus:
    from ..drivers.tlsprobe import probe

    current = store.current_version(device.certificate) if store is not None else None
    status = DeviceStatus(
        device.name,
        device.kind,
        device.certificate,
        current.leaf_sha256 if current else None,
        current.number if current else None,
    )
    for result in await probe(device.listeners, timeout=timeout):
        item = ListenerStatus(
            str(result.listener), result.listener.label, result.certificate is not None,
            client_cert_requested=result.client_cert_requested,
        )
        if result.certificate is None:
            item.error = result.error
        else:
            cert = result.certificate
            item.sha256 = result.sha256
            item.subject = cert.subject.rfc4514_string()
            item.issuer = cert.issuer.rfc4514_string()
            not_after = cert.not_valid_after_utc
            item.not_after = not_after.isoformat()
            item.days_left = (not_after - now).days
            item.hostname_ok = _names_cover(cert, device.hosts)
            item.is_current = current is not None and item.sha256 == current.leaf_sha256
        status.listeners.append(item)
    return status


async def collect_status(
    inventory: Inventory,
    store: Store | None,
    devices: Sequence[Device] | None = None,
    *,
    now: dt.datetime | None = None,
    timeout: float = 10.0,
) -> list[DeviceStatus]:
    """Handshake every listener of ``devices`` (all by default), sorted by days left.

    Devices whose listeners all failed (no days known) come last.
    """
    moment = now or dt.datetime.now(dt.UTC)
    chosen = list(inventory.devices.values()) if devices is None else list(devices)
    gate = asyncio.Semaphore(PROBE_DEVICES)

    async def one(device: Device) -> DeviceStatus:
        async with gate:
            return await _device_status(device, store, moment, timeout)

    statuses = await asyncio.gather(*(one(device) for device in chosen))
    if store is not None:
        store.settle_interrupted()
        latest = store.latest_deployments([s.name for s in statuses])
        for status in statuses:
            row = latest.get(status.name)
            if row is not None:
                status.last_deployment = {
                    key: row[key]
                    for key in ("run_id", "outcome", "last_step", "started", "finished", "message")
                }
    return sorted(
        statuses,
        key=lambda s: (s.days_left is None, s.days_left if s.days_left is not None else 0, s.name),
    )
