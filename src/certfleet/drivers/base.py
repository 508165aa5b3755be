"""The contract every device driver implements, and the deploy lifecycle.

Modelled on certbot's Installer: a template (:meth:`Driver.deploy`) owns the
order preflight → connect → observe → backup → install → verify → (rollback);
a concrete driver implements a few small hooks. Outcomes map to the exit
codes of every ``deploy`` command:

==  ==========  ===============================================================
0   installed   the new certificate is installed and every listener serves it
1   restored    it failed; the previous certificate is back and verified
2   refused     bad input or refused before any change on the device
3   failed      it failed and the previous state is NOT restored (see message)
==  ==========  ===============================================================
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from ..errors import (
    CertfleetError,
    InputError,
    PreflightError,
    RollbackError,
    VerificationError,
)
from ..pki.model import Bundle, Finding, PrivateKey
from .tlsprobe import Listener, ProbeResult, probe, wait_for_served

__all__ = [
    "EXIT_CODES",
    "Backup",
    "DeployOutcome",
    "Driver",
    "EventCallback",
    "Outcome",
    "Rehearsal",
    "RollbackCutShort",
    "StepEvent",
    "describe_exception",
    "wait_for_previous",
]

Outcome = Literal["installed", "restored", "refused", "failed", "skipped", "interrupted"]
EXIT_CODES: dict[str, int] = {
    "installed": 0,
    "skipped": 0,
    "restored": 1,
    "refused": 2,
    "interrupted": 2,  # stopped (Ctrl-C, SIGTERM) before any change: untouched
    "failed": 3,
}


async def wait_for_previous(
    previous: Mapping[Listener, str | None], wait: float
) -> list[ProbeResult]:
    """Wait until each listener serves its own ``previous`` certificate (grouped by
    fingerprint; listeners that served nothing are not checked), in their order.
    Raises VerificationError."""
    groups: dict[str, list[Listener]] = {}
    for listener, sha in previous.items():
        if sha:
            groups.setdefault(sha, []).append(listener)
    results: dict[Listener, ProbeResult] = {}
    for sha, group in groups.items():
        for result in await wait_for_served(group, sha, wait):
            results[result.listener] = result
    return [results[listener] for listener in previous if listener in results]


@dataclass(frozen=True)
class StepEvent:
    """One step of a device operation, for live progress and the audit store."""

    device: str
    step: str  # preflight, connect, observe, backup, install, verify, rollback...
    status: Literal["start", "ok", "failed", "skipped"]
    detail: str = ""
    at: float = field(default_factory=time.time)


EventCallback = Callable[[StepEvent], None]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Rehearsal:
    """What a driver's rehearsal of a deploy found (``certfleet probe``, ``deploy``).

    ``checks``: each as ``{"name", "ok", "detail", "fix"}``; ``transcript``: the
    session's, secrets scrubbed, when the driver keeps one.
    """

    ready: bool
    reason: str
    fix: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    transcript: str | None = None


class RollbackCutShort(Exception):
    """A rollback stopped by its bound after an interrupt, or interrupted again.

    ``grace`` is the bound in seconds; ``again`` says the second case.
    """

    def __init__(self, grace: float, again: bool) -> None:
        super().__init__("interrupted again" if again else f"not done within {grace:g}s")
        self.grace = grace
        self.again = again


#: The manifest of a backup folder; a device file of that name is never part of a backup.
BACKUP_MANIFEST = "backup.json"


@dataclass
class Backup:
    """What a driver saved before changing a device.

    ``files`` maps a file name to its bytes (staged files, INI, certificates);
    ``meta`` holds JSON-serialisable facts (contexts, served fingerprints).
    ``has_private_key`` says whether the backup can restore the previous key.
    """

    device: str
    kind: str
    files: dict[str, bytes] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    has_private_key: bool = False

    def write_to(self, directory: Path) -> Path:
        """Write the backup into ``directory`` (created, files 0600 where supported)."""
        from ..fsutil import write_private_file

        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            write_private_file(directory / name, data)
        write_private_file(directory / BACKUP_MANIFEST,
                           json.dumps(self.manifest(), indent=2).encode())
        return directory

    def manifest(self) -> dict[str, Any]:
        """What ``backup.json`` says of the backup: all but the bytes of its files."""
        return {
            "device": self.device,
            "kind": self.kind,
            "created": self.created,
            "has_private_key": self.has_private_key,
            "files": sorted(self.files),
            "meta": self.meta,
        }

    @classmethod
    def read_from(cls, directory: Path) -> Backup:
        manifest = json.loads((directory / BACKUP_MANIFEST).read_text())
        files = {name: (directory / name).read_bytes() for name in manifest["files"]}
        return cls.from_manifest(manifest, files)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], files: dict[str, bytes]) -> Backup:
        """The backup a ``backup.json`` manifest describes, with the bytes of its files."""
        return cls(
            device=manifest["device"],
            kind=manifest["kind"],
            files=files,
            meta=manifest.get("meta", {}),
            created=manifest["created"],
            has_private_key=bool(manifest.get("has_private_key")),
        )


@dataclass
class DeployOutcome:
    """The result of one device's deploy; ``exit_code`` follows the table above."""

    device: str
    outcome: Outcome
    message: str
    hint: str | None = None
    target_sha256: str | None = None
    served_before: dict[str, str | None] = field(default_factory=dict)
    served_after: dict[str, str | None] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    steps: list[StepEvent] = field(default_factory=list)
    backup: Backup | None = None
    transcript: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
            "hint": self.hint,
            "target_sha256": self.target_sha256,
            "served_before": self.served_before,
            "served_after": self.served_after,
            "findings": [f.to_dict() for f in self.findings],
            "steps": [
                {"step": s.step, "status": s.status, "detail": s.detail, "at": s.at}
                for s in self.steps
            ],
        }


