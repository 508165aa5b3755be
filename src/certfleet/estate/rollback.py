"""Put a device back to its last backup, through its driver, and prove it by handshake."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..drivers.base import (
    Backup,
    DeployOutcome,
    Driver,
    EventCallback,
    RollbackCutShort,
    StepEvent,
    describe_exception,
)
from ..drivers.tlsprobe import Listener, ProbeResult, wait_for_served
from ..errors import CertfleetError, ConfigError, StateError
from ..inventory import Device, Inventory
from .devices import prepare_standalone_restore
from .store import BackupRecord, Store
from .targets import DriverFactory

__all__ = ["RollbackResult", "previous_by_listener", "rollback_device", "verify_each"]


@dataclass
class RollbackResult:
    device: str
    ok: bool
    message: str
    hint: str | None = None
    backup: BackupRecord | None = None
    served_after: dict[str, str | None] = field(default_factory=dict)
    steps: list[StepEvent] = field(default_factory=list)
    # Whether a request that may change the device was sent (exit 3 on failure, else 2).
    touched: bool = False

    @property
    def exit_code(self) -> int:
        if self.ok:
            return 0
        return 3 if self.touched else 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "ok": self.ok,
            "touched": self.touched,
            "exit_code": self.exit_code,
            "message": self.message,
            "hint": self.hint,
            "backup": {
                "id": self.backup.id,
                "created": self.backup.created,
                "served_sha256": self.backup.served_sha256,
            }
            if self.backup
            else None,
            "served_after": self.served_after,
        }


async def rollback_device(
    inventory: Inventory,
    store: Store,
    factory: DriverFactory,
    name: str,
    *,
    on_event: EventCallback | None = None,
    break_lock: bool = False,
) -> RollbackResult:
    """Restore device ``name``'s last backup and verify it. Raises ConfigError/StateError.

    The last backup is the one taken before the newest deploy that changed
    the device, an interrupted one included (it is written before the first
    change). Errors raised leave the device untouched; device failures are
    returned (``ok`` False), never raised.
    """
    device = inventory.devices.get(name)
    if device is None:
        raise ConfigError(
            f"no device named {name!r} in {inventory.path}",
            hint="devices: " + ", ".join(sorted(inventory.devices)),
        )
    record, backup = _last_backup(inventory, store, device, break_lock)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    run_id = store.start_run(
        f"rollback {name}",
        inventory_path=str(inventory.path),
        inventory_text=inventory.text,
        options={"backup_id": record.id},
    )
    result = RollbackResult(name, False, "", backup=record)
    try:
        driver = factory(device, inventory, on_event)
        if not driver.can_restore(backup):
            _not_restorable(result, record)
        else:
            await _restore(driver, device, backup, record, result)
    except CertfleetError as exc:  # the driver could not be built (secrets, profile)
        result.message = f"{name}: {exc.message}"
        result.hint = exc.hint
    finally:
        _record(store, run_id, device, record, result, started)
        store.release_lock()
    return result


def _last_backup(inventory: Inventory, store: Store, device: Device,
                 break_lock: bool) -> tuple[BackupRecord, Backup]:
    """The device's last backup, read under the run's lock (released when it fails)."""
    from .csr import key_passphrase

    name = device.name
    store.acquire_lock(f"rollback {name}", break_lock=break_lock, devices=[name])
    try:
        store.settle_interrupted()  # a deploy that died is recorded as interrupted
        record = store.last_backup(name)
        if record is None:
            raise StateError(
                f"no backup of {name!r} in the state store",
                hint="a backup is taken by every deploy before it changes a device; "
                "this device was never changed by certfleet",
                untouched=True,
            )
        return record, store.read_backup(record, key_passphrase(inventory, device.certificate))
    except BaseException:
        store.release_lock()
        raise


def _not_restorable(result: RollbackResult, record: BackupRecord) -> None:
    """E.g. an SBC deployed with --allow-no-rollback: the backup holds no key.
    Refused before connecting: the device is not touched (exit 2)."""
    result.message = (
        f"{result.device}: backup {record.id} of {record.created} cannot be restored: it "
        "holds no private key of what the device served before (deployed without a "
        "way back); nothing was changed"
    )
    result.hint = (
        "the device serves what that deploy installed; to go back, install the "
        "previous certificate with its key by hand ('certfleet sbc deploy --help' "
        "shows how)"
    )


async def _restore(driver: Driver, device: Device, backup: Backup, record: BackupRecord,
                   result: RollbackResult) -> None:
    """Connect, then the driver's rollback; every end is said in ``result``."""
    name = device.name
    try:
        driver.emit("connect", "start")
        await driver.connect()
        driver.emit("connect", "ok")
        prepare_standalone_restore(driver)
        result.touched = True
        try:
            await driver.rollback(backup, lambda: _verify(driver, device, backup, record, result),
                                  detail=f"backup {record.id} of {record.created}")
        except RollbackCutShort:  # past the driver's interrupt_grace: stopped
            raise asyncio.CancelledError from None
    except CertfleetError as exc:
        driver.emit("rollback", "failed", exc.message)
        result.message = f"{name}: rollback failed: {exc.message}" + (
            "" if result.touched else " (nothing was changed)"
        )
        result.hint = exc.hint or "restore the device by hand from the backup files"
    except BaseException as exc:  # a bug, an OS error, Ctrl-C, a cancellation
        what = describe_exception(exc)
        driver.emit("rollback", "failed", what)
        if result.touched:
            result.message = f"{name}: rollback stopped: {what}; the device may be changed"
            result.hint = f"run 'certfleet rollback {name}' again"
        else:
            result.message = f"{name}: {what} before any change (nothing was changed)"
    finally:
        result.steps = list(driver._steps)
        await driver.close()


