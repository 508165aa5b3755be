"""Serve the metrics over HTTP with bounds a busy or hostile network cannot break.

A small HTTP/1.1 server on stdlib asyncio, in a thread of its own (the scans
keep the main thread), that runs on Windows as on Linux:

- the listen backlog is :data:`BACKLOG`, so a burst of scrapes waits in the
  kernel's queue instead of having its SYNs dropped and retried seconds later;
- a client has :data:`READ_TIMEOUT` seconds to send its whole request (line and
  headers, at most :data:`MAX_REQUEST` bytes) and :data:`WRITE_TIMEOUT` to take
  the answer; then its connection is closed;
- at most :data:`MAX_CONNECTIONS` connections are open at once. A new one
  beyond that closes the oldest connection still waiting for its request (a
  client that sends nothing cannot shut out a scrape); when every open
  connection is being answered, the new one is closed at once.

Each connection carries one request (``Connection: close``). Every path but
``/favicon.ico`` answers the metrics, as prometheus_client's own server does,
with the same content negotiation (OpenMetrics when asked for), gzip when
accepted and the ``name[]`` filter. The body is generated once per scan (per
format) and shared by every scrape until the next scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import sys
import threading
from collections.abc import Callable, Hashable
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

__all__ = [
    "BACKLOG",
    "MAX_CONNECTIONS",
    "MAX_REQUEST",
    "READ_TIMEOUT",
    "WRITE_TIMEOUT",
    "MetricsServer",
]

BACKLOG = 1024
MAX_CONNECTIONS = 512
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0
MAX_REQUEST = 16 * 1024
#: File descriptors kept free for the scans (sockets, the state store) besides the connections.
_SPARE_FDS = 256

_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class MetricsServer:
    """``registry``'s metrics on ``host:port``; :meth:`start` binds, :meth:`stop` closes.

    ``generation`` (when given) names the current state of the metrics: the
    body is generated again only when it changes (the exporter passes its
    collector's scan counter).
    """

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, *,
        generation: Callable[[], Hashable] | None = None, backlog: int = BACKLOG,
        max_connections: int = MAX_CONNECTIONS, read_timeout: float = READ_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.backlog = backlog
        self.max_connections = _fit_open_files(max_connections)
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self._generation = generation
        self._cache: dict[tuple[str, bool], tuple[Hashable, bytes]] = {}
        self._render_lock: asyncio.Lock | None = None
        self._open: set[asyncio.StreamWriter] = set()
        #: The connections still waiting for their request, oldest first (a dict keeps order).
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] = (host, port)

    # ---- the thread ----

    def start(self) -> tuple[str, int]:
        """Bind and serve in a daemon thread; the bound (host, port). Raises OSError."""
        self._thread = threading.Thread(target=self._run, name="certfleet-metrics", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.address

    def stop(self) -> None:
        """Close the listener and every connection; wait for the thread to end."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() when serving never began
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            elif not isinstance(exc, KeyboardInterrupt | SystemExit):
                print(f"certfleet: the metrics server stopped: {exc}", file=sys.stderr)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._render_lock = asyncio.Lock()
        server = await asyncio.start_server(
            self._connection, self.host, self.port, backlog=self.backlog, limit=MAX_REQUEST)
        sockets = server.sockets or ()
        if sockets:
            bound = sockets[0].getsockname()
            self.address = (self.host, int(bound[1]))
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._open):
                writer.transport.abort()
            self._open.clear()
            self._waiting.clear()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await server.wait_closed()

    # ---- one connection ----

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.max_connections:
            victim = next(iter(self._waiting), None)
            if victim is None:  # every connection is being answered: refuse this one
                writer.transport.abort()
                return
            self._forget(victim)
            victim.transport.abort()
        self._open.add(writer)
        self._waiting[writer] = None
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                head = b""
            finally:
                self._waiting.pop(writer, None)
            if writer not in self._open:  # closed to make room meanwhile
                return
            status, headers, body = await self._answer(head)
            lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}", *headers,
                     f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            if not head.startswith(b"HEAD "):
                writer.write(body)
            async with asyncio.timeout(self.write_timeout):
                await writer.drain()
            writer.close()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            writer.transport.abort()
        finally:
            self._forget(writer)

    def _forget(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        self._waiting.pop(writer, None)

    async def _answer(self, head: bytes) -> tuple[int, list[str], bytes]:
        """(status, header lines, body) for the request ``head``."""
        if not head:
            return 431, ["Content-Type: text/plain; charset=utf-8"], b"request too large\n"
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, ["Content-Type: text/plain; charset=utf-8"], b"bad request\n"
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return 405, ["Allow: GET, HEAD", "Content-Type: text/plain; charset=utf-8"], \
                b"only GET and HEAD\n"
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        url = urlsplit(target)
        if url.path == "/favicon.ico":
            return 200, ["Content-Type: text/plain; charset=utf-8"], b""
        names = parse_qs(url.query).get("name[]")
        gzipped = "gzip" in fields.get("accept-encoding", "").lower()
        try:
            content_type, body = await self._body(fields.get("accept"), names, gzipped)
        except Exception as exc:  # a collector that failed: say so, keep serving
            return 500, ["Content-Type: text/plain; charset=utf-8"], f"{exc}\n".encode()
        headers = [f"Content-Type: {content_type}"]
        if gzipped:
            headers.append("Content-Encoding: gzip")
        return 200, headers, body

    async def _body(self, accept: str | None, names: list[str] | None,
                    gzipped: bool) -> tuple[str, bytes]:
        encoder, content_type = choose_encoder(accept or "")
        registry = self.registry

        def render() -> bytes:
            source = registry.restricted_registry(names) if names else registry
            output: bytes = encoder(source)
            return gzip.compress(output) if gzipped else output

        if names or self._generation is None or self._render_lock is None:
            return content_type, await asyncio.to_thread(render)
        key = (content_type, gzipped)
        async with self._render_lock:  # one render per scan, shared by the waiting scrapes
            generation = self._generation()
            cached = self._cache.get(key)
            if cached is not None and cached[0] == generation:
                return content_type, cached[1]
            body = await asyncio.to_thread(render)
            self._cache[key] = (generation, body)
            return content_type, body


def _fit_open_files(wanted: int) -> int:
    """``wanted`` connections, fewer when the open-files limit cannot be raised to hold them."""
    try:
        import resource
    except ImportError:  # Windows: no such per-process limit on sockets
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, max(16, soft - _SPARE_FDS))
