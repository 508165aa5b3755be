"""Tell a person what renewal did, and what is about to expire.

Targets are apprise URLs (Teams workflows, Slack, e-mail, ...), each a
secret reference in ``[notify] urls`` since a webhook URL carries its
token. ``file:///PATH`` is certfleet's own target: one JSON object per
notification appended to PATH (for logs, tests and the demo). A
notification that cannot be sent is logged and never changes a run's exit
code.

Expiry bands (``status --notify``): a served certificate with 30, 14, 7 or
1 days left (or fewer) is told once per band, certificate and device; the
bands already told are kept in ``STATE/notify-bands.json``, a band only once
at least one target took its notice (a failed send is tried again at the
next run). A renewal
failure is told every time: a renewal that keeps failing must not go quiet.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .model import NotifyConfig

__all__ = [
    "BANDS",
    "Delivery",
    "ExpiryReport",
    "Notification",
    "crash_notification",
    "deliver",
    "due_bands",
    "failure_notification",
    "interrupted_notification",
    "notify_deploy",
    "notify_expiring",
    "pending_bands",
    "record_bands",
    "renewed_notification",
    "send",
]

BANDS = (30, 14, 7, 1)
Log = Callable[[str], None]


# ---- what notify reads of the estate's values (it sits below the estate) -------------


class _Step(Protocol):
    @property
    def step(self) -> str: ...
    @property
    def status(self) -> str: ...


class DeviceOutcome(Protocol):
    """A device's part of a deploy (``estate.deploy.DeviceResult``)."""

    @property
    def device(self) -> str: ...
    @property
    def certificate(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def exit_code(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def version_id(self) -> int | None: ...
    @property
    def steps(self) -> Sequence[_Step]: ...


class DeployOutcomes(Protocol):
    """A deploy run's report (``estate.deploy.DeployReport``)."""

    @property
    def dry_run(self) -> bool: ...
    @property
    def results(self) -> Sequence[DeviceOutcome]: ...


class StoredVersion(Protocol):
    """A certificate version of the store (``estate.store.versions.VersionRecord``)."""

    @property
    def id(self) -> int: ...
    @property
    def subject(self) -> str: ...
    @property
    def not_after(self) -> str: ...
    @property
    def leaf_sha256(self) -> str: ...


class ServedListener(Protocol):
    """What a listener serves (``estate.status.ListenerStatus``)."""

    @property
    def listener(self) -> str: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def not_after(self) -> str | None: ...
    @property
    def days_left(self) -> int | None: ...
    @property
    def sha256(self) -> str | None: ...


class ServedDevice(Protocol):
    """A device's listeners (``estate.status.DeviceStatus``)."""

    @property
    def name(self) -> str: ...
    @property
    def certificate(self) -> str: ...
    @property
    def listeners(self) -> Sequence[ServedListener]: ...


@dataclass(frozen=True)
class Notification:
    """One message: ``event`` is failure, renewed or expiring."""

    event: str
    title: str
    body: str
    certificate: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"event": self.event, "title": self.title, "body": self.body,
                "certificate": self.certificate,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def _write_file_target(url: str, notification: Notification) -> None:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    text = unquote(parsed.netloc + parsed.path)
    if len(text) > 2 and text[0] == "/" and text[2] == ":":  # file:///C:/... on Windows
        text = text[1:]
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(notification.to_dict()) + "\n")


@dataclass(frozen=True)
class Delivery:
    """How many targets took a notification, and how many failed."""

    sent: int = 0
    failed: int = 0


def send(config: NotifyConfig, notification: Notification, log: Log = lambda _: None) -> int:
    """Send ``notification`` to every target when its event is wanted; how many failed.

    Never raises for a target: a failure is logged by ``log`` (without the
    URL, which holds a token).
    """
    return deliver(config, notification, log).failed


def deliver(config: NotifyConfig, notification: Notification,
            log: Log = lambda _: None) -> Delivery:
    """As :func:`send`, with how many targets took it (``sent``) as well as ``failed``."""
    from .errors import CertfleetError
    from .secrets import resolve_secret

    if notification.event not in config.on or not config.urls:
        return Delivery()
    failed = sent = 0
    for index, reference in enumerate(config.urls, 1):
        try:
            url = resolve_secret(reference, what=f"notification URL {index}")
        except CertfleetError as exc:
            log(f"notification target {index} ({reference}) not sent: {exc.message}")
            failed += 1
            continue
        try:
            if url.startswith("file://"):
                _write_file_target(url, notification)
                sent += 1
                continue
            import apprise

            sender = apprise.Apprise()
            if not sender.add(url):
                log(f"notification target {index} ({reference}) is not a URL apprise knows")
                failed += 1
                continue
            notify_type = {
                "failure": apprise.NotifyType.FAILURE,
                "renewed": apprise.NotifyType.SUCCESS,
                "expiring": apprise.NotifyType.WARNING,
            }.get(notification.event, apprise.NotifyType.INFO)
            if not sender.notify(title=notification.title, body=notification.body,
                                 notify_type=notify_type):
                log(f"notification target {index} ({reference}) did not accept the message")
                failed += 1
            else:
                sent += 1
        except Exception as exc:  # a notification never changes the run
            log(f"notification target {index} ({reference}) failed: {type(exc).__name__}")
            failed += 1
    return Delivery(sent, failed)


# ---- what the messages say -------------------------------------------------------


def renewed_notification(
    certificate: str, version: StoredVersion, results: Sequence[DeviceOutcome],
) -> Notification:
    """``certificate`` renewed: the new version and where it is served now."""
    installed = [r.device for r in results if r.status in ("installed", "skipped")]
    body = (f"{certificate} v{version.id} ({version.subject}, valid to {version.not_after[:10]}, "
            f"sha256 {version.leaf_sha256[:16]}) is served by: "
            f"{', '.join(installed) or 'no device yet'}.")
    return Notification("renewed", f"certfleet: {certificate} renewed", body, certificate)


def failure_notification(
    certificate: str, problem: str | None, results: Sequence[DeviceOutcome] = ()
) -> Notification:
    """A renewal or deploy failure: per device the step, the outcome and what to run next."""
    lines = []
    if problem:
        lines.append(f"{certificate}: {problem}")
    for result in results:
        if result.exit_code == 0:
            continue
        step = next((s.step for s in reversed(result.steps) if s.status == "failed"),
                    result.steps[-1].step if result.steps else "-")
        restored = {1: "restored", 3: "NOT restored", 2: "untouched"}.get(
            result.exit_code, "unknown")
        next_command = (f"certfleet rollback {result.device}" if result.exit_code == 3
                        else f"certfleet deploy --only {result.device}")
        message = result.message.removeprefix(f"{result.device}: ").rstrip(".")
        lines.append(f"{result.device}: failed at step {step}, {restored}: {message}. "
                     f"Next: {next_command}")
    if not lines:
        lines.append(f"{certificate}: failed")
    if problem and not results:
        lines.append(f"No device was touched. Next: certfleet issue {certificate}")
    return Notification("failure", f"certfleet: {certificate} renewal FAILED", "\n".join(lines),
                        certificate)


def crash_notification(command: str, error: str, step: str, devices: dict[str, str],
                       report: Path | None) -> Notification:
    """An unexpected exception ended ``certfleet COMMAND``: where, and what to run next."""
    where = f"Crash report: {report}." if report is not None else "No crash report was written."
    if devices:
        lines = [f"{device}: a deployment was in progress at step {where}; the device may have "
                 f"been changed. Next: certfleet verify, then certfleet rollback {device} "
                 "if it does not serve the version it should"
                 for device, where in devices.items()]
    else:
        lines = [f"No device was being changed (last step: {step}). "
                 f"Next: certfleet {command.split()[0]} again, once the cause is fixed"]
    body = (f"certfleet {command} stopped on an unexpected {error}.\n" + "\n".join(lines)
            + f"\n{where}")
    return Notification("failure", f"certfleet: {command} CRASHED", body, None)


def interrupted_notification(deployments: Sequence[Mapping[str, object]]) -> Notification:
    """Deployments whose process died midway (``interrupted`` in the journal): per device
    the step it stopped at and what to run next."""
    lines = []
    for item in deployments:
        device = item["device"]
        message = str(item.get("message") or "")
        step = message.removeprefix("interrupted at ").split(":", 1)[0] if \
            message.startswith("interrupted at ") else "unknown"
        lines.append(f"{device}: failed at step {step}, its certfleet process ended midway "
                     f"(run {item.get('run_id')}, {item.get('started') or '-'}); the device may "
                     f"have been left half-changed until a later run finished the job. Next: "
                     f"certfleet verify, then certfleet deploy --only {device} (or certfleet "
                     f"rollback {device})")
    body = "\n".join(lines[:20])
    if len(lines) > 20:
        body += f"\n... and {len(lines) - 20} more: certfleet history"
    return Notification("failure", "certfleet: a run was interrupted mid-deploy", body, None)


# ---- expiry bands ----------------------------------------------------------------


def _band(days_left: int) -> int | None:
    """The smallest band ``days_left`` falls in (30, 14, 7, 1), or None above 30."""
    chosen = None
    for band in BANDS:
        if days_left <= band:
            chosen = band
    return chosen


def _read_bands(state_path: Path) -> dict[str, int]:
    try:
        told = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in told.items()} if isinstance(told, dict) else {}


