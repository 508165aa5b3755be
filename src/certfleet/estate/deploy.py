"""Deploy the current certificate version across the estate.

What to do is decided from what each device serves now (a handshake on
every listener), never from history: a device whose listeners all serve the
target already is skipped unless ``force``. The canary device goes first
and a failure there stops the run; the others then run in parallel, bounded
by ``concurrency``, and one failing never stops the rest. Every outcome,
step, backup and the exact inventory text are recorded in the store.

Run exit code: the worst device exit code, ranked 3 (failed, not restored)
> 1 (failed, restored) > 2 (refused, nothing changed) > 0 (installed or
skipped). A device left in an unknown state outranks one put back, which
outranks one never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..drivers.base import Backup, DeployOutcome, Driver, EventCallback, StepEvent
from ..errors import CertfleetError, ConfigError, StateError
from ..inventory import Device, Inventory, select_devices
from .store import Store, VersionRecord

__all__ = [
    "SEVERITY_ORDER",
    "DeployReport",
    "DeviceResult",
    "DriverFactory",
    "run_deploy",
    "worst_exit_code",
]

DriverFactory = Callable[[Device, Inventory, EventCallback | None], Driver]
# Worst first: see the module docstring.
SEVERITY_ORDER = (3, 1, 2, 0)


def worst_exit_code(codes: Sequence[int]) -> int:
    """The run's exit code: the worst of ``codes`` by :data:`SEVERITY_ORDER` (0 when empty)."""
    for code in SEVERITY_ORDER:
        if code in codes:
            return code
    return 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class DeviceResult:
    """One device's part of a deploy run.

    ``status`` is a driver outcome (installed, restored, refused, failed,
    skipped) or ``not-attempted`` (the canary failed) or ``would-deploy``
    (dry run).
    """

    device: str
    kind: str
    certificate: str
    status: str
    exit_code: int
    message: str
    hint: str | None = None
    target_sha256: str | None = None
    version_id: int | None = None
    served_before: dict[str, str | None] = field(default_factory=dict)
    served_after: dict[str, str | None] = field(default_factory=dict)
    steps: list[StepEvent] = field(default_factory=list)
    deployment_id: int | None = None
    backup_id: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "kind": self.kind,
            "certificate": self.certificate,
            "status": self.status,
            "exit_code": self.exit_code,
            "message": self.message,
            "hint": self.hint,
            "target_sha256": self.target_sha256,
            "version_id": self.version_id,
            "served_before": self.served_before,
            "served_after": self.served_after,
            "steps": [
                {"step": s.step, "status": s.status, "detail": s.detail, "at": s.at}
                for s in self.steps
            ],
            "deployment_id": self.deployment_id,
            "backup_id": self.backup_id,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class DeployReport:
    run_id: int | None
    results: list[DeviceResult]
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return worst_exit_code([r.exit_code for r in self.results])

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "exit_code": self.exit_code,
            "devices": [r.to_dict() for r in self.results],
        }


class _Targets:
    """The bundle and findings to deploy per certificate, loaded once."""

    def __init__(self, inventory: Inventory, store: Store) -> None:
        self.inventory = inventory
        self.store = store
        self._cache: dict[str, tuple[VersionRecord | None, Any, CertfleetError | None]] = {}

    def get(self, certificate: str) -> tuple[VersionRecord | None, Any, CertfleetError | None]:
        if certificate not in self._cache:
            from .csr import key_passphrase

            version = self.store.current_version(certificate)
            if version is None:
                err: CertfleetError | None = ConfigError(
                    f"no version of certificate {certificate!r} was imported",
                    hint=f"run 'certfleet import {certificate} FILE...' first",
                )
                self._cache[certificate] = (None, None, err)
            else:
                try:
                    bundle = self.store.load_bundle(
                        version, key_passphrase(self.inventory, certificate)
                    )
                    self._cache[certificate] = (version, bundle, None)
                except CertfleetError as exc:
                    self._cache[certificate] = (version, None, exc)
        return self._cache[certificate]


def device_findings(bundle: Any, device: Device, inventory: Inventory) -> list[Any]:
    """The toolkit's checks of ``bundle`` for ``device``'s host names."""
    from ..pki.checks import check_bundle

    return list(
        check_bundle(bundle, list(device.hosts), expiry_warn_days=inventory.expiry_warn_days)
    )


async def _observe(device: Device) -> dict[str, str | None]:
    from ..drivers.tlsprobe import probe

    results = await probe(device.listeners, timeout=10.0)
    return {str(r.listener): r.sha256 for r in results}


