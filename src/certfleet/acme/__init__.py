"""Unattended issuance by ACME (RFC 8555) with DNS-01, and the renewal around it.

``config`` reads the inventory tables, ``account`` keeps one ACME account
per directory and e-mail, ``issuer`` orders a certificate (ARI ``replaces``
included), ``ari`` decides when a certificate is due, ``renew`` runs issue
→ import → deploy → verify for every certificate that names an issuer.
"""

from __future__ import annotations

from ..errors import CertfleetError

__all__ = ["AcmeError", "DnsError"]


class AcmeError(CertfleetError):
    """The CA refused an order or a validation failed. ``problem``: the CA's words."""


class DnsError(AcmeError):
    """A TXT record could not be published, removed or seen on the nameservers."""
