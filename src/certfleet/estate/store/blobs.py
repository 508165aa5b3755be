"""The store's files in a shared (PostgreSQL) database, secrets encrypted under the store key.

On SQLite the state folder is the store: keys, versions, backups and ACME
accounts are files in it. On PostgreSQL every such file is also a row of
``blobs`` (its path in the state folder, its bytes, their SHA-256), so that
any machine can finish or undo a run (and the expiry bands already told,
``notify-bands.json``, are the team's): a file missing from this machine's
state folder is fetched from the database before it is read (and written
0600).

Private keys, backups and ACME accounts are ``secret``: their bytes in the
database are AES-256-GCM (``cryptography``) under a key derived (HKDF-SHA256)
from the store key (``[state] key = "env:CERTFLEET_STORE_KEY"``), with the
path as associated data, so a row cannot be moved to another path. The row
``store_key`` of ``store_meta`` holds a check value: a wrong key is refused
before anything is decrypted. Without a store key the store opens, and
refuses (StateError) whatever needs a secret. :meth:`BlobsMixin.rekey`
re-encrypts everything under a new key in one transaction.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...errors import StateError
from ...fsutil import write_private_file
from .backend import PostgresDatabase
from .base import StoreBase

__all__ = ["BlobsMixin", "StoreCipher"]

_CHECK = b"certfleet store key check"
_KEY_HINT = ('set the store key the team uses: [state] key = "env:CERTFLEET_STORE_KEY" '
             '(or "keyring:SERVICE/USER", "file:PATH") in the inventory')


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class StoreCipher:
    """AES-256-GCM under a key derived from the store key; a blob is nonce + ciphertext."""

    def __init__(self, store_key: str) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"certfleet state store",
                       info=b"blobs v1").derive(store_key.encode())
        self._aead = AESGCM(derived)

    def encrypt(self, data: bytes, name: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, name.encode())

    def decrypt(self, blob: bytes, name: str) -> bytes:
        """The plain bytes. Raises StateError when the key (or the row) is not the right one."""
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(blob[:12], blob[12:], name.encode())
        except InvalidTag:
            raise StateError(
                f"the stored {name!r} cannot be decrypted with the store key given",
                hint="give the store key the store was written with ([state] key)",
            ) from None


class BlobsMixin(StoreBase):
    store_key: str | None
    #: Why the store key given could not be had (its variable unset...), for the refusal.
    store_key_problem: str | None = None

    @property
    def shared(self) -> bool:
        """Whether the database is a shared PostgreSQL (its files are rows of ``blobs``)."""
        return isinstance(self.db, PostgresDatabase)

    def _cipher(self, what: str) -> StoreCipher:
        """The cipher of the store key, checked against the store's. Raises StateError."""
        if not self.store_key:
            raise StateError(
                f"the shared state store needs its store key to {what}"
                + (f" ({self.store_key_problem})" if self.store_key_problem else ""),
                hint=_KEY_HINT, untouched=True)
        cipher = StoreCipher(self.store_key)
        row = self.db.execute(
            "SELECT value FROM store_meta WHERE name = 'store_key'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO store_meta (name, value) SELECT 'store_key', ?",
                            (cipher.encrypt(_CHECK, "store_key").hex(),))
            return cipher
        try:
            ok = cipher.decrypt(bytes.fromhex(str(row[0])), "store_key") == _CHECK
        except StateError:
            ok = False
        if not ok:
            raise StateError(
                "the store key given is not the key of this state store",
                hint="give the key the store was written with ([state] key); "
                "'certfleet store rekey' changes it",
                untouched=True)
        return cipher

    def _rel_path(self, path: Path) -> str:
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    def put_files(self, paths: Iterable[Path], *, secret: bool) -> None:
        """Copy the state folder's files ``paths`` into the database (shared stores only)."""
        if not self.shared:
            return
        files = [p for p in paths if p.is_file()]
        cipher = self._cipher("store a private key or a backup") if secret and files else None
        for path in files:
            name = self._rel_path(path)
            data = path.read_bytes()
            stored = cipher.encrypt(data, name) if cipher is not None else data
            self.db.execute(
                "INSERT INTO blobs (path, data, secret, sha256) SELECT ?, ?, ?, ?"
                " ON CONFLICT (path) DO UPDATE SET data = excluded.data,"
                " secret = excluded.secret, sha256 = excluded.sha256",
                (name, stored, int(secret), hashlib.sha256(data).hexdigest()),
            )

    def put_tree(self, directory: Path, *, secret: bool) -> None:
        """Every file under ``directory`` into the database (shared stores only)."""
        if self.shared and directory.is_dir():
            self.put_files(sorted(p for p in directory.rglob("*") if p.is_file()),
                           secret=secret)

    def fetch_files(self, path: Path, *, refresh: bool = False) -> None:
        """Write the database's files at or under ``path`` that this machine lacks (0600).

        ``refresh``: also those whose copy here differs (a file that changes, such
        as the notification bands already told).
        """
        if not self.shared:
            return
        name = self._rel_path(path)
        rows = self.db.execute(
            "SELECT path, data, secret, sha256 FROM blobs WHERE path = ? OR path LIKE ?",
            (name, name.replace("%", r"\%").replace("_", r"\_") + "/%"),
        ).fetchall()
        missing = [row for row in rows if not (self.root / str(row[0])).exists()
                   or (refresh and _sha256_of(self.root / str(row[0])) != row[3])]
        if not missing:
            return
        cipher: StoreCipher | None = None
        for row in missing:
            data = bytes(row[1])
            if row[2]:
                cipher = cipher or self._cipher("read a private key or a backup")
                data = cipher.decrypt(data, str(row[0]))
            if hashlib.sha256(data).hexdigest() != row[3]:
                raise StateError(f"the stored {str(row[0])!r} does not match its hash",
                                 hint="run 'certfleet store check'")
            target = self.root / str(row[0])
            try:
                write_private_file(target, data)
            except OSError as exc:
                raise StateError.from_os_error(
                    "write", target, exc,
                    hint="check that the state folder is writable (or pass --state-dir)",
                ) from None

    def blob_rows(self) -> list[dict[str, Any]]:
        """Every blob: path, secret, sha256 (not the bytes)."""
        return [dict(row) for row in self.db.execute(
            "SELECT path, secret, sha256 FROM blobs ORDER BY path")]

    def rekey(self, new_key: str) -> int:
        """Re-encrypt every secret blob under ``new_key`` in one transaction; how many."""
        if not self.shared:
            raise StateError(
                "store rekey is for a shared (PostgreSQL) store: an SQLite store keeps its "
                "keys as files", hint="pass --state-url (or [state] url) of the shared store")
        if not new_key:
            raise StateError("the new store key is empty", hint="give a long random secret")
        old = self._cipher("re-encrypt it")
        new = StoreCipher(new_key)
        with self.transaction():
            rows = self.db.execute("SELECT path, data FROM blobs WHERE secret = 1").fetchall()
            for path, data in rows:
                plain = old.decrypt(bytes(data), str(path))
                self.db.execute("UPDATE blobs SET data = ? WHERE path = ?",
                                (new.encrypt(plain, str(path)), str(path)))
            self.db.execute("UPDATE store_meta SET value = ? WHERE name = 'store_key'",
                            (new.encrypt(_CHECK, "store_key").hex(),))
        self.store_key = new_key
        return len(rows)
