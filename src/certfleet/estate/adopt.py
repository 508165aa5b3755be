"""Adopt the estate as it is: store what the devices serve today, with its key.

An estate set up by hand has no state store: its first deploy could not roll
an SBC back (the SBC never returns its private key). ``certfleet adopt NAME
FILE...`` takes last year's renewal as it was exported (a pfx, or the
certificate and its key), checks it against what every device of NAME serves
(by fingerprint, per listener) and stores it as a known version of NAME with
its key, so that the first deploy can roll back.

What was decided:

- An adopted version is never the deploy target while an imported version of
  NAME exists (``Store.current_version``): adopting after this year's import
  does not send last year's certificate back. Before any import it is the
  target, which the devices already serve (plan: skip).
- When no device serves it (all serve something else, or none answered), it
  is stored all the same (exit 0) and said plainly: a key that is known harms
  nothing, and a device down today may serve it tomorrow. Bad files, no key,
  or a key that does not belong to the certificate: nothing stored, exit 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from ..errors import PrivateKeyError
from ..inventory import Inventory
from .csr import key_passphrase

if TYPE_CHECKING:
    from cryptography import x509

    from ..pki.model import Bundle, Finding
    from .store import Store, VersionRecord

__all__ = ["MATCH", "OTHER", "UNREACHABLE", "AdoptResult", "DeviceMatch", "adopt_certificate"]

MATCH, OTHER, UNREACHABLE = "match", "other", "unreachable"


class ListenerMatch(TypedDict):
    """One listener of a device: what it serves compared with the adopted certificate."""

    listener: str
    state: str  # match | other | unreachable
    sha256: str | None
    error: str | None


@dataclass
class DeviceMatch:
    """What one device serves, compared with the adopted certificate."""

    device: str
    state: str  # match | other | unreachable
    listeners: list[ListenerMatch] = field(default_factory=list)

    @property
    def detail(self) -> str:
        parts = []
        for item in self.listeners:
            if item["state"] == UNREACHABLE:
                parts.append(f"{item['listener']}: unreachable ({item['error']})")
            elif item["state"] == OTHER:
                parts.append(f"{item['listener']}: serves {(item['sha256'] or '')[:16]}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {"device": self.device, "state": self.state, "listeners": self.listeners}


@dataclass
class AdoptResult:
    version: VersionRecord
    new: bool
    devices: list[DeviceMatch]
    findings: list[Finding]
    is_target: bool = False

    @property
    def served_by(self) -> list[str]:
        return [d.device for d in self.devices if d.state == MATCH]

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version.to_dict(),
            "new": self.new,
            "target": self.is_target,
            "served_by": self.served_by,
            "devices": [d.to_dict() for d in self.devices],
            "findings": [f.to_dict() for f in self.findings],
        }


async def compare_devices(inventory: Inventory, name: str, leaf_sha256: str) -> list[DeviceMatch]:
    """Handshake every listener of every device of certificate ``name``."""
    import asyncio

    from ..drivers.tlsprobe import probe

    devices = [d for d in inventory.devices.values() if d.certificate == name]
    results = await asyncio.gather(*(probe(d.listeners, timeout=10.0) for d in devices))
    matches = []
    for device, probed in zip(devices, results, strict=True):
        listeners: list[ListenerMatch] = []
        for r in probed:
            sha = _sha(r.certificate) if r.certificate is not None else None
            state = UNREACHABLE if sha is None else MATCH if sha == leaf_sha256 else OTHER
            listeners.append({"listener": str(r.listener), "state": state, "sha256": sha,
                              "error": r.error if sha is None else None})
        states = {item["state"] for item in listeners}
        state = OTHER if OTHER in states else UNREACHABLE if UNREACHABLE in states else MATCH
        matches.append(DeviceMatch(device.name, state, listeners))
    return matches


def _sha(cert: x509.Certificate) -> str:
    from ..pki.model import cert_sha256

    return cert_sha256(cert)


def load_adopted(files: Sequence[str | Path], password: bytes | None) -> Bundle:
    """The bundle of ``files``; raises CertificateError/PasswordError/PrivateKeyError."""
    from ..pki.bundle import assemble
    from ..pki.load import load_files

    bundle = assemble(load_files([str(p) for p in files], password))
    if bundle.private_key is None:
        mismatch = any(f.code == "KEY_MISMATCH" for f in bundle.findings)
        raise PrivateKeyError(
            ("the key in the files does not belong to the certificate "
             f"{bundle.leaf.subject.rfc4514_string()!r}") if mismatch else
            f"no private key for {bundle.leaf.subject.rfc4514_string()!r} in the files",
            hint="give the pfx exported with its key, or the certificate and its key file "
                 "(an SBC never returns its key: adopting needs the key)",
        )
    return bundle


def adopt_certificate(
    inventory: Inventory,
    store: Store,
    name: str,
    files: Sequence[str | Path],
    *,
    password: bytes | None = None,
) -> AdoptResult:
    """Check ``files`` against the devices of ``name`` and store them as a known version.

    Raises ConfigError (unknown certificate) and the errors of :func:`load_adopted`.
    """
    import asyncio

    inventory.certificate(name)  # ConfigError for an unknown name
    passphrase = key_passphrase(inventory, name)
    bundle = load_adopted(files, password)
    devices = asyncio.run(compare_devices(inventory, name, bundle.leaf_sha256))
    findings = list(bundle.findings)
    paths = [str(p) for p in files]
    existing = next((v for v in store.versions(name) if v.leaf_sha256 == bundle.leaf_sha256),
                    None)
    if existing is not None:
        version, new = existing, False
    else:
        assert bundle.private_key is not None  # load_adopted refuses a bundle without one
        key = store.add_key(name, bundle.private_key, origin="adopt", passphrase=passphrase)
        version, new = store.add_version(name, bundle, key.id, origin="adopt"), True
    store.record_import(name, paths, version.id, findings, "adopted" if new else "unchanged")
    served = ",".join(d.device for d in devices if d.state == MATCH) or "no device"
    store.audit("adopt", "stored" if new else "unchanged",
                detail=f"{name}: v{version.number} {bundle.leaf_sha256[:16]} served by {served}")
    current = store.current_version(name)
    result = AdoptResult(version, new, devices, findings)
    result.is_target = current is not None and current.id == version.id
    return result
