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
from typing import TYPE_CHECKING, Any, Unpack

from ..drivers.base import Backup, DeployOutcome, Driver, EventCallback, StepEvent
from ..errors import CertfleetError, ConfigError, StateError
from ..inventory import Device, Inventory, select_devices
from ..pki.model import Bundle, Finding
from .options import DeployOptions, DeploySettings
from .store import Store
from .targets import DriverFactory, Targets, device_findings

if TYPE_CHECKING:
    from .decide import Decision

__all__ = [
    "AUTO_CANARY",
    "SEVERITY_ORDER",
    "DeployOptions",
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


@dataclass
class _Run:
    """One deploy run: what every step of :func:`run_deploy` shares."""

    inventory: Inventory
    store: Store
    factory: DriverFactory
    options: DeployOptions
    limit: int
    on_event: EventCallback | None
    on_result: Callable[[DeviceResult], None] | None
    targets: Targets
    run_id: int | None = None
    control: _Interrupt = field(default_factory=_Interrupt)
    #: Devices settled before any change (refused, or not attempted), by name.
    early: dict[str, DeviceResult] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)

    def tell(self, result: DeviceResult) -> DeviceResult:
        if self.on_result is not None:
            self.on_result(result)
        return result

    def not_started(
        self, device: Device, status: str, code: int, message: str, hint: str | None = None,
        served: dict[str, str | None] | None = None, steps: Sequence[StepEvent] = (),
    ) -> DeviceResult:
        result = DeviceResult(device.name, device.kind, device.certificate, status, code,
                              message, hint, served_before=dict(served or {}),
                              steps=list(steps))
        if not self.options.dry_run:
            result.deployment_id = self.store.record_deployment(
                run_id=self.run_id, device=device.name, kind=device.kind,
                certificate=device.certificate, version_id=None,
                outcome=DeployOutcome(
                    device.name, "refused" if code else "skipped", message, hint,
                    served_before=result.served_before, steps=result.steps,
                ),
                started=_now(), status=status,
            )
        return result

    async def decide(self, devices: Sequence[Device]) -> None:
        """Everything that can be refused without touching a device, decided for every
        device before the first change (plan decides the same way)."""
        from .decide import decide_all

        decided = await decide_all(devices, self.inventory, self.store, self.factory,
                                   self.options, on_event=self.on_event, targets=self.targets)
        self.decisions = {d.device.name: d for d in decided}
        if not self.options.dry_run and (self.options.skip_refused or not self.refused()):
            # Log in to and observe every device to be changed before the first change
            # on any of them: a wrong password, pin or host key, or a device that does
            # not answer, is then a refusal of the run, not a failure after others changed.
            # (When a device is refused already, the run changes nothing: no need.)
            await _rehearse_before_change(self.decisions, self.inventory, self.factory,
                                          self.limit)
        for decision in self.refused():
            device = decision.device
            event = StepEvent(device.name, "decide", "failed", decision.reason)
            if self.on_event is not None:
                self.on_event(event)
            self.early[device.name] = self.not_started(
                device, "refused", 2, f"{device.name}: {decision.reason} (nothing was changed)",
                decision.hint, decision.served, [event],
            )

    def refused(self) -> list[Decision]:
        return [d for d in self.decisions.values() if d.action == "refuse"]

    def change_nothing(self, devices: Sequence[Device]) -> list[DeviceResult]:
        """A device would refuse and the others may not go on: none is attempted."""
        names = ", ".join(d.device.name for d in self.refused())
        for device in devices:
            if device.name not in self.early:
                self.early[device.name] = self.not_started(
                    device, "not-attempted", 0,
                    f"{device.name}: not attempted: {names} would refuse, so the run "
                    "changes no device",
                    f"fix what {names} would refuse, or pass --skip-refused to certfleet "
                    "deploy to deploy the others",
                    self.decisions[device.name].served,
                )
        return [self.tell(self.early[device.name]) for device in devices]

    async def one(self, device: Device, semaphore: asyncio.Semaphore) -> DeviceResult:
        if device.name in self.early:
            return self.early[device.name]
        async with semaphore:
            if self.control.stopped:
                result = self.not_started(
                    device, "interrupted", 2,
                    f"{device.name}: not started: the run was interrupted (nothing was "
                    "changed)",
                )
            else:
                result = await _DeviceDeploy(self, device, self.decisions[device.name]).deploy()
        return self.tell(result)

    async def all_of(self, group: Sequence[Device],
                     semaphore: asyncio.Semaphore) -> list[DeviceResult]:
        tasks = [asyncio.ensure_future(self.one(d, semaphore)) for d in group]
        await self.control.wait(tasks)
        for task in tasks:  # every failure retrieved (none logged later by the GC)
            if task.done() and not task.cancelled():
                task.exception()
        return [t.result() for t in tasks]

    async def deploy(self, devices: Sequence[Device], canary: str | None) -> list[DeviceResult]:
        """The canary first (a failure there stops the run), then the others in parallel."""
        semaphore = asyncio.Semaphore(self.limit)
        results: dict[str, DeviceResult] = {}
        rest = list(devices)
        if canary is not None:
            first = next(d for d in devices if d.name == canary)
            results[first.name] = (await self.all_of([first], semaphore))[0]
            rest = [d for d in devices if d.name != canary]
            if results[first.name].exit_code != 0 and not self.control.stopped:
                for device in rest:
                    results[device.name] = self.early.get(device.name) or self.tell(
                        self.not_started(
                            device, "not-attempted", 0,
                            f"{device.name}: not attempted: the canary {canary!r} did not "
                            "succeed",
                        ))
                rest = []
        for result in await self.all_of(rest, semaphore):
            results[result.device] = result
        return [results[d.name] for d in devices]

    def finish(self, results: list[DeviceResult]) -> DeployReport:
        assert self.run_id is not None  # started before any device
        report = DeployReport(self.run_id, results, self.options.dry_run,
                              interrupted=self.control.stopped)
        self.store.finish_run(self.run_id, report.exit_code)
        if self.control.stopped:
            self.store.audit(self.options.command, "interrupted", detail=f"run {self.run_id}")
        return report


