"""Keys and CSRs for inventory certificates; the key stays in the state store.

``certfleet csr NAME`` calls :func:`make_inventory_csr`: it generates the
key the inventory asks for (off every device, as a shared wildcard needs),
stores it 0600 in the state folder (encrypted when the certificate names a
``key_passphrase``), and returns the CSR to hand to the CA. ``certfleet
import NAME`` later finds the key again by the issued certificate's public key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..inventory import Inventory, load_inventory
from ..secrets import resolve_secret
from .store import KeyRecord, Store

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["InventoryCsr", "key_passphrase", "make_inventory_csr"]


@dataclass(frozen=True)
class InventoryCsr:
    """What :func:`make_inventory_csr` made: the CSR (object and PEM) and the stored key."""

    certificate: str
    csr: x509.CertificateSigningRequest
    csr_pem: bytes
    key: KeyRecord
    csr_path: Path | None = None

    @property
    def key_path(self) -> Path:
        return self.key.path


def key_passphrase(inventory: Inventory, name: str) -> str | None:
    """The resolved key passphrase of certificate ``name``, or None when it has none."""
    spec = inventory.certificate(name)
    if spec.key_passphrase is None:
        return None
    return resolve_secret(spec.key_passphrase, what=f"key passphrase of {name!r}")


def make_inventory_csr(
    name: str,
    *,
    inventory: Inventory | Path | str | None = None,
    store: Store | None = None,
    state_dir: Path | str | None = None,
    out_dir: Path | str | None = None,
    out: Path | str | None = None,
) -> InventoryCsr:
    """Make a key and CSR for inventory certificate ``name``.

    The key is stored in the state store (``store``, or opened from
    ``state_dir``/the default). With ``out`` (a file) or ``out_dir`` (a
    folder, file ``NAME.csr``) the CSR is also written there. Raises
    ConfigError (unknown certificate, bad names), PasswordError, StateError.
    """
    from ..fsutil import write_file_atomic
    from ..pki.keygen import build_csr, csr_pem, generate_private_key

    if inventory is None:
        inventory = Path(os.environ.get("CERTFLEET_INVENTORY") or "certfleet.toml")
    inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
    spec = inv.certificate(name)
    passphrase = key_passphrase(inv, name)
    key = generate_private_key(spec.key_type)
    try:
        csr = build_csr(key, spec.cn, spec.sans, organization=spec.organization)
    except ValueError as exc:
        raise ConfigError(
            f"{inv.path}: certificate {name!r}: {exc}",
            hint=f"fix cn/sans of [certificates.{name}]",
            path=str(inv.path),
        ) from None
    pem = csr_pem(csr)
    own_store = store is None
    st = store if store is not None else Store.open(state_dir)
    try:
        record = st.add_key(
            name, key, origin="csr", passphrase=passphrase, csr_pem=pem.decode("ascii")
        )
        st.audit("csr", "ok", detail=f"{name}: key {record.spki_sha256[:16]}")
    finally:
        if own_store:
            st.close()
    path: Path | None = None
    if out is not None:
        path = Path(out)
    elif out_dir is not None:
        path = Path(out_dir) / f"{name}.csr"
    if path is not None:
        write_file_atomic(path, pem)
    return InventoryCsr(name, csr, pem, record, path)
