"""What deploy, plan and the rehearsal share below them: the driver factory's type,
the bundle to deploy per certificate, the checks of a bundle for a device, and
whether a rollback is possible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..drivers.base import Driver, EventCallback
from ..errors import CertfleetError, ConfigError
from ..inventory import Device, Inventory
from .store import Store, VersionRecord

if TYPE_CHECKING:
    from cryptography import x509

    from ..pki.model import Bundle, Finding

__all__ = ["DriverFactory", "Targets", "device_findings", "rollback_possible"]

DriverFactory = Callable[[Device, Inventory, EventCallback | None], Driver]


class Targets:
    """The bundle and findings to deploy per certificate, loaded once."""

    def __init__(self, inventory: Inventory, store: Store) -> None:
        self.inventory = inventory
        self.store = store
        # The bundle stays Any until its readers (estate.decide) narrow it on the error.
        self._cache: dict[str, tuple[VersionRecord | None, Any, CertfleetError | None]] = {}

    def get(self, certificate: str) -> tuple[VersionRecord | None, Any, CertfleetError | None]:
        if certificate not in self._cache:
            from .csr import key_passphrase

            version = self.store.current_version(certificate)
            if version is None:
                err: CertfleetError | None = ConfigError(
                    f"no version of certificate {certificate!r} was imported",
                    hint=f"run 'certfleet import {certificate} FILE...' first",
                )
                self._cache[certificate] = (None, None, err)
            else:
                try:
                    bundle = self.store.load_bundle(
                        version, key_passphrase(self.inventory, certificate)
                    )
                    self._cache[certificate] = (version, bundle, None)
                except CertfleetError as exc:
                    self._cache[certificate] = (version, None, exc)
        return self._cache[certificate]


def device_findings(bundle: Bundle, device: Device, inventory: Inventory) -> list[Finding]:
    """The toolkit's checks of ``bundle`` for ``device``'s host names."""
    from ..pki.checks import check_bundle

    return list(
        check_bundle(bundle, list(device.hosts), expiry_warn_days=inventory.expiry_warn_days)
    )


def rollback_possible(
    device: Device, store: Store, served: Sequence[x509.Certificate | None],
) -> tuple[bool, str]:
    """Whether a failed deploy can be undone on ``device``, and why.

    As the device's kind declares: a kind whose driver backs up what it
    changes (key included) can; one whose device never returns its private
    key (``rollback_needs_key``) only when the key of what it serves now is
    in the store.
    """
    from ..drivers.registry import get_kind
    from ..pki.model import spki_sha256

    kind = get_kind(device.kind)
    if not kind.rollback_needs_key:
        return True, kind.rollback_note
    certs = [cert for cert in served if cert is not None]
    if not certs:
        return False, "no listener answered: nothing known to restore"
    missing = [cert for cert in certs if store.key_by_spki(spki_sha256(cert)) is None]
    if missing:
        return False, (
            f"{kind.rollback_key_note} and the key of the certificate it "
            "serves now is not in the store (adopt it with its key first)"
        )
    return True, "the key of the certificate served now is in the store"
