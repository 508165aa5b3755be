"""Mediant SBC driver: TLS contexts over the documented REST API (``/api/v1``).

One run, per device: ``GET /status`` → backup (INI, and each target
context's certificate and trusted roots) → per context: private key (PKCS#1
PEM), certificate, trusted roots (added one by one, skipping those present)
→ ``GET privateKey`` must say valid → ``saveConfiguration`` → handshakes on
every listener given → rollback on failure.

Trust in the device: a CA bundle, or a pinned SHA-256 of its management
certificate. Either is enforced inside every TLS handshake the driver makes,
before a single request byte is written (:mod:`certfleet.drivers.pinning`):
a connection whose certificate fails is closed unused. When a context that
serves the management interface is changed, the driver accepts the
certificate it just installed from then on, by adding its fingerprint to the
accepted ones (:attr:`SbcDriver.accepted_sha256`), never by turning
verification off.

Authentication: Basic, as documented; a device that answers 401 with a
``WWW-Authenticate: Digest`` challenge gets one retry with Digest, which is
then kept for the session (:attr:`SbcDriver.auth_scheme`).

Rollback needs the previous private key, which an SBC never returns: it is
possible only when the caller gives it (``previous_keys``: from an earlier
certfleet deploy, or ``--previous-key``). Without it :meth:`SbcDriver.can_restore`
is False and the deploy template refuses unless ``allow_no_rollback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import (
    ConfigError,
    DeviceAuthError,
    DeviceConnectionError,
    DeviceRefusedError,
    DeviceTimeoutError,
    HostKeyError,
    PrivateKeyError,
    RollbackError,
    VerificationError,
)
from ..pki.model import Bundle, Finding, PrivateKey, cert_sha256, spki_sha256
from ..pki.profiles import SbcProfile, render_target
from .base import Backup, DeployOutcome, Driver, EventCallback
from .tlsprobe import Listener, ProbeResult, fetch_served_certificate, wait_for_served

RELAXED_X509_HINT = "--relaxed-x509 (inventory: x509_strict = false)"

if TYPE_CHECKING:
    import httpx

    from .sbc_rehearsal import Readiness

__all__ = ["API_PREFIX", "NO_ROLLBACK_HINT", "SbcContext", "SbcDriver", "normalize_sha256"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
NO_ROLLBACK_HINT = (
    "the SBC never returns its private key, so the previous certificate can only be put back "
    "with the key that goes with it: pass --previous-key FILE (the key installed now), or "
    "rerun with --allow-no-rollback for a first deploy (keep this deploy's key: it is the "
    "--previous-key of the next one)"
)
# The largest answer read from an SBC: an INI file, a PEM bundle or a JSON answer is far
# smaller; anything larger is not the REST API answering (SbcDriver.max_body).
MAX_BODY_BYTES = 8 * 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TLS_ROW = re.compile(
    r"""^\s*TLSContexts\s+(\d+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^,;"']*))""",
    re.MULTILINE | re.IGNORECASE)
_TLS_TABLE = re.compile(
    r"^\s*\[\s*TLSContexts\s*\][^\n]*\n(.*?)(?:^\s*\[|\Z)",
    re.MULTILINE | re.DOTALL | re.IGNORECASE)


def normalize_sha256(value: str) -> str:
    """``AB:CD:…`` or hex → 64 lowercase hex digits. Raises ConfigError."""
    text = value.strip().lower().replace(":", "").replace(" ", "")
    if text.startswith("sha256/") or text.startswith("sha256:"):
        text = text[7:]
    if not _SHA256_RE.match(text):
        raise ConfigError(
            f"pin {value!r} is not a SHA-256 fingerprint (64 hex digits)",
            hint="take it from: openssl s_client -connect HOST:PORT </dev/null | "
            "openssl x509 -fingerprint -sha256 -noout",
        )
    return text


def tls_contexts_in_ini(ini: str) -> dict[int, str]:
    """Index → name of the rows of the INI's ``TLSContexts`` table.

    Lenient (spacing, case, quoting, a missing closing ``[ \\TLSContexts ]``);
    text it cannot read gives fewer rows or none, never an exception.
    """
    table = _TLS_TABLE.search(ini.replace("\r\n", "\n").replace("\r", "\n"))
    if table is None:
        return {}
    rows: dict[int, str] = {}
    for match in _TLS_ROW.finditer(table.group(1)):
        name = next((g for g in match.groups()[1:] if g is not None), "")
        rows[int(match.group(1))] = name.strip()
    return rows


_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    """Every readable certificate in ``pem``, block by block: CRLF, leading text or
    blank lines, a broken block among good ones, PEM inside a JSON answer."""
    out: list[x509.Certificate] = []
    for match in _PEM_CERT.finditer(pem):
        # Also PEM inside a JSON string: escaped line ends and slashes.
        text = match.group(1).replace(b"\\r", b"").replace(b"\\n", b"").replace(b"\\/", b"/")
        body = b"".join(text.split())
        block = b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"
        try:
            out.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            continue
    return out


