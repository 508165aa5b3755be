"""CLIENT_AUTH_DROPPED: a renewal that loses the clientAuth usage on a mutual-TLS device.

Let's Encrypt's ``classic`` profile stopped including the TLS client
authentication EKU on 2026-02-11: an SBC that presents its certificate to
Microsoft Teams Direct Routing in mutual TLS may get a renewal without it.
Each listener of the devices using the certificate is handshaken: one that
asks for a client certificate, or one the inventory labels ``teams`` (or a
device tagged ``teams``), and that serves a certificate with clientAuth,
gets the warning when the renewal lacks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

    from ..drivers.tlsprobe import Listener
    from ..inventory import Device
    from ..pki.model import Finding

__all__ = ["client_auth_findings", "is_teams"]


def is_teams(device: Device, listener: Listener) -> bool:
    """The inventory marks the listener (label) or the device (tag) as Teams."""
    return "teams" in str(listener.label).lower() or any(
        str(tag).lower() == "teams" for tag in device.tags)


async def client_auth_findings(
    devices: Sequence[Device], renewal: x509.Certificate,
) -> list[Finding]:
    """The CLIENT_AUTH_DROPPED findings of ``renewal`` (an x509.Certificate) on ``devices``."""
    from ..drivers.tlsprobe import probe
    from ..pki.checks import check_client_auth_dropped

    findings: list[Finding] = []
    for device in devices:
        listeners = list(device.listeners)
        if not listeners:
            continue
        for result in await probe(listeners, timeout=10.0):
            if result.certificate is None:
                continue
            if not (result.client_cert_requested or is_teams(device, result.listener)):
                continue
            findings += check_client_auth_dropped(
                result.certificate, renewal,
                where=f"{device.name} ({result.listener}, mutual TLS)")
    return findings
