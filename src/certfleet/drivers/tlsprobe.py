"""Ask a TLS listener which certificate it serves.

This is observation, not trust: the handshake accepts any certificate because
its purpose is to report what is served (the estate view, verification after
a deploy). Trust decisions for management connections live in the drivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from ..errors import DeviceConnectionError, DeviceTimeoutError, VerificationError
from ..pki.model import cert_sha256

__all__ = ["Listener", "ProbeResult", "fetch_served_certificate", "probe", "wait_for_served"]


@dataclass(frozen=True)
class Listener:
    """A TLS endpoint of a device: management HTTPS, SIP over TLS..."""

    host: str
    port: int
    server_name: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ValueError(f"port must be 1-65535, not {self.port!r}")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, label: str = "") -> Listener:
        """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6). Raises ValueError."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listener must be HOST:PORT, not {text!r}")
        return cls(host.strip("[]"), int(port), label=label)


@dataclass(frozen=True)
class ProbeResult:
    listener: Listener
    certificate: x509.Certificate | None
    error: str | None = None

    @property
    def sha256(self) -> str | None:
        return cert_sha256(self.certificate) if self.certificate is not None else None


@functools.lru_cache(maxsize=1)
def _observer_context() -> ssl.SSLContext:
    """One context for every observation (building one costs more than a handshake)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def fetch_served_certificate(listener: Listener, timeout: float = 10.0) -> x509.Certificate:
    """Handshake with ``listener`` and return the leaf certificate it presents.

    Raises DeviceConnectionError when the handshake fails, DeviceTimeoutError
    when it takes longer than ``timeout`` seconds.
    """
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                listener.host,
                listener.port,
                ssl=_observer_context(),
                server_hostname=listener.server_name or listener.host,
            ),
            timeout,
        )
    except TimeoutError as exc:
        raise DeviceTimeoutError(
            f"TLS handshake with {listener} timed out after {timeout:g} s",
            hint="check that the device is up and the port is right",
            listener=str(listener),
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise DeviceConnectionError(
            f"TLS handshake with {listener} failed: {exc.strerror or exc}"
            if isinstance(exc, OSError) and exc.strerror
            else f"TLS handshake with {listener} failed: {exc}",
            hint="check that the device is up and the port is right",
            listener=str(listener),
        ) from exc
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2)
    if not der:
        raise DeviceConnectionError(
            f"{listener} completed a handshake without presenting a certificate",
            listener=str(listener),
        )
    return x509.load_der_x509_certificate(der)


async def probe(listeners: Sequence[Listener], timeout: float = 10.0) -> list[ProbeResult]:
    """Handshake with every listener concurrently; errors are reported, not raised."""

    async def one(listener: Listener) -> ProbeResult:
        try:
            return ProbeResult(listener, await fetch_served_certificate(listener, timeout))
        except (DeviceConnectionError, DeviceTimeoutError) as exc:
            return ProbeResult(listener, None, exc.message)

    return list(await asyncio.gather(*(one(item) for item in listeners)))


async def wait_for_served(
    listeners: Sequence[Listener],
    expected_sha256: str,
    timeout: float = 600.0,
    *,
    first_delay: float = 0.2,
    max_delay: float = 15.0,
    handshake_timeout: float = 10.0,
) -> list[ProbeResult]:
    """Poll every listener, with backoff, until all serve ``expected_sha256``.

    Raises VerificationError naming each listener that still serves something
    else (or is unreachable) when ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    delay = first_delay
    pending = list(listeners)
    done: dict[Listener, ProbeResult] = {}
    last: dict[Listener, ProbeResult] = {}
    while True:
        for result in await probe(pending, min(handshake_timeout, max(timeout, 0.1))):
            last[result.listener] = result
            if result.sha256 == expected_sha256:
                done[result.listener] = result
        pending = [item for item in pending if item not in done]
        if not pending:
            return [done[item] for item in listeners]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            problems = []
            for item in pending:
                seen = last.get(item)
                if seen is None or seen.certificate is None:
                    problems.append(f"{item}: {seen.error if seen else 'not reached'}")
                else:
                    problems.append(f"{item} serves {seen.sha256[:16] if seen.sha256 else '?'}…")
            raise VerificationError(
                f"expected certificate {expected_sha256[:16]}… not served after "
                f"{timeout:g} s: " + "; ".join(problems),
                hint="the device may still be restarting; raise the verify timeout or check it",
                expected=expected_sha256,
                listeners=[str(item) for item in pending],
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay)
