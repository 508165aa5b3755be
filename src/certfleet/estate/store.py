"""The state store: a SQLite database and files in one state folder.

It keeps certificate versions (leaf, chain, root and the key, key files
0600 and optionally passphrase-encrypted), imports, deploy runs with the
exact inventory text they used, per-device deployments and steps with the
served fingerprints before and after, backups (files under the state
folder, referenced from the database), an audit log, and the deploy lock.

Nothing is ever deleted automatically. The schema is versioned with
``PRAGMA user_version``; :data:`MIGRATIONS` upgrades older stores in place
and a store newer than this release is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PasswordError, PrivateKeyError, StateError
from ..fsutil import write_file_atomic, write_private_file

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BackupRecord",
    "KeyRecord",
    "LockInfo",
    "Store",
    "VersionRecord",
    "default_state_dir",
    "os_user",
]

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE keys (
        id INTEGER PRIMARY KEY,
        certificate TEXT NOT NULL,
        spki_sha256 TEXT NOT NULL,
        key_type TEXT NOT NULL,
        path TEXT NOT NULL,
        encrypted INTEGER NOT NULL DEFAULT 0,
        csr_pem TEXT,
        origin TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX keys_spki ON keys (spki_sha256);
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        certificate TEXT NOT NULL,
        leaf_sha256 TEXT NOT NULL,
        spki_sha256 TEXT NOT NULL,
        subject TEXT NOT NULL,
        issuer TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        names TEXT NOT NULL,
        dir TEXT NOT NULL,
        key_id INTEGER REFERENCES keys (id),
        created TEXT NOT NULL
    );
    CREATE INDEX versions_cert ON versions (certificate);
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        user TEXT NOT NULL,
        certificate TEXT NOT NULL,
        files TEXT NOT NULL,
        version_id INTEGER REFERENCES versions (id),
        findings TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT,
        user TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        inventory_path TEXT,
        inventory_text TEXT,
        options TEXT NOT NULL,
        exit_code INTEGER
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs (id),
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        certificate TEXT,
        version_id INTEGER REFERENCES versions (id),
        target_sha256 TEXT,
        outcome TEXT NOT NULL,
        exit_code INTEGER NOT NULL,
        message TEXT NOT NULL,
        hint TEXT,
        served_before TEXT NOT NULL,
        served_after TEXT NOT NULL,
        backup_id INTEGER REFERENCES backups (id),
        started TEXT NOT NULL,
        finished TEXT NOT NULL
    );
    CREATE INDEX deployments_device ON deployments (device);
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        deployment_id INTEGER NOT NULL REFERENCES deployments (id),
        device TEXT NOT NULL,
        step TEXT NOT NULL,
        status TEXT NOT NULL,
        detail TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE backups (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        dir TEXT NOT NULL,
        created TEXT NOT NULL,
        has_private_key INTEGER NOT NULL,
        served_sha256 TEXT,
        run_id INTEGER REFERENCES runs (id)
    );
    CREATE INDEX backups_device ON backups (device);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        user TEXT NOT NULL,
        command TEXT NOT NULL,
        device TEXT,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE locks (
        name TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        user TEXT NOT NULL,
        at TEXT NOT NULL,
        command TEXT NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def default_state_dir() -> Path:
    """``$CERTFLEET_STATE_DIR``, else the platform's user data folder."""
    env = os.environ.get("CERTFLEET_STATE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("certfleet"))


def os_user() -> str:
    """The OS user for the audit log; getpass fails without a login name."""
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USERNAME") or os.environ.get("USER") or f"uid-{_uid()}"


def _uid() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else "unknown"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
    """One stored certificate version; ``dir`` holds leaf.pem, chain.pem, root.pem."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "certificate": self.certificate,
            "leaf_sha256": self.leaf_sha256,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "names": list(self.names),
            "created": self.created,
        }


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


@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    user: str
    at: str
    command: str

    def describe(self) -> str:
        text = f"pid {self.pid} on {self.host} ({self.user}) since {self.at}, {self.command}"
        if self.stale():
            text += " (that process is gone: the lock is stale)"
        return text

    def stale(self) -> bool:
        """True when the holder ran on this host and its process no longer exists (POSIX)."""
        if self.host != socket.gethostname() or os.name != "posix":
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, owned by another user
            return False
        return False


class Store:
    """The state folder. Open with :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self.db = db
        self._keys: dict[int, Any] = {}

    # ---- opening -----------------------------------------------------------

    @classmethod
    def open(cls, root: Path | str | None = None) -> Store:
        """Open (creating, migrating) the store in ``root``. Raises StateError."""
        path = Path(root).expanduser() if root is not None else default_state_dir()
        try:
            created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
            if created and os.name == "posix":
                # Keys and backups live here: private to the user (only a folder
                # certfleet made itself is changed).
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)
            db = sqlite3.connect(path / "state.db", timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the state store in {str(path)!r}: {exc}",
                hint="pass --state-dir to a writable folder (or set CERTFLEET_STATE_DIR)",
                path=str(path),
            ) from None
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        # WAL: readers never block the deploy's writes, and commits are cheap
        # (a deploy records every step of every device as it goes).
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        store = cls(path, db)
        store._migrate()
        return store

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state store in {str(self.root)!r} has schema {version}, newer than this "
                f"certfleet understands ({SCHEMA_VERSION})",
                hint="upgrade certfleet, or use another --state-dir",
                path=str(self.root),
            )
        for number in range(version, SCHEMA_VERSION):
            try:
                self.db.execute("BEGIN IMMEDIATE")
                current = int(self.db.execute("PRAGMA user_version").fetchone()[0])
                if current > number:  # another process migrated meanwhile
                    self.db.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number + 1}")
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise StateError(
                    f"cannot migrate the state store to schema {number + 1}: {exc}",
                    hint="check that the state folder is writable and not on a network share",
                    path=str(self.root),
                ) from None

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # ---- audit -------------------------------------------------------------

    def audit(
        self, command: str, outcome: str, *, device: str | None = None, detail: str = ""
    ) -> None:
        """Append one audit line (time, OS user, command, device, outcome)."""
        self.db.execute(
            "INSERT INTO audit (at, user, command, device, outcome, detail) VALUES (?,?,?,?,?,?)",
            (_now(), os_user(), command, device, outcome, detail),
        )

    def audit_log(self, device: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit"
        args: list[Any] = []
        if device:
            sql += " WHERE device = ?"
            args.append(device)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [dict(row) for row in self.db.execute(sql, args)]

    # ---- keys --------------------------------------------------------------

    def add_key(
        self,
        certificate: str,
        key: Any,
        *,
        origin: str,
        passphrase: str | None = None,
        csr_pem: str | None = None,
    ) -> KeyRecord:
        """Store a private key (0600, encrypted when ``passphrase``); returns its record.

        A key already stored (same public key) is not stored twice.
        """
        from cryptography.hazmat.primitives import serialization

        from ..pki.model import key_description, spki_sha256

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
        cur = self.db.execute(
            "INSERT INTO keys (certificate, spki_sha256, key_type, path, encrypted, csr_pem,"
            " origin, created) VALUES (?,?,?,?,?,?,?,?)",
            (certificate, spki, f"{kind}{bits or ''}", self._rel(path), int(bool(passphrase)),
             csr_pem, origin, _now()),
        )
        record = self.key(int(cur.lastrowid or 0))
        assert record is not None
        return record

    def _key_record(self, row: sqlite3.Row) -> KeyRecord:
        return KeyRecord(
            id=row["id"],
            certificate=row["certificate"],
            spki_sha256=row["spki_sha256"],
            key_type=row["key_type"],
            path=self.root / row["path"],
            encrypted=bool(row["encrypted"]),
            csr_pem=row["csr_pem"],
            origin=row["origin"],
            created=row["created"],
        )

    def key(self, key_id: int) -> KeyRecord | None:
        row = self.db.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
        return self._key_record(row) if row else None

    def key_by_spki(self, spki: str) -> KeyRecord | None:
        row = self.db.execute(
            "SELECT * FROM keys WHERE spki_sha256 = ? ORDER BY id DESC", (spki,)
        ).fetchone()
        return self._key_record(row) if row else None

    def keys_for(self, certificate: str) -> list[KeyRecord]:
        rows = self.db.execute(
            "SELECT * FROM keys WHERE certificate = ? ORDER BY id", (certificate,)
        ).fetchall()
        return [self._key_record(row) for row in rows]

    def load_key(self, record: KeyRecord, passphrase: str | None = None) -> Any:
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

    def _load_key(self, record: KeyRecord, passphrase: str | None) -> Any:
        from cryptography.hazmat.primitives import serialization

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
            return serialization.load_pem_private_key(
                data, passphrase.encode() if record.encrypted and passphrase else None
            )
        except (ValueError, TypeError) as exc:
            raise PasswordError(
                f"the stored key for {record.certificate!r} cannot be decrypted: {exc}",
                hint="check the key passphrase reference of the certificate",
            ) from None

    # ---- versions ----------------------------------------------------------

    def add_version(self, certificate: str, bundle: Any, key_id: int | None) -> VersionRecord:
        """Store ``bundle``'s certificates as a new version of ``certificate``."""
        from cryptography.hazmat.primitives import serialization

        from ..pki.model import spki_sha256

        leaf = bundle.leaf
        try:
            from cryptography import x509

            names = tuple(
                leaf.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value.get_values_for_type(x509.DNSName)
            )
        except Exception:
            names = ()
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO versions (certificate, leaf_sha256, spki_sha256, subject, issuer,"
                " not_before, not_after, names, dir, key_id, created)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    certificate,
                    bundle.leaf_sha256,
                    spki_sha256(leaf),
                    leaf.subject.rfc4514_string(),
                    leaf.issuer.rfc4514_string(),
                    leaf.not_valid_before_utc.isoformat(),
                    leaf.not_valid_after_utc.isoformat(),
                    json.dumps(list(names)),
                    "",
                    key_id,
                    _now(),
                ),
            )
            version_id = int(cur.lastrowid or 0)
            directory = self.root / "versions" / certificate / f"v{version_id}"
            self.db.execute(
                "UPDATE versions SET dir = ? WHERE id = ?", (self._rel(directory), version_id)
            )

        def pem(cert: Any) -> bytes:
            return bytes(cert.public_bytes(serialization.Encoding.PEM))

        write_file_atomic(directory / "leaf.pem", pem(leaf))
        write_file_atomic(directory / "chain.pem", b"".join(pem(c) for c in bundle.chain))
        if bundle.root is not None:
            write_file_atomic(directory / "root.pem", pem(bundle.root))
        record = self.version(version_id)
        assert record is not None
        return record

    def _version_record(self, row: sqlite3.Row) -> VersionRecord:
        return VersionRecord(
            id=row["id"],
            certificate=row["certificate"],
            leaf_sha256=row["leaf_sha256"],
            spki_sha256=row["spki_sha256"],
            subject=row["subject"],
            issuer=row["issuer"],
            not_before=row["not_before"],
            not_after=row["not_after"],
            names=tuple(json.loads(row["names"])),
            dir=self.root / row["dir"],
            key_id=row["key_id"],
            created=row["created"],
        )

    def version(self, version_id: int) -> VersionRecord | None:
        row = self.db.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
        return self._version_record(row) if row else None

    def current_version(self, certificate: str) -> VersionRecord | None:
        """The newest imported version of ``certificate`` (the deploy target)."""
        row = self.db.execute(
            "SELECT * FROM versions WHERE certificate = ? ORDER BY id DESC LIMIT 1",
            (certificate,),
        ).fetchone()
        return self._version_record(row) if row else None

    def versions(self, certificate: str | None = None) -> list[VersionRecord]:
        if certificate:
            rows = self.db.execute(
                "SELECT * FROM versions WHERE certificate = ? ORDER BY id", (certificate,)
            ).fetchall()
        else:
            rows = self.db.execute("SELECT * FROM versions ORDER BY id").fetchall()
        return [self._version_record(row) for row in rows]

    def version_by_sha256(self, leaf_sha256: str) -> VersionRecord | None:
        row = self.db.execute(
            "SELECT * FROM versions WHERE leaf_sha256 = ? ORDER BY id DESC LIMIT 1",
            (leaf_sha256,),
        ).fetchone()
        return self._version_record(row) if row else None

    def load_bundle(self, version: VersionRecord, passphrase: str | None = None) -> Any:
        """The :class:`~certfleet.pki.model.Bundle` of ``version``, with its key when stored."""
        from cryptography import x509

        from ..pki.model import Bundle

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
                f"stored version {version.id} of {version.certificate!r} cannot be read: {exc}",
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
        findings: Sequence[Any],
        outcome: str,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO imports (at, user, certificate, files, version_id, findings, outcome)"
            " VALUES (?,?,?,?,?,?,?)",
            (_now(), os_user(), certificate, json.dumps(list(files)), version_id,
             json.dumps([f.to_dict() for f in findings]), outcome),
        )
        return int(cur.lastrowid or 0)

    def imports(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.db.execute("SELECT * FROM imports ORDER BY id")]

    # ---- runs, deployments, steps ------------------------------------------

    def start_run(
        self,
        command: str,
        *,
        inventory_path: str | None = None,
        inventory_text: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (command, started, user, host, pid, inventory_path, inventory_text,"
            " options) VALUES (?,?,?,?,?,?,?,?)",
            (command, _now(), os_user(), socket.gethostname(), os.getpid(), inventory_path,
             inventory_text, json.dumps(options or {}, default=str)),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, exit_code: int) -> None:
        self.db.execute(
            "UPDATE runs SET finished = ?, exit_code = ? WHERE id = ?", (_now(), exit_code, run_id)
        )

    def run(self, run_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def record_deployment(
        self,
        *,
        run_id: int | None,
        device: str,
        kind: str,
        certificate: str | None,
        version_id: int | None,
        outcome: Any,
        started: str,
        backup_id: int | None = None,
        status: str | None = None,
    ) -> int:
        """Record one device's outcome (a DeployOutcome) and every step it emitted.

        ``status`` replaces ``outcome.outcome`` for states the drivers do not
        have (``not-attempted``).
        """
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO deployments (run_id, device, kind, certificate, version_id,"
                " target_sha256, outcome, exit_code, message, hint, served_before, served_after,"
                " backup_id, started, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    device,
                    kind,
                    certificate,
                    version_id,
                    outcome.target_sha256,
                    status or outcome.outcome,
                    outcome.exit_code,
                    outcome.message,
                    outcome.hint,
                    json.dumps(outcome.served_before),
                    json.dumps(outcome.served_after),
                    backup_id,
                    started,
                    _now(),
                ),
            )
            deployment_id = int(cur.lastrowid or 0)
            self.db.executemany(
                "INSERT INTO steps (deployment_id, device, step, status, detail, at)"
                " VALUES (?,?,?,?,?,?)",
                [(deployment_id, device, s.step, s.status, s.detail, s.at) for s in outcome.steps],
            )
        return deployment_id

    def deployments(
        self, device: str | None = None, run_id: int | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM deployments"
        clauses: list[str] = []
        args: list[Any] = []
        if device:
            clauses.append("device = ?")
            args.append(device)
        if run_id is not None:
            clauses.append("run_id = ?")
            args.append(run_id)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        result = []
        for row in self.db.execute(sql, args).fetchall():
            item = dict(row)
            item["served_before"] = json.loads(item["served_before"])
            item["served_after"] = json.loads(item["served_after"])
            result.append(item)
        return result

    def steps(self, deployment_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT step, status, detail, at FROM steps WHERE deployment_id = ? ORDER BY id",
            (deployment_id,),
        )
        return [dict(row) for row in rows]

    # ---- backups -----------------------------------------------------------

    def add_backup(
        self, backup: Any, *, served_sha256: str | None, run_id: int | None = None
    ) -> BackupRecord:
        """Write a driver :class:`~certfleet.drivers.base.Backup` under the state folder."""
        directory = self.new_backup_dir(backup.device)
        backup.write_to(directory)
        return self.register_backup(backup, directory, served_sha256=served_sha256, run_id=run_id)

    def new_backup_dir(self, device: str) -> Path:
        """A fresh folder name for a backup of ``device`` (not created)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        return self.root / "backups" / device / stamp

    def register_backup(
        self, backup: Any, directory: Path, *, served_sha256: str | None, run_id: int | None
    ) -> BackupRecord:
        """Record a backup already written to ``directory`` (see :meth:`new_backup_dir`)."""
        cur = self.db.execute(
            "INSERT INTO backups (device, kind, dir, created, has_private_key, served_sha256,"
            " run_id) VALUES (?,?,?,?,?,?,?)",
            (backup.device, backup.kind, self._rel(directory), backup.created,
             int(backup.has_private_key), served_sha256, run_id),
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

    def read_backup(self, record: BackupRecord) -> Any:
        """The driver Backup of ``record``. Raises StateError when its files are gone."""
        from ..drivers.base import Backup

        try:
            return Backup.read_from(record.dir)
        except (OSError, ValueError, KeyError) as exc:
            raise StateError(
                f"backup {record.id} of {record.device!r} in {str(record.dir)!r} cannot be "
                f"read: {exc}",
                hint="the state folder was changed by hand; restore the device by hand",
            ) from None

    # ---- lock --------------------------------------------------------------

    def acquire_lock(
        self, command: str, *, name: str = "deploy", break_lock: bool = False
    ) -> LockInfo:
        """Take the ``name`` lock (pid, host, time). Raises StateError when held."""
        info = LockInfo(os.getpid(), socket.gethostname(), os_user(), _now(), command)
        with self.transaction():
            row = self.db.execute("SELECT * FROM locks WHERE name = ?", (name,)).fetchone()
            if row is not None and not break_lock:
                held = LockInfo(row["pid"], row["host"], row["user"], row["at"], row["command"])
                raise StateError(
                    f"another {name} holds the lock: {held.describe()}",
                    hint="wait for it to finish; if it died, run 'certfleet unlock' "
                    "(or deploy --break-lock)",
                    lock=held,
                )
            self.db.execute("DELETE FROM locks WHERE name = ?", (name,))
            self.db.execute(
                "INSERT INTO locks (name, pid, host, user, at, command) VALUES (?,?,?,?,?,?)",
                (name, info.pid, info.host, info.user, info.at, info.command),
            )
        return info

    def release_lock(self, name: str = "deploy", *, pid: int | None = None) -> LockInfo | None:
        """Drop the lock (only our own when ``pid`` is given); returns what was held."""
        with self.transaction():
            row = self.db.execute("SELECT * FROM locks WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            if pid is not None and (row["pid"] != pid or row["host"] != socket.gethostname()):
                return None
            self.db.execute("DELETE FROM locks WHERE name = ?", (name,))
        return LockInfo(row["pid"], row["host"], row["user"], row["at"], row["command"])

    def lock_holder(self, name: str = "deploy") -> LockInfo | None:
        row = self.db.execute("SELECT * FROM locks WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return LockInfo(row["pid"], row["host"], row["user"], row["at"], row["command"])