def _canary_checked(options: DeployOptions, devices: Sequence[Device],
                    inventory: Inventory) -> bool:
    """Whether ``--canary auto`` picks the canary; raises ConfigError for an unknown one."""
    canary = options.canary
    auto = canary == AUTO_CANARY and canary not in inventory.devices
    if canary is not None and not auto and not any(d.name == canary for d in devices):
        raise ConfigError(
            f"--canary {canary!r} is not among the devices to deploy",
            hint="name a device of the inventory (and of --only, when given)",
        )
    return auto


async def run_deploy(
    inventory: Inventory,
    store: Store,
    factory: DriverFactory,
    options: DeployOptions | None = None,
    *,
    on_event: EventCallback | None = None,
    on_result: Callable[[DeviceResult], None] | None = None,
    **settings: Unpack[DeploySettings],
) -> DeployReport:
    """Deploy to the selected devices. Raises ConfigError (selection), StateError (lock).

    ``options`` (or the same as keyword ``settings``): ``force`` redeploys where
    the target is served already (``--redeploy``); ``ignore_findings`` are the
    error codes to go past (``--ignore-finding``); see :class:`DeployOptions`.

    Device failures never raise: they are results.
    """
    if options is None:
        options = DeployOptions.of(settings)
    elif settings:
        raise TypeError("run_deploy takes the options or keyword settings, not both")
    devices = select_devices(inventory, options.only)
    auto_canary = _canary_checked(options, devices, inventory)
    limit = options.concurrency or inventory.concurrency
    if limit < 1:
        raise ConfigError(f"--concurrency {limit!r} must be at least 1", hint="use --concurrency 8")
    run = _Run(inventory, store, factory, options, limit, on_event, on_result,
               Targets(inventory, store))
    dry_run, command = options.dry_run, options.command
    if not dry_run:
        store.acquire_lock(command, break_lock=options.break_lock,
                           devices=[d.name for d in devices])
    try:
        if not dry_run:
            store.settle_interrupted()  # runs whose process died are recorded as such
        run.run_id = store.start_run(
            command + (" --dry-run" if dry_run else ""),
            inventory_path=str(inventory.path),
            inventory_text=inventory.text,
            options=options.recorded(limit),
        )
        await run.decide(devices)
        if run.refused() and not options.skip_refused:
            report = DeployReport(run.run_id, run.change_nothing(devices), dry_run)
            store.finish_run(run.run_id, report.exit_code)
            return report
        for result in run.early.values():
            run.tell(result)
        canary = options.canary
        if auto_canary:
            canary = choose_canary(
                [d for d in devices if run.decisions[d.name].action == "deploy"])
        return run.finish(await run.deploy(devices, canary))
    except BaseException:  # interrupted (Ctrl-C, cancelled): the run says so
        if run.run_id is not None:
            store.finish_run(run.run_id, 130)
            store.audit(command, "interrupted", detail=f"run {run.run_id}")
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


