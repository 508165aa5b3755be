"""What a deploy will do on each device, decided before any device is changed.

``certfleet plan`` and ``certfleet deploy`` both call :func:`decide_all`, so
they never disagree. For every selected device it settles, without touching
it: the version to install (and its key: the key passphrase), what every
listener serves now (a handshake; a listener that does not answer makes the
device ``unreachable``), whether it is served already (skip), the toolkit's
preflight checks for the device's names, the driver and its secrets, and
whether a rollback will be possible. A device that would be refused is
known before the first change of the run: by default the run then changes
nothing (``--skip-refused`` deploys the others).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..drivers.tlsprobe import ProbeResult, probe
from ..errors import CertfleetError
from ..inventory import Device, Inventory

if TYPE_CHECKING:
    from ..credentials import Credentials
    from ..drivers.base import Driver, EventCallback
    from .deploy import DriverFactory
    from .store import Store, VersionRecord

__all__ = ["Decision", "decide_all", "decide_device", "placeholder_secrets", "unreachable_reason"]


@dataclass
class Decision:
    """One device's decision: ``deploy``, ``skip`` or ``refuse`` (with the reason)."""

    device: Device
    action: str = "deploy"
    reason: str = ""
    hint: str | None = None
    results: list[ProbeResult] = field(default_factory=list)
    version: VersionRecord | None = None
    bundle: Any = None
    findings: list[Any] = field(default_factory=list)
    rollback: bool = False
    rollback_reason: str = ""
    unreachable: str | None = None
    driver: Driver | None = None

    @property
    def served(self) -> dict[str, str | None]:
        return {str(r.listener): r.sha256 for r in self.results}

    def refuse(self, reason: str, hint: str | None = None) -> Decision:
        self.action, self.reason, self.hint = "refuse", reason, hint
        return self


def unreachable_reason(results: Sequence[ProbeResult]) -> str | None:
    """``"LISTENER: error; ..."`` for the listeners that did not answer, None when all did."""
    down = [r for r in results if r.certificate is None]
    if not down:
        return None
    return "; ".join(f"{r.listener}: {r.error or 'no answer'}" for r in down)


def placeholder_secrets(devices: Sequence[Device]) -> Credentials:
    """The credentials of a plan: every secret resolved, ``prompt`` left blank (asks nothing)."""
    from ..credentials import Credentials

    return Credentials.resolve(devices, ask=False)


def _rollback_rule(kind_name: str) -> tuple[bool, str]:
    """Whether a driver of ``kind_name`` needs a stored key to roll back; else why it can."""
    from ..drivers.registry import get_kind

    try:
        kind = get_kind(kind_name)
    except CertfleetError:  # a driver of no registered kind backs up what it changes
        return False, "the driver backs up what it changes, key included"
    return kind.rollback_needs_key, kind.rollback_note


async def decide_device(
    device: Device,
    inventory: Inventory,
    store: Store,
    targets: Any,
    factory: DriverFactory,
    *,
    force: bool = False,
    allow_no_rollback: bool = False,
    on_event: EventCallback | None = None,
) -> Decision:
    """Decide for ``device`` (see the module docstring). Never raises CertfleetError."""
    from .deploy import device_findings
    from .plan import rollback_possible

    decision = Decision(device)
    version, bundle, problem = targets.get(device.certificate)
    decision.version, decision.bundle = version, bundle
    decision.results = list(await probe(device.listeners, timeout=10.0))
    decision.rollback, decision.rollback_reason = rollback_possible(
        device, store, [r.certificate for r in decision.results]
    )
    if problem is not None or version is None:
        message = problem.message if problem is not None else "no version imported"
        return decision.refuse(message, problem.hint if problem is not None else None)
    decision.unreachable = unreachable_reason(decision.results)
    if decision.unreachable is not None:
        return decision.refuse(
            f"unreachable: {decision.unreachable}",
            "start the device or fix its address and port in the inventory; "
            "'certfleet status' shows every listener",
        )
    if set(decision.served.values()) == {version.leaf_sha256} and not force:
        decision.action = "skip"
        decision.reason = f"every listener already serves v{version.number}"
        return decision
    try:
        decision.findings = device_findings(bundle, device, inventory)
    except CertfleetError as exc:
        return decision.refuse(f"preflight: {exc.message}", exc.hint)
    errors = [f for f in decision.findings if f.severity == "error"]
    if errors and not force:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return decision.refuse(f"preflight refused the files: {errors[0].message}{more}",
                               errors[0].hint or "fix the files, or pass --force")
    try:
        decision.driver = factory(device, inventory, on_event)
    except CertfleetError as exc:  # secrets, profile, CA file, menu
        return decision.refuse(exc.message, exc.hint)
    needs_key, note = _rollback_rule(decision.driver.kind)
    if needs_key and not decision.rollback and not allow_no_rollback:
        return decision.refuse(
            f"no rollback possible: {decision.rollback_reason}",
            "import the certificate it serves now with its key first, or pass "
            "--allow-no-rollback to deploy without a way back",
        )
    if not needs_key:
        decision.rollback = True
        decision.rollback_reason = note
    behind = sum(1 for sha in decision.served.values() if sha != version.leaf_sha256)
    decision.reason = f"{behind}/{len(decision.results)} listener(s) do not serve v{version.number}"
    return decision


async def decide_all(
    devices: Sequence[Device],
    inventory: Inventory,
    store: Store,
    factory: DriverFactory | None = None,
    *,
    force: bool = False,
    allow_no_rollback: bool = False,
    on_event: EventCallback | None = None,
    targets: Any = None,
    credentials: Credentials | None = None,
) -> list[Decision]:
    """Decide for every device, concurrently; in the order of ``devices``.

    Without ``factory``, drivers are built with ``credentials`` (by default a
    plan's: :func:`placeholder_secrets`); callers resolve them before the loop."""
    from .deploy import _Targets
    from .devices import make_factory

    if factory is None:
        factory = make_factory(store, credentials or placeholder_secrets(devices))
    targets = targets or _Targets(inventory, store)
    return list(await asyncio.gather(*(
        decide_device(device, inventory, store, targets, factory, force=force,
                      allow_no_rollback=allow_no_rollback, on_event=on_event)
        for device in devices
    )))