async def _verify(driver: Driver, device: Device, backup: Backup, record: BackupRecord,
                  result: RollbackResult) -> None:
    """Verified here, by handshake, each listener against what it served before: the
    drivers' own verify follows the state of a deploy session."""
    name = device.name
    expected = previous_by_listener(device.listeners, backup.meta, record.served_sha256)
    if not expected:
        driver.emit("verify", "failed", "nothing to verify against")
        result.message = (
            f"{name}: backup {record.id} restored, NOT verified: no listener served "
            "a certificate before the deploy, so no handshake can prove the restore"
        )
        result.hint = f"check what it serves with 'certfleet status --only {name}'"
        return
    driver.emit("verify", "start")
    after = await verify_each(expected, max(device.verify_timeout, 5.0))
    result.served_after = {str(r.listener): r.sha256 for r in after}
    driver.emit("verify", "ok", f"{len(after)} listener(s)")
    result.ok = True
    result.message = (
        f"{name}: backup {record.id} restored and verified by handshake on "
        f"{len(after)} listener(s)"
    )


def _record(store: Store, run_id: int, device: Device, record: BackupRecord,
            result: RollbackResult, started: str) -> None:
    """The rollback in the store: as a deployment, in the audit, and the run's end."""
    name = device.name
    outcome = DeployOutcome(
        name,
        "restored" if result.ok else ("failed" if result.touched else "refused"),
        result.message,
        result.hint,
        target_sha256=record.served_sha256,
        served_after=result.served_after,
        steps=result.steps,
    )
    store.record_deployment(
        run_id=run_id, device=name, kind=device.kind, certificate=device.certificate,
        version_id=None, outcome=outcome, started=started, backup_id=record.id,
    )
    store.audit("rollback", "restored" if result.ok else "failed", device=name,
                detail=result.message)
    store.finish_run(run_id, result.exit_code)


def previous_by_listener(
    listeners: Sequence[Listener], meta: dict[str, Any], served_sha256: str | None
) -> dict[Listener, str]:
    """Per listener, the certificate it served before the deploy that took the backup.

    From the backup's ``listeners_served`` (every listener checked, the
    management port included when the deploy changed it); for a backup without
    it, ``served_sha256`` on the inventory's listeners.
    """
    served = meta.get("listeners_served")
    if not isinstance(served, dict):
        return {item: served_sha256 for item in listeners} if served_sha256 else {}
    known = {str(item): item for item in listeners}
    expected: dict[Listener, str] = {}
    for where, sha in served.items():
        if not isinstance(sha, str) or not sha:
            continue
        try:
            listener = known.get(where) or Listener.parse(where)
        except ValueError:
            continue
        expected[listener] = sha
    return expected


async def verify_each(expected: dict[Listener, str], timeout: float) -> list[ProbeResult]:
    """Wait until every listener serves its own expected certificate. Raises VerificationError."""
    groups: dict[str, list[Listener]] = {}
    for listener, sha in expected.items():
        groups.setdefault(sha, []).append(listener)
    results: list[ProbeResult] = []
    for sha, group in groups.items():
        results.extend(await wait_for_served(group, sha, timeout))
    return results