def _leaf(certs: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The device certificate of a GET answer that may carry its chain (in any order)."""
    for cert in certs:
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return cert
        except x509.ExtensionNotFound:
            return cert
    return certs[0] if certs else None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class SbcContext:
    """What one TLS context holds, as the SBC reports it."""

    index: int
    name: str | None
    certificate: x509.Certificate | None
    trusted_roots: tuple[x509.Certificate, ...]
    key_valid: bool | None
    key_size: int | None

    @functools.cached_property
    def sha256(self) -> str | None:
        return cert_sha256(self.certificate) if self.certificate is not None else None

    def to_dict(self) -> dict[str, Any]:
        cert = self.certificate
        return {
            "index": self.index,
            "name": self.name,
            "subject": cert.subject.rfc4514_string() if cert is not None else None,
            "issuer": cert.issuer.rfc4514_string() if cert is not None else None,
            "sha256": self.sha256,
            "not_after": cert.not_valid_after_utc.isoformat() if cert is not None else None,
            "key_valid": self.key_valid,
            "key_size": self.key_size,
            "trusted_roots": [
                {"subject": c.subject.rfc4514_string(), "sha256": cert_sha256(c)}
                for c in self.trusted_roots
            ],
        }


class SbcDriver(Driver):
    """Install a certificate into TLS contexts of one Mediant SBC over REST.

    ``url``: ``https://HOST[:PORT]`` of the management interface. ``password``:
    the REST (Administrator) password of ``user``. ``contexts``: the TLS
    context indexes to change (several in one run). ``listeners``: TLS
    endpoints whose handshakes must show the new certificate (management
    HTTPS, SIP-TLS...). Device trust: ``ca_bundle`` (PEM bytes), or
    ``pin_sha256`` (the management certificate's SHA-256), or ``insecure``
    (no check at all; for labs only); none of them → the system's trust store.
    ``x509_strict``: strict RFC 5280 checks (``VERIFY_X509_STRICT``) of a
    certificate verified by CA: None keeps this Python's default (on from
    3.13), False clears that flag only, True sets it.
    ``profile``: which files go where (:class:`~certfleet.pki.profiles.SbcProfile`).
    ``previous_keys``: private keys that may belong to the certificates now
    installed (matched by public key): with one for every context, a failed
    deploy is rolled back. ``replace_trusted_roots``: replace each context's
    trusted root store instead of adding what is missing. ``timeout``: seconds
    per request; ``busy_retries`` / ``busy_delay``: how often and how long
    (doubling) to retry a 409 answer.
    """

    kind = "sbc"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        password: str,
        contexts: Sequence[int] = (0,),
        user: str = "Admin",
        listeners: Sequence[Listener] = (),
        ca_bundle: bytes | None = None,
        pin_sha256: str | None = None,
        insecure: bool = False,
        profile: SbcProfile | None = None,
        previous_keys: Sequence[PrivateKey] = (),
        previous_key_pem: bytes | None = None,
        replace_trusted_roots: bool = False,
        timeout: float = 30.0,
        busy_retries: int = 6,
        busy_delay: float = 0.5,
        on_event: EventCallback | None = None,
        verify_timeout: float = 600.0,
        x509_strict: bool | None = None,
    ) -> None:
        super().__init__(name, listeners, on_event=on_event, verify_timeout=verify_timeout)
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # Not quoted: the part before "@" may be a password.
            raise ConfigError(
                "the SBC URL carries a user or password before '@'",
                hint="write https://HOST[:PORT] and pass --user and --password-env instead",
            )
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(
                f"SBC URL {url!r} is not https://HOST[:PORT]",
                hint="the REST API is served over HTTPS only: write e.g. https://sbc1.example.com",
            )
        try:
            port = parts.port or 443
        except ValueError as exc:
            raise ConfigError(f"SBC URL {url!r} has a bad port", hint="write HOST:PORT") from exc
        if not contexts:
            raise ConfigError("no TLS context given", hint="pass --context N (0 is the default)")
        bad = [c for c in contexts if not isinstance(c, int) or c < 0]
        if bad:
            raise ConfigError(f"TLS context {bad[0]!r} is not a number >= 0",
                              hint="pass --context N (0 is the default)")
        if sum(x is not None and x is not False for x in (ca_bundle, pin_sha256, insecure)) > 1:
            raise ConfigError(
                "choose one of a CA bundle, a pinned SHA-256 or insecure",
                hint="pass either --ca-bundle FILE or --pin-sha256 HEX",
            )
        self.url = f"https://{parts.netloc}"
        self.management = Listener(parts.hostname, port, label="management")
        self.user = user
        self._password = password
        self.contexts = list(dict.fromkeys(contexts))
        self.ca_bundle = ca_bundle
        self.insecure = insecure
        self._pins: set[str] = {normalize_sha256(pin_sha256)} if pin_sha256 else set()
        self.x509_strict = x509_strict
        self._seen_sha256: str | None = None
        self._auth_scheme = "basic"
        self._urls: dict[str, httpx.URL] = {}
        self.profile = profile or SbcProfile()
        keys = list(previous_keys)
        if previous_key_pem is not None:
            keys.append(_load_key_pem(previous_key_pem))
        self.previous_keys = keys
        self.replace_trusted_roots = replace_trusted_roots
        self.timeout = timeout
        self.busy_retries = busy_retries
        self.busy_delay = busy_delay
        self.max_body = MAX_BODY_BYTES  # bytes read at most from one answer
        self.status: dict[str, Any] = {}
        self.management_sha256: str | None = None
        self._client: httpx.AsyncClient | None = None
        self._before: dict[int, SbcContext] = {}
        self._changed_roots: set[int] = set()
        self._new_sha256: str | None = None
        self._served_before: dict[Listener, str | None] = {}
        self._restoring = False
        # Whether a changing request may have changed the device: any PUT/POST
        # except one answered 4xx (a 4xx is a refusal; a 5xx or a lost answer
        # leaves it unknown, so it counts).
        self._changed = False
        if insecure:
            log.warning("%s: TLS verification of %s is OFF (--insecure)", name, self.url)

    # ---- connection ---------------------------------------------------------------

    @property
    def pinned(self) -> bool:
        return bool(self._pins)

    @property
    def auth_scheme(self) -> str:
        """``basic``, or ``digest`` once the device asked for it."""
        return self._auth_scheme

    @property
    def accepted_sha256(self) -> list[str]:
        """The fingerprints of management certificates accepted now (the pin, and
        what this session installed on the management interface)."""
        return sorted(self._pins)

    def _ssl_context(self) -> ssl.SSLContext:
        from .pinning import ca_context, default_context, no_verify_context

        if self._pins or self.insecure:
            # Verification is replaced by the pin check (or, with insecure, dropped).
            return no_verify_context()
        if self.ca_bundle is not None:
            try:
                return ca_context(self.ca_bundle, self.x509_strict)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    "the CA bundle holds no usable PEM certificate",
                    hint="pass the PEM file of the CA that issued the SBC's management certificate",
                ) from exc
        return default_context(self.x509_strict)

    def _auth(self) -> httpx.Auth:
        import httpx

        if self._auth_scheme == "digest":
            return httpx.DigestAuth(self.user, self._password)
        return httpx.BasicAuth(self.user, self._password)

    def _new_client(self) -> httpx.AsyncClient:
        import httpx

        from .pinning import CheckedTransport

        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        return httpx.AsyncClient(
            base_url=self.url + API_PREFIX,
            auth=self._auth(),
            transport=CheckedTransport(self._ssl_context(), self._check_peer, limits),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
        )

    def _check_peer(self, der: bytes | None) -> None:
        """Run inside every handshake, before the request is written: the pin, and
        a record of what the device presented. Raises HostKeyError."""
        if not der:
            if self._pins:
                raise HostKeyError(
                    f"the connection to {self.url} presented no certificate to check the pin",
                    hint="connect with --ca-bundle instead of a pin",
                    device=self.name,
                )
            return
        cert = x509.load_der_x509_certificate(der)
        self._seen_sha256 = cert_sha256(cert)
        if self._pins:
            self._require_pinned(cert)

    def _require_pinned(self, cert: x509.Certificate) -> None:
        seen = cert_sha256(cert)
        if seen not in self._pins:
            pins = ", ".join(sorted(p[:16] + "…" for p in self._pins))
            raise HostKeyError(
                f"the management certificate of {self.url} has SHA-256 {seen}, "
                f"not the pinned {pins}: the connection was closed before sending anything",
                hint=f"if the SBC's certificate changed on purpose, pin it with --pin-sha256 "
                f"{seen} (inventory: tls_pin); otherwise do not connect",
                device=self.name,
                fingerprint=seen,
            )

    async def _trust_error(self, error: ssl.SSLCertVerificationError, what: str) -> HostKeyError:
        """A verification failure in words, with the fingerprint seen (read by an
        observing handshake that sends nothing) and the way to pin it."""
        import sys

        from .pinning import strict_failure

        try:
            seen: str | None = cert_sha256(
                await fetch_served_certificate(self.management, min(self.timeout, 10.0)))
        except (DeviceConnectionError, DeviceTimeoutError):
            seen = None
        pin = f"--pin-sha256 {seen}" if seen else "--pin-sha256 HEX"
        strict = strict_failure(error)
        if strict is not None:
            why = ("strict X.509 verification is on (x509_strict)" if self.x509_strict
                   else f"Python {sys.version_info.major}.{sys.version_info.minor} rejects "
                   "such certificates by default (from 3.13 on)")
            return HostKeyError(
                f"{what}: the SBC's certificate at {self.url} {strict}; {why}",
                hint=f"pin it with {pin} (compare that fingerprint with the device first), or "
                f"accept it from the CA bundle without the strict checks: {RELAXED_X509_HINT}",
                device=self.name,
                fingerprint=seen,
            )
        said = getattr(error, "verify_message", "") or str(error)
        shown = f" (SHA-256 {seen})" if seen else ""
        return HostKeyError(
            f"{what}: the management certificate of {self.url}{shown}: certificate verify failed: "
            f"{_one_line(str(said))}; the connection was closed before sending anything",
            hint=f"pass the CA that issued it to --ca-bundle (inventory: ca_file), or pin it "
            f"with {pin} (compare that fingerprint with the device first)",
            device=self.name,
            fingerprint=seen,
        )

    async def connect(self) -> None:
        """``GET /status`` on a connection whose certificate was checked in the
        handshake. Raises DeviceError."""
        self._client = self._new_client()
        answer = await self._request("GET", "/status", what="reading the device status")
        self.management_sha256 = self._seen_sha256
        data = _json(answer)
        self.status = data if isinstance(data, dict) else {}

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def rehearse(self, *, allow_no_rollback: bool = False) -> Readiness:
        """Everything a deploy does up to the first change, then close: GET requests
        only. See :mod:`certfleet.drivers.sbc_rehearsal`."""
        from .sbc_rehearsal import rehearse

        return await rehearse(self, allow_no_rollback=allow_no_rollback)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SbcDriver]:
        """``async with driver.session():`` connect, then close whatever happens."""
        try:
            await self.connect()
            yield self
        finally:
            await self.close()

    async def _pin_installed(self, sha256: str) -> None:
        """Accept the certificate just installed on the management interface.

        The old one stays accepted for connections already open; new
        connections are checked against the pins from now on (also when the
        session started with a CA bundle: the new certificate may come from
        another CA).
        """
        if self.insecure:
            return
        if self.management_sha256:
            self._pins.add(self.management_sha256)
        self._pins.add(sha256)
        await self.close()
        self._client = self._new_client()

    # ---- requests ---------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        upload: bytes | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """One REST request, 409 retried with backoff; every failure mapped to an error."""
        answer = await self._send(method, path, what=what, upload=upload, json_body=json_body)
        assert answer is not None  # only missing_ok gives None
        return answer

    async def _get_optional(self, path: str, *, what: str) -> bytes:
        """GET whose 404 means "nothing there" (an empty store): its body, or b""."""
        answer = await self._send("GET", path, what=what, missing_ok=True)
        return answer.content if answer is not None else b""

    async def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        upload: bytes | None = None,
        json_body: Any = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        import httpx

        from .pinning import verify_error_in

        if self._client is None:
            raise DeviceConnectionError(f"{what}: not connected to {self.url}",
                                        hint="connect first", device=self.name)
        delay = self.busy_delay
        attempts = self.busy_retries + 1
        for attempt in range(1, attempts + 1):
            files = ({"file": ("upload.pem", upload, "application/octet-stream")}
                     if upload is not None else None)
            changing = method in ("PUT", "POST") and not self._restoring
            try:
                request = self._client.build_request(method, self._url_of(path), files=files,
                                                     json=json_body)
                answer = await self._read_bounded(
                    await self._client.send(request, stream=True), what, method, path)
            except httpx.TimeoutException as exc:
                # A request that was sent may have been applied: count it as a change.
                self._changed |= changing and not isinstance(exc, httpx.ConnectTimeout)
                raise DeviceTimeoutError(
                    f"{what}: {method} {API_PREFIX}{path} on {self.name}: the SBC at {self.url} "
                    f"did not answer within {self.timeout:g} s",
                    hint="check that the device is up; raise --timeout for a slow link",
                    device=self.name,
                ) from exc
            except httpx.TransportError as exc:
                self._changed |= changing and not isinstance(exc, httpx.ConnectError)
                verify_error = verify_error_in(exc)
                if verify_error is not None:
                    raise await self._trust_error(verify_error, what) from None
                reason = str(exc) or type(exc).__name__
                raise DeviceConnectionError(
                    f"{what}: {method} {API_PREFIX}{path} on {self.name}: the connection to "
                    f"{self.url} failed: {_one_line(reason)}",
                    hint="check that the device is up, the URL and the port; "
                    "if it dropped mid-change, check the device state",
                    device=self.name,
                ) from exc
            except BaseException:
                # Cancelled (Ctrl-C, SIGTERM, a timeout) with the request sent: the device
                # may have carried it out, so the rollback must put it back.
                self._changed |= changing
                raise
            if changing and not 400 <= answer.status_code < 500:
                self._changed = True  # applied, or a 5xx that may have half-applied it
            log.debug("%s %s %s -> %s", self.name, method, path, answer.status_code)
            if answer.status_code == 401 and self._wants_digest(answer):
                # Once: the device takes Digest, not the documented Basic.
                self._auth_scheme = "digest"
                self._client.auth = self._auth()
                log.info("%s: the SBC asks for HTTP Digest authentication", self.name)
                return await self._send(method, path, what=what, upload=upload,
                                        json_body=json_body, missing_ok=missing_ok)
            if answer.status_code == 409 and attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
                continue
            if answer.status_code == 404 and missing_ok:
                return None
            return self._check_status(answer, what, attempt, method, path)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns

    async def _read_bounded(self, answer: httpx.Response, what: str, method: str,
                            path: str) -> httpx.Response:
        """The answer with its body read, at most :attr:`max_body` bytes (then an error)."""
        import httpx

        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in answer.aiter_bytes():
                size += len(chunk)
                if size > self.max_body:
                    raise DeviceRefusedError(
                        f"{what}: {method} {API_PREFIX}{path} on {self.name}: the answer is "
                        f"larger than {self.max_body:,} bytes, more than an SBC sends",
                        hint="check that the URL is the SBC's REST API (not a proxy or "
                        "another service)",
                        device=self.name,
                    )
                chunks.append(chunk)
        finally:
            await answer.aclose()
        # Decoded already: the copy carries no content encoding or length of its own.
        headers = [(k, v) for k, v in answer.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length",
                                        "transfer-encoding")]
        return httpx.Response(answer.status_code, headers=headers, content=b"".join(chunks),
                              request=answer.request)

    def _url_of(self, path: str) -> httpx.URL:
        """The absolute URL of an API path, parsed once per driver (httpx parses a
        relative URL and merges it with the base on every request)."""
        url = self._urls.get(path)
        if url is None:
            import httpx

            url = self._urls[path] = httpx.URL(self.url + API_PREFIX + path)
        return url

    def _wants_digest(self, answer: httpx.Response) -> bool:
        if self._auth_scheme != "basic":
            return False
        challenges = answer.headers.get_list("www-authenticate")
        return any(c.strip().lower().startswith("digest") for c in challenges)

    def _scrub(self, text: str) -> str:
        """``text`` without the password or the Authorization value (a device may echo them)."""
        import base64

        secret = base64.b64encode(f"{self.user}:{self._password}".encode()).decode()
        for value in (secret, self._password):
            if value:
                text = text.replace(value, "***")
        return text

    def _check_status(self, answer: httpx.Response, what: str, attempts: int,
                      method: str = "", path: str = "") -> httpx.Response:
        """A 2xx answer back; any other one as a one-line error naming the device, the
        request and the status (never the credentials)."""
        code = answer.status_code
        if 200 <= code < 300:
            return answer
        description = _description(answer)
        description = self._scrub(description)
        quoted = f": {description!r}" if description else ""
        request = f"{method} {API_PREFIX}{path}" if method else "request"
        said = f"{what}: {request} on {self.name} answered {code}"
        if code in (401, 403):
            reason = ("the user or password is wrong" if code == 401
                      else "the user lacks the rights")
            raise DeviceAuthError(
                f"{said}: the SBC refused user {self.user!r} ({reason}){quoted}",
                hint="the REST API needs an Administrator (or Security Administrator) user; "
                "check --user and the password in the variable named by --password-env",
                device=self.name,
                status=code,
            )
        if code == 400:
            raise DeviceRefusedError(
                f"{said}: the SBC refused the file{quoted}",
                hint="the SBC takes PEM files only: run certfleet check on the input files",
                device=self.name,
                status=code,
            )
        if code == 404:
            raise DeviceRefusedError(
                f"{said}: not found on the SBC{quoted}",
                hint="check --context: certfleet sbc status lists the TLS contexts of the device",
                device=self.name,
                status=code,
            )
        if code == 409:
            raise DeviceRefusedError(
                f"{said}: the SBC is busy (HA sync?), still after {attempts} tries{quoted}",
                hint="wait until the HA pair is synchronised (or the device is idle) and rerun",
                device=self.name,
                status=code,
            )
        if code >= 500:
            raise DeviceRefusedError(
                f"{said}: the SBC failed{quoted}",
                hint="check the SBC's alarms and syslog, then rerun",
                device=self.name,
                status=code,
            )
        raise DeviceRefusedError(
            f"{said}: unexpected answer{quoted}",
            hint="check the firmware version: certfleet speaks the REST API of 7.4",
            device=self.name,
            status=code,
        )

    # ---- reading the device ------------------------------------------------------------

    async def read_ini(self) -> bytes:
        """The INI file; b"" when the device answers 404 (the INI is a safety copy and a
        list of contexts, neither is needed to change a context)."""
        return await self._get_optional("/files/ini", what="reading the INI file")

    async def list_contexts(self) -> dict[int, str]:
        """The TLS contexts of the device (from the INI's ``TLSContexts`` table)."""
        return tls_contexts_in_ini((await self.read_ini()).decode("utf-8", "replace"))

    async def read_context(self, index: int, name: str | None = None) -> SbcContext:
        """Certificate, trusted roots and key state of context ``index``."""
        where = f"/files/tls/{index}"
        # An SBC may answer 404 for a key, certificate or trusted root store not set
        # yet; 404 for both key and certificate of a context the INI does not name
        # (``name`` None) means the context does not exist.
        key_answer = await self._send("GET", f"{where}/privateKey", missing_ok=True,
                                      what=f"reading context {index}'s key state")
        key = _json(key_answer) if key_answer is not None else None
        cert_answer = await self._send("GET", f"{where}/certificate", missing_ok=True,
                                       what=f"reading context {index}'s certificate")
        if key_answer is None and cert_answer is None and name is None:
            raise DeviceRefusedError(
                f"reading context {index}: GET {API_PREFIX}{where}/privateKey and "
                f"/certificate on {self.name} answered 404: no TLS context {index}",
                hint="check --context: certfleet sbc status lists the TLS contexts of the device",
                device=self.name,
                status=404,
            )
        cert_pem = cert_answer.content if cert_answer is not None else b""
        roots_pem = await self._get_optional(f"{where}/trustedRoot",
                                             what=f"reading context {index}'s trusted roots")
        certs = _certificates(cert_pem)
        key_info = key if isinstance(key, dict) else {}
        size = key_info.get("size")
        if isinstance(size, str) and size.strip().isdigit():
            size = int(size)
        return SbcContext(
            index=index,
            name=name,
            certificate=_leaf(certs),
            trusted_roots=tuple(_certificates(roots_pem)),
            key_valid=_key_valid(key),
            key_size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        )

    async def read_certificate(self, index: int) -> x509.Certificate | None:
        """The certificate context ``index`` holds (one request), None when it has none."""
        pem = await self._get_optional(f"/files/tls/{index}/certificate",
                                       what=f"reading context {index}'s certificate")
        return _leaf(_certificates(pem))

    async def add_trusted_root(self, index: int, cert: x509.Certificate) -> None:
        """``PUT trustedRoot/incremental``: add ``cert`` to context ``index``'s store."""
        label = cert.subject.rfc4514_string()
        await self._request("PUT", f"/files/tls/{index}/trustedRoot/incremental",
                            what=f"adding trusted root {label!r} to context {index}",
                            upload=_pem(cert))

    async def save_configuration(self) -> None:
        await self._request("POST", "/actions/saveConfiguration", what="saving the configuration")

    def serves_management(self, context: SbcContext) -> bool:
        """Whether ``context`` holds the certificate management HTTPS presents."""
        return context.sha256 is not None and context.sha256 == self.management_sha256

    # ---- hooks -------------------------------------------------------------------------

    def preflight(self, bundle: Bundle) -> list[Finding]:
        return self.profile.preflight(bundle)

    def _previous_key_for(self, cert: x509.Certificate | None) -> PrivateKey | None:
        if cert is None:
            return None
        wanted = spki_sha256(cert)
        return next((k for k in self.previous_keys if spki_sha256(k) == wanted), None)

    async def backup(self) -> Backup:
        """INI file, and each target context's certificate, trusted roots (and known key)."""
        backup = Backup(self.name, self.kind)
        ini = await self.read_ini()
        if ini:
            backup.files["config.ini"] = ini
        else:
            log.warning("%s: the SBC gave no INI file: the backup holds the contexts only",
                        self.name)
        names = tls_contexts_in_ini(ini.decode("utf-8", "replace"))
        contexts_meta: dict[str, Any] = {}
        all_keys = True
        for index in self.contexts:
            try:
                ctx = await self.read_context(index, names.get(index))
            except DeviceRefusedError as exc:
                # The INI's list is a hint only (it may not parse): the device decides.
                if getattr(exc, "status", None) != 404 or not names or index in names:
                    raise
                raise DeviceRefusedError(
                    f"TLS context {index} does not exist on {self.name} "
                    f"(it has {', '.join(str(n) for n in sorted(names))})",
                    hint="check --context: certfleet sbc status lists the TLS contexts",
                    device=self.name,
                    status=404,
                ) from exc
            self._before[index] = ctx
            if ctx.certificate is not None:
                backup.files[f"tls{index}-certificate.pem"] = _pem(ctx.certificate)
            backup.files[f"tls{index}-trusted_roots.pem"] = b"".join(
                _pem(c) for c in ctx.trusted_roots)
            key = self._previous_key_for(ctx.certificate)
            if key is not None:
                backup.files[f"tls{index}-private_key.pem"] = _key_pem(key, self.profile.key_format)
            else:
                all_keys = False
            contexts_meta[str(index)] = {
                **ctx.to_dict(),
                "serves_management": self.serves_management(ctx),
                "previous_key_known": key is not None,
            }
        backup.has_private_key = all_keys
        backup.meta = {
            "url": self.url,
            "management_sha256": self.management_sha256,
            "status": {k: self.status.get(k) for k in
                       ("productType", "versionID", "highAvailability", "serialNumber")},
            "contexts": contexts_meta,
            "tls_contexts": {str(k): v for k, v in names.items()},
        }
        return backup

    def _no_rollback_reasons(self) -> str:
        """Per context, why the previous state cannot be put back (one line)."""
        reasons = []
        for index in self.contexts:
            ctx = self._before.get(index)
            if ctx is None:
                continue
            if ctx.certificate is None:
                reasons.append(f"context {index} has no certificate yet (nothing to go back to)")
            elif self._previous_key_for(ctx.certificate) is None:
                reasons.append(f"context {index}: the key of its certificate "
                               f"{(ctx.sha256 or '')[:16]}… is not known")
        return "; ".join(reasons)

    def can_restore(self, backup: Backup) -> bool:
        return backup.has_private_key

    def extra_listeners(self, backup: Backup) -> list[Listener]:
        """The REST port itself when the management context (0, the web interface's
        default) is to change and holds what management HTTPS presents."""
        ctx = self._before.get(0) if 0 in self.contexts else None
        return [self.management] if ctx is not None and self.serves_management(ctx) else []

    async def install(self, bundle: Bundle) -> None:
        """Key, certificate and trusted roots into every context, then save."""
        artifacts = render_target(bundle, self.profile)
        key_pem = artifacts.get(SbcProfile.key_file)
        cert_pem = artifacts.get(SbcProfile.certificate_file)
        roots = (_certificates(artifacts.get(SbcProfile.trusted_roots_file))
                 if SbcProfile.trusted_roots_file in artifacts.names() else [])
        new_sha = bundle.leaf_sha256
        self._new_sha256 = new_sha
        for index in self.contexts:
            where = f"/files/tls/{index}"
            before = self._before.get(index)
            await self._request("PUT", f"{where}/privateKey", upload=key_pem,
                                what=f"uploading the private key to context {index}")
            management = before is not None and self.serves_management(before)
            await self._put_certificate(index, cert_pem, new_sha, management,
                                        what=f"uploading the certificate to context {index}")
            if management:
                await self._pin_installed(new_sha)
            await self._install_roots(index, roots, before)
            key = _json(await self._request("GET", f"{where}/privateKey",
                                            what=f"checking context {index}'s key"))
            if _key_valid(key) is not True:
                raise DeviceRefusedError(
                    f"context {index}: the SBC says the private key does not match the "
                    f"certificate after the upload (GET {API_PREFIX}{where}/privateKey on "
                    f"{self.name} answered {_short(key)})",
                    hint="check that the key file belongs to the certificate (certfleet check)",
                    device=self.name,
                )
        await self.save_configuration()

    async def _put_certificate(self, index: int, pem: bytes, sha256: str, management: bool,
                               *, what: str) -> None:
        """``PUT certificate``; a management session that drops on the change is
        reopened to ask whether the certificate went in."""
        try:
            await self._request("PUT", f"/files/tls/{index}/certificate", upload=pem, what=what)
        except (DeviceConnectionError, DeviceTimeoutError):
            if not management or not await self._holds(index, sha256):
                raise
            log.info("%s: the session dropped while context %d took the certificate; "
                     "it holds it", self.name, index)

    async def _holds(self, index: int, sha256: str) -> bool:
        """Whether context ``index`` holds certificate ``sha256``, asked on a new
        connection that accepts that certificate on the management interface."""
        await self._pin_installed(sha256)
        pem = await self._get_optional(f"/files/tls/{index}/certificate",
                                       what=f"reading context {index}'s certificate again")
        leaf = _leaf(_certificates(pem))
        return leaf is not None and cert_sha256(leaf) == sha256

    async def _install_roots(self, index: int, roots: Sequence[x509.Certificate],
                             before: SbcContext | None) -> None:
        if not roots:
            return
        if self.replace_trusted_roots:
            await self._request("PUT", f"/files/tls/{index}/trustedRoot",
                                upload=b"".join(_pem(c) for c in roots),
                                what=f"replacing context {index}'s trusted roots")
            self._changed_roots.add(index)
            return
        present = {cert_sha256(c) for c in (before.trusted_roots if before else ())}
        for cert in roots:
            if cert_sha256(cert) in present:
                continue
            await self.add_trusted_root(index, cert)
            self._changed_roots.add(index)

    def assume_changed(self) -> None:
        """Treat the device as changed by this session, so that restore() puts a
        backup from an earlier run back (``certfleet rollback``)."""
        self._changed = True
        self._changed_roots.update(self.contexts)

    async def restore(self, backup: Backup) -> None:
        """Previous key, certificate and trusted roots into every context, then save."""
        self._restoring = True
        if not self._changed:
            return  # every changing request was refused: the device is as it was
        if self._new_sha256 and any(self.serves_management(c) for c in self._before.values()):
            # The failure may have come after the management interface took the new
            # certificate (or with the answer that says so lost): accept it too.
            await self._pin_installed(self._new_sha256)
        if self._client is None:
            self._client = self._new_client()
        for index in self.contexts:
            key = backup.files.get(f"tls{index}-private_key.pem")
            cert = backup.files.get(f"tls{index}-certificate.pem")
            if key is None or cert is None:
                raise RollbackError(
                    f"context {index}: the backup has no previous key and certificate",
                    hint="upload the previous certificate and key by hand",
                    device=self.name,
                )
            where = f"/files/tls/{index}"
            await self._request("PUT", f"{where}/privateKey", upload=key,
                                what=f"restoring context {index}'s private key")
            before = self._before.get(index)
            previous = _leaf(_certificates(cert))
            await self._put_certificate(
                index, cert, cert_sha256(previous) if previous is not None else "",
                before is not None and self.serves_management(before),
                what=f"restoring context {index}'s certificate")
            roots = backup.files.get(f"tls{index}-trusted_roots.pem", b"")
            if index in self._changed_roots and _certificates(roots):
                await self._request("PUT", f"{where}/trustedRoot", upload=roots,
                                    what=f"restoring context {index}'s trusted roots")
            state = _json(await self._request("GET", f"{where}/privateKey",
                                              what=f"checking context {index}'s key"))
            if _key_valid(state) is not True:
                raise RollbackError(
                    f"context {index}: after the restore the SBC says key and certificate "
                    "do not match",
                    hint="upload the previous certificate and its key by hand",
                    device=self.name,
                )
        await self.save_configuration()

    # ---- lifecycle overrides -------------------------------------------------------------

    async def observe(self) -> list[ProbeResult]:
        results = await super().observe()
        self._served_before = {r.listener: r.sha256 for r in results}
        return results

    async def verify(self, expected_sha256: str, timeout: float | None = None) -> list[ProbeResult]:
        """Every listener serves what it should: the new certificate, or after a
        rollback what it served before. Also checks each context on the device."""
        wait = self.verify_timeout if timeout is None else timeout
        if self._restoring:
            # The previous certificates are back at once on a healthy device; a short
            # verify timeout (set to fail fast on the new one) must not fail the rollback.
            wait = max(wait, 5.0)
            groups: dict[str, list[Listener]] = {}
            for listener in self.listeners:
                previous = self._served_before.get(listener)
                if previous:
                    groups.setdefault(previous, []).append(listener)
            results: dict[Listener, ProbeResult] = {}
            for sha, group in groups.items():
                for result in await wait_for_served(group, sha, wait):
                    results[result.listener] = result
            return [results[item] for item in self.listeners if item in results]
        for index in self.contexts:
            held = await self.read_certificate(index)
            held_sha = cert_sha256(held) if held is not None else None
            if held_sha != expected_sha256:
                raise VerificationError(
                    f"context {index} holds {(held_sha or 'nothing')[:16]}…, not the "
                    f"certificate installed ({expected_sha256[:16]}…)",
                    hint="another change may have overwritten it; check the device",
                    device=self.name,
                    expected=expected_sha256,
                )
        return await super().verify(expected_sha256, timeout)

    async def deploy(
        self,
        bundle: Bundle,
        findings: Sequence[Finding] = (),
        *,
        force: bool = False,
        allow_no_rollback: bool = False,
    ) -> DeployOutcome:
        """The base template, with the SBC's own hint when no rollback is possible."""
        self._restoring = False
        self._changed = False
        self._changed_roots.clear()
        self._new_sha256 = None
        outcome = await super().deploy(bundle, findings, force=force,
                                       allow_no_rollback=allow_no_rollback)
        if (outcome.outcome == "refused" and outcome.steps
                and outcome.steps[-1].detail == "no rollback possible"):
            outcome.hint = NO_ROLLBACK_HINT
            why = self._no_rollback_reasons()
            if why:
                outcome.message = f"{self.name}: no rollback is possible: {why}"
        elif outcome.outcome in ("failed", "restored") and not self._changed:
            # The device refused the first change (4xx): nothing to restore.
            cause = next((s.detail for s in outcome.steps if s.status == "failed"), "")
            outcome.outcome = "refused"
            outcome.message = f"{self.name}: {cause} (nothing was changed)"
        return outcome


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _short(data: Any) -> str:
    """A device's JSON answer for a message: one line, at most 120 characters."""
    import json

    try:
        text = json.dumps(data, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(data)
    return text if len(text) <= 120 else text[:119] + "…"


def _key_valid(data: Any) -> bool | None:
    """The ``valid`` of a key state answer: true/false however spelled, None if unknown."""
    value = data.get("valid") if isinstance(data, dict) else None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "1", "valid", "ok"):
            return True
        if text in ("false", "no", "0", "invalid"):
            return False
    return None


def _description(answer: httpx.Response) -> str:
    data = _json(answer)
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return str(data["description"])[:300]
    try:
        text = answer.text
    except (LookupError, ValueError):  # an unknown charset
        return ""
    return " ".join(text.split())[:200]


def _key_pem(key: PrivateKey, key_format: str) -> bytes:
    from ..pki.keygen import native_key_format, private_key_pem

    native = native_key_format(key)
    # "pkcs1" means the traditional form: PKCS#1 for RSA, SEC1 for EC (as the profile renders).
    return private_key_pem(key, native if key_format == "pkcs1" and native != "pkcs8" else "pkcs8")


def _load_key_pem(data: bytes) -> PrivateKey:
    """A previous private key from PEM bytes. Raises PrivateKeyError."""
    from ..pki.load import load_bytes

    keys = [o.value for o in load_bytes(data, "previous key", None) if o.type == "private_key"]
    if not keys:
        raise PrivateKeyError(
            "the previous key file holds no private key",
            hint="pass the unencrypted PEM key installed on the SBC now to --previous-key",
        )
    return keys[0]  # type: ignore[return-value]  # load_bytes types value as a union
