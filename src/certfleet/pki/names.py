"""Which host names a certificate covers, matched as strictly as TLS clients match them.

Browsers, Teams and SIP peers follow RFC 6125 and the CA/Browser Forum rules:

- only the subjectAltName counts; a certificate without one covers nothing
  (the common name is ignored, RFC 6125 6.4.4 and every current browser);
- an IP address is covered only by an iPAddress entry, never by a dNSName
  that happens to hold the same text;
- a dNSName is ASCII letters, digits and hyphens (an internationalised name
  in its ``xn--`` form): one with ``_`` or raw non-ASCII text matches nothing;
- a wildcard is the whole left-most label and stands for exactly one label,
  over at least two labels that are not a public suffix (``*.co.uk`` and
  ``*.s3.amazonaws.com`` match nothing; the Public Suffix List shipped with
  the ``publicsuffixlist`` package is read, never fetched).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

__all__ = [
    "NameKind",
    "certificate_names",
    "covers",
    "host_matches",
    "is_ip_literal",
    "is_public_suffix",
    "san_entries",
    "why_not_covered",
]

NameKind = Literal["dns", "ip"]

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def certificate_names(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """DNS and IP subjectAltNames, or the common name(s) when there is no SAN extension.

    For display only: clients ignore the CN, and so does matching (see
    :func:`covers`), so a name listed here from the CN covers nothing.
    """
    entries = san_entries(cert)
    if entries is not None:
        return [value for _, value in entries]
    return _common_names(cert)


def _common_names(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return []
    return [a.value if isinstance(a.value, str) else a.value.decode("utf-8", "replace")
            for a in attrs]


def san_entries(
    cert: x509.Certificate | x509.CertificateSigningRequest,
) -> list[tuple[NameKind, str]] | None:
    """(kind, value) of each DNS and IP subjectAltName; None without the extension.

    A malformed extension gives an empty list (no names).
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        return []
    dns: list[tuple[NameKind, str]] = [
        ("dns", str(name)) for name in san.get_values_for_type(x509.DNSName)
    ]
    ips: list[tuple[NameKind, str]] = [
        ("ip", str(ip)) for ip in san.get_values_for_type(x509.IPAddress)
    ]
    return dns + ips


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def is_ip_literal(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (``[v6]`` brackets allowed), not a name."""
    return _ip(text) is not None


def _host_a_label(name: str) -> str:
    """A host as typed: lowercase, no trailing dot, internationalised labels as xn--."""
    name = name.strip().rstrip(".").lower()
    labels = []
    for label in name.split("."):
        if label.isascii():
            labels.append(label)
            continue
        try:
            labels.append(label.encode("idna").decode("ascii"))
        except UnicodeError:
            labels.append(label)
    return ".".join(labels)


def _dns_problem(pattern: str) -> str | None:
    """Why clients ignore the dNSName ``pattern`` (None when it is a valid name)."""
    if not pattern.isascii():
        return "it holds non-ASCII text (a certificate must carry its xn-- form)"
    if _ip(pattern) is not None:
        return "it is an IP address written as a DNS name (only an iPAddress entry covers an IP)"
    labels = pattern.rstrip(".").lower().split(".")
    for index, label in enumerate(labels):
        if index == 0 and label == "*":
            continue
        if "*" in label:
            return "a wildcard must be the whole left-most label"
        if not _LABEL.match(label):
            bad = sorted({c for c in label if not (c.isalnum() or c == "-")})
            if bad:
                return f"it holds a character a host name cannot have ({''.join(bad)!r})"
            return f"its label {label!r} is not a valid host name label"
    if labels[0] == "*":
        rest = ".".join(labels[1:])
        if len(labels) < 3:
            return "a wildcard over a top-level domain covers nothing"
        if is_public_suffix(rest):
            return f"the wildcard stands directly over the public suffix {rest!r}"
    return None


@functools.cache
def _suffix_list() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def is_public_suffix(name: str) -> bool:
    """True when ``name`` (A-labels) is on the Public Suffix List (ICANN or private part)."""
    return bool(_suffix_list().is_public(name.rstrip(".").lower()))


def host_matches(pattern: str, host: str, *, kind: NameKind | None = None) -> bool:
    """True when certificate name ``pattern`` covers ``host``.

    ``kind`` is the subjectAltName type of ``pattern``: "ip" matches only an
    equal IP address, "dns" only a valid host name (see the module
    docstring); without it, a pattern that reads as an IP address is taken
    as an iPAddress entry. Case-insensitive; the host may be typed with
    internationalised labels (compared as xn-- A-labels).
    """
    host_ip = _ip(host)
    if kind is None:
        kind = "ip" if _ip(pattern) is not None else "dns"
    if kind == "ip":
        return host_ip is not None and host_ip == _ip(pattern)
    if host_ip is not None or not pattern or _dns_problem(pattern) is not None:
        return False
    pattern_a = pattern.rstrip(".").lower()
    host_a = _host_a_label(host)
    if not host_a:
        return False
    if not pattern_a.startswith("*."):
        return pattern_a == host_a
    host_first, _, host_rest = host_a.partition(".")
    return bool(host_first) and host_rest == pattern_a[2:]


def covers(cert: x509.Certificate | x509.CertificateSigningRequest, host: str) -> bool:
    """True when a subjectAltName of ``cert`` covers ``host`` (the CN never does)."""
    return any(host_matches(value, host, kind=kind) for kind, value in san_entries(cert) or [])


def why_not_covered(
    cert: x509.Certificate | x509.CertificateSigningRequest, host: str
) -> str | None:
    """Why a client would reject ``cert`` for ``host``, or None when it is covered.

    The reason names the near miss when there is one (a CN that would have
    matched, a DNS entry holding the IP, a name clients ignore).
    """
    entries = san_entries(cert)
    if entries is None:
        cns = _common_names(cert)
        if any(host_matches(cn, host) for cn in cns):
            return (f"the certificate has no subjectAltName; its CN {cns[0]!r} names the "
                    "host but clients ignore the CN")
        return "the certificate has no subjectAltName (clients ignore the CN)"
    if any(host_matches(value, host, kind=kind) for kind, value in entries):
        return None
    for kind, value in entries:
        if kind != "dns":
            continue
        problem = _dns_problem(value)
        if problem is not None and _loose_match(value, host):
            return f"its name {value!r} would match but clients ignore it: {problem}"
    if not entries:
        return "its subjectAltName holds no DNS name or IP address"
    return "no subjectAltName covers it"


def _loose_match(pattern: str, host: str) -> bool:
    """The old, lenient comparison: tells a near miss from an unrelated name."""
    pattern_ip, host_ip = _ip(pattern), _ip(host)
    if pattern_ip is not None or host_ip is not None:
        return pattern_ip is not None and pattern_ip == host_ip
    pattern_a, host_a = _host_a_label(pattern), _host_a_label(host)
    if not pattern_a.startswith("*."):
        return pattern_a == host_a
    return host_a.partition(".")[2] == pattern_a[2:]
