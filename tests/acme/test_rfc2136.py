"""The rfc2136 provider and the propagation check against a DNS server of the tests."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest

from certfleet.acme import DnsError
from certfleet.acme.config import DnsConfig
from certfleet.dns.propagation import wait_for_records
from certfleet.dns.providers import Rfc2136Provider, TxtRecord
from dns_server import DnsServer

SECRET = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer("example.com", "certfleet", SECRET) as running:
        yield running


def config(server: DnsServer, secret: str = SECRET) -> DnsConfig:
    os.environ["TEST_TSIG_SECRET"] = secret
    return DnsConfig("wildcard", "rfc2136", server=f"127.0.0.1:{server.port}",
                     tsig_name="certfleet", tsig_secret="env:TEST_TSIG_SECRET")


RECORDS = [TxtRecord("_acme-challenge.example.com", "apex-value", "example.com"),
           TxtRecord("_acme-challenge.example.com", "wildcard-value", "example.com")]


def test_update_with_tsig_adds_both_values_then_removes_them(server: DnsServer) -> None:
    """Both values land on one name, the check sees them, removal leaves nothing."""
    provider = Rfc2136Provider(config(server))
    provider.add(RECORDS)
    assert server.txt == {"_acme-challenge.example.com": {"apex-value", "wildcard-value"}}
    wait_for_records(RECORDS, resolvers=[f"127.0.0.1:{server.port}"], timeout=5)
    provider.remove(RECORDS)
    assert server.txt == {}


def test_wrong_tsig_key_is_refused(server: DnsServer) -> None:
    """An update signed with another key: the server says NOTAUTH; nothing is published."""
    other = base64.b64encode(os.urandom(32)).decode()
    refused = (r"RFC 2136 add for zone example.com refused by 127.0.0.1: "
               r"the TSIG key 'certfleet' was not accepted")
    with pytest.raises(DnsError, match=refused):
        Rfc2136Provider(config(server, other)).add(RECORDS)
    assert server.txt == {} and server.refused == 1


def test_propagation_times_out_naming_the_server(server: DnsServer) -> None:
    """A value never published: DnsError after the timeout, naming the name and the server."""
    with pytest.raises(DnsError, match=r"did not appear within 1s: not served at "
                       r"_acme-challenge.example.com on 127.0.0.1:\d+"):
        wait_for_records(RECORDS[:1], resolvers=[f"127.0.0.1:{server.port}"], timeout=1,
                         interval=0.2)


def test_cname_delegated_challenge_is_published_and_checked_at_the_target(
    server: DnsServer,
) -> None:
    """_acme-challenge CNAMEd to another zone: published there, and the check follows it."""
    from certfleet.dns.propagation import follow_cname

    resolvers = [f"127.0.0.1:{server.port}"]
    server.cnames["_acme-challenge.example.com"] = "_acme-challenge.acme.example.net"
    target = follow_cname("_acme-challenge.example.com", resolvers)
    assert target == "_acme-challenge.acme.example.net"
    assert follow_cname("_acme-challenge.other.example.com", resolvers) == (
        "_acme-challenge.other.example.com")
    published = [TxtRecord(target, "v1", "example.net")]
    Rfc2136Provider(config(server)).add(published)
    assert server.txt == {"_acme-challenge.acme.example.net": {"v1"}}
    # The check asked for the original name reaches the value through the CNAME.
    wait_for_records([TxtRecord("_acme-challenge.example.com", "v1", "example.com")],
                     resolvers=resolvers, timeout=5)
