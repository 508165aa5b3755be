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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..drivers.registry import DriverKind, find_kind
from ..drivers.tlsprobe import ProbeResult, probe
from ..errors import CertfleetError
from ..inventory import Device, Inventory
from .options import DeployOptions
from .targets import DriverFactory, Targets, device_findings, rollback_possible

if TYPE_CHECKING:
    from ..credentials import Credentials
    from ..drivers.base import Driver, EventCallback
    from .store import Store, VersionRecord

_DEFAULTS = DeployOptions()

__all__ = [
    "Decision",
    "decide_all",
    "decide_device",
    "left_unfinished",
    "placeholder_secrets",
    "unreachable_reason",
]


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
    #: The error codes passed by ``--ignore-finding`` (the driver is then told to go past them).
    ignored: list[str] = field(default_factory=list)

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


def left_unfinished(store: Store, device: str) -> bool:
    """Whether the last deployment to ``device`` stopped midway (its process died).

    Serving the new certificate does not finish such a run: the device may not
    have saved it yet (an SBC's flash still holds the old one, a restart brings
    it back), so the deploy installs again instead of skipping.
    """
    last = store.deployments(device=device, limit=1)
    return bool(last) and last[0]["outcome"] in ("interrupted", "in-progress")


async def decide_device(
    device: Device,
    inventory: Inventory,
    store: Store,
    targets: Targets,
    factory: DriverFactory,
    options: DeployOptions = _DEFAULTS,
    *,
    on_event: EventCallback | None = None,
) -> Decision:
    """Decide for ``device`` (see the module docstring). Never raises CertfleetError.

    ``options.force`` redeploys where every listener serves the target already;
    ``options.ignore_findings`` names error codes to go past, when the profile
    lets them be ignored (see :func:`certfleet.pki.profiles.not_overridable`).
    """
    force, allow_no_rollback = options.force, options.allow_no_rollback
    ignore_findings = options.ignore_findings

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
    if (set(decision.served.values()) == {version.leaf_sha256} and not force
            and not left_unfinished(store, device.name)):
        decision.action = "skip"
        decision.reason = f"every listener already serves v{version.number}"
        return decision
    try:
        decision.findings = device_findings(bundle, device, inventory)
    except CertfleetError as exc:
        return decision.refuse(f"preflight: {exc.message}", exc.hint)
    device_kind = find_kind(device.kind)
    # The codes the device's kind declares errors for it, which cannot be ignored.
    own = device_kind.blocking_findings if device_kind is not None else {}
    if _refuse_errors(decision, decision.findings, ignore_findings, own):
        return decision
    try:
        decision.driver = factory(device, inventory, on_event)
    except CertfleetError as exc:  # secrets, profile, CA file, menu
        return decision.refuse(exc.message, exc.hint)
    try:  # the profile's own checks: key, root, OVOC's keystore password
        profile_findings = list(decision.driver.preflight(bundle))
    except Exception as exc:  # a defect in a driver's checks: refused, nothing touched
        return decision.refuse(f"preflight failed: {type(exc).__name__}: {exc}",
                               "this is a defect of certfleet: please report it")
    deferred = decision.driver.deferred_findings()  # a plan's stand-in: asked at run time
    profile_findings = [f for f in profile_findings if f.code not in deferred]
    if _refuse_errors(decision, profile_findings, ignore_findings, own):
        return decision
    if not _way_back(decision, allow_no_rollback):
        return decision
    behind = sum(1 for sha in decision.served.values() if sha != version.leaf_sha256)
    decision.reason = f"{behind}/{len(decision.results)} listener(s) do not serve v{version.number}"
    return decision


def _way_back(decision: Decision, allow_no_rollback: bool) -> bool:
    """Whether a rollback will be possible, as the driver's kind says; False: refused."""
    assert decision.driver is not None
    device = decision.device
    kind = find_kind(decision.driver.kind)
    # A driver of no registered kind backs up what it changes.
    if kind is None or not kind.rollback_needs_key:
        decision.rollback = True
        decision.rollback_reason = (kind.rollback_note if kind is not None
                                    else DriverKind.rollback_note)
        return True
    _rollback_from_driver(decision, kind)
    if not decision.rollback and not allow_no_rollback:
        decision.refuse(
            f"no rollback possible: {decision.rollback_reason}",
            f"adopt what it serves now with its key first ('certfleet adopt "
            f"{device.certificate} FILE' with last year's pfx), or pass "
            "'certfleet deploy --previous-key FILE' for this run, or "
            "'certfleet deploy --allow-no-rollback' to deploy without a way back",
        )
        return False
    return True


def _rollback_from_driver(decision: Decision, kind: DriverKind) -> None:
    """Rollback possible when the driver holds the key of every certificate served now.

    The driver's keys are what a restore will use: the stored keys of every
    certificate (whatever name they were imported or adopted under) and
    ``deploy --previous-key``. Deciding from them keeps plan, deploy and the
    driver's own check in agreement.
    """
    from ..pki.model import spki_sha256

    keys = decision.driver.rollback_keys() if decision.driver is not None else None
    certs = [r.certificate for r in decision.results if r.certificate is not None]
    if keys is None or not certs:
        return
    known = {spki_sha256(key) for key in keys}
    if all(spki_sha256(cert) in known for cert in certs):
        decision.rollback = True
        decision.rollback_reason = "the key of the certificate served now is known"
    else:
        decision.rollback = False
        decision.rollback_reason = (
            f"{kind.rollback_key_note} and the key of the certificate it "
            "serves now is not in the store"
        )


def _refuse_errors(
    decision: Decision, findings: Sequence[Any], ignore: Collection[str],
    own: Mapping[str, str],
) -> bool:
    """Refuse ``decision`` for the first error finding not ignored (or not ignorable)."""
    from ..pki.profiles import not_overridable

    errors = [f for f in findings if f.severity == "error"]
    blocking = [f for f in errors if f.code not in ignore or not_overridable(f.code, own)]
    if not blocking:
        decision.ignored += [f.code for f in errors if f.code not in decision.ignored]
        return False
    first = blocking[0]
    more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
    why = not_overridable(first.code, own)
    if first.code in ignore and why is not None:
        decision.refuse(f"preflight refused the files: {first.message}{more}; "
                        f"{first.code} cannot be ignored: {why}", first.hint or "fix the files")
        return True
    hint = first.hint or "fix the files"
    if why is None:
        hint += (f"; or pass --ignore-finding {first.code} to certfleet deploy (and plan) "
                 "to deploy anyway")
    decision.refuse(f"preflight refused the files: {first.message}{more} [{first.code}]", hint)
    return True


async def decide_all(
    devices: Sequence[Device],
    inventory: Inventory,
    store: Store,
    factory: DriverFactory | None = None,
    options: DeployOptions = _DEFAULTS,
    *,
    on_event: EventCallback | None = None,
    targets: Targets | None = None,
    credentials: Credentials | None = None,
) -> list[Decision]:
    """Decide for every device, concurrently; in the order of ``devices``.

    Without ``factory``, drivers are built with ``credentials`` (by default a
    plan's: :func:`placeholder_secrets`); callers resolve them before the loop."""
    from .devices import make_factory

    if factory is None:
        factory = make_factory(store, credentials or placeholder_secrets(devices))
    targets = targets or Targets(inventory, store)
    return list(await asyncio.gather(*(
        decide_device(device, inventory, store, targets, factory, options, on_event=on_event)
        for device in devices
    )))
