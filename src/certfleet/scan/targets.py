"""What to scan: ``host:port``, ``host`` (443), ``CIDR:ports``, files, the inventory."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError

__all__ = [
    "MAX_ENDPOINTS",
    "MAX_HOST_NAME",
    "Endpoint",
    "check_host_name",
    "parse_ports",
    "parse_target",
    "read_target_file",
]

DEFAULT_PORT = 443
# A scan bigger than this is almost certainly a typo in a prefix length.
MAX_ENDPOINTS = 262_144
# What DNS allows: a name of at most 253 characters, each label at most 63.
MAX_HOST_NAME = 253
MAX_LABEL = 63
# A line of a --from-file longer than this is not a target (read in bounded pieces).
MAX_LINE = 8192
_LINE_CACHE = 10_000  # distinct lines remembered so that a repeated one is skipped
_SHOWN = 60  # characters of a target quoted in a message
_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: int() takes others, and any length
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


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut short when it is long (a hostile target)."""
    if len(text) <= _SHOWN:
        return repr(text)
    return repr(text[:_SHOWN]) + f"... ({len(text):,} characters)"


def _port_number(digits: str) -> int:
    """The value of ASCII ``digits``; any number over 5 digits is read as 65536 (too big)."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 5 else 65536


def parse_ports(text: str, target: str) -> list[int]:
    """``443,5061`` or ``5060-5070`` (mixed), each port once. Raises ConfigError.

    Linear in ``text``: seen ports are flags, a range already covered costs one scan.
    """
    ports: list[int] = []
    seen = bytearray(65536)
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if not _DIGITS.fullmatch(low) or (dash and not _DIGITS.fullmatch(high)):
            raise ConfigError(f"target {_shown(target)}: {_shown(part)} is not a port or "
                              "port range", hint=_HINT)
        first = _port_number(low)
        last = _port_number(high) if dash else first
        if not (0 < first <= last < 65536):
            raise ConfigError(f"target {_shown(target)}: ports must be 1-65535 "
                              f"(got {_shown(part)})", hint=_HINT)
        port = seen.find(0, first, last + 1)
        while port != -1:
            seen[port] = 1
            ports.append(port)
            port = seen.find(0, port + 1, last + 1)
    return ports


def check_host_name(host: str, what: str) -> None:
    """Refuse a host name longer than DNS allows (253 characters, labels of 63).

    ``what`` names where it was written (``target '...'``). Raises ConfigError.
    """
    if len(host) > MAX_HOST_NAME:
        raise ConfigError(
            f"{what}: a host name is at most {MAX_HOST_NAME} characters, this one has "
            f"{len(host):,}", hint="give the device's DNS name or IP address")
    if ":" in host:  # an IPv6 address
        return
    for label in host.rstrip(".").split("."):
        if len(label) > MAX_LABEL:
            raise ConfigError(
                f"{what}: the DNS label {_shown(label)} is longer than {MAX_LABEL} characters",
                hint="give the device's DNS name or IP address")


def _split(text: str) -> tuple[str, str | None]:
    """Host part and port part of a target (IPv6 in brackets)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"target {_shown(text)}: missing ']'", hint=_HINT)
        if rest and not rest.startswith(":"):
            raise ConfigError(f"target {_shown(text)}: expected ':' after ']'", hint=_HINT)
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
        raise ConfigError(f"target {_shown(raw)} names no host", hint=_HINT)
    check_host_name(host, f"target {_shown(raw)}")
    ports = parse_ports(port_text, raw) if port_text is not None else [DEFAULT_PORT]
    if "/" in host:
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError as exc:
            raise ConfigError(f"target {_shown(raw)}: {exc}", hint=_HINT) from None
        if network.num_addresses * len(ports) > MAX_ENDPOINTS:
            raise ConfigError(
                f"target {_shown(raw)} names {network.num_addresses * len(ports):,} endpoints "
                f"(at most {MAX_ENDPOINTS:,})",
                hint="scan a smaller range (a longer prefix) or fewer ports",
            )
        addresses: Iterable[object] = (
            network.hosts() if network.num_addresses > 2 else iter(network)
        )
        return [Endpoint(str(a), p, server_name) for a in addresses for p in ports]
    if any(c.isspace() for c in host):
        raise ConfigError(f"target {_shown(raw)}: a host name has no spaces", hint=_HINT)
    return [Endpoint(host, p, server_name) for p in ports]


def _lines(handle: TextIO, path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of ``handle``, each read with a bound: a longer one is refused."""
    number = 0
    while True:
        number += 1
        line = handle.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith("\n"):
            raise ConfigError(
                f"{path}:{number}: the line is longer than {MAX_LINE:,} characters",
                hint="write one target a line (port ranges such as 5060-5070 keep it short)",
                path=str(path))
        yield number, line


def read_target_file(path: Path, *, server_name: str | None = None) -> list[Endpoint]:
    """Targets from a file, one per line (blank lines and ``#`` comments skipped).

    Read line by line: each endpoint is kept once as it is found and a repeated
    line is not parsed again, so memory is bounded by the endpoints, not the file.
    """
    hint = "give --from-file a text file with one target a line"
    chosen: dict[tuple[str, int], Endpoint] = {}
    parsed: set[str] = set()  # lines already parsed (up to _LINE_CACHE of them)
    try:
        with path.open(encoding="utf-8-sig", newline=None) as handle:
            for number, line in _lines(handle, path):
                item = line.split("#", 1)[0].strip()
                if not item or item in parsed:
                    continue
                try:
                    found = parse_target(item, server_name=server_name)
                except ConfigError as exc:
                    raise ConfigError(f"{path}:{number}: {exc.message}", hint=exc.hint,
                                      path=str(path)) from None
                for endpoint in found:
                    chosen.setdefault(endpoint.key, endpoint)
                if len(chosen) > MAX_ENDPOINTS:
                    raise ConfigError(
                        f"{path}:{number}: the file names more than {MAX_ENDPOINTS:,} "
                        "endpoints", hint="scan fewer targets at a time", path=str(path))
                if len(parsed) < _LINE_CACHE:
                    parsed.add(item)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read targets from {path}: {exc}", hint=hint,
                          path=str(path)) from None
    return list(chosen.values())


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
