"""Named sets of trusted root certificates that a TLS context must hold.

``teams-2026`` is the list Microsoft published for Teams Direct Routing
(Message Center MC1213773): SBCs doing mutual TLS with Teams must trust these
roots in the Teams TLS context. The certificates ship as package data
(``certfleet/data/trust/<set>/``) and are pinned here by SHA-256: a file that
does not match its pin is refused, so a changed package cannot slip in
another root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import ConfigError, StateError

__all__ = ["ROOT_SETS", "PinnedRoot", "RootSet", "TrustAudit", "audit_roots", "get_root_set"]


@dataclass(frozen=True)
class PinnedRoot:
    """One root of a set: its display name, package file and SHA-256 pin (DER)."""

    name: str
    file: str
    sha256: str


@dataclass(frozen=True)
class RootSet:
    """A named list of pinned roots (see :data:`ROOT_SETS`)."""

    name: str
    description: str
    roots: tuple[PinnedRoot, ...]

    def certificates(self) -> list[tuple[PinnedRoot, x509.Certificate]]:
        """Each root with its certificate, read from package data and checked against its pin.

        Raises StateError when a file is missing or does not match its pin.
        """
        folder = resources.files("certfleet") / "data" / "trust" / self.name
        loaded: list[tuple[PinnedRoot, x509.Certificate]] = []
        for root in self.roots:
            try:
                cert = x509.load_pem_x509_certificate((folder / root.file).read_bytes())
            except (OSError, ValueError) as exc:
                raise StateError(
                    f"root {root.name!r} of set {self.name!r} cannot be read from {root.file!r}",
                    hint="reinstall certfleet: its package data is incomplete",
                ) from exc
            seen = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
            if seen != root.sha256:
                raise StateError(
                    f"root {root.name!r} of set {self.name!r} has SHA-256 {seen}, "
                    f"not the pinned {root.sha256}",
                    hint="reinstall certfleet: its package data was changed",
                )
            loaded.append((root, cert))
        return loaded


ROOT_SETS: dict[str, RootSet] = {
    "teams-2026": RootSet(
        "teams-2026",
        "Microsoft Teams Direct Routing server roots (MC1213773, enforced from 2026)",
        (
            PinnedRoot("DigiCert Global Root CA", "DigiCert_Global_Root_CA.pem",
                       "4348a0e9444c78cb265e058d5e8944b4d84f9662bd26db257f8934a443c70161"),
            PinnedRoot("DigiCert Global Root G2", "DigiCert_Global_Root_G2.pem",
                       "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f"),
            PinnedRoot("DigiCert Global Root G3", "DigiCert_Global_Root_G3.pem",
                       "31ad6648f8104138c738f39ea4320133393e3a18cc02296ef97c2ac9ef6731d0"),
            PinnedRoot("DigiCert TLS ECC P384 Root G5", "DigiCert_TLS_ECC_P384_Root_G5.pem",
                       "018e13f0772532cf809bd1b17281867283fc48c6e13be9c69812854a490c1b05"),
            PinnedRoot("DigiCert TLS RSA4096 Root G5", "DigiCert_TLS_RSA4096_Root_G5.pem",
                       "371a00dc0533b3721a7eeb40e8419e70799d2b0a0f2c1d80693165f7cec4ad75"),
            PinnedRoot("Microsoft ECC Root Certificate Authority 2017",
                       "Microsoft_ECC_Root_Certificate_Authority_2017.pem",
                       "358df39d764af9e1b766e9c972df352ee15cfac227af6ad1d70e8e4a6edcba02"),
            PinnedRoot("Microsoft RSA Root Certificate Authority 2017",
                       "Microsoft_RSA_Root_Certificate_Authority_2017.pem",
                       "c741f70f4b2a8d88bf2e71c14122ef53ef10eba0cfa5e64cfa20f418853073e0"),
        ),
    ),
}


def get_root_set(name: str) -> RootSet:
    """The root set called ``name``. Raises ConfigError naming the sets there are."""
    try:
        return ROOT_SETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown root set {name!r}",
            hint=f"use one of: {', '.join(sorted(ROOT_SETS))}",
        ) from None


@dataclass(frozen=True)
class TrustAudit:
    """Which roots of a set a trusted root store holds (names in set order)."""

    set_name: str
    present: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing


def audit_roots(root_set: RootSet, store: Iterable[x509.Certificate]) -> TrustAudit:
    """Compare ``store`` (a context's trusted roots) with ``root_set``, by SHA-256."""
    held = {
        hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in store
    }
    present = tuple(r.name for r in root_set.roots if r.sha256 in held)
    missing = tuple(r.name for r in root_set.roots if r.sha256 not in held)
    return TrustAudit(root_set.name, present, missing)
