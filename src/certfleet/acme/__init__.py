"""Unattended issuance by ACME (RFC 8555) with DNS-01, and the renewal around it.

``config`` reads the inventory tables, ``account`` keeps one ACME account
per directory and e-mail, ``issuer`` orders a certificate (ARI ``replaces``
included), ``ari`` decides when a certificate is due, ``renew`` runs issue
→ import → deploy → verify for every certificate that names an issuer.
"""

from __future__ import annotations

# The errors live with the others (the DNS layer, below acme, raises DnsError too).
from ..errors import AcmeError as AcmeError
from ..errors import DnsError as DnsError

__all__ = ["AcmeError", "DnsError"]
