"""Device backups: folders under ``backups/DEVICE/`` in the state folder, listed in the database.

A backup is written before the first change on a device (write-ahead):
each file atomically, fsynced and 0600, then ``backup.json`` (the
manifest), then the folder itself is synced; only then is the row written.
With a key passphrase (the one of the device's certificate, the same that
encrypts the stored keys) the files are encrypted with AES-256-GCM under a
key derived by scrypt from the passphrase and a salt kept in the manifest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import PasswordError, StateError
from ...fsutil import write_private_file
from .blobs import BlobsMixin

if TYPE_CHECKING:
    from ...drivers.base import Backup

__all__ = ["BackupRecord", "BackupsMixin", "read_backup_files", "write_backup_files"]

_SCHEME = "scrypt-aes256gcm"
_SCRYPT_N = 2**15


@dataclass(frozen=True)
class BackupRecord:
    id: int
    device: str
    kind: str
    dir: Path
    created: str
    has_private_key: bool
    served_sha256: str | None
    run_id: int | None
    encrypted: bool = False


def _derive(passphrase: str, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(passphrase.encode())


def _sync_dir(directory: Path) -> None:
    """Make the folder's entries durable (POSIX; Windows has no directory handles)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_backup_files(backup: Backup, directory: Path, passphrase: str | None = None) -> Path:
    """Write ``backup`` into ``directory`` (no database access: safe in a worker thread)."""
    from ...drivers.base import BACKUP_MANIFEST

    directory.mkdir(parents=True, exist_ok=True)
    if os.name == "posix":
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
    encryption: dict[str, str] | None = None
    aead: Any = None
    if passphrase:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        salt = os.urandom(16)
        aead = AESGCM(_derive(passphrase, salt))
        encryption = {"scheme": _SCHEME, "salt": salt.hex(), "n": str(_SCRYPT_N)}
    for name, data in backup.files.items():
        if Path(name).name != name or name.startswith(".") or name == BACKUP_MANIFEST:
            raise StateError(
                f"backup of {backup.device!r}: unsafe file name {name!r}",
                hint="this is a driver bug; report it",
            )
        if aead is not None:
            nonce = os.urandom(12)
            data = nonce + aead.encrypt(nonce, data, name.encode())
        write_private_file(directory / name, data)
    manifest = {**backup.manifest(), "encryption": encryption}
    write_private_file(directory / BACKUP_MANIFEST, json.dumps(manifest, indent=2).encode())
    _sync_dir(directory)
    _sync_dir(directory.parent)
    return directory


def read_backup_files(directory: Path, passphrase: str | None = None) -> Backup:
    """The Backup in ``directory``. Raises OSError/ValueError/KeyError, PasswordError."""
    from ...drivers.base import BACKUP_MANIFEST, Backup

    manifest = json.loads((directory / BACKUP_MANIFEST).read_text(encoding="utf-8"))
    encryption = manifest.get("encryption")
    aead: Any = None
    if encryption:
        if not passphrase:
            raise PasswordError(
                f"the backup in {str(directory)!r} is encrypted and no key passphrase was given",
                hint="set the variable of the certificate's key_passphrase",
            )
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aead = AESGCM(_derive(passphrase, bytes.fromhex(encryption["salt"])))
    files: dict[str, bytes] = {}
    for name in manifest["files"]:
        if Path(name).name != name:
            raise ValueError(f"unsafe file name {name!r} in the manifest")
        data = (directory / name).read_bytes()
        if aead is not None:
            from cryptography.exceptions import InvalidTag

            try:
                data = aead.decrypt(data[:12], data[12:], name.encode())
            except InvalidTag:
                raise PasswordError(
                    f"the backup in {str(directory)!r} cannot be decrypted with the key "
                    "passphrase given",
                    hint="check the variable of the certificate's key_passphrase",
                ) from None
        files[name] = data
    return Backup.from_manifest(manifest, files)


class BackupsMixin(BlobsMixin):
    def add_backup(
        self,
        backup: Backup,
        *,
        served_sha256: str | None,
        run_id: int | None = None,
        passphrase: str | None = None,
    ) -> BackupRecord:
        """Write a driver :class:`~certfleet.drivers.base.Backup` under the state folder."""
        directory = self.new_backup_dir(backup.device)
        try:
            write_backup_files(backup, directory, passphrase)
        except OSError as exc:
            raise StateError(
                f"cannot write the backup of {backup.device!r} to {str(directory)!r}: "
                f"{exc.strerror or exc}",
                hint="free space in the state folder (or pass --state-dir); nothing was changed",
            ) from None
        return self.register_backup(
            backup, directory, served_sha256=served_sha256, run_id=run_id,
            encrypted=bool(passphrase),
        )

    def new_backup_dir(self, device: str) -> Path:
        """A fresh folder name for a backup of ``device`` (not created)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        return self.root / "backups" / device / stamp

    def register_backup(
        self,
        backup: Backup,
        directory: Path,
        *,
        served_sha256: str | None,
        run_id: int | None,
        encrypted: bool = False,
    ) -> BackupRecord:
        """Record a backup already written to ``directory`` (see :func:`write_backup_files`)."""
        self.put_tree(directory, secret=True)
        cur = self.db.execute(
            "INSERT INTO backups (device, kind, dir, created, has_private_key, served_sha256,"
            " run_id, encrypted) VALUES (?,?,?,?,?,?,?,?)",
            (backup.device, backup.kind, self._rel(directory), backup.created,
             int(backup.has_private_key), served_sha256, run_id, int(encrypted)),
        )
        record = self.backup(int(cur.lastrowid or 0))
        assert record is not None
        return record

    def _backup_record(self, row: sqlite3.Row) -> BackupRecord:
        return BackupRecord(
            id=row["id"],
            device=row["device"],
            kind=row["kind"],
            dir=self.root / row["dir"],
            created=row["created"],
            has_private_key=bool(row["has_private_key"]),
            served_sha256=row["served_sha256"],
            run_id=row["run_id"],
            encrypted=bool(row["encrypted"]),
        )

    def backup(self, backup_id: int) -> BackupRecord | None:
        row = self.db.execute("SELECT * FROM backups WHERE id = ?", (backup_id,)).fetchone()
        return self._backup_record(row) if row else None

    def last_backup(self, device: str) -> BackupRecord | None:
        row = self.db.execute(
            "SELECT * FROM backups WHERE device = ? ORDER BY id DESC LIMIT 1", (device,)
        ).fetchone()
        return self._backup_record(row) if row else None

    def backups(self, device: str | None = None) -> list[BackupRecord]:
        if device:
            rows = self.db.execute(
                "SELECT * FROM backups WHERE device = ? ORDER BY id", (device,)
            ).fetchall()
        else:
            rows = self.db.execute("SELECT * FROM backups ORDER BY id").fetchall()
        return [self._backup_record(row) for row in rows]

    def read_backup(self, record: BackupRecord, passphrase: str | None = None) -> Backup:
        """The driver Backup of ``record``. Raises StateError when its files are gone."""
        self.fetch_files(record.dir)
        try:
            return read_backup_files(record.dir, passphrase)
        except (OSError, ValueError, KeyError) as exc:
            raise StateError(
                f"backup {record.id} of {record.device!r} in {str(record.dir)!r} cannot be "
                f"read: {exc}",
                hint="the state folder was changed by hand; restore the device by hand",
            ) from None
