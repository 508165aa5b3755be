"""A lab Mediant SBC: the REST API subset certfleet uses, over real HTTPS.

The lab device behaves as the AudioCodes REST API reference 7.4 documents it
(all under ``/api/v1``, Basic auth, multipart uploads with a part named
``file``, JSON answers carrying ``description``), and it really serves what it
holds: its management HTTPS and its SIP-TLS listener present the certificate
of the TLS context bound to them, so ``openssl s_client`` sees what the device
believes it holds.

It emulates an independent device, so it uses ``cryptography`` directly and
never ``certfleet.pki``.

Behaviour worth knowing (lab choices where the documentation is silent):

* A context presents a new certificate only once its certificate and private
  key match. Uploading the key first (as certfleet does) leaves the listeners
  presenting the previous pair until the matching certificate arrives.
* Changes live in the running configuration; ``POST /actions/saveConfiguration``
  copies them to "flash". :meth:`LabSbc.restart` (or ``POST /actions/reset``
  without ``saveConfiguration``) drops unsaved changes: the listeners present
  the saved certificate again.
* An HA pair (:class:`LabSbcPair`) shares one configuration between the active
  and the standby unit: a change made on the active shows on the standby's
  listeners too. The standby answers 409 to changes, and after every change
  the pair answers 409 to the next ``sync_busy`` changing requests (and to any
  changing request within ``sync_window`` seconds), like an HA sync.
* :class:`Faults` injects latency, dropped connections, 500s, 409s, hung
  requests and frozen listeners, optionally only on the Nth matching request.

Usage::

    with LabSbc("sbc1") as sbc:
        sbc.url, sbc.user, sbc.password, sbc.management_sha256, sbc.sip_port
"""

from __future__ import annotations

import copy
import datetime as dt
import fnmatch
import functools
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .ca import LabCA
from .tls import CertSlot, LabHTTPSServer, LabTLSListener

__all__ = [
    "ContextView",
    "FaultRule",
    "Faults",
    "LabSbc",
    "LabSbcPair",
    "parse_multipart",
    "stop_all",
]

API_PREFIX = "/api/v1"
DEFAULT_CONTEXTS = ("default", "SIP-TLS", "Teams")
DEFAULT_BINDINGS: Mapping[str, int] = {"management": 0, "sip": 1}
LabKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# ---- shared lab material ---------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _shared_material() -> tuple[LabCA, rsa.RSAPrivateKey]:
    """One CA and one RSA key for every lab SBC of a process: starting 100 is cheap."""
    ca = LabCA(name="certfleet Lab SBC")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ca, key


def _device_certificate(ca: LabCA, key: LabKey, name: str) -> x509.Certificate:
    """The factory certificate of a lab device: its name, localhost and 127.0.0.1."""
    return ca.issue(
        [f"{name}.lab.invalid", "localhost"], key=key, ip_addresses=["127.0.0.1"], days=90
    ).leaf


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _key_pem(key: Any) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def _public_der(key_or_cert: Any) -> bytes:
    data: bytes = key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@functools.lru_cache(maxsize=512)
def _stored_key(key_pem: bytes) -> tuple[bytes, int]:
    """(SubjectPublicKeyInfo DER, key size) of a key the lab stores.

    Cached and loaded without RSA validation: stored keys were validated on
    upload (or made by the lab), and a validated RSA load costs ~30 ms of
    CPU, which a lab of 100 devices cannot pay on every request.
    """
    key = serialization.load_pem_private_key(key_pem, None, unsafe_skip_rsa_key_validation=True)
    size = getattr(key, "key_size", None) or getattr(getattr(key, "curve", None), "key_size", 0)
    return _public_der(key), int(size or 0)


@functools.lru_cache(maxsize=64)
def _uploaded_key(data: bytes, password: bytes | None) -> Any:
    """An uploaded key, fully validated once: an estate uploads the same key to every device."""
    return serialization.load_pem_private_key(data, password)


