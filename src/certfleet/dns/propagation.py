"""Wait until a TXT record is visible where the CA will look.

Without ``resolvers``, the zone's authoritative nameservers are asked
directly (each of them, as lego does: a CA's validation may land on any),
and a CNAME at the challenge name is followed to the zone that really holds
the record (the usual way of delegating ``_acme-challenge`` to a DNS zone
made for it). With ``resolvers``, those are asked instead: an internal
server, or a test DNS server. The wait is bounded by ``propagation_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import DnsError
from .records import TxtRecord

if TYPE_CHECKING:
    import dns.resolver

__all__ = ["follow_cname", "resolver_for", "split_host_port", "wait_for_records"]


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``"10.0.0.53:53"``, ``"[::1]:53"`` or ``"10.0.0.53"`` as (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


def resolver_for(servers: Sequence[str]) -> dns.resolver.Resolver:
    """A dnspython resolver asking ``servers`` (HOST[:PORT]), or the system's when empty."""
    import dns.resolver

    if not servers:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = []
    ports: set[int] = set()
    for server in servers:
        host, port = split_host_port(server, 53)
        resolver.nameservers.append(host)
        ports.add(port)
    resolver.port = ports.pop() if len(ports) == 1 else 53
    return resolver


def follow_cname(name: str, resolvers: Sequence[str] = ()) -> str:
    """Where ``name`` really lives: the end of its CNAME chain (``name`` itself when none).

    A challenge name delegated by CNAME (``_acme-challenge.example.com`` →
    ``_acme-challenge.acme-zone.example.net``) is published at the target,
    as lego does, since that is what the CA's lookup reaches.
    """
    import dns.exception

    try:
        resolver = resolver_for(resolvers)
    except Exception:  # no resolver configured here: publish at the name
        return name
    current = name
    for _ in range(8):
        try:
            answer = resolver.resolve(current, "CNAME", lifetime=5.0)
        except dns.exception.DNSException:
            return current
        current = str(answer[0].target).rstrip(".")
    return current


def _txt_at(name: str, host: str, port: int, timeout: float) -> tuple[set[str], str | None]:
    """TXT values of ``name`` on server ``host`` (no recursion), and a CNAME target if any."""
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(name + ".", dns.rdatatype.TXT)
    try:
        answer = dns.query.udp(query, host, port=port, timeout=timeout)
        if answer.flags & 0x0200:  # TC: truncated, ask again over TCP
            answer = dns.query.tcp(query, host, port=port, timeout=timeout)
    except Exception:  # a server that does not answer sees nothing yet
        return set(), None
    values: set[str] = set()
    cname: str | None = None
    for rrset in answer.answer:
        for item in rrset:
            if rrset.rdtype == dns.rdatatype.TXT:
                values.add(b"".join(item.strings).decode("utf-8", "replace"))
            elif rrset.rdtype == dns.rdatatype.CNAME:
                cname = str(item.target).rstrip(".")
    return values, cname


def _authoritative(name: str) -> list[tuple[str, int]]:
    """The addresses of the nameservers of the zone holding ``name`` (SOA walk up)."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver()
    labels = name.split(".")
    for start in range(len(labels) - 1):
        zone = ".".join(labels[start:])
        try:
            answer = resolver.resolve(zone, "NS", lifetime=5.0)
        except dns.exception.DNSException:
            continue
        servers: list[tuple[str, int]] = []
        for ns in answer:
            for rdtype in ("A", "AAAA"):
                try:
                    servers += [(str(a), 53) for a in resolver.resolve(str(ns.target), rdtype,
                                                                        lifetime=5.0)]
                except dns.exception.DNSException:
                    continue
        if servers:
            return servers
    return []


def _servers_for(name: str, resolvers: Sequence[str]) -> list[tuple[str, int]]:
    if resolvers:
        return [split_host_port(r, 53) for r in resolvers]
    return _authoritative(name)


def wait_for_records(
    records: Sequence[TxtRecord],
    *,
    resolvers: Sequence[str] = (),
    timeout: float = 300.0,
    interval: float = 2.0,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """Return once every value of ``records`` is served by every server that counts.

    Raises DnsError naming the record and the servers that do not serve it
    when ``timeout`` seconds pass.
    """
    wanted: dict[str, set[str]] = {}
    for record in records:
        wanted.setdefault(record.name, set()).add(record.value)
    deadline = time.monotonic() + timeout
    missing: list[str] = []
    while True:
        missing = []
        for name, values in wanted.items():
            target = name
            for _ in range(8):  # CNAME chain, bounded
                servers = _servers_for(target, resolvers)
                if not servers:
                    missing.append(f"{target}: no nameserver found")
                    break
                seen_cname: str | None = None
                for host, port in servers:
                    found, cname = _txt_at(target, host, port, 3.0)
                    if cname and not found:
                        seen_cname = cname
                        break
                    if not values <= found:
                        missing.append(f"{target} on {host}:{port}")
                if seen_cname is None:
                    break
                target = seen_cname
        if not missing:
            return
        if time.monotonic() >= deadline:
            break
        if on_wait is not None:
            on_wait("waiting for " + "; ".join(missing[:3]))
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    raise DnsError(
        f"the TXT record did not appear within {timeout:.0f}s: not served at "
        + "; ".join(missing[:5]),
        hint="check that the DNS provider publishes in the right zone, or raise "
        "propagation_timeout in the dns table",
    )