def _save_bands(state_path: Path, told: dict[str, int]) -> None:
    from .fsutil import write_private_file

    write_private_file(state_path, json.dumps(told, indent=1).encode())


def pending_bands(
    statuses: Sequence[ServedDevice], state_path: Path
) -> list[tuple[str, int, Notification]]:
    """(key, band, notice) for every band of ``statuses`` not told yet; nothing is saved."""
    told = _read_bands(state_path)
    pending: list[tuple[str, int, Notification]] = []
    for status in statuses:
        for item in status.listeners:
            if item.days_left is None or item.sha256 is None:
                continue
            band = _band(item.days_left)
            if band is None:
                continue
            key = f"{status.certificate}|{status.name}|{item.sha256}"
            if key in told and told[key] <= band:
                continue
            if any(k == key and b <= band for k, b, _ in pending):
                continue  # a second listener serving the same certificate
            days = item.days_left
            when = "has expired" if days < 0 else f"expires in {days} day(s)"
            pending.append((key, band, Notification(
                "expiring",
                f"certfleet: {status.certificate} on {status.name} {when}",
                f"{status.name} ({item.listener}) serves {item.subject} "
                f"(sha256 {item.sha256[:16]}), which {when} ({item.not_after}). "
                f"Next: certfleet renew --only {status.certificate}",
                status.certificate,
            )))
    return pending


