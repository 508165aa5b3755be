"""What to scan: ``host:port``, ``host`` (443), ``CIDR:ports``, files, the inventory."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["MAX_ENDPOINTS", "Endpoint", "parse_ports", "parse_target", "read_target_file"]

DEFAULT_PORT = 443
# A scan bigger than this is almost certainly a typo in a prefix length.
MAX_ENDPOINTS = 262_144
_HINT = "write host:port, host (port 443), or a CIDR range with ports such as 10.0.1.0/28:443,5061"


@dataclass(frozen=True)
class Endpoint:
    """One listener to handshake with; ``device``/``label`` when the inventory lists it."""

    host: str
    port: int
    server_name: str | None = None
    device: str | None = None
    label: str = ""
    hosts: tuple[str, ...] = ()  # names the certificate must cover (the inventory's FQDN)
    certificate: str | None = None  # the inventory's certificate name

    @property
    def key(self) -> tuple[str, int]:
        return self.host.lower(), self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_ports(text: str, target: str) -> list[int]:
    """``443,5061`` or ``5060-5070`` (mixed). Raises ConfigError."""
    ports: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ConfigError(f"target {target!r}: {part!r} is not a port or port range",
                              hint=_HINT)
        first, last = int(low), int(high) if dash else int(low)
        if not (0 < first <= last < 65536):
            raise ConfigError(f"target {target!r}: ports must be 1-65535 (got {part!r})",
                              hint=_HINT)
        ports.extend(p for p in range(first, last + 1) if p not in ports)
    return ports


def _split(text: str) -> tuple[str, str | None]:
    """Host part and port part of a target (IPv6 in brackets)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"target {text!r}: missing ']'", hint=_HINT)
        if rest and not rest.startswith(":"):
            raise ConfigError(f"target {text!r}: expected ':' after ']'", hint=_HINT)
        return host, rest[1:] or None
    if text.count(":") > 1:  # a bare IPv6 address (or range) without ports
        return text, None
    host, sep, ports = text.partition(":")
    return host, ports if sep else None


def parse_target(text: str, *, server_name: str | None = None) -> list[Endpoint]:
    """The endpoints one target names. Raises ConfigError."""
    raw = text.strip()
    if not raw:
        raise ConfigError("an empty target", hint=_HINT)
    host, port_text = _split(raw)
    if not host:
        raise ConfigError(f"target {raw!r} names no host", hint=_HINT)
    ports = parse_ports(port_text, raw) if port_text is not None else [DEFAULT_PORT]
    if "/" in host:
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError as exc:
            raise ConfigError(f"target {raw!r}: {exc}", hint=_HINT) from None
        if network.num_addresses * len(ports) > MAX_ENDPOINTS:
            raise ConfigError(
                f"target {raw!r} names {network.num_addresses * len(ports):,} endpoints "
                f"(at most {MAX_ENDPOINTS:,})",
                hint="scan a smaller range (a longer prefix) or fewer ports",
            )
        addresses: Iterable[object] = (
            network.hosts() if network.num_addresses > 2 else iter(network)
        )
        return [Endpoint(str(a), p, server_name) for a in addresses for p in ports]
    if any(c.isspace() for c in host):
        raise ConfigError(f"target {raw!r}: a host name has no spaces", hint=_HINT)
    return [Endpoint(host, p, server_name) for p in ports]


def read_target_file(path: Path, *, server_name: str | None = None) -> list[Endpoint]:
    """Targets from a file, one per line (blank lines and ``#`` comments skipped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read targets from {path}: {exc}",
                          hint="give --from-file a text file with one target a line",
                          path=str(path)) from None
    endpoints: list[Endpoint] = []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            endpoints += parse_target(item, server_name=server_name)
        except ConfigError as exc:
            raise ConfigError(f"{path}:{number}: {exc.message}", hint=exc.hint,
                              path=str(path)) from None
    return endpoints


def merge(groups: Sequence[Sequence[Endpoint]]) -> list[Endpoint]:
    """Endpoints in order, each host:port once; an inventory entry wins over a bare one."""
    chosen: dict[tuple[str, int], Endpoint] = {}
    for group in groups:
        for endpoint in group:
            known = chosen.get(endpoint.key)
            if known is None or (known.device is None and endpoint.device is not None):
                chosen[endpoint.key] = endpoint
    if len(chosen) > MAX_ENDPOINTS:
        raise ConfigError(f"{len(chosen):,} endpoints to scan (at most {MAX_ENDPOINTS:,})",
                          hint="scan fewer targets at a time")
    return list(chosen.values())
