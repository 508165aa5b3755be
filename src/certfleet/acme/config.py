"""The inventory tables of unattended renewal: ``acme``, ``dns`` and ``notify``.

::

    [certificates.wildcard]
    renew_before_days = 30            # optional; default: 30 days or a third of the lifetime

    [certificates.wildcard.acme]
    directory = "https://acme-v02.api.letsencrypt.org/directory"
    email = "pki@example.com"
    eab_kid = "env:ACME_EAB_KID"      # secret references, as every secret
    eab_hmac_key = "env:ACME_EAB_HMAC"
    preferred_chain = "ISRG Root X1"
    ca_bundle = "private-acme-ca.pem" # verifies the ACME server's HTTPS
    x509_strict = false               # optional: accept a ca_bundle server certificate
                                      # without AKI/SKI (clears only the strict checks)
    root_file = "roots.pem"           # roots the issued chain ends in (OVOC wants root.crt)
    reuse_key = false
    timeout = 300                     # seconds for validation and finalisation

    [certificates.wildcard.dns]
    provider = "rfc2136"              # lexicon:NAME, hook, challtestsrv, manual
    ...

    [notify]
    urls = ["env:CERTFLEET_NOTIFY_URL"]
    on = ["failure", "renewed", "expiring"]

The inventory loader parses and checks these tables once, with the rest of
the file (:mod:`certfleet.inventory_renewal`), so a mistake is reported with
its file and line like any other; the issuer reads the typed tables carried
by the inventory with :func:`acme_config`, :func:`dns_config`,
:func:`renew_before_days` and :func:`notify_config`.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..inventory import Inventory
from ..inventory_renewal import PROVIDERS as PROVIDERS
from ..model import NOTIFY_EVENTS as NOTIFY_EVENTS
from ..model import AcmeConfig as AcmeConfig
from ..model import DnsConfig as DnsConfig
from ..model import NotifyConfig as NotifyConfig

__all__ = [
    "NOTIFY_EVENTS",
    "PROVIDERS",
    "AcmeConfig",
    "DnsConfig",
    "NotifyConfig",
    "acme_config",
    "dns_config",
    "notify_config",
    "renew_before_days",
]


def acme_config(inventory: Inventory, name: str) -> AcmeConfig | None:
    """The ``acme`` table of certificate ``name``, or None when it has none."""
    return inventory.certificate(name).acme


def dns_config(inventory: Inventory, name: str) -> DnsConfig:
    """The ``dns`` table of certificate ``name``. Raises ConfigError when it has none."""
    dns = inventory.certificate(name).dns
    if dns is None:
        raise ConfigError(
            f"{inventory.path}: certificate {name!r} has no [certificates.{name}.dns] table",
            hint='add one with provider = "rfc2136", "lexicon:NAME", "hook" or "manual"',
        )
    return dns


def renew_before_days(inventory: Inventory, name: str) -> int | None:
    """The certificate's ``renew_before_days``, or None (the default rule)."""
    spec = inventory.certificates.get(name)
    return spec.renew_before_days if spec is not None else None


def notify_config(inventory: Inventory) -> NotifyConfig:
    """The ``[notify]`` table (no URLs when absent)."""
    return inventory.notify