class _DeviceDeploy:
    """One device's deploy within a run: journal, backup written ahead, the driver's task."""

    def __init__(self, run: _Run, device: Device, decision: Decision | None = None) -> None:
        from .decide import left_unfinished

        self.run, self.device, self.decision = run, device, decision
        self.store = run.store
        self.loop = asyncio.get_running_loop()
        self.started_clock = self.loop.time()
        self.version, self.bundle, self.problem = run.targets.get(device.certificate)
        version = self.version
        self.result = DeviceResult(
            device.name, device.kind, device.certificate, "refused", 2, "",
            version_id=version.id if version else None,
            target_sha256=version.leaf_sha256 if version else None,
        )
        self.observed_before: dict[str, str | None] = {}
        self.journal_lost = False  # the journal's database went away (a shared store)
        dry_run = run.options.dry_run
        # A run that died midway is finished even where the new certificate is served.
        self.resume = not dry_run and left_unfinished(self.store, device.name)
        # The journal: the deployment is written now as in-progress, each step as
        # it happens, the backup before the first change (see the store).
        self.deployment_id = None if dry_run else self.store.begin_deployment(
            run_id=run.run_id, device=device.name, kind=device.kind,
            certificate=device.certificate, version_id=self.result.version_id,
            target_sha256=self.result.target_sha256, started=_now(),
        )

    def journal(self, event: StepEvent) -> None:
        if self.deployment_id is not None and not self.journal_lost:
            try:
                self.store.record_step(self.deployment_id, event)
            except StateError:
                # A failure like any other: after a change the device is put back;
                # the steps after it are not journalled (the run is left interrupted).
                self.journal_lost = True
                raise
        if self.run.on_event is not None:
            self.run.on_event(event)

    def emit(self, step: str, status: Any, detail: str = "") -> None:
        event = StepEvent(self.device.name, step, status, detail)
        self.result.steps.append(event)
        self.journal(event)

    async def persist_backup(self, backup: Backup) -> None:
        """Write-ahead: the backup is on disk (synced) and recorded before any change."""
        from .csr import key_passphrase
        from .store.backups import write_backup_files

        device = self.device
        passphrase = key_passphrase(self.run.inventory, device.certificate)
        served = next((v for v in self.observed_before.values() if v), None)
        directory = self.store.new_backup_dir(device.name)
        try:
            # Written off the event loop: other devices go on meanwhile.
            await asyncio.to_thread(write_backup_files, backup, directory, passphrase)
        except OSError as exc:
            raise StateError(
                f"cannot write the backup of {device.name} to {str(directory)!r}: "
                f"{exc.strerror or exc}",
                hint="free space in the state folder (or pass --state-dir); nothing was changed",
            ) from None
        record = self.store.register_backup(
            backup, directory, served_sha256=served, run_id=self.run.run_id,
            encrypted=bool(passphrase),
        )
        self.result.backup_id = record.id
        if self.deployment_id is not None:
            self.store.set_deployment_backup(self.deployment_id, record.id)

    async def finish(self, outcome: DeployOutcome | None = None) -> DeviceResult:
        result = self.result
        result.seconds = self.loop.time() - self.started_clock
        if self.run.options.dry_run:
            return result
        if outcome is None:
            outcome = DeployOutcome(
                self.device.name, result.status,  # type: ignore[arg-type]  # one of the outcomes
                result.message, result.hint,
                target_sha256=result.target_sha256, served_before=result.served_before,
                served_after=result.served_after, steps=result.steps,
            )
        if outcome.backup is not None and result.backup_id is None:
            # Taken but not written ahead (refused before any change): kept all the same.
            # What the inventory's listeners served before is what a rollback restores.
            with contextlib.suppress(CertfleetError):
                await self.persist_backup(outcome.backup)
        assert self.deployment_id is not None
        self.store.finish_deployment(self.deployment_id, outcome, backup_id=result.backup_id)
        result.deployment_id = self.deployment_id
        self.store.audit("deploy", result.status, device=self.device.name,
                         detail=result.message)
        return result

    def interrupted(self, where: str) -> None:
        self.emit(where, "failed", "interrupted")
        result = self.result
        result.status, result.exit_code = "interrupted", 2
        result.message = f"{self.device.name}: interrupted before any change (nothing was changed)"
        result.hint = "run 'certfleet deploy' again to finish the run"

    async def deploy(self) -> DeviceResult:
        """Observe, skip or install through the driver; every end recorded."""
        device, result, version = self.device, self.result, self.version
        if self.problem is not None or self.bundle is None or version is None:
            assert self.problem is not None
            self.emit("preflight", "failed", self.problem.message)
            result.message = f"{device.name}: {self.problem.message}"
            result.hint = self.problem.hint
            return await self.finish()
        if not await self.observe():
            return await self.finish()
        served = set(result.served_before.values())
        if served == {version.leaf_sha256} and not self.run.options.force and not self.resume:
            result.status, result.exit_code = "skipped", 0
            result.message = f"{device.name}: already serves v{version.number} on every listener"
            result.served_after = dict(result.served_before)
            return await self.finish()
        if self.run.options.dry_run:
            result.status, result.exit_code = "would-deploy", 0
            result.message = f"{device.name}: would install v{version.number}"
            return await self.finish()
        if self.run.control.stopped:
            self.interrupted("observe")
            return await self.finish()
        return await self.install(self.bundle)

    async def observe(self) -> bool:
        """What every listener serves now; False when interrupted meanwhile."""
        self.emit("observe", "start")
        try:
            # Observed by the run's decision (a handshake on every listener) when there is one.
            self.result.served_before = (
                self.decision.served if self.decision is not None
                else await _observe(self.device)
            )
        except asyncio.CancelledError:
            if not self.run.control.stopped:
                raise
            self.interrupted("observe")
            return False
        self.observed_before.update(self.result.served_before)
        served = set(self.result.served_before.values())
        self.emit("observe", "ok", f"{sum(1 for v in served if v)} certificate(s) served")
        return True

    def driver(self, bundle: Bundle) -> tuple[list[Finding], Driver]:
        """The decision's driver (its steps go to the journal now), or one built here."""
        decision = self.decision
        if decision is not None and decision.driver is not None:
            findings, driver = list(decision.findings), decision.driver
            driver.on_event = self.journal
        else:
            findings = device_findings(bundle, self.device, self.run.inventory)
            driver = self.run.factory(self.device, self.run.inventory, self.journal)
        driver.on_backup = self.persist_backup
        return findings, driver

    async def install(self, bundle: Bundle) -> DeviceResult:
        device, result, control = self.device, self.result, self.run.control
        try:
            findings, driver = self.driver(bundle)
        except CertfleetError as exc:
            self.emit("preflight", "failed", exc.message)
            result.message = f"{device.name}: {exc.message}"
            result.hint = exc.hint
            return await self.finish()
        # The driver runs as a task of its own: an interrupt cancels it (its template
        # rolls back what it changed) while this device's recording still happens.
        task = asyncio.ensure_future(
            # Past preflight errors only where the decision let every one be ignored.
            driver.deploy(bundle, findings,
                          force=bool(self.decision is not None and self.decision.ignored),
                          allow_no_rollback=self.run.options.allow_no_rollback)
        )
        control.in_flight.add(task)
        try:
            outcome = await task
        except asyncio.CancelledError:
            if not task.cancelled():
                task.cancel()
                raise
            # Cancelled before its first change: the template let the cancellation through.
            self.interrupted(driver._steps[-1].step if driver._steps else "connect")
            result.steps = [*result.steps, *driver._steps]
            return await self.finish()
        except Exception as exc:
            self.emit("deploy", "failed", f"{type(exc).__name__}: {exc}")
            result.status, result.exit_code = "failed", 3
            result.message = (
                f"{device.name}: unexpected {type(exc).__name__} during the deploy; "
                "the device state is unknown"
            )
            result.hint = "run 'certfleet verify' and 'certfleet rollback DEVICE' if needed"
            return await self.finish()
        finally:
            control.in_flight.discard(task)
        return await self.finish(self.settled(outcome))

    def settled(self, outcome: DeployOutcome) -> DeployOutcome:
        """The result as the driver's outcome says; the outcome with the whole journal."""
        result = self.result
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
        return outcome
