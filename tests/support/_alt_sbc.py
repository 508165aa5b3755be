"""A second, minimal Mediant REST emulation, written from the documented API only.

It differs from certfleet.lab.sbc wherever the documentation is silent: how
answers look (JSON, empty, 204, text/plain), how the certificate is returned
(CRLF, chain appended, leading blank lines), how the key state is spelled,
how the INI is laid out, 404 for empty stores, 401 without a challenge, 403
for a non-admin user, 409 a few times on save. Context 0 serves the
management HTTPS interface and context 1 the SIP-TLS listener; a context
presents a new certificate once its key and certificate match.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.lab.tls import CertSlot, LabHTTPSServer, LabTLSListener


@dataclass
class Quirks:
    """Where this emulation's answers differ (all undocumented choices)."""

    answer: str = "json"  # json | empty | 204 | text
    extra_fields: bool = False
    status: dict[str, Any] = field(
        default_factory=lambda: {"versionID": "7.40A.500.123", "productType": "Mediant VE"})
    cert: str = "plain"  # plain | crlf | chain | chain_first | leading | junk | json
    no_cert: str = "404"  # 404 | empty
    key_valid: str = "bool"  # bool | str | int
    key_extra: bool = False
    no_key: str = "invalid"  # invalid ({"valid": false}) | 404, for a context without key
    no_roots: str = "empty"  # empty | 404
    save_codes: list[int] = field(default_factory=lambda: [200])
    ini: str = "spaced"  # spaced | tight | lower | garbage | missing (404)
    roots_at_start: bool = False  # contexts 0 and 1 start trusting the old chain
    echo_auth: bool = False  # a 401 answer quotes the Authorization header and password
    never_valid: bool = False  # the key state never says valid
    drop_on_management_change: bool = False  # the session drops without an answer
    fail_after_drop: bool = False  # ...and, once, the next certificate read fails with 500


