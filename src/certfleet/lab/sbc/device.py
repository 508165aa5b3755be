"""A lab SBC unit and an HA pair: listeners, lifecycle and inspection."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..ca import LabCA
from ..tls import CertSlot, LabHTTPSServer, LabTLSListener
from .faults import Faults
from .material import (
    DEFAULT_BINDINGS,
    DEFAULT_CONTEXTS,
    LabKey,
    _chain_for,
    _device_certificate,
    _key_pem,
    _pem,
    _public_der,
    _sha256,
    _shared_material,
)
from .rest import _SbcHandler, _SbcServer
from .state import ContextView, Snapshot, _Context, _DeviceState


class LabSbc:
    """One lab SBC unit on 127.0.0.1 (management HTTPS, SIP-TLS, maybe Teams SIP-TLS).

    Parameters (all keyword except ``name``):

    * ``user`` / ``password``: the Administrator credentials (password random
      when not given); ``read_only_users`` maps more users to passwords that
      may read but not change (403).
    * ``ca``: the lab CA that issued the factory certificate (one shared CA by
      default, so starting many lab SBCs is cheap); ``key``: the factory key
      (one shared RSA-2048 key by default).
    * ``contexts``: the TLS context names, index = position (default
      ``default``, ``SIP-TLS``, ``Teams``); every context starts with the
      factory certificate and the CA's intermediate and root as trusted roots
      (listeners send the intermediates of their context's trusted store).
    * ``bindings``: which context each listener presents (default management
      → 0, sip → 1); ``teams_listener=True`` adds a second SIP-TLS listener
      bound to context 2 (role ``teams``), which requires a client certificate
      (mutual TLS). Roles other than ``management`` are bare TLS listeners.
    * ``tls_versions``: context index → TLSVersion bits (4 TLS 1.2 only, 8
      TLS 1.3 only, 0 any) that its listeners accept.
    * ``latency``: seconds added to every REST request.
    * ``host``: the loopback address every listener binds (127.0.0.1; any
      127.x address on Linux); ``ports``: role → port to bind (0 or absent:
      a free one).
    * ``auth``: ``basic`` (documented) or ``digest`` (HTTP Digest required: a
      Basic request is answered 401 with a Digest challenge). Changeable.

    Attributes: ``url`` (``https://127.0.0.1:PORT``), ``port``, ``sip_port``,
    ``teams_port`` (or None), ``user``, ``password``, ``ca_bundle_pem``,
    ``management_sha256`` (what management HTTPS presents now), ``faults``,
    ``requests`` (method, path, status) log. Start with :meth:`start` or a
    ``with`` block; :meth:`stop` ends every server thread.
    """

    def __init__(
        self,
        name: str = "sbc1",
        *,
        user: str = "Admin",
        password: str | None = None,
        read_only_users: Mapping[str, str] | None = None,
        ca: LabCA | None = None,
        key: LabKey | None = None,
        contexts: Sequence[str] = DEFAULT_CONTEXTS,
        bindings: Mapping[str, int] | None = None,
        teams_listener: bool = False,
        tls_versions: Mapping[int, int] | None = None,
        latency: float = 0.0,
        auth: str = "basic",
        product_type: str = "Mediant VE SBC",
        version: str = "7.40A.500.775",
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        _state: _DeviceState | None = None,
        _unit_role: str = "standalone",
    ) -> None:
        self.name = name
        self.host = host
        self.ports = dict(ports or {})
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.read_only_users = dict(read_only_users or {})
        self.users = {user: self.password, **self.read_only_users}
        if auth not in ("basic", "digest"):
            raise ValueError(f"auth must be 'basic' or 'digest', not {auth!r}")
        self.auth = auth
        self._nonces: set[str] = set()
        shared_ca, shared_key = _shared_material()
        self.ca = ca or shared_ca
        self.ca_bundle_pem = _pem(self.ca.root)
        self.unit_role = _unit_role
        self.faults = Faults()
        self.faults.latency = latency
        self.requests: list[tuple[str, str, int]] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        if _state is None:
            device_key = key or shared_key
            cert = _device_certificate(self.ca, device_key, name)
            binds = dict(bindings if bindings is not None else DEFAULT_BINDINGS)
            if teams_listener:
                binds.setdefault("teams", 2)
            for role, index in binds.items():
                if not 0 <= index < len(contexts):
                    raise ValueError(f"listener {role!r} is bound to missing context {index!r}")
            _state = _DeviceState(
                [
                    _Context(i, ctx_name, _pem(cert), _key_pem(device_key),
                             [*(_pem(c) for c in self.ca.intermediate_certs), self.ca_bundle_pem])
                    for i, ctx_name in enumerate(contexts)
                ],
                bindings=binds,
                product_type=product_type,
                version=version,
                high_availability=False,
                sync_busy=0,
                sync_window=0.0,
            )
        for index, tls_version in (tls_versions or {}).items():
            _state.running[index].tls_version = _state.saved[index].tls_version = tls_version
        self.state = _state
        self._servers: dict[str, LabHTTPSServer | LabTLSListener] = {}
        self._slots: dict[str, CertSlot] = {}

    # -- lifecycle
    def start(self) -> LabSbc:
        """Start the listeners (management HTTPS, SIP-TLS, Teams when bound)."""
        if self._servers:
            return self
        self._stopping.clear()
        for role in self.state.bindings:
            index = self.state.bindings[role]
            cert_pem, key_pem = self.state.served[index]
            certs = x509.load_pem_x509_certificates(cert_pem)
            chain = _chain_for(certs, self.state.running[index].trusted_roots)
            # Teams Direct Routing interfaces use mutual TLS: a peer without a client
            # certificate is refused (after the server's certificate was sent).
            slot = CertSlot(_pem(certs[0]), key_pem, b"".join(_pem(c) for c in chain),
                            require_client_cert=role == "teams",
                            tls_version=self.state.running[index].tls_version)
            server: LabHTTPSServer | LabTLSListener
            port = self.ports.get(role, 0)
            if role == "management":
                mgmt = _SbcServer(_SbcHandler, slot, host=self.host, port=port)
                mgmt.sbc = self
                server = mgmt
            else:
                server = LabTLSListener(slot, host=self.host, port=port)
            self._slots[role] = slot
            self._servers[role] = server
            self.state.register(role, slot, self.faults)
            server.start()
        self.state.units.setdefault(self.unit_role, (self.host, self.listener_ports))
        return self

    def stop(self) -> None:
        """Stop every listener (in parallel); hung requests are released."""
        self._stopping.set()
        stoppers = [threading.Thread(target=server.stop, name=f"stop-{self.name}-{role}")
                    for role, server in self._servers.items()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        for slot in self._slots.values():
            self.state.unregister(slot)
            slot.close()
        self._servers.clear()
        self._slots.clear()

    def __enter__(self) -> LabSbc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart(self) -> None:
        """Restart the device: unsaved changes are lost, the saved ones are served."""
        self.state.restart()

    def snapshot(self) -> Snapshot:
        """The device's configuration (running and saved) as it is now, to put back later
        with :meth:`restore_snapshot` (a test that replays a fault from one start)."""
        return self.state.snapshot()

    def restore_snapshot(self, snapshot: Snapshot) -> None:
        self.state.restore_snapshot(snapshot)

    def seed_context(self, index: int, cert_pem: bytes, key_pem: bytes,
                     trusted_roots: Sequence[bytes] | None = None) -> None:
        """Make context ``index`` hold ``cert_pem`` + ``key_pem``, saved, as if installed earlier.

        ``trusted_roots`` (PEM each) are put first in its trusted store (what
        was there stays). Works before and after :meth:`start`. Raises
        ValueError when the key does not match the certificate.
        """
        certs = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
        if _public_der(key) != _public_der(certs[0]):
            raise ValueError(f"the key does not match the certificate for context {index!r}")
        with self.state.lock:
            ctx = self.state.running[index]
            ctx.cert_pem = b"".join(_pem(c) for c in certs)
            ctx.key_pem = _key_pem(key)
            roots = list(trusted_roots or [])
            ctx.trusted_roots = [*roots, *(r for r in ctx.trusted_roots if r not in roots)]
            self.state.saved[index] = copy.deepcopy(ctx)
            self.state.apply(index)

    # -- addresses
    def port_of(self, role: str) -> int:
        """The port of listener ``role`` (management, sip, teams). Raises KeyError."""
        return self._servers[role].port

    @property
    def port(self) -> int:
        return self.port_of("management")

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def sip_port(self) -> int:
        return self.port_of("sip")

    @property
    def teams_port(self) -> int | None:
        return self.port_of("teams") if "teams" in self._servers else None

    @property
    def listener_ports(self) -> dict[str, int]:
        return {role: server.port for role, server in self._servers.items()}

    # -- inspection
    def served_sha256(self, role: str = "management") -> str:
        """SHA-256 of the certificate listener ``role`` presents now."""
        return _sha256(x509.load_pem_x509_certificate(self._slots[role].cert_pem))

    @property
    def management_sha256(self) -> str:
        return self.served_sha256("management")

    def context(self, index: int) -> ContextView:
        """What context ``index`` holds in the running configuration."""
        with self.state.lock:
            return ContextView.of(self.state.running[index])

    def saved_context(self, index: int) -> ContextView:
        """What context ``index`` holds in the saved ("flash") configuration."""
        with self.state.lock:
            return ContextView.of(self.state.saved[index])

    def ini(self, saved: bool = False) -> str:
        return self.state.render_ini(saved)

    @property
    def saves(self) -> int:
        """How many times the configuration was saved."""
        return self.state.saves

    def status(self) -> dict[str, object]:
        """The ``GET /status`` document."""
        state = self.state
        return {
            "localTimeStamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ipAddress": self.host,
            "subnetMask": "255.0.0.0",
            "defaultGateway": "0.0.0.0",
            "productType": state.product_type,
            "versionID": state.version,
            "protocolType": "SIP",
            "operationalState": "UNLOCKED",
            "highAvailability": "Operational" if state.high_availability else "Not Operational",
            "haUnitRole": self.unit_role if state.high_availability else None,
            "serialNumber": int(hashlib.sha256(self.name.encode()).hexdigest()[:8], 16),
            "macAddress": "00:90:8f:" + ":".join(
                hashlib.sha256(self.name.encode()).hexdigest()[i:i + 2] for i in (0, 2, 4)),
            "systemUpTime": 3600,
            "saveNeeded": state.running != state.saved,
        }

    def _log(self, method: str, path: str, status: int) -> None:
        with self._requests_lock:
            self.requests.append((method, path, status))


def stop_all(devices: Iterable[LabSbc | LabSbcPair]) -> None:
    """Stop many lab SBCs at once (each server's loop takes up to 0.1 s to notice)."""
    threads = [threading.Thread(target=device.stop, name="lab-sbc-stop") for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class LabSbcPair:
    """An HA pair: two lab units sharing one configuration (``hosts``: their addresses).

    ``active`` takes changes; ``standby`` answers 409 to them and presents
    the same certificates. After each change, the next ``sync_busy`` changing
    requests (and any within ``sync_window`` seconds) get 409, as during an HA
    sync. Other parameters are those of :class:`LabSbc`.
    """

    def __init__(
        self,
        name: str = "sbc-ha",
        *,
        sync_busy: int = 1,
        sync_window: float = 0.0,
        password: str | None = None,
        contexts: Sequence[str] = DEFAULT_CONTEXTS,
        bindings: Mapping[str, int] | None = None,
        teams_listener: bool = False,
        ca: LabCA | None = None,
        key: LabKey | None = None,
        hosts: tuple[str, str] = ("127.0.0.1", "127.0.0.1"),
        **kwargs: Any,
    ) -> None:
        self.active = LabSbc(f"{name}-a", password=password, ca=ca, key=key, contexts=contexts,
                             bindings=bindings, teams_listener=teams_listener, host=hosts[0],
                             **kwargs)
        state = self.active.state
        state.high_availability = True
        state.sync_busy = sync_busy
        state.sync_window = sync_window
        self.active.unit_role = "active"
        self.standby = LabSbc(f"{name}-b", password=self.active.password, ca=self.active.ca,
                              _state=state, _unit_role="standby", host=hosts[1], **kwargs)

    @property
    def units(self) -> tuple[LabSbc, LabSbc]:
        return self.active, self.standby

    def start(self) -> LabSbcPair:
        self.active.start()
        self.standby.start()
        return self

    def stop(self) -> None:
        self.standby.stop()
        self.active.stop()

    def restart(self) -> None:
        self.active.restart()

    def __enter__(self) -> LabSbcPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
