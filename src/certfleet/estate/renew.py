"""``certfleet renew``: for every certificate with an issuer, due? → issue → import → deploy.

Due is decided, in order: ``--force``; no version stored; the CA's ARI
window (RFC 9773) when its directory offers ``renewalInfo``; otherwise
when what remains is at most ``renew_before_days``, or else 30 days or a
third of the lifetime, whichever is less. Nothing but ARI is asked of a CA
for a certificate that is not due. ARI is skipped, with the reason in the
printed reason, for a certificate it cannot name (no Authority Key
Identifier) and for an expired one; a CA that does not know the certificate
(another CA's, an adopted one) answers nothing and the days rule decides. A
renewal order names the certificate it replaces (``replaces``) only when the
CA answered ARI for it.

Every device using a certificate with an issuer then goes through the
estate's deploy (canary first: an OVOC when there is one), which skips a
device already serving the current version, so a certificate not due but
not served everywhere is deployed too. A certificate whose issuance failed
leaves its devices untouched. A dry run orders nothing, so it rehearses
the deploy of a certificate it would order on every device using it, as
the real run would deploy the new version there. The run's exit code is the worst, as
``deploy``'s: an issuance the CA refused counts as 1.

One run orders at a time per state folder (the store's ``renew`` lock,
held from the first "due?" to the last deploy; ``issue`` takes it too):
two schedules firing together, or a manual run during a scheduled one,
cannot order the same certificate twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..acme import AcmeError
from ..acme.ari import AriLookup, ari_lookup
from ..acme.config import AcmeConfig, acme_config, renew_before_days
from .options import RenewOptions

if TYPE_CHECKING:
    from cryptography import x509

    from ..drivers.base import EventCallback
    from ..inventory import Inventory
    from ..pki.model import Finding
    from .deploy import DeployReport, DeviceResult
    from .store import Store
    from .store.versions import VersionRecord
    from .targets import DriverFactory

__all__ = [
    "Due", "RenewItem", "RenewReport", "is_due", "renew_lock", "run_renew",
]

Log = Callable[[str], None]
# Production directories of CAs whose staging twin is known (--dry-run goes there).
STAGING = {
    "https://acme-v02.api.letsencrypt.org/directory":
        "https://acme-staging-v02.api.letsencrypt.org/directory",
}


@dataclass(frozen=True)
class Due:
    due: bool
    reason: str
    # The ARI id of the certificate replaced, when the CA answered for it: the order's
    # ``replaces`` (RFC 9773 §5). None for a certificate ARI cannot name or the CA does
    # not know (no AKI, another CA's, expired, adopted from elsewhere).
    replaces: str | None = None


@dataclass
class RenewItem:
    """One certificate's part of a renewal run."""

    certificate: str
    due: bool
    reason: str
    action: str = "none"  # none, issued, would-issue, failed
    exit_code: int = 0
    error: str | None = None
    hint: str | None = None
    version: VersionRecord | None = None  # of the new version
    devices: list[DeviceResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # CLIENT_AUTH_DROPPED

    def to_dict(self) -> dict[str, object]:
        return {
            "certificate": self.certificate,
            "due": self.due,
            "reason": self.reason,
            "action": self.action,
            "exit_code": self.exit_code,
            "error": self.error,
            "hint": self.hint,
            "version": self.version.to_dict() if self.version is not None else None,
            "devices": [d.to_dict() for d in self.devices],
            "findings": [{"code": f.code, "severity": f.severity, "message": f.message,
                          "hint": f.hint} for f in self.findings],
        }


@dataclass
class RenewReport:
    items: list[RenewItem]
    deploy: DeployReport | None = None
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        from .deploy import worst_exit_code

        codes = [i.exit_code for i in self.items]
        if self.deploy is not None:
            codes.append(self.deploy.exit_code)
        return worst_exit_code(codes)

    @property
    def ordered(self) -> int:
        return sum(1 for i in self.items if i.action == "issued")

    def to_dict(self) -> dict[str, object]:
        return {
            "exit_code": self.exit_code,
            "dry_run": self.dry_run,
            "certificates": [i.to_dict() for i in self.items],
            "deploy": self.deploy.to_dict() if self.deploy is not None else None,
        }


def _leaf(store: Store, version: VersionRecord) -> x509.Certificate:
    from cryptography import x509

    store.fetch_files(version.dir)  # a shared store: from the database when not here
    return x509.load_pem_x509_certificate((version.dir / "leaf.pem").read_bytes())


def is_due(
    inventory: Inventory, store: Store, name: str, config: AcmeConfig, *, force: bool = False,
    now: dt.datetime | None = None,
) -> Due:
    """Whether certificate ``name`` is due, and why (the reason is printed and logged)."""
    moment = now or dt.datetime.now(dt.UTC)
    version = store.current_version(name)
    if force:
        return Due(True, "--force", _replaces(config, store, version, moment))
    if version is None:
        return Due(True, "no version stored yet")
    leaf = _leaf(store, version)
    not_after = leaf.not_valid_after_utc
    if not_after <= moment:
        return Due(True, f"expired on {not_after:%Y-%m-%d}")
    try:
        ari = ari_lookup(config, leaf, now=moment)
    except AcmeError as exc:
        # RFC 9773 §4.3.3: without an answer the client falls back to its own schedule
        # (a certificate from another CA is unknown to this one's renewalInfo).
        ari = AriLookup(note=f" (no ARI answer: {exc.message})")
    window, note, replaces = ari.window, ari.note, ari.cert_id
    if window is not None:
        if window <= moment:
            return Due(True, f"the CA's renewal window (ARI) opened: {window:%Y-%m-%d %H:%M}Z",
                       replaces)
        return Due(False, f"the CA's renewal window (ARI) opens {window:%Y-%m-%d %H:%M}Z")
    remaining = not_after - moment
    lifetime = not_after - leaf.not_valid_before_utc
    days = renew_before_days(inventory, name)
    # Short-lived certificates (6 days, 160 hours) are counted in hours.
    short = lifetime < dt.timedelta(days=10)

    def span(value: dt.timedelta) -> str:
        if short:
            return f"{int(value.total_seconds() // 3600)} hour(s)"
        return f"{value.days} day(s)"

    if days is not None:
        threshold = dt.timedelta(days=days)
        rule = f"renew_before_days = {days}"
        if threshold >= lifetime:  # as configured, but say that every run will order
            rule += (f", not shorter than the {span(lifetime)} lifetime: every run orders "
                     "(remove it to renew at a third of the lifetime)")
    else:
        threshold = min(dt.timedelta(days=30), lifetime / 3)
        rule = (f"{span(threshold)} (30 days or a third of the lifetime, whichever is less)"
                if short else
                f"{threshold.days} days (30 or a third of the lifetime, whichever is less)")
    if remaining <= threshold:
        return Due(True, f"{span(remaining)} left, at most {rule}{note}", replaces)
    return Due(False, f"{span(remaining)} left, more than {rule}{note}")


def _replaces(
    config: AcmeConfig, store: Store, version: VersionRecord | None, moment: dt.datetime,
) -> str | None:
    """The ARI id of the stored certificate when the CA answered for it (``--force``)."""
    if version is None:
        return None
    try:
        return ari_lookup(config, _leaf(store, version), now=moment).cert_id
    except AcmeError:
        return None


async def _check_client_auth(inventory: Inventory, store: Store, item: RenewItem, log: Log) -> None:
    """Warn (CLIENT_AUTH_DROPPED) when the renewal loses clientAuth on a mutual-TLS device."""
    from ..acme.clientauth import client_auth_findings

    assert item.version is not None  # called once the new version is imported
    devices = inventory.devices_using(item.certificate)
    item.findings = await client_auth_findings(devices, _leaf(store, item.version))
    for finding in item.findings:
        log(f"{item.certificate}: {finding.severity} {finding.code}: {finding.message}; "
            f"{finding.hint}")


def _prefixed(log: Log, name: str) -> Log:
    return lambda text: log(f"{name}: {text}")


def _selection(inventory: Inventory, only: Sequence[str]) -> tuple[list[str], list[str]]:
    """(certificates with an issuer, devices) chosen by ``only`` (certificate, device or tag)."""
    from ..errors import ConfigError
    from ..inventory import select_devices

    issuers = [n for n in inventory.certificates if acme_config(inventory, n) is not None]
    if not only:
        return issuers, [d.name for n in issuers for d in inventory.devices_using(n)]
    certificates: list[str] = []
    devices: list[str] = []
    for item in only:
        if item in inventory.certificates:
            chosen = [item]
            names = [d.name for d in inventory.devices_using(item)]
        else:
            try:
                matched = select_devices(inventory, [item])
            except ConfigError:
                raise ConfigError(
                    f"--only {item!r} names no certificate, device or tag of {inventory.path}",
                    hint="certificates: " + ", ".join(sorted(inventory.certificates)),
                ) from None
            chosen = [d.certificate for d in matched]
            names = [d.name for d in matched]
        for name in chosen:
            if name not in issuers:
                raise ConfigError(
                    f"certificate {name!r} has no [certificates.{name}.acme] table: "
                    "renew has nothing to order it from",
                    hint=f"add the acme and dns tables, or use 'certfleet import {name}'",
                )
            if name not in certificates:
                certificates.append(name)
        devices += [n for n in names if n not in devices]
    return certificates, devices


def _as_renewed(
    on_result: Callable[[DeviceResult], None] | None,
) -> Callable[[DeviceResult], None]:
    """A dry run's device result rewritten for the version it would order (not yet known),
    then handed to ``on_result``."""
    def rewrite(result: DeviceResult) -> None:
        if result.status == "would-deploy":
            result.message = (f"{result.device}: would install the renewed {result.certificate}"
                              " (a new version, once the order succeeds)")
            result.version_id = result.target_sha256 = None
        if on_result is not None:
            on_result(result)

    return rewrite


def _merged(reports: list[DeployReport], devices: list[str]) -> DeployReport:
    """One deploy report of several (a dry run's), its results in the order of ``devices``."""
    from .deploy import DeployReport

    if len(reports) == 1:
        return reports[0]
    by_device = {r.device: r for report in reports for r in report.results}
    return DeployReport(reports[0].run_id, [by_device[d] for d in devices if d in by_device],
                        reports[0].dry_run, any(r.interrupted for r in reports))


@contextlib.contextmanager
def renew_lock(store: Store, command: str) -> Iterator[None]:
    """Hold the store's ``renew`` lock. Raises StateError (with ``lock=``, exit 2) while
    another live process orders; the lock of a process that died is free already."""
    store.acquire_lock(command, name="renew")
    try:
        yield
    finally:
        store.release_lock("renew")


async def run_renew(
    inventory: Inventory,
    store: Store,
    factory: DriverFactory,
    options: RenewOptions | None = None,
    *,
    log: Log = lambda _: None,
    on_event: EventCallback | None = None,
    on_result: Callable[[DeviceResult], None] | None = None,
) -> RenewReport:
    """Renew what is due and deploy; see the module docstring. Raises ConfigError."""
    from ..acme.config import notify_config
    from ..errors import CertfleetError, ConfigError
    from ..notify import failure_notification, renewed_notification, send
    from .deploy import AUTO_CANARY, run_deploy
    from .issue import issue_certificate
    from .options import DeployOptions

    options = options or RenewOptions()
    only, force, dry_run, notify = options.only, options.force, options.dry_run, options.notify
    certificates, devices = _selection(inventory, only)
    if not certificates:
        raise ConfigError(f"no certificate of {inventory.path} has an [certificates.NAME.acme] "
                          "table", hint="add acme and dns tables to a certificate to renew it")
    notify_cfg = notify_config(inventory)
    items: list[RenewItem] = []
    report: DeployReport | None = None
    # A dry run stores nothing, so it may run beside a real one.
    with contextlib.nullcontext() if dry_run else renew_lock(store, "renew"):
        for name in certificates:
            config = acme_config(inventory, name)
            assert config is not None
            try:
                due = is_due(inventory, store, name, config, force=force)
            except AcmeError as exc:
                item = RenewItem(name, False, "unknown", "failed", 1, exc.message, exc.hint)
                items.append(item)
                log(f"{name}: {exc.message}")
                continue
            item = RenewItem(name, due.due, due.reason)
            items.append(item)
            log(f"{name}: {'due' if due.due else 'not due'}: {due.reason}")
            store.audit("renew", "due" if due.due else "not-due", detail=f"{name}: {due.reason}")
            if not due.due:
                continue
            replaces = due.replaces
            url = STAGING.get(config.directory, config.staging_directory) if dry_run else None
            try:
                # The store is bound to this thread; nothing else runs while a CA is asked.
                result = issue_certificate(
                    inventory, store, name, replaces=replaces,
                    directory_url=url, log=_prefixed(log, name),
                    stop_before_finalize=dry_run,
                )
            except CertfleetError as exc:
                from ..errors import InputError

                item.action = "failed"
                item.exit_code = 2 if isinstance(exc, InputError) else 1
                item.error = exc.message
                item.hint = exc.hint
                store.audit("renew", "failed", detail=f"{name}: {exc.message}"[:500])
                log(f"{name}: FAILED: {exc.message}")
                if notify and not dry_run:
                    send(notify_cfg, failure_notification(name, exc.message), log)
                continue
            if result is None:
                item.action = "would-issue"
            else:
                item.action = "issued"
                item.version = result.imported.version
                await _check_client_auth(inventory, store, item, log)
        failed = {i.certificate for i in items if i.action == "failed"}
        deploy_devices = [d for d in devices if inventory.devices[d].certificate not in failed]
        # A dry run has no new version to deploy: what the real run would deploy once the
        # order succeeds is every device of a certificate it would order (decided as for a
        # redeploy), and the devices of the others as they are.
        renewing = {i.certificate for i in items if i.action == "would-issue"}
        groups = [[d for d in deploy_devices if inventory.devices[d].certificate in renewing],
                  [d for d in deploy_devices if inventory.devices[d].certificate not in renewing]]
        reports = []
        for group, renewed in zip(groups, (True, False), strict=True):
            if not group:
                continue
            # The canary goes first (the kind most preferred as the canary: OVOC).
            deploy = DeployOptions(only=tuple(group), canary=AUTO_CANARY, dry_run=dry_run,
                                   force=renewed, command="renew")
            reports.append(await run_deploy(
                inventory, store, factory, deploy, on_event=on_event,
                on_result=_as_renewed(on_result) if renewed else on_result,
            ))
        if reports:
            report = _merged(reports, deploy_devices)
            for item in items:
                item.devices = [r for r in report.results if r.certificate == item.certificate]
        if notify and not dry_run:
            for item in items:
                if item.action == "failed":
                    continue
                bad = [r for r in item.devices if r.exit_code != 0]
                if bad:
                    send(notify_cfg, failure_notification(item.certificate, None, bad), log)
                elif item.action == "issued" and item.version is not None:  # issued has one
                    send(notify_cfg, renewed_notification(item.certificate, item.version,
                                                          item.devices), log)
            # An earlier run killed mid-deploy could not say so: this one does.
            from .interrupted import tell_interrupted

            tell_interrupted(store, notify_cfg, log)
    return RenewReport(items, report, dry_run)
