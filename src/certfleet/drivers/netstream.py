"""HTTP plumbing of device REST sessions, lean per request.

httpcore's default backend on asyncio goes through anyio: a cancel scope
around every read and write, and TLS run in Python over memory BIOs on top
of anyio's socket stream. For a fleet deploy that was most of the deploying
process's CPU time per request. :class:`AsyncioBackend` gives httpcore the
same streams over a plain :class:`asyncio.Protocol` and ``loop.start_tls``:
same errors (httpcore's ``ConnectError``, ``ReadTimeout``... with the cause
kept, so a certificate verification error is still found in the chain), same
close (the socket is closed without a TLS close_notify, as httpcore's anyio
backend does).

:class:`DeviceClient` is httpx's client with a cookie jar that parses an
answer only when it sets a cookie: the standard jar builds a urllib request
and response for every answer to find out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncioBackend", "AsyncioStream", "DeviceClient", "SocketOption"]

#: A ``setsockopt`` argument list, as httpcore's backends take them.
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)

# Reading from the socket pauses while this much is received and not yet read.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class _Protocol(asyncio.Protocol):
    """Received bytes kept until read; end of stream, errors and write pauses noted."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.paused_reading = False
        self._reader: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self.paused_reading and self.transport:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._reader = self._reader, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_readable(self) -> None:
        self._reader = asyncio.get_running_loop().create_future()
        try:
            await self._reader
        finally:
            self._reader = None

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def take(self, max_bytes: int) -> bytes:
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        if self.paused_reading and len(self.buffer) < _LOW_WATER and self.transport:
            self.paused_reading = False
            self.transport.resume_reading()
        return data


class AsyncioStream(httpcore.AsyncNetworkStream):
    """A TCP (or, after :meth:`start_tls`, TLS) connection for httpcore."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol,
                 raw: asyncio.Transport | None = None) -> None:
        self._transport = transport
        self._protocol = protocol
        # The TCP transport under a TLS one: closing it closes the socket at once.
        self._raw = raw or transport

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            try:
                async with asyncio.timeout(timeout):
                    await protocol.wait_readable()
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(str(exc) or "timed out") from exc
        if protocol.buffer:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore.ReadError(_reason(protocol.error)) from protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.error is not None:
            raise httpcore.WriteError(_reason(protocol.error)) from protocol.error
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        try:
            async with asyncio.timeout(timeout):
                await protocol.wait_writable()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "timed out") from exc
        if protocol.error is not None:
            raise httpcore.WriteError(_reason(protocol.error)) from protocol.error

    async def aclose(self) -> None:
        self._raw.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                           server_hostname=server_hostname)
        except TimeoutError as exc:
            self._raw.close()
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
            self._raw.close()
            raise httpcore.ConnectError(_reason(exc)) from exc
        except BaseException:
            self._raw.close()
            raise
        assert isinstance(tls, asyncio.Transport)
        self._protocol.transport = tls
        return AsyncioStream(tls, self._protocol, self._raw)

    def get_extra_info(self, info: str) -> object:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._raw.get_extra_info("sockname")
        if info == "server_addr":
            return self._raw.get_extra_info("peername")
        if info == "socket":
            return self._raw.get_extra_info("socket")
        if info == "is_readable":
            # Idle, anything received (data, the end of stream) means the server
            # closed or broke the connection: httpcore then opens a new one.
            protocol = self._protocol
            return bool(protocol.buffer) or protocol.eof
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """TCP connections through ``loop.create_connection`` (TCP_NODELAY, as asyncio sets)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port,
                    local_addr=(local_address, 0) if local_address else None)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(_reason(exc)) from exc
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - management is TCP only
        raise httpcore.ConnectError("unix sockets are not used for device management")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _SetCookieOnly(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class DeviceClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookies are kept as the standard client keeps them,
    parsed only from answers that carry a ``Set-Cookie`` header."""

    def __init__(self, **options: Any) -> None:
        self._jar: httpx.Cookies = _SetCookieOnly(options.pop("cookies", None))
        super().__init__(**options)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _SetCookieOnly(cookies)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
