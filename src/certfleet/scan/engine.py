"""Handshake every endpoint (bounded concurrency) and check what each serves."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from ..drivers.tlsprobe import Listener, ProbeResult, handshake
from ..errors import ConfigError
from ..inventory import Inventory
from ..pki.bundle import is_ca, signature_ok
from ..pki.model import cert_sha256, key_description
from ..pki.names import certificate_names, host_matches, is_ip_literal
from ..pki.quiet import certificate_notes
from .targets import Endpoint

__all__ = [
    "ScanResult",
    "TrustStore",
    "inventory_endpoints",
    "scan",
]


class TrustStore:
    """Root certificates to judge chains by: the system's, or a ``--ca-bundle``."""

    def __init__(self, roots: Iterable[x509.Certificate], source: str) -> None:
        self.source = source
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        self.count = 0
        for root in roots:
            self._by_subject.setdefault(root.subject.public_bytes(), []).append(root)
            self.count += 1

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        return self._by_subject.get(cert.issuer.public_bytes(), [])

    def holds(self, cert: x509.Certificate) -> bool:
        return any(c == cert for c in self._by_subject.get(cert.subject.public_bytes(), []))

    @classmethod
    def system(cls) -> TrustStore:
        """The system store (as Python's ssl module loads it), else certifi's bundle."""
        ders: list[bytes] = []
        try:
            ders = [d for d in ssl.create_default_context().get_ca_certs(binary_form=True)
                    if isinstance(d, bytes)]
        except (ssl.SSLError, OSError):
            ders = []
        certs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old roots with odd serials are still roots
            for der in ders:
                try:
                    certs.append(x509.load_der_x509_certificate(der))
                except ValueError:
                    continue
        if certs:
            return cls(certs, "system")
        try:
            import certifi

            return cls(x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes()),
                       "certifi")
        except (ImportError, OSError, ValueError):
            return cls([], "none")

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> TrustStore:
        """Roots from PEM files. Raises ConfigError."""
        certs: list[x509.Certificate] = []
        for path in paths:
            try:
                found = x509.load_pem_x509_certificates(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"cannot read --ca-bundle {path}: {exc.strerror or exc}",
                                  hint="give --ca-bundle a PEM file of root certificates",
                                  path=str(path)) from None
            except ValueError:
                raise ConfigError(f"--ca-bundle {path} holds no PEM certificate",
                                  hint="give --ca-bundle a PEM file of root certificates",
                                  path=str(path)) from None
            certs += found
        return cls(certs, ", ".join(str(p) for p in paths))


