"""What the pages show: one background scan shared by every viewer, and the page data.

:class:`EstateView` handshakes every listener of the inventory (the same
:func:`~certfleet.estate.status.collect_status` as ``certfleet status``) at
start and then every ``refresh`` seconds, or sooner after an action ends;
a page view only reads the last snapshot, never scans. The store is opened
read-only (:class:`certfleet.estate.store.ReadOnlyStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CertfleetError
from ..estate.status import DeviceStatus, band
from ..estate.store import ReadOnlyStore
from ..inventory import Inventory, load_inventory

__all__ = ["BAND_LABELS", "EstateView", "Snapshot", "common_name", "next_command"]

#: renew's reason when the CA's renewalInfo (RFC 9773) answered (estate/renew.py, is_due).
ARI_REASON = re.compile(r"renewal window \(ARI\) open(?:ed:|s) (\d{4}-\d\d-\d\d \d\d:\d\d)Z")

#: A band in words (the colour is never the only sign).
BAND_LABELS = {
    "expired": "EXPIRED",
    "critical": "≤ 7 days",
    "warning": "≤ 30 days",
    "ok": "fine",
    "unknown": "unknown",
}


def common_name(rfc4514: str | None) -> str:
    """The CN of a subject or issuer written as RFC 4514 (the whole text when it has none)."""
    if not rfc4514:
        return ""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        name = x509.Name.from_rfc4514_string(rfc4514)
    except ValueError:
        return rfc4514
    values = [a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return str(values[0]) if values else rfc4514


def short_fingerprint(sha256: str | None) -> str:
    """``AB:CD:EF:01:23:45:67:89`` (the first 8 bytes) of a hex SHA-256."""
    if not sha256:
        return ""
    head = sha256[:16].upper()
    return ":".join(head[i:i + 2] for i in range(0, len(head), 2))


def next_command(run: dict[str, Any]) -> str | None:
    """The command to run after ``run`` (a row of the runs table), or None when it went well."""
    code = run.get("exit_code")
    command = str(run.get("command") or "")
    verb = command.split()[0] if command else "deploy"
    device = command.split()[1] if verb == "rollback" and len(command.split()) > 1 else None
    if run.get("finished") is None and code is None:
        return None  # still running (or interrupted: settled by the next command that writes)
    if code == 0:
        return None
    if code == 2:
        return "certfleet plan" if verb != "rollback" else f"certfleet history --device {device}"
    if code == 1:
        return f"certfleet history --steps --limit 20  (run {run.get('id')} was restored)"
    if verb == "rollback" and device:
        return f"certfleet status --only {device}, then certfleet rollback {device}"
    return "certfleet status, then certfleet deploy (or certfleet rollback DEVICE)"


@dataclass
class Snapshot:
    """One scan of the estate: the inventory it used, every device's status, when."""

    inventory: Inventory | None
    statuses: list[DeviceStatus] = field(default_factory=list)
    at: dt.datetime | None = None
    error: str | None = None
    seconds: float = 0.0

    def status_of(self, name: str) -> DeviceStatus | None:
        return next((s for s in self.statuses if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """``certfleet status --json``'s fields, with when the scan was made."""
        return {
            "scanned_at": self.at.isoformat(timespec="seconds") if self.at else None,
            "scan_error": self.error,
            "devices": [s.to_dict() for s in self.statuses],
        }


class EstateView:
    """The shared background scan and the readers of the store; see the module docstring."""

    def __init__(self, inventory_path: Path, store: ReadOnlyStore, *, refresh: float = 300.0,
                 timeout: float = 10.0) -> None:
        self.inventory_path = inventory_path
        self.store = store
        self.refresh = refresh
        self.timeout = timeout
        self.snapshot = Snapshot(None)
        self.plans: dict[str, list[dict[str, Any]]] = {}
        self.findings: dict[str, list[dict[str, Any]] | str] = {}
        self.plan_error: str | None = None
        self.scans = 0
        self._rows: tuple[Snapshot, list[dict[str, Any]]] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._scanned = threading.Condition()
        self._thread: threading.Thread | None = None
        #: Called after each scan in the scanning thread (``serve --metrics`` scans for the
        #: exporter's metrics there, at the same pace); its errors never end a scan.
        self.after_scan: Callable[[], None] | None = None

    def inventory(self) -> Inventory:
        """The inventory as it is now on disk. Raises CertfleetError."""
        return load_inventory(self.inventory_path)

    def scan(self) -> Snapshot:
        """Handshake every listener now (the caller's thread) and keep the result."""
        import time

        began = time.monotonic()
        try:
            inventory = self.inventory()
        except CertfleetError as exc:
            snapshot = Snapshot(self.snapshot.inventory, self.snapshot.statuses,
                                dt.datetime.now(dt.UTC), exc.message)
        else:
            try:
                statuses = asyncio.run(collect_status_quietly(inventory, self.store,
                                                              self.timeout))
                snapshot = Snapshot(inventory, statuses, dt.datetime.now(dt.UTC))
                self._plan(inventory)
            except CertfleetError as exc:
                snapshot = Snapshot(inventory, [], dt.datetime.now(dt.UTC), exc.message)
        snapshot.seconds = time.monotonic() - began
        with self._scanned:
            self.snapshot = snapshot
            self.scans += 1
            self._scanned.notify_all()
        if self.after_scan is not None:
            with contextlib.suppress(Exception):  # the metrics never fail the page's scan
                self.after_scan()
        return snapshot

    def _plan(self, inventory: Inventory) -> None:
        """What ``certfleet plan`` would do per certificate, and the preflight findings of
        each certificate's current version for its devices' names."""
        from ..estate.csr import key_passphrase
        from ..estate.decide import placeholder_secrets
        from ..estate.devices import make_factory
        from ..estate.plan import make_plan
        from ..pki.checks import check_bundle

        devices = list(inventory.devices.values())
        try:
            factory = make_factory(self.store, placeholder_secrets(devices))
            plans = asyncio.run(make_plan(inventory, self.store, factory=factory))
            by_certificate: dict[str, list[dict[str, Any]]] = {}
            for plan in plans:
                by_certificate.setdefault(plan.certificate, []).append(plan.to_dict())
            self.plans, self.plan_error = by_certificate, None
        except CertfleetError as exc:
            self.plans, self.plan_error = {}, exc.message
        findings: dict[str, list[dict[str, Any]] | str] = {}
        for name in inventory.certificates:
            version = self.store.current_version(name)
            if version is None:
                continue
            hosts = sorted({h for d in devices if d.certificate == name for h in d.hosts})
            try:
                bundle = self.store.load_bundle(version, key_passphrase(inventory, name))
                findings[name] = [
                    {"severity": f.severity, "code": f.code, "message": f.message}
                    for f in check_bundle(bundle, hosts,
                                          expiry_warn_days=inventory.expiry_warn_days)
                ]
            except CertfleetError as exc:
                findings[name] = exc.message
        self.findings = findings

    def rescan(self) -> None:
        """Ask the background scan to run now (after an action ended)."""
        self._wake.set()

    def wait_for_scan(self, after: int, timeout: float = 120.0) -> bool:
        """Wait until more than ``after`` scans were made; False on timeout."""
        with self._scanned:
            return self._scanned.wait_for(lambda: self.scans > after, timeout)

    def start(self) -> None:
        """Scan in a background thread every ``refresh`` seconds (the first scan at once)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # a scan never ends the server
                    self.scan()
                self._wake.wait(self.refresh)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="certfleet-scan", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # ---- page data -------------------------------------------------------------------

    def estate_rows(self, tag: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """A row per device and listener, by days left (unknown last); filtered.

        The rows are made once per scan; a page view filters them.
        """
        snapshot = self.snapshot
        cached = self._rows
        if cached is None or cached[0] is not snapshot:
            cached = (snapshot, self._rows_of(snapshot))
            self._rows = cached
        rows = cached[1]
        if tag:
            rows = [r for r in rows if tag in r["tags"]]
        if kind:
            rows = [r for r in rows if r["kind"] == kind]
        return rows

    def _rows_of(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        inventory = snapshot.inventory
        warn = inventory.expiry_warn_days if inventory is not None else 30
        rows: list[dict[str, Any]] = []
        for status in snapshot.statuses:
            device = inventory.devices.get(status.name) if inventory is not None else None
            tags = list(device.tags) if device is not None else []
            last = status.last_deployment or {}
            for item in status.listeners:
                colour = band(item.days_left, warn) if item.reachable else "unknown"
                rows.append({
                    "device": status.name,
                    "kind": status.kind,
                    "tags": tags,
                    "certificate": status.certificate,
                    "listener": item.listener,
                    "label": item.label,
                    "reachable": item.reachable,
                    "error": item.error,
                    "band": colour,
                    "band_label": BAND_LABELS[colour],
                    "days_left": item.days_left,
                    "not_after": item.not_after,
                    "cn": common_name(item.subject),
                    "issuer": common_name(item.issuer),
                    "fingerprint": short_fingerprint(item.sha256),
                    "sha256": item.sha256,
                    "hostname_ok": item.hostname_ok,
                    "is_current": item.is_current,
                    "current_version": status.current_version,
                    "mtls": item.client_cert_requested,
                    "last_outcome": last.get("outcome"),
                    "last_run": last.get("run_id"),
                })
        rows.sort(key=lambda r: (r["days_left"] is None,
                                 r["days_left"] if r["days_left"] is not None else 0,
                                 r["device"], r["listener"]))
        return rows

    def filters(self) -> tuple[list[str], list[str]]:
        """The tags and kinds of the inventory, for the filter menus."""
        inventory = self.snapshot.inventory
        if inventory is None:
            return [], []
        tags = sorted({t for d in inventory.devices.values() for t in d.tags})
        kinds = sorted({d.kind for d in inventory.devices.values()})
        return tags, kinds

    def runs(self, limit: int = 200) -> list[dict[str, Any]]:
        """Every run (deploy, renew, rollback...), newest first, with the command to run next."""
        rows = self.store.runs(limit=limit)
        from collections import Counter

        for row in rows:
            row["next"] = next_command(row)
            row["counts"] = dict(Counter(row["outcomes"].values()))
        return rows

    def timeline(self, days: int = 400) -> dict[str, Any]:
        """Bars for every certificate version and every device across the next ``days``."""
        from ..acme.config import renew_before_days

        now = dt.datetime.now(dt.UTC)
        end = now + dt.timedelta(days=days)
        snapshot = self.snapshot
        inventory = snapshot.inventory

        def when(text: str | None) -> dt.datetime | None:
            if not text:
                return None
            try:
                value = dt.datetime.fromisoformat(text)
            except ValueError:
                return None
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

        ari = self.ari_windows()
        current = {name: self.store.current_version(name) for name in
                   {v.certificate for v in self.store.versions()}}
        bars: list[dict[str, Any]] = []
        for version in self.store.versions():
            start, stop = when(version.not_before), when(version.not_after)
            if start is None or stop is None or stop < now:
                continue
            rule_days = renew_before_days(inventory, version.certificate) if inventory else None
            if rule_days is None:
                lifetime = stop - start
                window = min(dt.timedelta(days=30), lifetime / 3)
                rule = f"{window.days} days before expiry (30 or a third of the lifetime)"
            else:
                window = dt.timedelta(days=rule_days)
                rule = f"renew_before_days = {rule_days}"
            opens, source = max(stop - window, now), "rule"
            told = ari.get(version.certificate)
            latest = current.get(version.certificate)
            if told is not None and latest is not None and latest.id == version.id \
                    and told[1] >= start:
                # The CA's window (RFC 9773) decides while it answers: renew follows it.
                opens, source = max(told[0], now), "ari"
                rule = (f"the CA's renewal window (ARI) opens {told[0]:%Y-%m-%d %H:%M}Z, "
                        f"as renew recorded on {told[1]:%Y-%m-%d}")
            bars.append({"row": f"{version.certificate} v{version.number}", "kind": "version",
                         "start": max(start, now), "end": min(stop, end), "expires": stop,
                         "window": opens, "source": source, "rule": rule,
                         "href": f"/certificates/{version.certificate}"})
        for status in snapshot.statuses:
            for item in status.listeners:
                stop = when(item.not_after)
                if stop is None:
                    continue
                bars.append({"row": f"{status.name} {item.label}", "kind": "device",
                             "start": now, "end": min(stop, end), "expires": stop,
                             "window": None, "source": "", "rule": "",
                             "href": f"/devices/{status.name}"})
        return {"now": now, "end": end, "days": days, "bars": bars}


    def ari_windows(self, limit: int = 500) -> dict[str, tuple[dt.datetime, dt.datetime]]:
        """Each certificate's ARI window as ``certfleet renew`` last recorded it (its audit
        line: "the CA's renewal window (ARI) opens ..."), with when it was recorded."""
        found: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        seen: set[str] = set()
        for row in self.store.audit_log(limit=limit, command="renew"):
            name, sep, reason = str(row.get("detail") or "").partition(": ")
            if not sep or name in seen:
                continue
            seen.add(name)  # only the newest verdict of each certificate counts
            match = ARI_REASON.search(reason)
            if match is None:
                continue
            try:
                opens = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
                at = dt.datetime.fromisoformat(str(row["at"]))
            except (KeyError, ValueError):
                continue
            found[name] = (opens, at if at.tzinfo else at.replace(tzinfo=dt.UTC))
        return found


async def collect_status_quietly(inventory: Inventory, store: ReadOnlyStore,
                                 timeout: float) -> list[DeviceStatus]:
    from ..estate.status import collect_status

    return await collect_status(inventory, store, timeout=timeout)
