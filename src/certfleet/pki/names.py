"""Which host names a certificate covers (RFC 6125 matching, as TLS clients do it)."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["certificate_names", "host_matches"]


def certificate_names(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """DNS and IP subjectAltNames, or the common name(s) when there is no SAN extension.

    Clients ignore the CN as soon as a SAN extension is present (RFC 6125 6.4.4),
    so the CN is reported only as the fallback.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except ValueError:  # a malformed extension: treat as no names
        return []
    if san is not None:
        dns = [str(name) for name in san.get_values_for_type(x509.DNSName)]
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        return dns + ips
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return []
    return [a.value if isinstance(a.value, str) else a.value.decode("utf-8", "replace")
            for a in attrs]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _a_label(name: str) -> str:
    """Lowercase, no trailing dot, internationalised labels as A-labels (xn--)."""
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


def host_matches(pattern: str, host: str) -> bool:
    """True when certificate name ``pattern`` covers ``host``.

    Case-insensitive; internationalised names compared as A-labels; an IP
    address matches only an equal IP name. A wildcard is a whole left-most
    label (``*.example.com``) standing for exactly one label: it covers
    ``a.example.com`` but neither ``example.com`` nor ``a.b.example.com``
    (RFC 6125 6.4.3). Partial wildcards (``w*.example.com``) and wildcards
    over fewer than two labels (``*.com``) match nothing.
    """
    host_ip = _ip(host)
    pattern_ip = _ip(pattern)
    if host_ip is not None or pattern_ip is not None:
        return host_ip is not None and host_ip == pattern_ip
    pattern_a = _a_label(pattern)
    host_a = _a_label(host)
    if not pattern_a or not host_a:
        return False
    if "*" not in pattern_a:
        return pattern_a == host_a
    first, _, rest = pattern_a.partition(".")
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    host_first, _, host_rest = host_a.partition(".")
    return bool(host_first) and host_rest == rest
