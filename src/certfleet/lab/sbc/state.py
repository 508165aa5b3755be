"""The configuration of a lab SBC device: TLS contexts, parameters, INI, saved "flash", HA sync.

Shared by the units of one device (one unit, or the two units of an HA pair).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

from ..tls import CertSlot
from .faults import Faults
from .material import (
    _chain_for,
    _pem,
    _public_der,
    _sha256,
    _stored_key,
)


@dataclass
class _Context:
    """One TLS context of the configuration (running or saved)."""

    index: int
    name: str
    cert_pem: bytes
    key_pem: bytes
    trusted_roots: list[bytes] = field(default_factory=list)
    tls_version: int = 0
    require_strict_cert: int = 0
    ocsp_enable: int = 0
    dh_key_size: int = 2048


@dataclass(frozen=True)
class ContextView:
    """What a TLS context holds, for tests and the demo (never on the REST API)."""

    index: int
    name: str
    cert_pem: bytes
    key_pem: bytes
    trusted_roots: tuple[bytes, ...]
    certificate: x509.Certificate
    sha256: str
    key_matches: bool
    trusted_root_sha256: tuple[str, ...]

    @classmethod
    def of(cls, ctx: _Context) -> ContextView:
        certs = x509.load_pem_x509_certificates(ctx.cert_pem)
        roots = tuple(ctx.trusted_roots)
        return cls(
            index=ctx.index,
            name=ctx.name,
            cert_pem=ctx.cert_pem,
            key_pem=ctx.key_pem,
            trusted_roots=roots,
            certificate=certs[0],
            sha256=_sha256(certs[0]),
            key_matches=_stored_key(ctx.key_pem)[0] == _public_der(certs[0]),
            trusted_root_sha256=tuple(_sha256(x509.load_pem_x509_certificate(r)) for r in roots),
        )


#: A device's configuration put aside: the running and saved contexts, the running and
#: saved parameters, and what each context presents (see ``_DeviceState.snapshot``).
Snapshot = tuple[dict[int, _Context], dict[int, _Context], dict[str, str], dict[str, str],
                 dict[int, tuple[bytes, bytes]]]


class _DeviceState:
    """Configuration shared by the units of one device (one unit, or an HA pair)."""

    def __init__(
        self,
        contexts: list[_Context],
        *,
        bindings: Mapping[str, int],
        product_type: str,
        version: str,
        high_availability: bool,
        sync_busy: int,
        sync_window: float,
    ) -> None:
        self.lock = threading.RLock()
        self.running = {c.index: c for c in contexts}
        self.saved = copy.deepcopy(self.running)
        self.params: dict[str, str] = {
            "HTTPSCipherString": "DEFAULT",
            "TLSPkeySize": "2048",
            "SIPSRequireClientCertificate": "0",
            "SyslogServerIP": "0.0.0.0",
        }
        self.saved_params = dict(self.params)
        self.bindings = dict(bindings)
        self.product_type = product_type
        self.version = version
        self.high_availability = high_availability
        self.sync_busy = sync_busy
        self.sync_window = sync_window
        self._sync_left = 0
        self._sync_until = 0.0
        self.saves = 0
        # The pair each context presents: the last matching certificate and key.
        self.served: dict[int, tuple[bytes, bytes]] = {
            c.index: (c.cert_pem, c.key_pem) for c in contexts
        }
        self.slots: list[tuple[str, CertSlot, Faults]] = []
        # Unit role -> (address, listener role -> port), once started: the INI's
        # network and SIP interfaces.
        self.units: dict[str, tuple[str, dict[str, int]]] = {}

    # -- listeners
    def register(self, role: str, slot: CertSlot, faults: Faults) -> None:
        with self.lock:
            self.slots.append((role, slot, faults))
            self._push_role(role, slot, faults)

    def unregister(self, slot: CertSlot) -> None:
        with self.lock:
            self.slots = [s for s in self.slots if s[1] is not slot]

    def _push_role(self, role: str, slot: CertSlot, faults: Faults) -> None:
        index = self.bindings.get(role)
        if index is None or index not in self.served or role in faults.frozen_listeners:
            return
        cert_pem, key_pem = self.served[index]
        certs = x509.load_pem_x509_certificates(cert_pem)
        chain = b"".join(_pem(c) for c in _chain_for(certs, self.running[index].trusted_roots))
        if slot.cert_pem != _pem(certs[0]) or slot.chain_pem != chain:
            slot.set(_pem(certs[0]), key_pem, chain)

    def apply(self, index: int) -> None:
        """Present context ``index``'s pair when certificate and key match."""
        with self.lock:
            ctx = self.running[index]
            cert = x509.load_pem_x509_certificates(ctx.cert_pem)[0]
            if _public_der(cert) != _stored_key(ctx.key_pem)[0]:
                return  # keep presenting the previous pair until they match
            self.served[index] = (ctx.cert_pem, ctx.key_pem)
            for role, slot, faults in self.slots:
                if self.bindings.get(role) == index:
                    self._push_role(role, slot, faults)

    def changed(self) -> None:
        """Open the HA sync window after a change."""
        if self.high_availability:
            self._sync_left = self.sync_busy
            self._sync_until = time.monotonic() + self.sync_window

    def syncing(self) -> bool:
        """Whether a changing request now meets the HA sync window (counts it)."""
        with self.lock:
            if self._sync_left > 0:
                self._sync_left -= 1
                return True
            return time.monotonic() < self._sync_until

    def save(self) -> None:
        with self.lock:
            self.saved = copy.deepcopy(self.running)
            self.saved_params = dict(self.params)
            self.saves += 1

    def snapshot(self) -> Snapshot:
        """A copy of the running and saved configuration (see :meth:`restore_snapshot`)."""
        with self.lock:
            return copy.deepcopy(
                (self.running, self.saved, self.params, self.saved_params, self.served))

    def restore_snapshot(self, snapshot: Snapshot) -> None:
        """Put a :meth:`snapshot` back: configuration, flash and what the listeners present."""
        with self.lock:
            (self.running, self.saved, self.params, self.saved_params,
             self.served) = copy.deepcopy(snapshot)
            for role, slot, faults in self.slots:
                self._push_role(role, slot, faults)

    def restart(self) -> None:
        """Reload the saved configuration, as a device does when it restarts."""
        with self.lock:
            self.running = copy.deepcopy(self.saved)
            self.params = dict(self.saved_params)
            self._sync_left = 0
            self._sync_until = 0.0
            for ctx in self.running.values():
                self.served[ctx.index] = (ctx.cert_pem, ctx.key_pem)
            for role, slot, faults in self.slots:
                self._push_role(role, slot, faults)

    # -- INI
    def render_ini(self, saved: bool = False) -> str:
        with self.lock:
            contexts = self.saved if saved else self.running
            params = self.saved_params if saved else self.params
            lines = [
                ";**************",
                ";** Ini File **",
                ";**************",
                "",
                f";Board: {self.product_type}",
                f";Software Version: {self.version}",
                f";Generated: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
                "",
                "[SYSTEM Params]",
                "",
                *(f"{k} = {v}" for k, v in sorted(params.items())),
                "",
                "[ TLSContexts ]",
                "",
                "FORMAT Index = Name, TLSVersion, RequireStrictCert, OcspEnable, DHKeySize;",
            ]
            for ctx in sorted(contexts.values(), key=lambda c: c.index):
                lines.append(
                    f'TLSContexts {ctx.index} = "{ctx.name}", {ctx.tls_version}, '
                    f"{ctx.require_strict_cert}, {ctx.ocsp_enable}, {ctx.dh_key_size};"
                )
            lines += ["", "[ \\TLSContexts ]", ""]
            lines += self._interface_lines(contexts)
            return "\r\n".join(lines)

    def _interface_lines(self, contexts: Mapping[int, _Context]) -> list[str]:
        """The IP interfaces, the SIP interfaces (each bound to its TLS context; mutual
        TLS on the Teams one) and the web server's TLS context, as a device lists them.

        The table and column names follow the AudioCodes INI file as far as this
        lab knows it (``InterfaceTable``, ``SIPInterface`` with ``TLSContext`` and
        ``TLSMutualAuthentication``, ``WebTLSContext``): a lab choice, matching
        what certfleet's discovery reads (certfleet.discover.ini).
        """
        if not self.units:
            return []
        role, (_address, ports) = next(iter(self.units.items()))
        lines = [
            "[ InterfaceTable ]",
            "",
            "FORMAT Index = ApplicationTypes, InterfaceMode, IPAddress, PrefixLength, Gateway, "
            "InterfaceName;",
        ]
        units = sorted(self.units.items(), key=lambda item: item[0] != role)
        for number, (unit, (host, _)) in enumerate(units):
            lines.append(f'InterfaceTable {number} = 6, 10, {host}, 8, 0.0.0.0, '
                         f'"{"O+M+C" if number == 0 else "HA-" + unit}";')
        lines += ["", "[ \\InterfaceTable ]", "", "[ SIPInterface ]", "",
                  "FORMAT Index = InterfaceName, NetworkInterface, ApplicationType, UDPPort, "
                  "TCPPort, TLSPort, SRDName, TLSContext, TLSMutualAuthentication;"]
        number = 0
        for listener, port in sorted(ports.items(), key=lambda item: item[1]):
            index = self.bindings.get(listener)
            if listener == "management" or index is None or index not in contexts:
                continue
            mutual = 1 if listener == "teams" else 0
            lines.append(f'SIPInterface {number} = "{listener}", "O+M+C", 2, 0, 0, {port}, '
                         f'"DefaultSRD", "{contexts[index].name}", {mutual};')
            number += 1
        lines += ["", "[ \\SIPInterface ]", ""]
        web = self.bindings.get("management")
        if web is not None and web in contexts:
            lines += ["[ WebParams ]", "", f'WebTLSContext = "{contexts[web].name}"', "",
                      "[ \\WebParams ]", ""]
        return lines

    def load_ini(self, text: str) -> None:
        """Apply parameters and TLSContexts rows of an INI file (certificates stay)."""
        row = re.compile(r'^TLSContexts\s+(\d+)\s*=\s*"([^"]*)"\s*,\s*(.*);\s*$')
        param = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
        in_table = False
        with self.lock:
            for raw in text.splitlines():
                line = raw.strip()
                if not line or line.startswith(";"):
                    continue
                if line.startswith("["):
                    in_table = line.replace(" ", "") == "[TLSContexts]"
                    continue
                if in_table:
                    match = row.match(line)
                    if match and int(match.group(1)) in self.running:
                        ctx = self.running[int(match.group(1))]
                        ctx.name = match.group(2)
                        values = [v.strip() for v in match.group(3).split(",")]
                        if len(values) >= 4 and all(v.isdigit() for v in values[:4]):
                            numbers = [int(v) for v in values[:4]]
                            ctx.tls_version, ctx.require_strict_cert = numbers[0], numbers[1]
                            ctx.ocsp_enable, ctx.dh_key_size = numbers[2], numbers[3]
                    continue
                match = param.match(line)
                if match and not line.startswith("FORMAT") and match.group(1) != "WebTLSContext":
                    self.params[match.group(1)] = match.group(2)