@functools.lru_cache(maxsize=64)
def _stored_pem(data: bytes, password: bytes | None) -> bytes:
    """How the lab stores an uploaded key: unencrypted PKCS#8."""
    return _key_pem(_uploaded_key(data, password))


def _split_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in ``data`` (PEM). Raises ValueError when there is none."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError("not a PEM certificate")
    return list(x509.load_pem_x509_certificates(data))


def _chain_for(certs: list[x509.Certificate], store: Sequence[bytes]) -> list[x509.Certificate]:
    """The chain a context sends: uploaded extras, then intermediates from its trusted store.

    Mediant SBCs send the intermediates they find in the context's trusted
    root store; the lab does the same (self-signed roots are never sent).
    """
    chain = list(certs[1:])
    pool = [x509.load_pem_x509_certificate(pem) for pem in store]
    current = chain[-1] if chain else certs[0]
    for _ in range(8):
        issuer = next((c for c in pool if c.subject == current.issuer
                       and c.subject != c.issuer and c not in chain), None)
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return chain


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` body by name. Raises ValueError."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("expected multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("the multipart body has no parts")
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        parts[name] = payload if isinstance(payload, bytes) else b""
    return parts


# ---- device state ----------------------------------------------------------------------


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


@dataclass
class FaultRule:
    """Fail matching requests: the ``nth`` match and the ``times - 1`` after it.

    ``action`` is ``drop`` (close without answer), ``500``, ``409``, ``400``,
    ``hang`` (hold the request until the lab stops), ``delay`` (sleep
    ``seconds`` then answer normally), ``hang-after`` or ``drop-after``
    (carry the request out, then hold it or close without answer: the
    change is made and the client never hears of it). ``held`` counts the
    requests the rule holds or dropped, once the change (if any) is made.
    ``method`` and ``path`` (an fnmatch pattern on the path after
    ``/api/v1``, e.g. ``/files/tls/*/certificate``) narrow which requests
    count; None matches all.
    """

    action: str
    method: str | None = None
    path: str | None = None
    nth: int = 1
    times: int = 1
    seconds: float = 0.0
    seen: int = 0
    fired: int = 0
    held: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


class Faults:
    """Faults injected into one lab SBC unit. Thread-safe; change it at any time."""

    ACTIONS = ("drop", "500", "409", "400", "hang", "delay", "hang-after", "drop-after")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = 0.0  # seconds added to every request
        self.rules: list[FaultRule] = []
        self.frozen_listeners: set[str] = set()  # roles that keep their certificate
        self.close_connections = False  # answer "Connection: close": one request per connection

    def add(
        self,
        action: str,
        *,
        method: str | None = None,
        path: str | None = None,
        nth: int = 1,
        times: int = 1,
        seconds: float = 0.0,
    ) -> FaultRule:
        """Add a rule (see :class:`FaultRule`). Raises ValueError for an unknown action."""
        if action not in self.ACTIONS:
            raise ValueError(f"action must be one of {self.ACTIONS!r}, not {action!r}")
        if nth < 1 or times < 1:
            raise ValueError(f"nth and times must be >= 1, not {nth!r} and {times!r}")
        rule = FaultRule(action, method, path, nth, times, seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def busy(self, times: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        """Answer the next ``times`` matching requests with 409 (device busy)."""
        self.add("409", method=method, path=path, times=times)

    def freeze(self, role: str) -> None:
        """Keep listener ``role`` (management, sip, teams) on its current certificate."""
        self.frozen_listeners.add(role)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
        self.latency = 0.0
        self.frozen_listeners.clear()

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request, if any (counts the request)."""
        with self._lock:
            chosen: FaultRule | None = None
            for rule in self.rules:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if chosen is None and rule.nth <= rule.seen and rule.fired < rule.times:
                    rule.fired += 1
                    chosen = rule
            return chosen


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

    def snapshot(self) -> Any:
        """A copy of the running and saved configuration (see :meth:`restore_snapshot`)."""
        with self.lock:
            return copy.deepcopy(
                (self.running, self.saved, self.params, self.saved_params, self.served))

    def restore_snapshot(self, snapshot: Any) -> None:
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
            return "\r\n".join(lines)

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
                if match and not line.startswith("FORMAT"):
                    self.params[match.group(1)] = match.group(2)


# ---- HTTP ----------------------------------------------------------------------------


class _Reply(Exception):
    """Raised inside a handler to answer with ``status`` and a description."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


_TLS_PATH = re.compile(r"^/files/tls/([^/]+)/(certificate|privateKey|trustedRoot)(/incremental)?$")
_CHANGING = ("PUT", "POST")


class _SbcHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered writes: head and body leave in one segment (no delayed-ACK stalls);
    # BaseHTTPRequestHandler flushes after every request.
    wbufsize = 65536
    server_version = "Mediant-Lab"
    sys_version = ""
    server: _SbcServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the lab keeps its own request log (``LabSbc.requests``)."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.server.sbc.faults.close_connections:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Mapping[str, Any],
              headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _authorised_user(self) -> str | None:
        import base64
        import binascii

        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if self.server.sbc.auth == "digest":
            return self._digest_user(value) if scheme.lower() == "digest" else None
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.server.sbc.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            return None
        return user

    def _digest_user(self, value: str) -> str | None:
        """RFC 7616 Digest (MD5 or SHA-256, qop=auth) against a nonce this unit issued."""
        from urllib.request import parse_http_list, parse_keqv_list

        sbc = self.server.sbc
        try:
            params = parse_keqv_list(parse_http_list(value))
        except ValueError:
            return None
        user = params.get("username", "")
        expected = sbc.users.get(user)
        nonce = params.get("nonce", "")
        if expected is None or nonce not in sbc._nonces or params.get("uri") != self.path:
            return None
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in ("MD5", "SHA-256"):
            return None

        def digest(text: str) -> str:
            name = "md5" if algorithm == "MD5" else "sha256"
            return hashlib.new(name, text.encode()).hexdigest()

        ha1 = digest(f"{user}:{params.get('realm', '')}:{expected}")
        ha2 = digest(f"{self.command}:{params['uri']}")
        if params.get("qop"):
            wanted = digest(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:"
                            f"{params['qop']}:{ha2}")
        else:
            wanted = digest(f"{ha1}:{nonce}:{ha2}")
        return user if secrets.compare_digest(wanted, params.get("response", "")) else None

    def _challenge(self) -> dict[str, str]:
        sbc = self.server.sbc
        if sbc.auth != "digest":
            return {"WWW-Authenticate": 'Basic realm="Mediant SBC"'}
        nonce = secrets.token_hex(16)
        sbc._nonces.add(nonce)
        return {"WWW-Authenticate": f'Digest realm="Mediant SBC", qop="auth", '
                                    f'nonce="{nonce}", algorithm=MD5'}

    def _dispatch(self, method: str) -> None:
        sbc = self.server.sbc
        raw_path = self.path.split("?", 1)[0]
        body = self._body()
        path = raw_path[len(API_PREFIX):] if raw_path.startswith(API_PREFIX) else None
        status = 0
        try:
            if sbc.faults.latency:
                time.sleep(sbc.faults.latency)
            if path is None:
                raise _Reply(404, f"Resource {raw_path!r} not found")
            user = self._authorised_user()
            if user is None:
                status = 401
                self._json(401, {"description": "Unauthorized"}, self._challenge())
                return
            rule = sbc.faults.pick(method, path)
            after: FaultRule | None = None
            if rule is not None:
                if rule.action == "drop":
                    status = -1
                    self.close_connection = True
                    rule.held += 1
                    return
                if rule.action == "hang":
                    status = -1
                    rule.held += 1
                    sbc._stopping.wait(60)
                    self.close_connection = True
                    return
                if rule.action in ("hang-after", "drop-after"):
                    after = rule
                elif rule.action == "delay":
                    time.sleep(rule.seconds)
                else:
                    raise _Reply(int(rule.action), {
                        "500": "Internal error",
                        "409": "Device is busy, try again later",
                        "400": "Bad request",
                    }[rule.action])
            changing = method in _CHANGING
            if changing and user in sbc.read_only_users:
                raise _Reply(403, f"User {user!r} may not change the configuration")
            if changing and sbc.unit_role == "standby":
                raise _Reply(409, "This unit is the HA standby: configure the active unit")
            if changing and sbc.state.syncing():
                raise _Reply(409, "Device is busy: HA synchronization in progress")
            status, data, content_type = self._route(method, path, body)
            if after is not None:
                # The change is made; the answer never leaves.
                status = -1
                self.close_connection = True
                after.held += 1
                if after.action == "hang-after":
                    sbc._stopping.wait(60)
                return
            if isinstance(data, bytes):
                self._send(status, data, content_type)
            else:
                self._json(status, data)
        except _Reply as reply:
            status = reply.status
            self._json(reply.status, {"description": reply.description})
        except Exception as exc:  # a device answers 500, it never crashes
            status = 500
            self._json(500, {"description": f"Internal error: {type(exc).__name__}"})
        finally:
            sbc._log(method, raw_path, status)

    def _upload(self, body: bytes) -> tuple[bytes, bytes | None]:
        try:
            parts = parse_multipart(self.headers.get("Content-Type", ""), body)
        except ValueError as exc:
            raise _Reply(400, f"Expected multipart/form-data with a part named 'file' ({exc})"
                         ) from exc
        if "file" not in parts:
            raise _Reply(400, "Expected multipart/form-data with a part named 'file'")
        password = parts.get("password")
        return parts["file"], password or None

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any, str]:
        state = self.server.sbc.state
        if path == "/status" and method == "GET":
            return 200, self.server.sbc.status(), ""
        if path == "/files/ini":
            if method == "GET":
                return 200, state.render_ini().encode(), "text/plain"
            if method == "PUT":
                data, _ = self._upload(body)
                self._load_ini(data)
                state.load_ini(data.decode("utf-8", "replace"))
                state.save()
                state.restart()
                return 200, {"description": "INI file was successfully loaded; device reset"}, ""
        if path == "/files/ini/incremental" and method == "PUT":
            data, _ = self._upload(body)
            self._load_ini(data)
            state.load_ini(data.decode("utf-8", "replace"))
            state.changed()
            return 200, {"description": "INI file was successfully loaded"}, ""
        if path == "/actions/saveConfiguration" and method == "POST":
            state.save()
            return 200, {"description": "Configuration was saved"}, ""
        if path == "/actions/reset" and method == "POST":
            try:
                options = json.loads(body or b"{}")
            except ValueError as exc:
                raise _Reply(400, "Reset options must be JSON") from exc
            if isinstance(options, dict) and options.get("saveConfiguration"):
                state.save()
            state.restart()
            return 200, {"description": "Device was reset"}, ""
        match = _TLS_PATH.match(path)
        if match:
            return self._tls(method, match.group(1), match.group(2), bool(match.group(3)), body)
        raise _Reply(404 if method == "GET" else 405,
                     f"Resource {API_PREFIX + path!r} not found" if method == "GET"
                     else f"Method {method} is not supported on {API_PREFIX + path!r}")

    @staticmethod
    def _load_ini(data: bytes) -> None:
        if b"[" not in data or b"\x00" in data:
            raise _Reply(400, "The file is not an INI file")

    def _tls(self, method: str, ident: str, what: str, incremental: bool,
             body: bytes) -> tuple[int, Any, str]:
        state = self.server.sbc.state
        with state.lock:
            if not ident.isdigit() or int(ident) not in state.running:
                raise _Reply(404, f"TLS context {ident} does not exist")
            ctx = state.running[int(ident)]
            if what == "certificate" and not incremental:
                if method == "GET":
                    return 200, ctx.cert_pem, "application/x-pem-file"
                if method == "PUT":
                    data, _ = self._upload(body)
                    try:
                        certs = _split_pem_certificates(data)
                    except ValueError as exc:
                        raise _Reply(400, "Failed to load the certificate: the file is not a "
                                          "PEM certificate") from exc
                    ctx.cert_pem = b"".join(_pem(c) for c in certs)
                    state.apply(ctx.index)
                    state.changed()
                    return 200, {"description": "Certificate was successfully changed"}, ""
            if what == "privateKey" and not incremental:
                if method == "GET":
                    cert = x509.load_pem_x509_certificates(ctx.cert_pem)[0]
                    public, size = _stored_key(ctx.key_pem)
                    return 200, {"size": size, "valid": public == _public_der(cert)}, ""
                if method == "PUT":
                    data, password = self._upload(body)
                    try:
                        if b"-----BEGIN" not in data:
                            raise ValueError("not PEM")
                        key = _uploaded_key(data, password)
                    except (ValueError, TypeError) as exc:
                        raise _Reply(400, "Failed to load the private key: the file is not a "
                                          "PEM private key or its password is wrong") from exc
                    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
                        raise _Reply(400, "Failed to load the private key: only RSA and EC "
                                          "keys are supported")
                    ctx.key_pem = _stored_pem(data, password)
                    state.apply(ctx.index)
                    state.changed()
                    return 200, {"description": "Private key was successfully changed"}, ""
            if what == "trustedRoot":
                if method == "GET" and not incremental:
                    return 200, b"".join(ctx.trusted_roots), "application/x-pem-file"
                if method == "PUT":
                    data, _ = self._upload(body)
                    try:
                        certs = _split_pem_certificates(data)
                    except ValueError as exc:
                        raise _Reply(400, "Failed to load the trusted root: the file is not a "
                                          "PEM certificate") from exc
                    pems = [_pem(c) for c in certs]
                    if incremental:
                        for pem in pems:
                            if pem not in ctx.trusted_roots:
                                ctx.trusted_roots.append(pem)
                        state.apply(ctx.index)  # the chain sent may now be longer
                        state.changed()
                        return 200, {"description":
                                     "Trusted root certificate was successfully added"}, ""
                    ctx.trusted_roots = pems
                    state.apply(ctx.index)
                    state.changed()
                    return 200, {"description":
                                 "Trusted root certificates were successfully changed"}, ""
        raise _Reply(405, f"Method {method} is not supported on {self.path!r}")


class _SbcServer(LabHTTPSServer):
    sbc: LabSbc


# ---- the device -------------------------------------------------------------------------


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
        _state: _DeviceState | None = None,
        _unit_role: str = "standalone",
    ) -> None:
        self.name = name
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
            if role == "management":
                mgmt = _SbcServer(_SbcHandler, slot)
                mgmt.sbc = self
                server = mgmt
            else:
                server = LabTLSListener(slot)
            self._slots[role] = slot
            self._servers[role] = server
            self.state.register(role, slot, self.faults)
            server.start()
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

    def snapshot(self) -> Any:
        """The device's configuration (running and saved) as it is now, to put back later
        with :meth:`restore_snapshot` (a test that replays a fault from one start)."""
        return self.state.snapshot()

    def restore_snapshot(self, snapshot: Any) -> None:
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
        return f"https://127.0.0.1:{self.port}"

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

    def status(self) -> dict[str, Any]:
        """The ``GET /status`` document."""
        state = self.state
        return {
            "localTimeStamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ipAddress": "127.0.0.1",
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
    """An HA pair: two lab units sharing one configuration.

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
        **kwargs: Any,
    ) -> None:
        self.active = LabSbc(f"{name}-a", password=password, ca=ca, key=key, contexts=contexts,
                             bindings=bindings, teams_listener=teams_listener, **kwargs)
        state = self.active.state
        state.high_availability = True
        state.sync_busy = sync_busy
        state.sync_window = sync_window
        self.active.unit_role = "active"
        self.standby = LabSbc(f"{name}-b", password=self.active.password, ca=self.active.ca,
                              _state=state, _unit_role="standby", **kwargs)

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
