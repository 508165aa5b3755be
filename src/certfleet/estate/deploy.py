"""Deploy the current certificate version across the estate.

What to do is decided from what each device serves now (a handshake on
every listener), never from history: a device whose listeners all serve the
target already is skipped unless ``force``. Everything that can be refused
without touching a device is decided for every device before the first
change (:mod:`certfleet.estate.decide`, the same code as ``plan``); a
refusal then changes no device unless ``skip_refused``. The canary device
(``canary``: a device name, or ``"auto"`` for :func:`choose_canary`; none by
default) goes first and a failure there stops the run; the others then run in parallel, bounded
by ``concurrency``, and one failing never stops the rest. Every outcome,
step, backup and the exact inventory text are recorded in the store.

Interrupted (Ctrl-C, SIGTERM: the task running :func:`run_deploy` is
cancelled): no new device starts, each device in flight is cancelled inside
its driver, which rolls back whatever it changed (within the driver's
``interrupt_grace``), and the report comes back with ``interrupted`` set;
devices never started, or stopped before their first change, are
``interrupted`` (exit 2: untouched).

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

from ..drivers.base import Backup, DeployOutcome, EventCallback, StepEvent
from ..errors import CertfleetError, ConfigError, StateError
from ..inventory import Device, Inventory, select_devices
from .store import Store
from .targets import DriverFactory, Targets, device_findings

__all__ = [
    "AUTO_CANARY",
    "SEVERITY_ORDER",
    "DeployReport",
    "DeviceResult",
    "DriverFactory",
    "choose_canary",
    "run_deploy",
    "worst_exit_code",
]

# Worst first: see the module docstring.
SEVERITY_ORDER = (3, 1, 2, 0)
# ``--canary auto``: the device of the kind most preferred as the canary.
AUTO_CANARY = "auto"


def choose_canary(devices: Sequence[Device]) -> str | None:
    """The canary among ``devices`` (those to change): the first, in inventory order,
    of the kind with the highest ``canary_preference``; None when no kind has one."""
    from ..drivers.registry import get_kind

    best: tuple[int, str] | None = None
    for device in devices:
        preference = get_kind(device.kind).canary_preference
        if preference > 0 and (best is None or preference > best[0]):
            best = (preference, device.name)
    return best[1] if best else None
# Device statuses after which the device was changed by the run.
CHANGED_STATUSES = frozenset({"installed", "restored", "failed"})


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
    (dry run) or ``interrupted`` (the run was interrupted before this device
    changed: exit 2).
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
    interrupted: bool = False

    @property
    def changed_any(self) -> bool:
        """Whether any device of the run was changed (installed, restored or left failed)."""
        return any(r.status in CHANGED_STATUSES for r in self.results)

    @property
    def exit_code(self) -> int:
        code = worst_exit_code([r.exit_code for r in self.results])
        # Exit 2 promises that no device was touched: a run that changed a device
        # and then had one refuse is a failure of the run (1), never a 2.
        if code == 2 and self.changed_any:
            return 1
        return code

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "devices": [r.to_dict() for r in self.results],
        }


class _Interrupt:
    """The run's interrupt state: set once, it stops new devices and cancels drivers in flight."""

    def __init__(self) -> None:
        self.stopped = False
        self.in_flight: set[asyncio.Task[DeployOutcome]] = set()

    def stop(self) -> None:
        self.stopped = True
        for task in list(self.in_flight):
            task.cancel()

    async def wait(self, tasks: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for ``tasks``; a cancellation of the caller interrupts the run instead."""
        pending = [t for t in tasks if not t.done()]
        while pending:
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:
                # The tasks themselves are not cancelled: each device finishes,
                # its driver rolling back, and records what happened.
                self.stop()
            pending = [t for t in pending if not t.done()]


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
    skip_refused: bool = False,
    ignore_findings: Sequence[str] = (),
) -> DeployReport:
    """Deploy to the selected devices. Raises ConfigError (selection), StateError (lock).

    ``force`` redeploys where the target is served already (``--redeploy``);
    ``ignore_findings`` are the error codes to go past (``--ignore-finding``).

    Device failures never raise: they are results.
    """
    devices = select_devices(inventory, only)
    auto_canary = canary == AUTO_CANARY and canary not in inventory.devices
    if canary is not None and not auto_canary:
        canary_devices = [d for d in devices if d.name == canary]
        if not canary_devices:
            raise ConfigError(
                f"--canary {canary!r} is not among the devices to deploy",
                hint="name a device of the inventory (and of --only, when given)",
            )
    limit = concurrency or inventory.concurrency
    if limit < 1:
        raise ConfigError(f"--concurrency {limit!r} must be at least 1", hint="use --concurrency 8")
    targets = Targets(inventory, store)
    run_id: int | None = None
    if not dry_run:
        store.acquire_lock(command, break_lock=break_lock, devices=[d.name for d in devices])
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
                "skip_refused": skip_refused,
                "ignore_findings": list(ignore_findings),
            },
        )
        semaphore = asyncio.Semaphore(limit)
        control = _Interrupt()

        def not_started(
            device: Device, status: str, code: int, message: str, hint: str | None = None,
            served: dict[str, str | None] | None = None, steps: Sequence[StepEvent] = (),
        ) -> DeviceResult:
            result = DeviceResult(device.name, device.kind, device.certificate, status, code,
                                  message, hint, served_before=dict(served or {}),
                                  steps=list(steps))
            if not dry_run:
                result.deployment_id = store.record_deployment(
                    run_id=run_id, device=device.name, kind=device.kind,
                    certificate=device.certificate, version_id=None,
                    outcome=DeployOutcome(
                        device.name, "refused" if code else "skipped", message, hint,
                        served_before=result.served_before, steps=result.steps,
                    ),
                    started=_now(), status=status,
                )
            return result

        # Everything that can be refused without touching a device is decided for
        # every device now, before the first change (plan decides the same way).
        from .decide import decide_all

        decisions = {
            d.device.name: d
            for d in await decide_all(
                devices, inventory, store, factory, force=force,
                allow_no_rollback=allow_no_rollback, on_event=on_event, targets=targets,
                ignore_findings=ignore_findings,
            )
        }
        if not dry_run and (skip_refused
                            or not any(d.action == "refuse" for d in decisions.values())):
            # Log in to and observe every device to be changed before the first change
            # on any of them: a wrong password, pin or host key, or a device that does
            # not answer, is then a refusal of the run, not a failure after others changed.
            # (When a device is refused already, the run changes nothing: no need.)
            await _rehearse_before_change(decisions, inventory, factory, limit)
        refusals = [d for d in decisions.values() if d.action == "refuse"]
        early: dict[str, DeviceResult] = {}
        for decision in refusals:
            device = decision.device
            event = StepEvent(device.name, "decide", "failed", decision.reason)
            if on_event is not None:
                on_event(event)
            early[device.name] = not_started(
                device, "refused", 2, f"{device.name}: {decision.reason} (nothing was changed)",
                decision.hint, decision.served, [event],
            )
        if refusals and not skip_refused:
            names = ", ".join(d.device.name for d in refusals)
            for device in devices:
                if device.name not in early:
                    early[device.name] = not_started(
                        device, "not-attempted", 0,
                        f"{device.name}: not attempted: {names} would refuse, so the run "
                        "changes no device",
                        f"fix what {names} would refuse, or pass --skip-refused to certfleet "
                        "deploy to deploy the others",
                        decisions[device.name].served,
                    )
            for device in devices:
                if on_result is not None:
                    on_result(early[device.name])
            report = DeployReport(run_id, [early[d.name] for d in devices], dry_run)
            store.finish_run(run_id, report.exit_code)
            return report
        for name in early:
            if on_result is not None:
                on_result(early[name])

        async def one(device: Device) -> DeviceResult:
            if device.name in early:
                return early[device.name]
            async with semaphore:
                if control.stopped:
                    result = not_started(
                        device, "interrupted", 2,
                        f"{device.name}: not started: the run was interrupted (nothing was "
                        "changed)",
                    )
                else:
                    result = await _deploy_device(
                        device, inventory, store, targets, factory, run_id,
                        force=force, dry_run=dry_run, allow_no_rollback=allow_no_rollback,
                        on_event=on_event, control=control, decision=decisions[device.name],
                    )
            if on_result is not None:
                on_result(result)
            return result

        async def all_of(group: Sequence[Device]) -> list[DeviceResult]:
            tasks = [asyncio.ensure_future(one(d)) for d in group]
            await control.wait(tasks)
            for task in tasks:  # every failure retrieved (none logged later by the GC)
                if task.done() and not task.cancelled():
                    task.exception()
            return [t.result() for t in tasks]

        results: dict[str, DeviceResult] = {}
        rest = devices
        if auto_canary:
            canary = choose_canary(
                [d for d in devices if decisions[d.name].action == "deploy"])
        if canary is not None:
            first = next(d for d in devices if d.name == canary)
            results[first.name] = (await all_of([first]))[0]
            rest = [d for d in devices if d.name != canary]
            if results[first.name].exit_code != 0 and not control.stopped:
                for device in rest:
                    if device.name in early:  # refused already, and reported
                        results[device.name] = early[device.name]
                        continue
                    skipped = not_started(
                        device, "not-attempted", 0,
                        f"{device.name}: not attempted: the canary {canary!r} did not succeed",
                    )
                    results[device.name] = skipped
                    if on_result is not None:
                        on_result(skipped)
                rest = []
        for result in await all_of(rest):
            results[result.device] = result
        report = DeployReport(run_id, [results[d.name] for d in devices], dry_run,
                              interrupted=control.stopped)
        store.finish_run(run_id, report.exit_code)
        if control.stopped:
            store.audit(command, "interrupted", detail=f"run {run_id}")
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


async def _rehearse_before_change(
    decisions: dict[str, Any], inventory: Inventory, factory: DriverFactory, limit: int,
) -> None:
    """Rehearse on every device decided ``deploy``; a device not ready is refused.

    The rehearsal is what ``certfleet probe`` does: log in and do all a deploy does
    up to its first change. Whether a rollback is possible was decided already, so
    the rehearsal does not judge it again.
    """
    from .probe import rehearse_device

    semaphore = asyncio.Semaphore(max(1, limit))

    async def one(decision: Any) -> None:
        async with semaphore:
            result = await rehearse_device(decision.device, inventory, factory,
                                           allow_no_rollback=True)
        # A kind without a rehearsal was observed by the handshake decide made.
        if result is not None and not result.ready:
            decision.refuse(f"not ready: {result.reason}",
                            result.fix or "run certfleet probe for every check and its fix")

    await asyncio.gather(*(one(d) for d in decisions.values() if d.action == "deploy"))


async def _deploy_device(
    device: Device,
    inventory: Inventory,
    store: Store,
    targets: Targets,
    factory: DriverFactory,
    run_id: int | None,
    *,
    force: bool,
    dry_run: bool,
    allow_no_rollback: bool,
    on_event: EventCallback | None,
    control: _Interrupt | None = None,
    decision: Any = None,
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
    from .decide import left_unfinished

    # A run that died midway is finished even where the new certificate is served.
    resume = not dry_run and left_unfinished(store, device.name)
    # The journal: the deployment is written now as in-progress, each step as
    # it happens, the backup before the first change (see the store).
    deployment_id = None if dry_run else store.begin_deployment(
        run_id=run_id, device=device.name, kind=device.kind, certificate=device.certificate,
        version_id=result.version_id, target_sha256=result.target_sha256, started=started,
    )

    lost: list[bool] = []  # the journal's database went away (a shared store)

    def journal(event: StepEvent) -> None:
        if deployment_id is not None and not lost:
            try:
                store.record_step(deployment_id, event)
            except StateError:
                # A failure like any other: after a change the device is put back;
                # the steps after it are not journalled (the run is left interrupted).
                lost.append(True)
                raise
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
                device.name, result.status,  # type: ignore[arg-type]  # one of the outcomes
                result.message, result.hint,
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

    control = control or _Interrupt()

    def interrupted(where: str) -> None:
        emit(where, "failed", "interrupted")
        result.status, result.exit_code = "interrupted", 2
        result.message = f"{device.name}: interrupted before any change (nothing was changed)"
        result.hint = "run 'certfleet deploy' again to finish the run"

    emit("observe", "start")
    try:
        # Observed by the run's decision (a handshake on every listener) when there is one.
        result.served_before = (
            decision.served if decision is not None else await _observe(device)
        )
    except asyncio.CancelledError:
        if not control.stopped:
            raise
        interrupted("observe")
        return await finish(None)
    observed_before.update(result.served_before)
    served = set(result.served_before.values())
    emit("observe", "ok", f"{sum(1 for v in served if v)} certificate(s) served")
    if served == {version.leaf_sha256} and not force and not resume:
        result.status, result.exit_code = "skipped", 0
        result.message = f"{device.name}: already serves v{version.number} on every listener"
        result.served_after = dict(result.served_before)
        return await finish(None)
    if dry_run:
        result.status, result.exit_code = "would-deploy", 0
        result.message = f"{device.name}: would install v{version.number}"
        return await finish(None)

    if control.stopped:
        interrupted("observe")
        return await finish(None)
    try:
        if decision is not None and decision.driver is not None:
            findings, driver = decision.findings, decision.driver
            driver.on_event = journal  # built by the decision: its steps go to the journal now
        else:
            findings = device_findings(bundle, device, inventory)
            driver = factory(device, inventory, journal)
        driver.on_backup = persist_backup
    except CertfleetError as exc:
        emit("preflight", "failed", exc.message)
        result.message = f"{device.name}: {exc.message}"
        result.hint = exc.hint
        return await finish(None)
    # The driver runs as a task of its own: an interrupt cancels it (its template
    # rolls back what it changed) while this device's recording still happens.
    task = asyncio.ensure_future(
        # Past preflight errors only where the decision let every one be ignored.
        driver.deploy(bundle, findings, force=bool(decision is not None and decision.ignored),
                      allow_no_rollback=allow_no_rollback)
    )
    control.in_flight.add(task)
    try:
        outcome = await task
    except asyncio.CancelledError:
        if not task.cancelled():
            task.cancel()
            raise
        # Cancelled before its first change: the template let the cancellation through.
        interrupted(driver._steps[-1].step if driver._steps else "connect")
        result.steps = [*result.steps, *driver._steps]
        return await finish(None)
    except Exception as exc:
        emit("deploy", "failed", f"{type(exc).__name__}: {exc}")
        result.status, result.exit_code = "failed", 3
        result.message = (
            f"{device.name}: unexpected {type(exc).__name__} during the deploy; "
            "the device state is unknown"
        )
        result.hint = "run 'certfleet verify' and 'certfleet rollback DEVICE' if needed"
        return await finish(None)
    finally:
        control.in_flight.discard(task)
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
