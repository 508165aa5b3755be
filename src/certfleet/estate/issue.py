"""Issue a certificate by ACME and store it as a new version.

The key is made off the devices (the inventory's key type, or one a kind of
the devices using it accepts) and stored in the state store *before* the
order, so that no key is ever lost; the order itself is
:func:`certfleet.acme.issuer.order_certificate`. The issued chain (the
``preferred_chain`` when the CA offers alternates) goes through the same
import and preflight as ``certfleet import``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..acme import AcmeError
from ..acme.config import acme_config, dns_config
from ..acme.issuer import choose_chain, issuer_cn, load_chain, order_certificate, root_for

if TYPE_CHECKING:
    from ..inventory import Inventory
    from .importer import ImportResult
    from .store import Store

__all__ = ["IssueResult", "issue_certificate"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class IssueResult:
    """What :func:`issue_certificate` stored: the import result and the chain chosen."""

    certificate: str
    imported: ImportResult
    chain_issuer: str
    directory: str

    def to_dict(self) -> dict[str, object]:
        return {
            "certificate": self.certificate,
            "directory": self.directory,
            "chain_issuer": self.chain_issuer,
            **self.imported.to_dict(),
        }


def _key_type(inventory: Inventory, name: str) -> str:
    """The inventory's key type, or the one a kind of the devices using the certificate
    declares when it does not accept that one (OVOC: RSA, its known import)."""
    from ..drivers.registry import find_kind

    key_type = str(inventory.certificate(name).key_type)
    for device in inventory.devices_using(name):
        kind = find_kind(device.kind)
        if kind is not None and key_type not in kind.key_types and kind.key_types:
            return kind.key_type_for(key_type)
    return key_type


def issue_certificate(
    inventory: Inventory,
    store: Store,
    name: str,
    *,
    replaces: str | None = None,
    directory_url: str | None = None,
    log: Log = lambda _: None,
    stop_before_finalize: bool = False,
) -> IssueResult | None:
    """Order certificate ``name`` from its ACME CA and store it as the newest version.

    Returns None with ``stop_before_finalize`` (a dry run). Raises
    ConfigError (no acme table, bad settings), AcmeError (the CA refused or
    validation failed), DnsError, PreflightError (the issued files fail
    the import's checks; nothing stored).
    """
    import requests
    from acme import errors as acme_errors
    from cryptography.hazmat.primitives import serialization

    from ..acme.account import open_session
    from ..errors import ConfigError
    from ..fsutil import write_private_file
    from ..pki.keygen import build_csr, csr_pem, generate_private_key
    from .csr import key_passphrase
    from .importer import import_certificate

    config = acme_config(inventory, name)
    if config is None:
        raise ConfigError(
            f"certificate {name!r} has no [certificates.{name}.acme] table",
            hint=f"add one with directory and email, and a [certificates.{name}.dns] table",
        )
    dns = dns_config(inventory, name)
    from ..dns.providers import make_provider

    provider = make_provider(dns)  # a provider that cannot work fails before any order
    spec = inventory.certificate(name)
    passphrase = key_passphrase(inventory, name)
    key = None
    current = store.current_version(name)
    if config.reuse_key and current is not None and current.key_id is not None:
        record = store.key(current.key_id)
        if record is not None:
            key = store.load_key(record, passphrase)
    if key is None:
        key = generate_private_key(_key_type(inventory, name))
    try:
        csr = build_csr(key, spec.cn, spec.sans, organization=spec.organization)
    except ValueError as exc:
        raise ConfigError(f"{inventory.path}: certificate {name!r}: {exc}",
                          hint=f"fix cn/sans of [certificates.{name}]") from None
    pem = csr_pem(csr)
    if not stop_before_finalize:  # a dry run stores nothing, not even a key
        store.add_key(name, key, origin="acme", passphrase=passphrase,
                      csr_pem=pem.decode("ascii"))
    url = directory_url or config.directory
    try:
        accounts = Path(store.root) / "acme" / "accounts"
        store.fetch_files(accounts)  # a shared store: the team's accounts, from the database
        session = open_session(config, Path(store.root), directory_url=url)
        store.put_tree(accounts, secret=True)
        log(f"ordering {', '.join(spec.names)} from {url}")
        chains = order_certificate(
            session, list(spec.names), pem, dns, timeout=config.timeout, replaces=replaces,
            profile=config.profile, log=log, provider=provider,
            stop_before_finalize=stop_before_finalize,
        )
    except (requests.RequestException, acme_errors.Error) as exc:
        raise AcmeError(f"talking to the ACME server {url} failed: {str(exc)[:300]}",
                        hint="check the network and the directory URL; run again") from None
    if stop_before_finalize:
        return None
    chosen = choose_chain(chains, config.preferred_chain)
    certs = load_chain(chosen)
    top = certs[-1]
    if config.preferred_chain and issuer_cn(top.issuer) != config.preferred_chain:
        log(f"no chain issued by {config.preferred_chain!r}; keeping {issuer_cn(top.issuer)!r}")
    root = root_for(top, config, log)
    with tempfile.TemporaryDirectory(prefix="certfleet-acme-") as temp:
        path = Path(temp) / f"{name}-fullchain.pem"
        data = chosen.encode()
        if root is not None:
            data += root.public_bytes(serialization.Encoding.PEM)
        write_private_file(path, data)
        imported = import_certificate(inventory, store, name, [path])
    store.audit("issue", "stored",
                detail=f"{name}: v{imported.version.id} from {url}")
    return IssueResult(name, imported, issuer_cn(top.issuer), url)
