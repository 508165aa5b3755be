"""Put a device back to its last backup, through its driver, and prove it by handshake."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..drivers.base import DeployOutcome, EventCallback, StepEvent
from ..drivers.tlsprobe import wait_for_served
from ..errors import CertfleetError, ConfigError, StateError
from ..inventory import Inventory
from .deploy import DriverFactory
from .devices import prepare_standalone_restore
from .store import BackupRecord, Store

__all__ = ["RollbackResult", "rollback_device"]


@dataclass
class RollbackResult:
    device: str
    ok: bool
    message: str
    hint: str | None = None
    backup: BackupRecord | None = None
    served_after: dict[str, str | None] = field(default_factory=dict)
    steps: list[StepEvent] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "ok": self.ok,
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
    from .csr import key_passphrase

    store.acquire_lock(f"rollback {name}", break_lock=break_lock)
    try:
        store.settle_interrupted()  # a deploy that died is recorded as interrupted
        record = store.last_backup(name)
        if record is None:
            raise StateError(
                f"no backup of {name!r} in the state store",
                hint="a backup is taken by every deploy before it changes a device; "
                "this device was never changed by certfleet",
                no_backup=True,
            )
        backup = store.read_backup(record, key_passphrase(inventory, device.certificate))
    except BaseException:
        store.release_lock()
        raise
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
        try:
            driver.emit("connect", "start")
            await driver.connect()
            driver.emit("connect", "ok")
            driver.emit("rollback", "start", f"backup {record.id} of {record.created}")
            prepare_standalone_restore(driver)
            await driver.restore(backup)
            driver.emit("rollback", "ok")
            if record.served_sha256:
                # Verified here, by handshake on the inventory's listeners: the
                # drivers' own verify follows the state of a deploy session.
                driver.emit("verify", "start")
                after = await wait_for_served(
                    device.listeners, record.served_sha256, device.verify_timeout
                )
                result.served_after = {str(r.listener): r.sha256 for r in after}
                driver.emit("verify", "ok")
            result.ok = True
            result.message = f"{name}: backup {record.id} restored" + (
                " and verified by handshake" if record.served_sha256 else ""
            )
        except CertfleetError as exc:
            driver.emit("rollback", "failed", exc.message)
            result.message = f"{name}: rollback failed: {exc.message}"
            result.hint = exc.hint or "restore the device by hand from the backup files"
        finally:
            result.steps = list(driver._steps)
            await driver.close()
    except CertfleetError as exc:  # the driver could not be built (secrets, profile)
        result.message = f"{name}: {exc.message}"
        result.hint = exc.hint
    finally:
        outcome = DeployOutcome(
            name,
            "installed" if result.ok else "failed",
            result.message,
            result.hint,
            target_sha256=record.served_sha256,
            served_after=result.served_after,
            steps=result.steps,
        )
        outcome.outcome = "restored" if result.ok else "failed"
        store.record_deployment(
            run_id=run_id, device=name, kind=device.kind, certificate=device.certificate,
            version_id=None, outcome=outcome, started=started, backup_id=record.id,
        )
        store.audit("rollback", "restored" if result.ok else "failed", device=name,
                    detail=result.message)
        store.finish_run(run_id, result.exit_code)
        store.release_lock()
    return result
