"""Find what answers: targets expanded lazily, probed with bounded concurrency, streamed.

Only the endpoints that answered are kept: a TLS listener (its certificate as
served), or an SSH server (its banner and host key). The rest are counted by
what happened (refused, silent, unreachable, unresolved), never held.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..drivers.tlsprobe import Listener, ProbeResult, handshake
from ..errors import ConfigError
from ..scan.targets import Endpoint, parse_ports, parse_target

__all__ = ["DEFAULT_PORTS", "MAX_ADDRESSES", "Found", "Observation", "count_endpoints", "find",
           "iter_endpoints"]

DEFAULT_PORTS = (443, 5061, 22)
#: Ranges larger than a /16 are refused without --force.
MAX_ADDRESSES = 65_536
_HINT = ("write host, host:ports or a CIDR range such as 10.0.1.0/24 or 10.0.1.0/24:443,5061 "
         "(without ports: 443, 5061, 22 and --port)")


@dataclass
class Observation:
    """One endpoint that answered: TLS (``probe``) or SSH (``ssh_banner``, host key)."""

    host: str
    port: int
    probe: ProbeResult | None = None
    ssh_banner: str | None = None
    ssh_host_key: str | None = None  # SHA256:... as ssh-keygen -l prints it

    @property
    def tls(self) -> bool:
        return self.probe is not None and self.probe.certificate is not None


@dataclass
class Found:
    """What answered, and how many endpoints did not, by what happened."""

    answered: list[Observation] = field(default_factory=list)
    silent: Counter[str] = field(default_factory=Counter)
    probed: int = 0


def _split(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if text.count(":") > 1:
        return text, None
    host, sep, ports = text.partition(":")
    return host, ports if sep else None


def _network(host: str, raw: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if "/" not in host:
        return None
    try:
        return ipaddress.ip_network(host, strict=False)
    except ValueError as exc:
        raise ConfigError(f"target {raw!r}: {exc}", hint=_HINT) from None


def count_endpoints(targets: Sequence[str], extra_ports: Sequence[int], *,
                    force: bool = False) -> int:
    """How many endpoints the targets name; checks them. Raises ConfigError."""
    if not targets:
        raise ConfigError("no target to discover", hint=_HINT)
    total = 0
    for raw in targets:
        host, port_text = _split(raw.strip())
        if not host:
            raise ConfigError(f"target {raw!r} names no host", hint=_HINT)
        ports = (parse_ports(port_text, raw) if port_text is not None
                 else list(dict.fromkeys([*DEFAULT_PORTS, *extra_ports])))
        network = _network(host, raw)
        if network is None:
            parse_target(f"{raw.strip()}" if port_text else f"{host}:{ports[0]}")
            total += len(ports)
            continue
        if network.num_addresses > MAX_ADDRESSES and not force:
            raise ConfigError(
                f"target {raw!r} is larger than a /16 ({network.num_addresses:,} addresses)",
                hint="discover a smaller range, or pass --force to discover it anyway")
        hosts = network.num_addresses - (2 if network.num_addresses > 2 and network.version == 4
                                         else 0)
        total += hosts * len(ports)
    return total


def iter_endpoints(targets: Sequence[str], extra_ports: Sequence[int]) -> Iterator[Endpoint]:
    """Every endpoint of the targets, one at a time (a range is never expanded in memory)."""
    for raw in targets:
        host, port_text = _split(raw.strip())
        ports = (parse_ports(port_text, raw) if port_text is not None
                 else list(dict.fromkeys([*DEFAULT_PORTS, *extra_ports])))
        network = _network(host, raw)
        addresses: Iterable[object] = [host] if network is None else (
            network.hosts() if network.num_addresses > 2 else iter(network))
        for address in addresses:
            for port in ports:
                yield Endpoint(str(address), port)


async def _ssh_banner(host: str, port: int, timeout: float) -> str | None:
    """The first line an SSH server sends, or None."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
    text = line.decode("utf-8", "replace").strip()
    return text if text.startswith("SSH-") else None


async def _ssh_host_key(host: str, port: int, timeout: float) -> str | None:
    """The server's host key fingerprint (``SHA256:...``); nothing is sent but the key
    exchange: no user, no password."""
    import asyncssh

    from ..drivers.ovoc.ssh import host_key_sha256

    try:
        async with asyncio.timeout(timeout + 1):
            key = await asyncssh.get_server_host_key(host, port, config=None)
    except (OSError, TimeoutError, asyncssh.Error):
        return None
    return host_key_sha256(key) if key is not None else None


async def observe(endpoint: Endpoint, timeout: float) -> tuple[Observation | None, str | None]:
    """(what answered, None) or (None, what happened)."""
    probe = await handshake(Listener(endpoint.host, endpoint.port), timeout)
    if not probe.answered:
        return None, probe.failure or "unreachable"
    if probe.certificate is not None:
        return Observation(endpoint.host, endpoint.port, probe=probe), None
    if probe.failure == "tls":  # it answered, not in TLS: an SSH server says so first
        banner = await _ssh_banner(endpoint.host, endpoint.port, timeout)
        if banner is not None:
            key = await _ssh_host_key(endpoint.host, endpoint.port, timeout)
            return Observation(endpoint.host, endpoint.port, ssh_banner=banner,
                               ssh_host_key=key), None
        return None, "not TLS or SSH"
    return None, "silent after connecting"


async def find(endpoints: Iterable[Endpoint], *, concurrency: int, timeout: float,
               on_progress: Callable[[int], None] | None = None) -> Found:
    """Probe every endpoint, at most ``concurrency`` at once; keep only what answered."""
    found = Found()
    source = iter(endpoints)

    async def worker() -> None:
        for endpoint in source:  # one shared iterator: each endpoint is taken once
            seen, failure = await observe(endpoint, timeout)
            found.probed += 1
            if seen is not None:
                found.answered.append(seen)
            else:
                found.silent[failure or "unreachable"] += 1
            if on_progress is not None:
                on_progress(found.probed)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    found.answered.sort(key=lambda o: (_sort_key(o.host), o.port))
    return found


def _sort_key(host: str) -> tuple[int, int, str]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return 1, 0, host
    return 0, address.version * 2**128 + int(address), ""