async def run_deploy(
    inventory: Inventory,
    store: Store,
    factory: DriverFactory,
    *,
    only: Sequence[str] = (),
    concurrency: int | None = None,
    canary: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    allow_no_rollback: bool = False,
    break_lock: bool = False,
    on_event: EventCallback | None = None,
    on_result: Callable[[DeviceResult], None] | None = None,
    command: str = "deploy",
) -> DeployReport:
    """Deploy to the selected devices. Raises ConfigError (selection), StateError (lock).

    Device failures never raise: they are results.
    """
    devices = select_devices(inventory, only)
    if canary is not None:
        canary_devices = [d for d in devices if d.name == canary]
        if not canary_devices:
            raise ConfigError(
                f"--canary {canary!r} is not among the devices to deploy",
                hint="name a device of the inventory (and of --only, when given)",
            )
    limit = concurrency or inventory.concurrency
    if limit < 1:
        raise ConfigError(f"--concurrency {limit!r} must be at least 1", hint="use --concurrency 8")
    targets = _Targets(inventory, store)
    run_id: int | None = None
    if not dry_run:
        store.acquire_lock(command, break_lock=break_lock)
    try:
        if not dry_run:
            store.settle_interrupted()  # runs whose process died are recorded as such
        run_id = store.start_run(
            command + (" --dry-run" if dry_run else ""),
            inventory_path=str(inventory.path),
            inventory_text=inventory.text,
            options={
                "only": list(only),
                "concurrency": limit,
                "canary": canary,
                "force": force,
                "dry_run": dry_run,
                "allow_no_rollback": allow_no_rollback,
            },
        )
        semaphore = asyncio.Semaphore(limit)

        async def one(device: Device) -> DeviceResult:
            async with semaphore:
                result = await _deploy_device(
                    device, inventory, store, targets, factory, run_id,
                    force=force, dry_run=dry_run, allow_no_rollback=allow_no_rollback,
                    on_event=on_event,
                )
            if on_result is not None:
                on_result(result)
            return result

        results: dict[str, DeviceResult] = {}
        rest = devices
        if canary is not None:
            first = next(d for d in devices if d.name == canary)
            results[first.name] = await one(first)
            rest = [d for d in devices if d.name != canary]
            if results[first.name].exit_code != 0:
                for device in rest:
                    skipped = DeviceResult(
                        device.name, device.kind, device.certificate, "not-attempted", 0,
                        f"{device.name}: not attempted: the canary {canary!r} did not succeed",
                    )
                    results[device.name] = skipped
                    if not dry_run:
                        skipped.deployment_id = store.record_deployment(
                            run_id=run_id, device=device.name, kind=device.kind,
                            certificate=device.certificate, version_id=None,
                            outcome=DeployOutcome(device.name, "skipped", skipped.message),
                            started=_now(), status="not-attempted",
                        )
                    if on_result is not None:
                        on_result(skipped)
                rest = []
        for result in await asyncio.gather(*(one(d) for d in rest)):
            results[result.device] = result
        report = DeployReport(run_id, [results[d.name] for d in devices], dry_run)
        store.finish_run(run_id, report.exit_code)
        return report
    except BaseException:  # interrupted (Ctrl-C, cancelled): the run says so
        if run_id is not None:
            store.finish_run(run_id, 130)
            store.audit(command, "interrupted", detail=f"run {run_id}")
        raise
    finally:
        if not dry_run:
            import os

            store.release_lock(pid=os.getpid())


