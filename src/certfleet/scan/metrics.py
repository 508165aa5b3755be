"""Prometheus metrics of the last scan and of the state store's deployments.

Names follow what users already graph: the x509-certificate-exporter's
``x509_cert_not_after``, ``x509_cert_not_before`` and ``x509_cert_expired``
(labels ``device``, ``listener``, ``subject_CN``, ``issuer_CN``,
``serial_number``), plus certfleet's own per listener and per device.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .engine import ScanResult

__all__ = ["DeployRecord", "ScanCollector", "deploy_records", "make_registry"]

CERT_LABELS = ["device", "listener", "subject_CN", "issuer_CN", "serial_number"]
LISTENER_LABELS = ["device", "listener"]


@dataclass(frozen=True)
class DeployRecord:
    """The last deployment of a device: when it finished and how it ended."""

    device: str
    finished: float
    outcome: str


@dataclass
class _Snapshot:
    results: list[ScanResult] = field(default_factory=list)
    duration: float | None = None
    deploys: list[DeployRecord] = field(default_factory=list)


class ScanCollector(Collector):
    """Yields the metrics of the latest snapshot; :meth:`update` swaps it (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = _Snapshot()
        self._generation = 0

    @property
    def generation(self) -> int:
        """How many times :meth:`update` ran: the metrics change only when it does."""
        with self._lock:
            return self._generation

    def update(
        self, results: Sequence[ScanResult], duration: float, deploys: Sequence[DeployRecord] = ()
    ) -> None:
        with self._lock:
            self._snapshot = _Snapshot(list(results), duration, list(deploys))
            self._generation += 1

    def collect(self) -> Iterator[Any]:
        with self._lock:
            snap = self._snapshot
        not_after = GaugeMetricFamily(
            "x509_cert_not_after", "End of validity of the served leaf certificate (unix seconds).",
            labels=CERT_LABELS)
        not_before = GaugeMetricFamily(
            "x509_cert_not_before",
            "Start of validity of the served leaf certificate (unix seconds).", labels=CERT_LABELS)
        expired = GaugeMetricFamily(
            "x509_cert_expired", "1 when the served leaf certificate has expired.",
            labels=CERT_LABELS)
        up = GaugeMetricFamily(
            "certfleet_listener_up",
            "1 when the listener's certificate was read by a TLS handshake "
            "(a refusal for want of a client certificate counts as up).", labels=LISTENER_LABELS)
        current = GaugeMetricFamily(
            "certfleet_listener_current_version",
            "1 when the listener serves the inventory's current version.",
            labels=LISTENER_LABELS)
        chain = GaugeMetricFamily(
            "certfleet_chain_not_after",
            "Earliest end of validity in the served chain, apart from the leaf (unix seconds).",
            labels=LISTENER_LABELS)
        for result in snap.results:
            where = [result.endpoint.device or "", str(result.endpoint)]
            up.add_metric(where, 1.0 if result.leaf is not None else 0.0)
            if result.is_current is not None:
                current.add_metric(where, 1.0 if result.is_current else 0.0)
            leaf = result.leaf
            if leaf is None:
                continue
            data = result.to_dict()["leaf"]
            labels = [*where, data["subject_cn"] or "", data["issuer_cn"] or "", data["serial"]]
            not_after.add_metric(labels, leaf.not_valid_after_utc.timestamp())
            not_before.add_metric(labels, leaf.not_valid_before_utc.timestamp())
            expired.add_metric(labels, 1.0 if result.expired else 0.0)
            chain_end = result.chain_not_after
            if chain_end is not None:
                chain.add_metric(where, chain_end.timestamp())
        yield from (not_after, not_before, expired, up, current, chain)
        if snap.duration is not None:
            duration = GaugeMetricFamily(
                "certfleet_scan_duration_seconds", "How long the last scan took.")
            duration.add_metric([], snap.duration)
            yield duration
        stamp = GaugeMetricFamily(
            "certfleet_last_deploy_timestamp_seconds",
            "When the device's last deployment finished (unix seconds).", labels=["device"])
        outcome = GaugeMetricFamily(
            "certfleet_last_deploy_outcome",
            "1 for the outcome of the device's last deployment (installed, skipped, restored, "
            "refused, failed...).", labels=["device", "outcome"])
        for record in snap.deploys:
            stamp.add_metric([record.device], record.finished)
            outcome.add_metric([record.device, record.outcome], 1.0)
        yield stamp
        yield outcome


def make_registry() -> tuple[CollectorRegistry, ScanCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = ScanCollector()
    registry.register(collector)
    return registry, collector


def deploy_records(store: Any, devices: Sequence[str]) -> list[DeployRecord]:
    """Each device's last deployment from the state store (devices never deployed: none)."""
    records = []
    for device in devices:
        rows = store.deployments(device, limit=1)
        if not rows:
            continue
        row = rows[0]
        try:
            finished = dt.datetime.fromisoformat(str(row["finished"]))
        except ValueError:
            continue
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=dt.UTC)
        records.append(DeployRecord(device, finished.timestamp(), str(row["outcome"])))
    return records
