"""The REST transport of the SBC driver: trust, authentication, requests, errors.

:class:`SbcRest` is the half of :class:`~certfleet.drivers.sbc.SbcDriver` that
talks HTTP: the device's certificate checked inside every handshake
(:mod:`certfleet.drivers.pinning`), Basic authentication with one switch to
Digest, 409 answers retried with backoff, and every failure mapped to a
one-line error naming the device and the request (never the credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, Unpack
from urllib.parse import urlsplit

from cryptography import x509

from ..errors import (
    ConfigError,
    DeviceAuthError,
    DeviceConnectionError,
    DeviceRefusedError,
    DeviceTimeoutError,
    HostKeyError,
)
from ..pki.model import cert_sha256
from .sbc_model import normalize_sha256
from .tlsprobe import Listener, fetch_served_certificate

if TYPE_CHECKING:
    import httpx

__all__ = ["API_PREFIX", "RELAXED_X509_HINT", "RestSettings", "SbcRest"]

log = logging.getLogger("certfleet.drivers.sbc")

API_PREFIX = "/api/v1"
# The largest answer read from an SBC: an INI file, a PEM bundle or a JSON answer is far
# smaller; anything larger is not the REST API answering (SbcDriver.max_body).
MAX_BODY_BYTES = 8 * 1024 * 1024
RELAXED_X509_HINT = "--relaxed-x509 (inventory: x509_strict = false)"
# Status -> what the refusal says ({attempts}: how many tries) and the fix.
_REFUSALS: dict[int, tuple[str, str]] = {
    400: ("the SBC refused the file",
          "the SBC takes PEM files only: run certfleet check on the input files"),
    404: ("not found on the SBC",
          "check --context (inventory: tls_contexts): certfleet sbc status lists the TLS "
          "contexts of the device"),
    409: ("the SBC is busy (HA sync?), still after {attempts} tries",
          "wait until the HA pair is synchronised (or the device is idle) and rerun"),
}


class _Body(TypedDict, total=False):
    """What a request sends: a file to upload, or a JSON body."""

    upload: bytes | None
    json_body: object


@dataclass(frozen=True)
class RestSettings:
    """How to reach one SBC's REST API: the login, the device's trust, the pacing.

    Trust: ``ca_bundle`` (PEM bytes), or ``pin_sha256``, or ``insecure``; at
    most one. ``timeout``: seconds per request; ``busy_retries`` /
    ``busy_delay``: how often and how long (doubling) to retry a 409 answer.
    """

    password: str = field(repr=False)
    user: str = "Admin"
    ca_bundle: bytes | None = None
    pin_sha256: str | None = None
    insecure: bool = False
    x509_strict: bool | None = None
    timeout: float = 30.0
    busy_retries: int = 6
    busy_delay: float = 0.5


class SbcRest:
    """The REST session of one SBC: set up by :meth:`_init_rest`, opened by
    :meth:`connect`, closed by :meth:`close`."""

    name: str
    _changed: bool
    _restoring: bool

    def _init_rest(self, url: str, rest: RestSettings) -> None:
        """Check ``url`` and the trust settings. Raises ConfigError."""
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # Not quoted: the part before "@" may be a password.
            raise ConfigError(
                "the SBC URL carries a user or password before '@'",
                hint="write https://HOST[:PORT] and give the user and password apart: --user "
                "and --password-env (inventory: address, user and password)",
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
        ca_bundle, pin_sha256, insecure = rest.ca_bundle, rest.pin_sha256, rest.insecure
        if sum(x is not None and x is not False for x in (ca_bundle, pin_sha256, insecure)) > 1:
            raise ConfigError(
                "choose one of a CA bundle, a pinned SHA-256 or insecure",
                hint="pass either --ca-bundle FILE or --pin-sha256 HEX (inventory: either "
                "ca_file or tls_pin)",
            )
        self.url = f"https://{parts.netloc}"
        self.management = Listener(parts.hostname, port, label="management")
        self.user = rest.user
        self._password = rest.password
        self.ca_bundle = ca_bundle
        self.insecure = insecure
        self._pins: set[str] = {normalize_sha256(pin_sha256)} if pin_sha256 else set()
        self.x509_strict = rest.x509_strict
        self._seen_sha256: str | None = None
        self._auth_scheme = "basic"
        self._urls: dict[str, httpx.URL] = {}
        self.timeout = rest.timeout
        self.busy_retries = rest.busy_retries
        self.busy_delay = rest.busy_delay
        self.max_body = MAX_BODY_BYTES  # bytes read at most from one answer
        self.status: dict[str, object] = {}
        self.management_sha256: str | None = None
        self._client: httpx.AsyncClient | None = None

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

        from .netstream import DeviceClient
        from .pinning import CheckedTransport

        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        return DeviceClient(
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
                    hint="connect with --ca-bundle FILE (inventory: ca_file) instead of a pin",
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
                f'{seen} (inventory: tls_pin = "{seen}"); otherwise do not connect',
                device=self.name,
                fingerprint=seen,
            )

    async def _trust_error(self, error: ssl.SSLCertVerificationError, what: str) -> HostKeyError:
        """A verification failure in words, with the fingerprint seen (read by an
        observing handshake that sends nothing) and the way to pin it."""

        from .pinning import strict_failure, strict_reason

        try:
            seen: str | None = cert_sha256(
                await fetch_served_certificate(self.management, min(self.timeout, 10.0)))
        except (DeviceConnectionError, DeviceTimeoutError):
            seen = None
        pin = (f'--pin-sha256 {seen} (inventory: tls_pin = "{seen}")' if seen
               else '--pin-sha256 HEX (inventory: tls_pin = "HEX")')
        strict = strict_failure(error)
        if strict is not None:
            why = strict_reason(self.x509_strict)
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

    async def _request(self, method: str, path: str, *, what: str,
                       **body: Unpack[_Body]) -> httpx.Response:
        """One REST request, 409 retried with backoff; every failure mapped to an error."""
        answer = await self._send(method, path, what=what, **body)
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
        json_body: object = None,
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
                    hint="check that the device is up; raise --timeout (inventory: timeout) "
                    "for a slow link",
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

        length = answer.headers.get("content-length", "")
        if (length.isdigit() and int(length) <= self.max_body
                and "content-encoding" not in answer.headers):
            # Framed by its length, which is within the bound, and not compressed:
            # read as it is (h11 reads no byte past the length).
            try:
                await answer.aread()
            finally:
                await answer.aclose()
            return answer
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
                "check --user and the password in the variable named by --password-env "
                "(inventory: user and password)",
                device=self.name,
                status=code,
            )
        words, hint = _REFUSALS.get(code) or (
            ("the SBC failed", "check the SBC's alarms and syslog, then rerun") if code >= 500
            else ("unexpected answer",
                  "check the firmware version: certfleet speaks the REST API of 7.4"))
        raise DeviceRefusedError(
            f"{said}: {words.format(attempts=attempts)}{quoted}", hint=hint,
            device=self.name, status=code,
        )


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]



def _description(answer: httpx.Response) -> str:
    data = _json(answer)
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return str(data["description"])[:300]
    try:
        text = answer.text
    except (LookupError, ValueError):  # an unknown charset
        return ""
    return " ".join(text.split())[:200]

