"""Import what the CA handed over as a new version of an inventory certificate.

The files are read by content, assembled into a bundle (leaf, chain in the
right order, root, key) and checked: the toolkit's preflight plus every
FQDN of the devices that use the certificate. When the files carry no key
(the usual case after ``certfleet csr NAME``), the key is taken from the
state store by matching the certificate's public key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PreflightError
from ..inventory import Inventory
from .csr import key_passphrase
from .store import Store, VersionRecord

if TYPE_CHECKING:
    import datetime as dt

    from ..pki.model import Bundle, Finding, LoadedObject

__all__ = ["ImportResult", "import_certificate"]


@dataclass(frozen=True)
class ImportResult:
    """The stored version, its bundle, every finding, and whether it was new."""

    version: VersionRecord
    bundle: Bundle
    findings: list[Finding]
    new: bool
    key_from_store: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version.to_dict(),
            "new": self.new,
            "key_from_store": self.key_from_store,
            "findings": [f.to_dict() for f in self.findings],
        }


def _add_store_keys(
    objects: list[LoadedObject], store: Store, passphrase: str | None, name: str
) -> bool:
    """Append the stored key matching a certificate of ``objects``; True when one was added."""
    from ..pki.model import LoadedObject, spki_sha256

    if any(obj.type == "private_key" for obj in objects):
        return False
    for obj in objects:
        if obj.type != "certificate":
            continue
        record = store.key_by_spki(spki_sha256(obj.value))
        if record is None:
            continue
        key = store.load_key(record, passphrase)
        objects.append(
            LoadedObject(
                source=f"state store key for {name!r}",
                type="private_key",
                format="pkcs8",
                value=key,
                encrypted=False,
                index=0,
            )
        )
        return True
    return False


def import_certificate(
    inventory: Inventory,
    store: Store,
    name: str,
    files: Sequence[str | Path],
    *,
    password: bytes | None = None,
    now: dt.datetime | None = None,
) -> ImportResult:
    """Assemble, check and store ``files`` as the newest version of certificate ``name``.

    Raises ConfigError (unknown certificate), CertificateError/PasswordError
    (unreadable files), PreflightError (any error finding; nothing stored).
    """
    from ..pki.bundle import assemble
    from ..pki.checks import check_bundle
    from ..pki.load import load_files

    spec = inventory.certificate(name)
    passphrase = key_passphrase(inventory, name)
    paths = [str(p) for p in files]
    objects = list(load_files(paths, password))
    from_store = _add_store_keys(objects, store, passphrase, name)
    bundle = assemble(objects)
    hosts = inventory.hosts_for(name) or list(spec.names)
    findings = list(
        check_bundle(bundle, hosts, expiry_warn_days=inventory.expiry_warn_days, now=now)
    )
    errors = [f for f in findings if f.severity == "error"]
    # No KEY_MISSING next to CSR_GIVEN: the "leaf" then is the CA's intermediate, whose
    # key nobody has; the request named as such is the whole story.
    if bundle.private_key is None and not any(
        "KEY" in f.code.upper() or f.code == "CSR_GIVEN" for f in errors
    ):
        from ..pki.model import Finding

        # A version is only useful with its key: what is a warning for
        # `check` is an error here.
        findings = [f for f in findings if f.code != "KEY_MISSING"]

        missing = Finding(
            "KEY_MISSING",
            "error",
            f"no private key for {bundle.leaf.subject.rfc4514_string()!r} in the files or "
            "the state store",
            hint=f"add the key file, or make the CSR with 'certfleet csr {name}'",
        )
        findings.append(missing)
        errors.append(missing)
    if errors:
        store.record_import(name, paths, None, findings, "refused")
        store.audit("import", "refused", detail=f"{name}: {errors[0].code}")
        raise PreflightError(
            f"the files for {name!r} failed {len(errors)} check(s): {errors[0].message}",
            findings,
            hint=errors[0].hint or "fix the files and import again",
        )
    existing = store.current_version(name)
    if existing is not None and existing.leaf_sha256 == bundle.leaf_sha256:
        store.record_import(name, paths, existing.id, findings, "unchanged")
        store.audit("import", "unchanged", detail=f"{name}: v{existing.number}")
        return ImportResult(existing, bundle, findings, False, from_store)
    assert bundle.private_key is not None  # KEY_MISSING above refused otherwise
    key_record = store.add_key(
        name, bundle.private_key, origin="store" if from_store else "import", passphrase=passphrase
    )
    version = store.add_version(name, bundle, key_record.id)
    store.record_import(name, paths, version.id, findings, "stored")
    store.audit("import", "stored", detail=f"{name}: v{version.number} {bundle.leaf_sha256[:16]}")
    return ImportResult(version, bundle, findings, True, from_store)