def record_bands(state_path: Path, told: Sequence[tuple[str, int]]) -> None:
    """Save ``(key, band)`` pairs as told (0600)."""
    saved = _read_bands(state_path)
    for key, band in told:
        saved[key] = min(band, saved.get(key, band))
    _save_bands(state_path, saved)


def due_bands(statuses: Sequence[ServedDevice], state_path: Path) -> list[Notification]:
    """Expiring notices for ``statuses`` (estate.status.DeviceStatus) not told before,
    saved as told at once in ``state_path`` (0600); :func:`notify_expiring` saves a band
    only once a target took its notice."""
    pending = pending_bands(statuses, state_path)
    record_bands(state_path, [(key, band) for key, band, _ in pending])
    return [notice for _, _, notice in pending]


@dataclass(frozen=True)
class ExpiryReport:
    """What ``status --notify`` did: notices due, sent (to at least one target), failed."""

    due: int = 0
    sent: int = 0
    failed: int = 0

    @property
    def all_failed(self) -> bool:
        """Notices were due and no target took any of them."""
        return self.due > 0 and self.sent == 0

    def to_dict(self) -> dict[str, int]:
        return {"due": self.due, "sent": self.sent, "failed": self.failed}


def notify_expiring(config: NotifyConfig, statuses: Sequence[ServedDevice], state_root: Path,
                    log: Log = lambda _: None) -> ExpiryReport:
    """Send the expiring notices of ``statuses`` not told before.

    A band counts as told once a target took its notice: a notice no target
    took is sent again at the next run. ``failed`` counts the notices no
    target took. ``config``: the inventory's ``[notify]`` table.
    """
    if "expiring" not in config.on or not config.urls:
        return ExpiryReport()
    state_path = state_root / "notify-bands.json"
    pending = pending_bands(statuses, state_path)
    told: list[tuple[str, int]] = []
    for key, band, notice in pending:
        if deliver(config, notice, log).sent > 0:
            told.append((key, band))
    if told:
        record_bands(state_path, told)
    return ExpiryReport(len(pending), len(told), len(pending) - len(told))


def notify_deploy(
    config: NotifyConfig, report: DeployOutcomes, log: Log = lambda _: None,
) -> None:
    """After ``certfleet deploy``: per certificate, where it was installed, or what failed."""
    if not config.urls or report.dry_run:
        return
    by_certificate: dict[str, list[DeviceOutcome]] = {}
    for result in report.results:
        by_certificate.setdefault(result.certificate, []).append(result)
    for certificate, results in by_certificate.items():
        if any(r.exit_code != 0 for r in results):
            send(config, failure_notification(certificate, None, results), log)
        elif any(r.status == "installed" for r in results):
            where = ", ".join(r.device for r in results if r.status == "installed")
            version = next((r.version_id for r in results if r.version_id), None)
            send(config, Notification(
                "renewed", f"certfleet: {certificate} deployed",
                f"{certificate} v{version} installed and verified on: {where}.", certificate,
            ), log)