@dataclass
class Context:
    cert_pem: bytes = b""
    key_pem: bytes = b""
    chain_pem: bytes = b""
    roots: list[bytes] = field(default_factory=list)

    def matches(self) -> bool:
        if not self.cert_pem or not self.key_pem:
            return False
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        key = serialization.load_pem_private_key(self.key_pem, None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _pem_blocks(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    for cert in x509.load_pem_x509_certificates(data):
        out.append(cert.public_bytes(serialization.Encoding.PEM))
    return out


class AltSbc:
    """Start with ``with AltSbc(...) as sbc:``; everything on 127.0.0.1, port 0."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, *, chain_pem: bytes = b"",
                 password: str = "Adm1n-s3cret!", quirks: Quirks | None = None) -> None:
        self.password = password
        self.users = {"Admin": password, "monitor": "mon-pass"}
        self.quirks = quirks or Quirks()
        self.contexts = {
            0: Context(cert_pem, key_pem, chain_pem),
            1: Context(cert_pem, key_pem, chain_pem),
            2: Context(),
        }
        if self.quirks.roots_at_start:
            for index in (0, 1):
                self.contexts[index].roots = _pem_blocks(chain_pem)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []
        self.saves = 0
        self.failing_reads = 0
        self._save_codes = list(self.quirks.save_codes)
        self.mgmt_slot = CertSlot(cert_pem, key_pem, chain_pem)
        self.sip_slot = CertSlot(cert_pem, key_pem, chain_pem)
        self.https = LabHTTPSServer(_handler(self), self.mgmt_slot)
        self.sip = LabTLSListener(self.sip_slot)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https.port}"

    def __enter__(self) -> AltSbc:
        self.https.start()
        self.sip.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.https.stop()
        self.sip.stop()
        self.mgmt_slot.close()
        self.sip_slot.close()

    # ---- the device's behaviour -------------------------------------------------

    def apply(self, index: int) -> None:
        ctx = self.contexts[index]
        if not ctx.matches():
            return
        slot = {0: self.mgmt_slot, 1: self.sip_slot}.get(index)
        if slot is not None:
            slot.set(ctx.cert_pem, ctx.key_pem, ctx.chain_pem)

    def ini(self) -> bytes:
        style = self.quirks.ini
        if style == "garbage":
            return b"\x00\xff not an ini at all [[[ TLSContexts"
        head = {"spaced": "[ TLSContexts ]", "tight": "[TLSContexts]",
                "lower": "[ tlscontexts ]"}[style]
        tail = {"spaced": "[ \\TLSContexts ]", "tight": "[\\TLSContexts]",
                "lower": "[ \\tlscontexts ]"}[style]
        lines = [";Board: Mediant VE", "[SYSTEM Params]", "SyslogServerIP = 10.0.0.1", "",
                 head, "FORMAT Index = Name, TLSVersion;"]
        for index in self.contexts:
            name = "default" if index == 0 else f"ctx{index}"
            sep = " = " if style != "tight" else "="
            lines.append(f'TLSContexts {index}{sep}"{name}", 0;')
        lines += [tail, ""]
        return "\r\n".join(lines).encode()


def _handler(device: AltSbc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out without a delayed ACK

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        # ---- answers ----
        def send(self, code: int, body: bytes = b"", ctype: str = "") -> None:
            self.send_response(code)
            if ctype:
                self.send_header("Content-Type", ctype)
            if code != 204:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if code != 204 and body:
                self.wfile.write(body)
            with device.lock:
                device.requests.append((self.command, self.path, code))

        def send_json(self, code: int, data: Any) -> None:
            if device.quirks.extra_fields and isinstance(data, dict):
                data = {**data, "requestId": 7, "extra": {"nested": [1, 2]}}
            self.send(code, json.dumps(data).encode(), "application/json")

        def done(self, text: str) -> None:
            style = device.quirks.answer
            if style == "json":
                self.send_json(200, {"description": text})
            elif style == "empty":
                self.send(200)
            elif style == "204":
                self.send(204)
            else:
                self.send(200, text.encode(), "text/plain")

        def error(self, code: int, text: str) -> None:
            self.send(code, text.encode(), "text/plain; charset=utf-8")

        # ---- plumbing ----
        def body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def authorised(self) -> bool:
            header = self.headers.get("Authorization", "")
            user = password = ""
            if header.startswith("Basic "):
                with contextlib.suppress(ValueError):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if device.users.get(user) != password or not user:
                # Deliberately no WWW-Authenticate.
                self.error(401, f"Unauthorized: {header} ({user}:{password})"
                           if device.quirks.echo_auth else "Unauthorized")
                return False
            if user != "Admin":
                self.error(403, "Forbidden: user level too low")
                return False
            return True

        def upload(self) -> bytes | None:
            """The part named ``file`` (filename optional), or None after a 400."""
            ctype = self.headers.get("Content-Type", "")
            raw = self.body()
            if not ctype.startswith("multipart/form-data"):
                self.error(400, "expected multipart/form-data")
                return None
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name != "file":
                    continue
                if part.get_content_type() != "application/octet-stream":
                    self.error(400, "part 'file' must be application/octet-stream")
                    return None
                payload = part.get_payload(decode=True)
                return payload if isinstance(payload, bytes) else b""
            self.error(400, "no part named 'file'")
            return None

        def route(self) -> tuple[int, str] | None:
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[:2] != ["api", "v1"]:
                return None
            rest = parts[2:]
            if len(rest) >= 4 and rest[:2] == ["files", "tls"]:
                try:
                    index = int(rest[2])
                except ValueError:
                    return None
                if index not in device.contexts:
                    return None
                return index, "/".join(rest[3:])
            return -1, "/".join(rest)

        # ---- verbs ----
        def do_GET(self) -> None:
            if not self.authorised():
                return
            routed = self.route()
            if routed is None:
                self.error(404, "Not Found")
                return
            index, what = routed
            q = device.quirks
            if index < 0:
                if what == "status":
                    self.send_json(200, q.status)
                elif what == "files/ini" and q.ini != "missing":
                    self.send(200, device.ini(), "application/octet-stream")
                else:
                    self.error(404, "Not Found")
                return
            ctx = device.contexts[index]
            if what == "certificate" and device.failing_reads:
                device.failing_reads -= 1
                self.error(500, "Internal error")
                return
            if what == "certificate":
                if not ctx.cert_pem:
                    if q.no_cert == "404":
                        self.error(404, "No certificate")
                    else:
                        self.send(200, b"", "application/x-pem-file")
                    return
                pem = ctx.cert_pem
                if q.cert == "crlf":
                    pem = pem.replace(b"\n", b"\r\n")
                elif q.cert == "chain":
                    pem = pem + ctx.chain_pem
                elif q.cert == "chain_first":
                    pem = ctx.chain_pem + pem
                elif q.cert == "leading":
                    pem = b"\n\n   \n" + pem
                elif q.cert == "json":
                    # Slashes escaped as "\/", as some JSON encoders write them.
                    body = json.dumps({"certificate": pem.decode(),
                                       "chain": ctx.chain_pem.decode()}).replace("/", "\\/")
                    self.send(200, body.encode(), "application/json")
                    return
                elif q.cert == "junk":
                    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                    pem = b"subject=CN = whatever\r\n" + broken + pem.replace(b"\n", b"\r\n")
                self.send(200, pem, "application/x-pem-file")
            elif what == "privateKey" and not ctx.key_pem and q.no_key == "404":
                self.error(404, "No private key")
            elif what == "privateKey":
                valid: Any = ctx.matches() and not q.never_valid
                if q.key_valid == "str":
                    valid = "true" if valid else "false"
                elif q.key_valid == "int":
                    valid = 1 if valid else 0
                data: dict[str, Any] = {"valid": valid}
                if ctx.key_pem:
                    data["size"] = 2048
                if q.key_extra:
                    data["keyType"] = "RSA"
                self.send_json(200, data)
            elif what == "trustedRoot":
                if not ctx.roots and q.no_roots == "404":
                    self.error(404, "Trusted root store is empty")
                else:
                    roots = b"".join(ctx.roots)
                    if q.cert == "json":
                        self.send_json(200, {"certificates": [r.decode() for r in ctx.roots]})
                    else:
                        self.send(200, roots, "text/plain")
            else:
                self.error(404, "Not Found")

        def do_PUT(self) -> None:
            if not self.authorised():
                self.body()
                return
            routed = self.route()
            if routed is None or routed[0] < 0:
                self.body()
                self.error(404, "Not Found")
                return
            index, what = routed
            data = self.upload()
            if data is None:
                return
            ctx = device.contexts[index]
            try:
                if what == "privateKey":
                    serialization.load_pem_private_key(data, None)
                    ctx.key_pem = data
                    device.apply(index)
                    self.done("Private key was successfully changed")
                elif what == "certificate":
                    certs = _pem_blocks(data)
                    if not certs:
                        raise ValueError("no certificate")
                    ctx.cert_pem = certs[0]
                    ctx.chain_pem = b"".join(certs[1:])
                    device.apply(index)
                    if index == 0 and device.quirks.drop_on_management_change:
                        self.close_connection = True  # no answer: the client sees a drop
                        device.failing_reads = int(device.quirks.fail_after_drop)
                        device.quirks.fail_after_drop = False  # once only
                        with device.lock:
                            device.requests.append((self.command, self.path, 0))
                        return
                    self.done("Certificate was successfully changed")
                elif what == "trustedRoot":
                    ctx.roots = _pem_blocks(data)
                    self.done("Trusted root store was replaced")
                elif what == "trustedRoot/incremental":
                    ctx.roots += _pem_blocks(data)
                    self.done("Trusted root certificate was successfully added")
                else:
                    self.error(404, "Not Found")
            except ValueError:
                self.error(400, "Bad file: not PEM")

        def do_POST(self) -> None:
            self.body()
            if not self.authorised():
                return
            if self.path.rstrip("/") != "/api/v1/actions/saveConfiguration":
                self.error(404, "Not Found")
                return
            with device.lock:
                code = device._save_codes.pop(0) if len(device._save_codes) > 1 else \
                    device._save_codes[0]
            if code == 409:
                self.error(409, "Device busy: HA synchronisation in progress")
                return
            device.saves += 1
            if code == 204:
                self.send(204)
            else:
                self.done("Configuration saved")

    return Handler