class Driver(abc.ABC):
    """Base class of device drivers. Subclasses implement the hooks below.

    Hooks raise :class:`~certfleet.errors.CertfleetError` subclasses; the
    template turns them into a :class:`DeployOutcome` and never lets a device
    stay half-done silently.
    """

    kind: ClassVar[str] = "device"
    #: Called with the backup after it is taken and before the first change
    #: (the estate writes it to disk there); raising refuses the deploy.
    on_backup: Callable[[Backup], Awaitable[None]] | None = None

    def __init__(
        self,
        name: str,
        listeners: Sequence[Listener],
        *,
        on_event: EventCallback | None = None,
        verify_timeout: float = 600.0,
    ) -> None:
        self.name = name
        self.listeners = list(listeners)
        self.verify_timeout = verify_timeout
        self.on_event = on_event
        self._steps: list[StepEvent] = []
        # Seconds a rollback may take after a cancellation (Ctrl-C, SIGTERM).
        self.interrupt_grace = 120.0
        # Deploy without any listener to verify (the caller said --no-verify).
        self.allow_unverified = False
        self.no_listener_hint = "name at least one TLS listener of the device to verify"

    # ---- hooks -----------------------------------------------------------

    def preflight(self, bundle: Bundle) -> list[Finding]:
        """Device-specific findings on top of the toolkit's checks (pure)."""
        return []

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the management session. Raises DeviceError subclasses."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the session; must not raise."""

    @abc.abstractmethod
    async def backup(self) -> Backup:
        """Save what the install will change. Raises DeviceError subclasses."""

    @abc.abstractmethod
    async def install(self, bundle: Bundle) -> None:
        """Install ``bundle``. Raises DeviceRefusedError / DeviceError."""

    @abc.abstractmethod
    async def restore(self, backup: Backup) -> None:
        """Put ``backup`` back. Raises DeviceError / RollbackError."""

    def can_restore(self, backup: Backup) -> bool:
        """Whether ``backup`` is enough to restore the previous state."""
        return True

    def rollback_keys(self) -> Sequence[PrivateKey] | None:
        """The private keys a restore may put back, for a device that never returns its own.

        For a kind with ``rollback_needs_key``: the stored keys of the
        certificate and ``deploy --previous-key``; a rollback is possible when
        the key of every certificate served now is among them. None (the
        default): the backup holds what a restore needs.
        """
        return None

    def deferred_findings(self) -> frozenset[str]:
        """Codes of :meth:`preflight` findings that stand for a secret not asked yet.

        A plan leaves ``prompt`` secrets unasked; a finding on such a secret is
        not held against the device then (the deploy that asks checks it).
        """
        return frozenset()

    async def rehearsal(self, hosts: Sequence[str], *,
                        allow_no_rollback: bool = False) -> Rehearsal | None:
        """Rehearse a deploy up to the first change, then back out; None: no rehearsal.

        Never raises a CertfleetError (a failed check says); closes the session.
        """
        return None

    def transcript(self) -> str | None:
        """A password-free transcript of the session, when the driver keeps one."""
        return None

    def assume_changed(self) -> None:
        """Treat the device as changed by this session, so that restore() puts a backup from an earlier run back."""  # noqa: E501  # the contract's wording, kept on one line
        return None

    # ---- lifecycle ---------------------------------------------------------

    def emit(
        self, step: str, status: Literal["start", "ok", "failed", "skipped"], detail: str = ""
    ) -> None:
        event = StepEvent(self.name, step, status, detail)
        self._steps.append(event)
        if self.on_event is not None:
            self.on_event(event)

    async def observe(self) -> list[ProbeResult]:
        """What every listener serves now."""
        return await probe(self.listeners)

    async def verify(self, expected_sha256: str, timeout: float | None = None) -> list[ProbeResult]:
        """Wait until every listener serves ``expected_sha256``. Raises VerificationError."""
        return await wait_for_served(
            self.listeners, expected_sha256, self.verify_timeout if timeout is None else timeout
        )

    async def verify_restored(self, before: Sequence[ProbeResult]) -> list[ProbeResult]:
        """After a restore: wait until every listener serves what *it* served before.

        Each listener is checked against its own previous certificate (grouped
        by fingerprint). Listeners that served nothing before are not checked;
        raises VerificationError when no listener can be checked at all.
        """
        if not any(result.sha256 for result in before):
            raise VerificationError(
                "no listener served a certificate before the deploy: the restore cannot be "
                "verified by handshake",
                hint="check the device by hand ('certfleet status' shows what it serves)",
                device=self.name,
            )
        # The previous certificate is back at once on a healthy device: a verify
        # timeout set short to fail fast on the new one must not fail the rollback.
        return await wait_for_previous({r.listener: r.sha256 for r in before},
                                       max(self.verify_timeout, 5.0))

    def extra_listeners(self, backup: Backup) -> list[Listener]:
        """Listeners the change will touch beyond the given ones (e.g. the management port)."""
        return []

    async def deploy(
        self,
        bundle: Bundle,
        findings: Sequence[Finding] = (),
        *,
        force: bool = False,
        allow_no_rollback: bool = False,
    ) -> DeployOutcome:
        """Install ``bundle`` with backup, verification and automatic rollback.

        ``findings`` are the toolkit's preflight results for ``bundle``; any
        error among them (or in :meth:`preflight`) refuses the deploy unless
        ``force`` is set. Never raises CertfleetError: the outcome says.

        After the first change, *any* exception leads to the rollback path,
        cancellation included (Ctrl-C, SIGTERM, ``asyncio.CancelledError``, a
        timeout): the outcome is then ``restored`` or ``failed``, and a
        cancelled deploy returns it instead of raising (the rollback gets
        :attr:`interrupt_grace` seconds). Before the first change an unexpected
        exception is a refusal; a cancellation then propagates.

        A driver adapts the template through :meth:`_begin_deploy` and
        :meth:`_settle`, not by overriding this method.
        """
        self._begin_deploy()
        return self._settle(await self._deploy(bundle, findings, force, allow_no_rollback))

    def _begin_deploy(self) -> None:
        """Forget what an earlier deploy through this driver left behind (called first)."""
        return

    def _settle(self, outcome: DeployOutcome) -> DeployOutcome:
        """The outcome in the device's own words (called last; as it is by default)."""
        return outcome

    async def _deploy(self, bundle: Bundle, findings: Sequence[Finding], force: bool,
                      allow_no_rollback: bool) -> DeployOutcome:
        outcome = DeployOutcome(self.name, "refused", "", target_sha256=bundle.leaf_sha256)
        outcome.steps = self._steps
        if not self._preflight_step(bundle, findings, force, outcome):
            return outcome
        work = _Session()
        try:
            await self._connect_and_backup(outcome, work)
            if not self._may_change(outcome, work, allow_no_rollback):
                return outcome
            assert work.backup is not None
            if self.on_backup is not None:
                await self.on_backup(work.backup)
            self.emit("install", "start")
            work.changed = True
            await self.install(bundle)
            self.emit("install", "ok")
            return await self._verify_step(bundle.leaf_sha256, outcome)
        except CertfleetError as exc:
            failed_step = self._steps[-1].step if self._steps else "?"
            self.emit(failed_step, "failed", exc.message)
            if not work.changed:
                outcome.outcome = "refused"
                outcome.message = f"{self.name}: {exc.message} (nothing was changed)"
                outcome.hint = exc.hint
                return outcome
            return await self._rollback(outcome, work.backup, work.before, exc.message, exc.hint)
        except BaseException as exc:  # a bug, an OS error, a timeout, Ctrl-C, a cancellation
            failed_step = self._steps[-1].step if self._steps else "?"
            what = describe_exception(exc)
            self.emit(failed_step, "failed", what)
            cancelled = not isinstance(exc, Exception)
            if not work.changed:
                if cancelled:
                    raise
                outcome.outcome = "refused"
                outcome.message = f"{self.name}: {what} (nothing was changed)"
                outcome.hint = "this is a defect of certfleet or the device: please report it"
                return outcome
            # After a cancellation the rollback gets interrupt_grace seconds, no more.
            grace = self.interrupt_grace if cancelled else None
            return await self._rollback(outcome, work.backup, work.before, what, None,
                                        grace=grace)
        finally:
            outcome.transcript = self.transcript()
            await self.close()

    def _preflight_step(self, bundle: Bundle, findings: Sequence[Finding], force: bool,
                        outcome: DeployOutcome) -> bool:
        """The toolkit's and the driver's findings; False (refused, said) on an error."""
        try:
            all_findings = [*findings, *self.preflight(bundle)]
        except Exception as exc:  # a defect in a driver's checks: nothing was touched
            self.emit("preflight", "failed", describe_exception(exc))
            outcome.message = f"{self.name}: {describe_exception(exc)} (nothing was changed)"
            outcome.hint = "this is a defect of certfleet: please report it"
            return False
        outcome.findings = all_findings
        errors = [f for f in all_findings if f.severity == "error"]
        self.emit("preflight", "start")
        if errors and not force:
            self.emit("preflight", "failed", ", ".join(f.code for f in errors))
            outcome.message = f"preflight refused the files: {errors[0].message}" + (
                f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            )
            outcome.hint = errors[0].hint or None
            return False
        self.emit("preflight", "ok", "forced past errors" if errors else "")
        return True

    async def _connect_and_backup(self, outcome: DeployOutcome, work: _Session) -> None:
        """Connect, observe every listener (and those the change will touch), back up."""
        self.emit("connect", "start")
        await self.connect()
        self.emit("connect", "ok")
        self.emit("observe", "start")
        work.before = list(await self.observe())
        outcome.served_before = {str(r.listener): r.sha256 for r in work.before}
        self.emit("observe", "ok")
        self.emit("backup", "start")
        backup = work.backup = outcome.backup = await self.backup()
        known = {(item.host, item.port) for item in self.listeners}
        extra = [
            item for item in self.extra_listeners(backup) if (item.host, item.port) not in known
        ] if not self.allow_unverified else []
        if extra:
            self.listeners.extend(extra)
            extra_before = await probe(extra)
            work.before.extend(extra_before)
            outcome.served_before.update({str(r.listener): r.sha256 for r in extra_before})
        # Per listener, what it served: what a later rollback is verified against.
        backup.meta.setdefault(
            "listeners_served", {str(r.listener): r.sha256 for r in work.before}
        )
        self.emit("backup", "ok", f"{len(backup.files)} file(s)")

    def _may_change(self, outcome: DeployOutcome, work: _Session,
                    allow_no_rollback: bool) -> bool:
        """Whether the device may be changed: a way back, and a listener to verify on."""
        assert work.backup is not None
        if not self.can_restore(work.backup) and not allow_no_rollback:
            outcome.message = (
                f"{self.name}: no rollback is possible (the device never returns its "
                "private key and no previous key is known)"
            )
            outcome.hint = ("rerun certfleet deploy with --allow-no-rollback to deploy "
                            "without a way back")
            self.emit("backup", "failed", "no rollback possible")
            return False
        if not self.listeners and not self.allow_unverified:
            self.emit("verify", "failed", "no listener to verify")
            outcome.message = (
                f"{self.name}: no TLS listener to verify the new certificate on "
                "(nothing was changed)"
            )
            outcome.hint = self.no_listener_hint
            return False
        return True

    async def _verify_step(self, target: str, outcome: DeployOutcome) -> DeployOutcome:
        self.emit("verify", "start")
        after = await self.verify(target)  # with no listener: the driver's own checks
        outcome.outcome = "installed"
        if not self.listeners:
            outcome.message = (
                f"{self.name}: installed, NOT verified (no listener was checked by handshake)"
            )
            outcome.hint = "check what it serves with a handshake of your own"
            self.emit("verify", "skipped", "not verified: no listener to check")
            return outcome
        outcome.served_after = {str(r.listener): r.sha256 for r in after}
        self.emit("verify", "ok")
        outcome.message = (
            f"{self.name}: installed and verified by handshake on {len(after)} listener(s)"
        )
        return outcome

    async def rollback(self, backup: Backup, verify: Callable[[], Awaitable[_T]], *,
                       detail: str = "", grace: float | None = None) -> _T:
        """Restore ``backup``, then ``verify()`` it: the one way back, for a failed deploy
        and for ``certfleet rollback``.

        Once begun, an interrupt (Ctrl-C, SIGTERM, a cancellation) does not stop
        it half-way: it then gets :attr:`interrupt_grace` seconds to finish
        (``grace`` bounds it from the start). Raises RollbackCutShort past that
        bound or when interrupted again, and whatever the restore or ``verify``
        raise (a CancelledError that was not an interrupt of this rollback).
        """
        self.emit("rollback", "start", detail)
        work = asyncio.ensure_future(self._restore_then(backup, verify))
        try:
            if grace is not None:
                return await asyncio.wait_for(work, grace)
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                if work.done():
                    raise
                self.emit("rollback", "start", "interrupted: finishing the rollback")
                current = asyncio.current_task()
                if current is not None:
                    # Taken: without this, the next await would be cancelled at once.
                    current.uncancel()
                grace = self.interrupt_grace
                return await asyncio.wait_for(work, grace)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if not work.done():
                work.cancel()
            # Its end (cancelled, or a RollbackError) is reported here, not by asyncio's logger.
            work.add_done_callback(lambda done: done.cancelled() or done.exception())
            if grace is None or (isinstance(exc, TimeoutError) and work.done()
                                 and not work.cancelled()):
                raise  # the timeout came from inside the restore, not from the bound
            raise RollbackCutShort(grace, again=not isinstance(exc, TimeoutError)) from exc

    async def _restore_then(self, backup: Backup, verify: Callable[[], Awaitable[_T]]) -> _T:
        try:
            await self.restore(backup)
        except (KeyboardInterrupt, SystemExit) as exc:  # would stop the event loop itself
            raise RollbackError(f"the restore was {describe_exception(exc)}") from exc
        self.emit("rollback", "ok")
        return await verify()

    async def _verify_previous(self, before: Sequence[ProbeResult]) -> list[ProbeResult]:
        self.emit("verify", "start", "the previous certificates")
        after = await self.verify_restored(before)
        self.emit("verify", "ok", f"{len(after)} listener(s) serve their previous certificate")
        return after

    async def _rollback(
        self,
        outcome: DeployOutcome,
        backup: Backup | None,
        before: Sequence[ProbeResult],
        cause: str,
        cause_hint: str | None,
        *,
        grace: float | None = None,
    ) -> DeployOutcome:
        """A failed deploy's way back: :meth:`rollback`, then the outcome says how it went.

        Past the bound of an interrupted rollback the outcome is ``failed``.
        """
        outcome.outcome = "failed"
        first = f"{self.name}: {cause}"
        if backup is None or not self.can_restore(backup):
            outcome.message = f"{first}; no backup to restore"
            outcome.hint = "restore the previous certificate by hand; " + (cause_hint or "")
            return outcome
        try:
            after = await self.rollback(backup, lambda: self._verify_previous(before),
                                        detail=cause, grace=grace)
        except RollbackCutShort as cut:
            why = ("interrupted again" if cut.again
                   else f"not done within {cut.grace:g}s of the interrupt")
            self.emit("rollback", "failed", why)
            outcome.message = (
                f"{first}; the rollback was {why}: the device may be changed" if cut.again else
                f"{first}; the rollback did not finish within {cut.grace:g}s of the interrupt: "
                "the device may be changed"
            )
            outcome.hint = "run 'certfleet rollback DEVICE' or 'certfleet deploy' to finish"
            return outcome
        except (Exception, asyncio.CancelledError) as exc:
            return self._rollback_failed(outcome, first, exc)
        outcome.served_after = {str(r.listener): r.sha256 for r in after}
        outcome.outcome = "restored"
        outcome.message = (
            f"{first}; the previous certificate was restored and verified by handshake"
        )
        outcome.hint = cause_hint
        return outcome

    def _rollback_failed(
        self, outcome: DeployOutcome, first: str, exc: BaseException
    ) -> DeployOutcome:
        detail = exc.message if isinstance(exc, CertfleetError) else describe_exception(exc)
        self.emit("rollback", "failed", detail)
        outcome.message = f"{first}; rollback failed too: {detail}"
        hint = exc.hint if isinstance(exc, CertfleetError) else None
        outcome.hint = (
            f"the device is NOT in its previous state: restore the backup by hand ({hint})"
            if hint
            else "the device is NOT in its previous state: restore the backup by hand"
        )
        return outcome


@dataclass
class _Session:
    """What a deploy has done so far: what a failure must undo, and how."""

    changed: bool = False
    backup: Backup | None = None
    before: list[ProbeResult] = field(default_factory=list)


def describe_exception(exc: BaseException) -> str:
    """One line for an exception that is not a CertfleetError (no traceback)."""
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted"
    if isinstance(exc, SystemExit):
        return "interrupted (exit requested)"
    text = " ".join(str(exc).split())[:200]
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")


def refuse_on_input_error(device: str, exc: InputError) -> DeployOutcome:
    """An outcome for input that failed before any driver work."""
    findings = list(exc.findings) if isinstance(exc, PreflightError) else []
    return DeployOutcome(device, "refused", exc.message, exc.hint, findings=findings)


_ = VerificationError  # re-exported for drivers that raise it directly
