"""Certificate versions, their private keys, and the imports that stored them.

Keys are files 0600 (PKCS#8, encrypted with the certificate's key passphrase
when it has one); a version is a folder with leaf.pem, chain.pem and
root.pem. Versions are numbered per certificate (``wildcard v3``, ``old
v1``); the row is written only after its files are on disk.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import PasswordError, PrivateKeyError, StateError
from ...fsutil import write_file_atomic, write_private_file
from .blobs import BlobsMixin
from .schema import now, os_user

if TYPE_CHECKING:
    from cryptography import x509

    from ...pki.model import Bundle, Finding, PrivateKey

__all__ = ["KeyRecord", "VersionRecord", "VersionsMixin"]

_KEY_COLUMNS = (
    "k.id, c.name AS certificate, k.spki_sha256, k.key_type, k.path, k.encrypted, k.csr_pem,"
    " k.origin, k.created FROM keys k JOIN certificates c ON c.id = k.certificate_id"
)
_VERSION_COLUMNS = (
    "v.id, c.name AS certificate, v.number, v.leaf_sha256, v.spki_sha256, v.subject, v.issuer,"
    " v.not_before, v.not_after, v.names, v.dir, v.key_id, v.created, v.origin"
    " FROM versions v JOIN certificates c ON c.id = v.certificate_id"
)


@dataclass(frozen=True)
class KeyRecord:
    id: int
    certificate: str
    spki_sha256: str
    key_type: str
    path: Path
    encrypted: bool
    csr_pem: str | None
    origin: str
    created: str


@dataclass(frozen=True)
class VersionRecord:
    """One stored certificate version; ``dir`` holds leaf.pem, chain.pem, root.pem.

    ``number`` counts the versions of ``certificate`` (1, 2, ...); ``id`` is
    the row's id across all certificates.
    """

    id: int
    certificate: str
    leaf_sha256: str
    spki_sha256: str
    subject: str
    issuer: str
    not_before: str
    not_after: str
    names: tuple[str, ...]
    dir: Path
    key_id: int | None
    created: str
    number: int = 0
    origin: str = "import"

    @property
    def label(self) -> str:
        """``wildcard v3``."""
        return f"{self.certificate} v{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": self.number,
            "certificate": self.certificate,
            "leaf_sha256": self.leaf_sha256,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "names": list(self.names),
            "created": self.created,
            "origin": self.origin,
        }


def _san_dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
    from cryptography import x509

    try:
        ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(ext.value.get_values_for_type(x509.DNSName))


class VersionsMixin(BlobsMixin):
    _keys: dict[int, PrivateKey]

    # ---- keys --------------------------------------------------------------

    def add_key(
        self,
        certificate: str,
        key: PrivateKey,
        *,
        origin: str,
        passphrase: str | None = None,
        csr_pem: str | None = None,
    ) -> KeyRecord:
        """Store a private key (0600, encrypted when ``passphrase``); returns its record.

        A key already stored (same public key) is not stored twice.
        """
        from cryptography.hazmat.primitives import serialization

        from ...pki.model import key_description, spki_sha256

        spki = spki_sha256(key)
        existing = self.key_by_spki(spki)
        if existing is not None:
            if csr_pem and not existing.csr_pem:
                self.db.execute("UPDATE keys SET csr_pem = ? WHERE id = ?", (csr_pem, existing.id))
                return self.key_by_spki(spki) or existing
            return existing
        kind, bits = key_description(key)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode())
            if passphrase
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        path = self.root / "keys" / certificate / f"{spki[:16]}.key.pem"
        write_private_file(path, pem)
        self.put_files([path], secret=True)
        cur = self.db.execute(
            "INSERT INTO keys (certificate_id, spki_sha256, key_type, path, encrypted, csr_pem,"
            " origin, created) VALUES (?,?,?,?,?,?,?,?)",
            (self.certificate_id(certificate), spki, f"{kind}{bits or ''}", self._rel(path),
             int(bool(passphrase)), csr_pem, origin, now()),
        )
        record = self.key(int(cur.lastrowid or 0))
        assert record is not None
        return record

    def _key_record(self, row: sqlite3.Row) -> KeyRecord:
        # _KEY_COLUMNS selects the fields of KeyRecord by name.
        return KeyRecord(**{
            **dict(row), "path": self.root / row["path"], "encrypted": bool(row["encrypted"])
        })

    def key(self, key_id: int) -> KeyRecord | None:
        row = self.db.execute(f"SELECT {_KEY_COLUMNS} WHERE k.id = ?", (key_id,)).fetchone()
        return self._key_record(row) if row else None

    def key_by_spki(self, spki: str) -> KeyRecord | None:
        row = self.db.execute(
            f"SELECT {_KEY_COLUMNS} WHERE k.spki_sha256 = ? ORDER BY k.id DESC", (spki,)
        ).fetchone()
        return self._key_record(row) if row else None

    def keys_for(self, certificate: str) -> list[KeyRecord]:
        rows = self.db.execute(
            f"SELECT {_KEY_COLUMNS} WHERE c.name = ? ORDER BY k.id", (certificate,)
        ).fetchall()
        return [self._key_record(row) for row in rows]

    def all_keys(self) -> list[KeyRecord]:
        """Every stored key, of every certificate, oldest first."""
        rows = self.db.execute(f"SELECT {_KEY_COLUMNS} ORDER BY k.id").fetchall()
        return [self._key_record(row) for row in rows]

    def load_key(self, record: KeyRecord, passphrase: str | None = None) -> PrivateKey:
        """The private key of ``record``. Raises PasswordError / PrivateKeyError.

        Loaded keys are kept for the life of the store object: loading an RSA
        key checks it, which costs tens of milliseconds per device otherwise.
        """
        cached = self._keys.get(record.id)
        if cached is not None:
            return cached
        key = self._load_key(record, passphrase)
        self._keys[record.id] = key
        return key

    def _load_key(self, record: KeyRecord, passphrase: str | None) -> PrivateKey:
        from cryptography.hazmat.primitives import serialization

        self.fetch_files(record.path)
        try:
            data = record.path.read_bytes()
        except OSError as exc:
            raise PrivateKeyError(
                f"stored key {str(record.path)!r} cannot be read: {exc.strerror or exc}",
                hint="the state folder was changed by hand; restore it from a backup",
            ) from None
        if record.encrypted and not passphrase:
            raise PasswordError(
                f"the stored key for {record.certificate!r} is encrypted and no passphrase "
                "was given",
                hint="set key_passphrase in the inventory certificate and its variable",
            )
        try:
            key = serialization.load_pem_private_key(
                data, passphrase.encode() if record.encrypted and passphrase else None
            )
        except (ValueError, TypeError) as exc:
            raise PasswordError(
                f"the stored key for {record.certificate!r} cannot be decrypted: {exc}",
                hint="check the key passphrase reference of the certificate",
            ) from None
        return key  # type: ignore[return-value]  # X25519/X448 are never stored

    # ---- versions ----------------------------------------------------------

    def add_version(
        self, certificate: str, bundle: Bundle, key_id: int | None, *, origin: str = "import"
    ) -> VersionRecord:
        """Store ``bundle``'s certificates as the next version of ``certificate``.

        ``origin`` "adopt": a version the devices served when the estate was
        taken over (see :meth:`current_version`).

        The files are written (and synced) first, then the row: a crash in
        between leaves an unused folder, never a version without files.
        """
        from cryptography.hazmat.primitives import serialization

        from ...pki.model import spki_sha256

        leaf = bundle.leaf

        def pem(cert: x509.Certificate) -> bytes:
            return bytes(cert.public_bytes(serialization.Encoding.PEM))

        with self.transaction():
            cert_id = self.certificate_id(certificate)
            number = int(self.db.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE certificate_id = ?",
                (cert_id,),
            ).fetchone()[0])
            # The fingerprint in the folder name: a store migrated from
            # global numbering may have a folder v<number> already.
            folder = f"v{number}-{bundle.leaf_sha256[:12]}"
            directory = self.root / "versions" / certificate / folder
            write_file_atomic(directory / "leaf.pem", pem(leaf))
            write_file_atomic(directory / "chain.pem", b"".join(pem(c) for c in bundle.chain))
            if bundle.root is not None:
                write_file_atomic(directory / "root.pem", pem(bundle.root))
            self.put_tree(directory, secret=False)
            cur = self.db.execute(
                "INSERT INTO versions (certificate_id, number, leaf_sha256, spki_sha256, subject,"
                " issuer, not_before, not_after, names, dir, key_id, created, origin)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    cert_id,
                    number,
                    bundle.leaf_sha256,
                    spki_sha256(leaf),
                    leaf.subject.rfc4514_string(),
                    leaf.issuer.rfc4514_string(),
                    leaf.not_valid_before_utc.isoformat(),
                    leaf.not_valid_after_utc.isoformat(),
                    json.dumps(list(_san_dns_names(leaf))),
                    self._rel(directory),
                    key_id,
                    now(),
                    origin,
                ),
            )
            version_id = int(cur.lastrowid or 0)
        record = self.version(version_id)
        assert record is not None
        return record

    def _version_record(self, row: sqlite3.Row) -> VersionRecord:
        # _VERSION_COLUMNS selects the fields of VersionRecord by name.
        return VersionRecord(**{
            **dict(row), "names": tuple(json.loads(row["names"])), "dir": self.root / row["dir"]
        })

    def version(self, version_id: int) -> VersionRecord | None:
        row = self.db.execute(f"SELECT {_VERSION_COLUMNS} WHERE v.id = ?", (version_id,)).fetchone()
        return self._version_record(row) if row else None

    def current_version(self, certificate: str) -> VersionRecord | None:
        """The deploy target: the newest imported version of ``certificate``.

        An adopted version (``certfleet adopt``) is the target only while no
        version was imported: adopting last year's certificate after this
        year's import does not send last year's back to the devices.
        """
        row = self.db.execute(
            f"SELECT {_VERSION_COLUMNS} WHERE c.name = ?"
            " ORDER BY v.origin = 'adopt', v.number DESC LIMIT 1",
            (certificate,),
        ).fetchone()
        return self._version_record(row) if row else None

    def versions(self, certificate: str | None = None) -> list[VersionRecord]:
        if certificate:
            rows = self.db.execute(
                f"SELECT {_VERSION_COLUMNS} WHERE c.name = ? ORDER BY v.number", (certificate,)
            ).fetchall()
        else:
            rows = self.db.execute(f"SELECT {_VERSION_COLUMNS} ORDER BY v.id").fetchall()
        return [self._version_record(row) for row in rows]

    def version_by_sha256(self, leaf_sha256: str) -> VersionRecord | None:
        row = self.db.execute(
            f"SELECT {_VERSION_COLUMNS} WHERE v.leaf_sha256 = ? ORDER BY v.id DESC LIMIT 1",
            (leaf_sha256,),
        ).fetchone()
        return self._version_record(row) if row else None

    def load_bundle(self, version: VersionRecord, passphrase: str | None = None) -> Bundle:
        """The :class:`~certfleet.pki.model.Bundle` of ``version``, with its key when stored."""
        from cryptography import x509

        from ...pki.model import Bundle

        self.fetch_files(version.dir)
        try:
            leaf = x509.load_pem_x509_certificate((version.dir / "leaf.pem").read_bytes())
            chain_pem = (version.dir / "chain.pem").read_bytes()
            chain = tuple(x509.load_pem_x509_certificates(chain_pem)) if chain_pem.strip() else ()
            root_path = version.dir / "root.pem"
            root = (
                x509.load_pem_x509_certificate(root_path.read_bytes())
                if root_path.exists()
                else None
            )
        except (OSError, ValueError) as exc:
            raise StateError(
                f"stored version {version.label} cannot be read: {exc}",
                hint="the state folder was changed by hand; import the certificate again",
            ) from None
        key = None
        key_record = self.key(version.key_id) if version.key_id is not None else None
        if key_record is not None:
            key = self.load_key(key_record, passphrase)
        return Bundle(
            leaf=leaf,
            chain=chain,
            root=root,
            private_key=key,
            key_format="pkcs8" if key is not None else None,
            key_encrypted=False,
            key_source=f"state:{key_record.path.name}" if key_record else None,
        )

    # ---- imports -----------------------------------------------------------

    def record_import(
        self,
        certificate: str,
        files: Sequence[str],
        version_id: int | None,
        findings: Sequence[Finding],
        outcome: str,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO imports (at, user, certificate_id, files, version_id, findings, outcome)"
            " VALUES (?,?,?,?,?,?,?)",
            (now(), os_user(), self.certificate_id(certificate), json.dumps(list(files)),
             version_id, json.dumps([f.to_dict() for f in findings]), outcome),
        )
        return int(cur.lastrowid or 0)

    def imports(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT i.id, i.at, i.user, c.name AS certificate, i.files, i.version_id, i.findings,"
            " i.outcome FROM imports i JOIN certificates c ON c.id = i.certificate_id"
            " ORDER BY i.id"
        )
        return [dict(row) for row in rows]
