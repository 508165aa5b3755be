"""What a listener serves, read by the standard library's ``ssl``: an oracle written
independently of certfleet's own handshake probe and of the lab's internal state."""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any

__all__ = ["lab_served", "served_sha256", "unit_served"]


def served_sha256(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> str:
    """SHA-256 (hex) of the leaf certificate ``host:port`` presents in a TLS handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # read what is served, whoever issued it
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der, f"{host}:{port} presented no certificate"
    return hashlib.sha256(der).hexdigest()


def unit_served(unit: Any, role: str = "sip") -> str:
    """What a lab SBC unit's ``role`` listener serves, by handshake on its port."""
    return served_sha256(unit.listener_ports[role])


def lab_served(lab: Any) -> dict[str, str]:
    """``NAME:role`` → what it serves, by handshake: the OVOC's HTTPS and every lab SBC
    unit's SIP-TLS listener (HA pairs: both units)."""
    served: dict[str, str] = {}
    if lab.ovoc is not None:
        served["ovoc:https"] = served_sha256(lab.ovoc.https_port)
    for name, unit in lab.sbcs.items():
        served[f"{name}:sip"] = unit_served(unit)
    for name, pair in lab.pairs.items():
        for index, unit in enumerate(pair.units):
            served[f"{name}/{index}:sip"] = unit_served(unit)
    return served
