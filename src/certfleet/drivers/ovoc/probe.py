"""A rehearsal on one OVOC: everything a deploy does up to the first change, then back out.

SSH with the host key check, the SFTP listing of the staging folder with the
doctor's diagnosis, ``su`` with the root password, EmsServerManager walked by
label down to the import entry *without selecting it*, then back out and quit.
Nothing is written: no folder created, no file staged, no import run. The
labels found are compared with the menu settings; an entry found only by its
number (or not at all) makes the device not ready, naming the
``[devices.NAME.menu]`` setting to change.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from ...errors import CertfleetError, DeviceRefusedError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncssh

    from .config import SshLogin, SuSettings
    from .ems import EmsDialogue, WalkStep
    from .menu import OvocMenu
    from .staging import StagingReport

T = TypeVar("T")


class OvocDriver(Protocol):
    """What the probe drives (:class:`certfleet.drivers.ovoc.driver.OvocDriver`): its
    login, SFTP and root-shell steps, up to the menu, never past it."""

    name: str
    host: str
    login: SshLogin
    su: SuSettings
    menu: OvocMenu
    _conn: asyncssh.SSHClientConnection | None
    _sftp: asyncssh.SFTPClient | None
    _ems: EmsDialogue | None

    async def _open(self) -> asyncssh.SSHClientConnection: ...

    async def _op(self, what: str, coro: Awaitable[T]) -> T: ...

    async def _locate_staging_dir(self) -> None: ...

    async def _start_root_shell(self) -> None: ...

    async def inspect(self, hosts: Sequence[str] = ()) -> StagingReport: ...

    def transcript(self) -> str | None: ...

    async def close(self) -> None: ...

__all__ = ["ProbeCheck", "ProbeReport", "probe_ovoc"]


@dataclass(frozen=True)
class ProbeCheck:
    """One check of a probe: ``name`` (ssh, sftp, su, menu), whether it passed, what was
    seen, and the fix when it did not."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


@dataclass
class ProbeReport:
    """What a probe of one device found. ``ready`` when every check passed.

    ``labels`` maps each menu setting's label to the entry found on the screen
    (None when not found); ``staging`` is the doctor's report of the staged files
    (informational: a deploy replaces them); ``transcript`` every screen, secrets
    scrubbed.
    """

    device: str
    kind: str = "ovoc"
    checks: list[ProbeCheck] = field(default_factory=list)
    staging: StagingReport | None = None
    labels: dict[str, str | None] = field(default_factory=dict)
    transcript: str | None = None

    @property
    def ready(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def reason(self) -> str:
        """One line: ready, or the first check that failed and why."""
        failed = next((c for c in self.checks if not c.ok), None)
        if failed is None:
            return "ready: " + "; ".join(c.detail for c in self.checks)
        return f"not ready: {failed.name}: {failed.detail}"

    @property
    def fix(self) -> str | None:
        return next((c.fix for c in self.checks if not c.ok), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "device": self.device, "kind": self.kind, "ready": self.ready,
            "reason": self.reason, "fix": self.fix,
            "checks": [c.to_dict() for c in self.checks],
            "labels": self.labels,
            "staging": self.staging.to_dict() if self.staging is not None else None,
            "transcript": self.transcript,
        }


def _labels_setting(driver: OvocDriver, index: int, found: str) -> str:
    labels = [step.label for step in driver.menu.path]
    labels[index] = found
    return f"[devices.{driver.name}.menu] labels = {json.dumps(labels, ensure_ascii=False)}"


def _menu_check(driver: OvocDriver, walked: list[WalkStep]) -> ProbeCheck:
    loose = [w for w in walked if not w.by_label]
    shown = " > ".join(w.shown or w.key for w in walked)
    if not loose:
        return ProbeCheck("menu", True, f"{shown} (not selected)")
    first = loose[0]
    return ProbeCheck(
        "menu", False,
        f"no entry {first.step.label!r}; the walk would pick {first.shown!r} (key "
        f"{first.key!r}) only by its number", fix=f"if {first.shown!r} is the entry, set "
        + _labels_setting(driver, first.index, first.shown))


async def probe_ovoc(driver: OvocDriver, hosts: tuple[str, ...] = ()) -> ProbeReport:
    """See the module docstring. Never raises a CertfleetError: the report says."""
    report = ProbeReport(driver.name)
    try:
        await _probe(driver, report, hosts)
    except CertfleetError as exc:
        stage = ("ssh", "sftp", "su", "menu")[min(len(report.checks), 3)]
        report.checks.append(ProbeCheck(stage, False, exc.message, exc.hint))
    finally:
        report.transcript = driver.transcript()
        await driver.close()
    return report


async def _probe(driver: OvocDriver, report: ProbeReport, hosts: tuple[str, ...]) -> None:
    from .ems import EmsDialogue

    checks = report.checks
    driver._conn = await driver._open()
    checks.append(ProbeCheck("ssh", True, f"{driver.login.user}@{driver.host}:"
                             f"{driver.login.port}, host key verified"))
    driver._sftp = await driver._op("starting SFTP", driver._conn.start_sftp_client())
    await driver._locate_staging_dir()
    staging = await driver.inspect(list(hosts))
    report.staging = staging
    what = (f"{staging.staging_dir}: {len(staging.files)} file(s)"
            + (f"; {staging.diagnosis}" if staging.diagnosis else "")
            if staging.exists else f"{staging.staging_dir} missing (a deploy creates it)")
    checks.append(ProbeCheck("sftp", True, what))
    await driver._start_root_shell()
    checks.append(ProbeCheck("su", True, f"su to {driver.su.user!r} accepted"))
    ems = driver._ems
    assert isinstance(ems, EmsDialogue)
    try:
        walked = await ems.walk(select_last=False)
    except DeviceRefusedError as exc:
        index = getattr(exc, "step", None)
        options = getattr(exc, "options", None) or []
        for step in driver.menu.path:
            report.labels.setdefault(step.label, None)
        if index is None:
            raise
        label = driver.menu.path[index].label
        shown = ", ".join(text for _, text in options) or "nothing"
        example = options[0][1] if options else "..."
        checks.append(ProbeCheck(
            "menu", False, f"no entry {label!r}; the menu shows: {shown}",
            fix=f"set the label the menu shows, e.g. {_labels_setting(driver, index, example)}"))
        await _back_out(ems)
        return
    for step in driver.menu.path:
        report.labels[step.label] = None
    for w in walked:
        report.labels[w.step.label] = w.shown
    checks.append(_menu_check(driver, walked))
    await _back_out(ems)


async def _back_out(ems: EmsDialogue) -> None:
    """Leave every menu (answering Enter and confirmations never with 'yes' to an import:
    no import entry was selected)."""
    try:
        await ems.leave_menu()
    except CertfleetError:
        ems.in_menu = True  # close() still ends the session
