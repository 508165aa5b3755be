"""Run the dashboard with uvicorn on one socket, HTTP or HTTPS (``--tls-cert``/``--tls-key``)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["bind", "parse_listen", "serve"]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6). Raises InputError."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"--listen {value!r} is not HOST:PORT",
                         hint="pass --listen 127.0.0.1:8443 (port 0: any free port)")
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``. Raises InputError (taken, not an address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(128)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="pass --listen HOST:PORT with a free port of this machine") from None
    return sock


def serve(app: Any, sock: socket.socket, *, tls_cert: Path | None, tls_key: Path | None,
          on_ready: Callable[[str], None]) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C or SIGTERM; ``on_ready(url)`` once listening."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    server = uvicorn.Server(config)
    original = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original(sockets=sockets)
        on_ready(f"{scheme}://{shown}:{port}/")

    server.startup = startup  # type: ignore[method-assign]  # wraps uvicorn's hook
    # uvicorn stops gracefully on Ctrl-C or SIGTERM, then passes the signal on.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