@dataclass
class ScanResult:
    """One endpoint's observation and checks; ``to_dict`` is the ``--json`` contract."""

    endpoint: Endpoint
    probe: ProbeResult | None
    now: dt.datetime
    trusted: bool | None = None
    name_match: bool | None = None
    chain_order_ok: bool | None = None
    chain_complete: bool | None = None
    is_current: bool | None = None
    listed: bool | None = None
    problems: list[str] = field(default_factory=list)
    #: What the certificate does that RFC 5280 forbids but clients accept (a negative
    #: serial, a CN over 64 characters): reported, not a problem.
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def leaf(self) -> x509.Certificate | None:
        return self.probe.certificate if self.probe is not None else None

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self.probe.chain if self.probe is not None else ()

    @property
    def error(self) -> str | None:
        if self.probe is None:
            return "not scanned"
        return None if self.leaf is not None else self.probe.error

    @property
    def failure(self) -> str | None:
        """``refused``, ``unresolved``, ``unreachable``, ``connect-timeout``,
        ``tls-timeout`` or ``tls`` when no certificate was read or the handshake
        failed (see :class:`~certfleet.drivers.tlsprobe.ProbeResult`)."""
        return "not scanned" if self.probe is None else self.probe.failure

    @property
    def answered(self) -> bool:
        """The endpoint accepted a TCP connection (refused, unresolved, unreachable and
        silent endpoints did not)."""
        return self.probe is not None and self.probe.answered

    @property
    def days_left(self) -> int | None:
        leaf = self.leaf
        return None if leaf is None else (leaf.not_valid_after_utc - self.now).days

    @property
    def chain_not_after(self) -> dt.datetime | None:
        """The earliest end date in the chain, apart from the leaf."""
        rest = [c.not_valid_after_utc for c in self.chain[1:]]
        return min(rest) if rest else None

    @property
    def expired(self) -> bool:
        leaf = self.leaf
        return leaf is not None and leaf.not_valid_after_utc <= self.now

    @property
    def ok(self) -> bool:
        return self.leaf is not None and not self.problems

    def to_dict(self) -> dict[str, Any]:
        probe = self.probe
        leaf = self.leaf
        chain_end = self.chain_not_after
        return {
            "target": str(self.endpoint),
            "host": self.endpoint.host,
            "port": self.endpoint.port,
            "sni": self.endpoint.server_name,
            "device": self.endpoint.device,
            "label": self.endpoint.label or None,
            "listed": self.listed,
            "ok": self.ok,
            "error": self.error,
            "failure": self.failure,
            "answered": self.answered,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "leaf": _describe_leaf(leaf, self.now) if leaf is not None else None,
            "chain": [_describe_chain_cert(c) for c in self.chain],
            "chain_not_after": _iso(chain_end) if chain_end is not None else None,
            "chain_days_left": (chain_end - self.now).days if chain_end is not None else None,
            "chain_order_ok": self.chain_order_ok,
            "chain_complete": self.chain_complete,
            "tls_version": probe.tls_version if probe is not None else None,
            "cipher": probe.cipher if probe is not None else None,
            "trusted": self.trusted,
            "name_match": self.name_match,
            "is_current": self.is_current,
            "client_cert_requested": probe.client_cert_requested if probe else None,
            "handshake_completed": probe.handshake_completed if probe else None,
            "expired": self.expired if leaf is not None else None,
            "seconds": round(self.seconds, 4),
        }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cn(name: x509.Name) -> str | None:
    try:
        values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return None
    return str(values[0].value) if values else None


def _name_text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return "<unreadable name>"


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    try:
        return certificate_names(cert)
    except ValueError:
        return []


def _signature_algorithm(cert: x509.Certificate) -> str | None:
    try:
        return cert.signature_algorithm_oid._name
    except (ValueError, AttributeError):
        return None


def _describe_leaf(cert: x509.Certificate, now: dt.datetime) -> dict[str, Any]:
    try:
        key_type, key_size = key_description(cert.public_key())
    except (ValueError, TypeError):
        key_type, key_size = "unknown", None
    not_after = cert.not_valid_after_utc
    return {
        "subject": _name_text(cert.subject),
        "subject_cn": _cn(cert.subject),
        "sans": _sans(cert),
        "issuer": _name_text(cert.issuer),
        "issuer_cn": _cn(cert.issuer),
        "serial": format(cert.serial_number, "x"),
        "sha256": cert_sha256(cert),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(not_after),
        "days_left": (not_after - now).days,
        "key_type": key_type,
        "key_size": key_size,
        "signature_algorithm": _signature_algorithm(cert),
    }


def _describe_chain_cert(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": _name_text(cert.subject),
        "issuer": _name_text(cert.issuer),
        "not_after": _iso(cert.not_valid_after_utc),
        "sha256": cert_sha256(cert),
    }


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return cert.issuer == issuer.subject and signature_ok(cert, issuer)


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and signature_ok(cert, cert)


def check_chain(
    chain: Sequence[x509.Certificate], store: TrustStore
) -> tuple[bool, bool | None, bool]:
    """(in order, complete, trusted) for a chain as served, leaf first.

    In order: each certificate is issued by the next. Complete: True when the
    served certificates lead to a self-signed root or to a root of ``store``;
    None when they end at a CA certificate whose root is unknown here; False
    when the leaf's issuer (or an intermediate's) is missing. Trusted: the
    path ends in a root of ``store``.
    """
    in_order = all(_issued_by(chain[i], chain[i + 1]) for i in range(len(chain) - 1))
    current = chain[0]
    pool = list(chain[1:])
    for _ in range(len(chain) + 1):
        if store.holds(current):
            return in_order, True, True
        for root in store.issuers_of(current):
            if signature_ok(current, root):
                return in_order, True, True
        if _self_signed(current):
            return in_order, True, False
        nxt = next((c for c in pool if _issued_by(current, c)), None)
        if nxt is None:
            return in_order, (None if current is not chain[0] and is_ca(current) else False), False
        pool.remove(nxt)
        current = nxt
    return in_order, False, False