async def _deploy_device(
    device: Device,
    inventory: Inventory,
    store: Store,
    targets: _Targets,
    factory: DriverFactory,
    run_id: int | None,
    *,
    force: bool,
    dry_run: bool,
    allow_no_rollback: bool,
    on_event: EventCallback | None,
) -> DeviceResult:
    loop = asyncio.get_running_loop()
    started_clock = loop.time()
    started = _now()
    version, bundle, problem = targets.get(device.certificate)
    result = DeviceResult(
        device.name, device.kind, device.certificate, "refused", 2, "",
        version_id=version.id if version else None,
        target_sha256=version.leaf_sha256 if version else None,
    )

    observed_before: dict[str, str | None] = {}
    # The journal: the deployment is written now as in-progress, each step as
    # it happens, the backup before the first change (see the store).
    deployment_id = None if dry_run else store.begin_deployment(
        run_id=run_id, device=device.name, kind=device.kind, certificate=device.certificate,
        version_id=result.version_id, target_sha256=result.target_sha256, started=started,
    )

    def journal(event: StepEvent) -> None:
        if deployment_id is not None:
            store.record_step(deployment_id, event)
        if on_event is not None:
            on_event(event)

    def emit(step: str, status: Any, detail: str = "") -> None:
        event = StepEvent(device.name, step, status, detail)
        result.steps.append(event)
        journal(event)

    async def persist_backup(backup: Backup) -> None:
        """Write-ahead: the backup is on disk (synced) and recorded before any change."""
        from .csr import key_passphrase
        from .store.backups import write_backup_files

        passphrase = key_passphrase(inventory, device.certificate)
        served = next((v for v in observed_before.values() if v), None)
        directory = store.new_backup_dir(device.name)
        try:
            # Written off the event loop: other devices go on meanwhile.
            await asyncio.to_thread(write_backup_files, backup, directory, passphrase)
        except OSError as exc:
            raise StateError(
                f"cannot write the backup of {device.name} to {str(directory)!r}: "
                f"{exc.strerror or exc}",
                hint="free space in the state folder (or pass --state-dir); nothing was changed",
            ) from None
        record = store.register_backup(
            backup, directory, served_sha256=served, run_id=run_id, encrypted=bool(passphrase)
        )
        result.backup_id = record.id
        if deployment_id is not None:
            store.set_deployment_backup(deployment_id, record.id)

    async def finish(outcome: DeployOutcome | None) -> DeviceResult:
        result.seconds = loop.time() - started_clock
        if dry_run:
            return result
        if outcome is None:
            outcome = DeployOutcome(
                device.name, result.status, result.message, result.hint,  # type: ignore[arg-type]
                target_sha256=result.target_sha256, served_before=result.served_before,
                served_after=result.served_after, steps=result.steps,
            )
        if outcome.backup is not None and result.backup_id is None:
            # Taken but not written ahead (refused before any change): kept all the same.
            # What the inventory's listeners served before is what a rollback restores.
            with contextlib.suppress(CertfleetError):
                await persist_backup(outcome.backup)
        assert deployment_id is not None
        store.finish_deployment(deployment_id, outcome, backup_id=result.backup_id)
        result.deployment_id = deployment_id
        store.audit("deploy", result.status, device=device.name, detail=result.message)
        return result

    if problem is not None or bundle is None or version is None:
        assert problem is not None
        emit("preflight", "failed", problem.message)
        result.message = f"{device.name}: {problem.message}"
        result.hint = problem.hint
        return await finish(None)

    emit("observe", "start")
    result.served_before = await _observe(device)
    observed_before.update(result.served_before)
    served = set(result.served_before.values())
    emit("observe", "ok", f"{sum(1 for v in served if v)} certificate(s) served")
    if served == {version.leaf_sha256} and not force:
        result.status, result.exit_code = "skipped", 0
        result.message = f"{device.name}: already serves v{version.number} on every listener"
        result.served_after = dict(result.served_before)
        return await finish(None)
    if dry_run:
        result.status, result.exit_code = "would-deploy", 0
        result.message = f"{device.name}: would install v{version.number}"
        return await finish(None)

    try:
        findings = device_findings(bundle, device, inventory)
        driver = factory(device, inventory, journal)
        driver.on_backup = persist_backup
    except CertfleetError as exc:
        emit("preflight", "failed", exc.message)
        result.message = f"{device.name}: {exc.message}"
        result.hint = exc.hint
        return await finish(None)
    try:
        outcome = await driver.deploy(
            bundle, findings, force=force, allow_no_rollback=allow_no_rollback
        )
    except Exception as exc:
        emit("deploy", "failed", f"{type(exc).__name__}: {exc}")
        result.status, result.exit_code = "failed", 3
        result.message = (
            f"{device.name}: unexpected {type(exc).__name__} during the deploy; "
            "the device state is unknown"
        )
        result.hint = "run 'certfleet verify' and 'certfleet rollback DEVICE' if needed"
        return await finish(None)
    result.status = outcome.outcome
    result.exit_code = outcome.exit_code
    result.message = outcome.message
    result.hint = outcome.hint
    if outcome.served_before:
        result.served_before = outcome.served_before
    result.served_after = outcome.served_after
    result.steps = [*result.steps, *outcome.steps]
    outcome.steps = result.steps
    outcome.served_before = result.served_before
    return await finish(outcome)
