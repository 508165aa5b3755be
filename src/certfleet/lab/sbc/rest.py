"""The REST API of a lab SBC: the subset of AudioCodes REST API 7.4 that certfleet uses."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..tls import LabHTTPSServer
from .faults import FaultRule
from .material import (
    API_PREFIX,
    _pem,
    _public_der,
    _split_pem_certificates,
    _stored_key,
    _stored_pem,
    _uploaded_key,
)

if TYPE_CHECKING:
    import threading

    from .faults import Faults
    from .state import _DeviceState


class SbcBackend(Protocol):
    """What the REST handler needs of the lab SBC it answers for (``LabSbc``)."""

    auth: str
    users: dict[str, str]
    read_only_users: dict[str, str]
    unit_role: str
    faults: Faults
    state: _DeviceState
    _nonces: set[str]
    _stopping: threading.Event

    def status(self) -> dict[str, object]: ...

    def _log(self, method: str, path: str, status: int) -> None: ...


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

    def log_message(self, format: str, *args: object) -> None:
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

    def _json(self, status: int, data: object,
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

    def _uploaded_certificates(self, body: bytes, what: str) -> list[x509.Certificate]:
        """The PEM certificates of an upload; the device's 400 when there are none."""
        data, _ = self._upload(body)
        try:
            return _split_pem_certificates(data)
        except ValueError as exc:
            raise _Reply(400, f"Failed to load the {what}: the file is not a PEM certificate"
                         ) from exc

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, object, str]:
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
             body: bytes) -> tuple[int, object, str]:
        state = self.server.sbc.state
        with state.lock:
            if not ident.isdigit() or int(ident) not in state.running:
                raise _Reply(404, f"TLS context {ident} does not exist")
            ctx = state.running[int(ident)]
            if what == "certificate" and not incremental:
                if method == "GET":
                    return 200, ctx.cert_pem, "application/x-pem-file"
                if method == "PUT":
                    certs = self._uploaded_certificates(body, "certificate")
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
                    pems = [_pem(c) for c in self._uploaded_certificates(body, "trusted root")]
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
    sbc: SbcBackend