_ChainVerdict = tuple[bool, bool | None, bool]


def _check(
    result: ScanResult, store: TrustStore, current: dict[str, str | None],
    verdicts: dict[tuple[x509.Certificate, ...], _ChainVerdict],
) -> None:
    probe = result.probe
    leaf = result.leaf
    if probe is None or leaf is None:
        result.problems.append(result.error or "no certificate read")
        return
    result.notes = certificate_notes(leaf)
    # An estate serves a handful of chains on many listeners: judge each chain once.
    verdict = verdicts.get(result.chain)
    if verdict is None:
        verdict = verdicts[result.chain] = check_chain(result.chain, store)
    order, complete, trusted = verdict
    result.chain_order_ok, result.chain_complete, result.trusted = order, complete, trusted
    names = [n for n in (result.endpoint.server_name, *result.endpoint.hosts) if n]
    if not names and not is_ip_literal(result.endpoint.host):
        names = [result.endpoint.host]
    if names:
        try:
            patterns = certificate_names(leaf)
        except ValueError:
            patterns = []
        result.name_match = all(any(host_matches(p, n) for p in patterns) for n in names)
    if result.endpoint.certificate is not None:
        expected = current.get(result.endpoint.certificate)
        result.is_current = None if expected is None else cert_sha256(leaf) == expected
    if result.expired:
        result.problems.append("expired")
    if complete is False:
        result.problems.append("chain incomplete")
    elif not trusted:
        result.problems.append("not trusted")
    elif not order:
        result.problems.append("chain out of order")
    if result.name_match is False:
        result.problems.append("name mismatch")
    if result.is_current is False:
        result.problems.append("not the current version")




def inventory_endpoints(inventory: Inventory, server_name: str | None = None) -> list[Endpoint]:
    """Every listener of the inventory, with its device, label, names and certificate."""
    endpoints = []
    for device in inventory.devices.values():
        for listener in device.listeners:
            endpoints.append(Endpoint(
                listener.host, listener.port,
                server_name or listener.server_name or device.fqdn,
                device=device.name, label=listener.label, hosts=device.hosts,
                certificate=device.certificate,
            ))
    return endpoints


async def scan(
    endpoints: Sequence[Endpoint],
    *,
    store: TrustStore,
    current: dict[str, str | None] | None = None,
    listed: set[tuple[str, int]] | None = None,
    concurrency: int = 100,
    timeout: float = 5.0,
    now: dt.datetime | None = None,
    on_done: Callable[[ScanResult], None] | None = None,
) -> list[ScanResult]:
    """Handshake every endpoint (at most ``concurrency`` at once), check, sort by days left.

    ``current`` maps certificate names to the leaf SHA-256 of the inventory's
    current version; ``listed`` the inventory's (host, port) pairs. Never
    raises for an endpoint: errors are in the results.
    """
    moment = now or dt.datetime.now(dt.UTC)
    versions = current or {}
    gate = asyncio.Semaphore(max(1, concurrency))
    verdicts: dict[tuple[x509.Certificate, ...], _ChainVerdict] = {}

    async def one(endpoint: Endpoint) -> ScanResult:
        async with gate:
            started = time.perf_counter()
            probe = await handshake(
                Listener(endpoint.host, endpoint.port, endpoint.server_name, endpoint.label),
                timeout,
            )
            result = ScanResult(endpoint, probe, moment, seconds=time.perf_counter() - started)
        try:
            _check(result, store, versions, verdicts)
        except Exception as exc:  # a certificate the checks cannot parse is data too
            result.problems.append(f"cannot check the certificate: {type(exc).__name__}")
        if listed is not None:
            result.listed = endpoint.key in listed
        if on_done is not None:
            on_done(result)
        return result

    results = await asyncio.gather(*(one(e) for e in endpoints))
    return sorted(results, key=_order)


def _order(result: ScanResult) -> tuple[bool, int, str, int]:
    days = result.days_left
    return (days is None, days if days is not None else 0, result.endpoint.host,
            result.endpoint.port)
