"""Moving a store in (SQLite into an empty PostgreSQL) and checking a store's integrity.

:func:`copy_store` copies every table of the estate, row by row with its
id, in one transaction, then the files of the state folder (keys, versions,
backups, ACME accounts, notification bands) into the database (:mod:`.blobs`), and compares,
table by table, the number of rows and a SHA-256 over them (every column,
in id order) read back from both sides. :func:`check_store` verifies a
store on either backend: the database's own integrity check, every key,
version and backup present (in the folder or the database) with the hash
it was stored with, every secret readable with the store key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...drivers.base import BACKUP_MANIFEST
from ...errors import StateError
from .backend import is_sqlite

if TYPE_CHECKING:
    from . import Store

__all__ = ["TABLES", "TableCheck", "check_store", "copy_store", "table_digest"]

#: The estate's tables, each after those it references.
TABLES = ("certificates", "keys", "versions", "imports", "runs", "backups", "deployments",
          "steps", "audit")

# What a blob's table digest covers: its path and the SHA-256 of its plain bytes.
_BLOBS = "blobs"


@dataclass(frozen=True)
class TableCheck:
    """One table on both sides: rows and digest of the source, and of the copy."""

    table: str
    rows: int
    sha256: str
    copied_rows: int
    copied_sha256: str

    @property
    def ok(self) -> bool:
        return self.rows == self.copied_rows and self.sha256 == self.copied_sha256

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "sha256": self.sha256,
                "copied_rows": self.copied_rows, "copied_sha256": self.copied_sha256,
                "ok": self.ok}


def _columns(store: Store, table: str) -> list[str]:
    if is_sqlite(store.db):
        return [str(row[1]) for row in store.db.execute(f"PRAGMA table_info({table})")]
    rows = store.db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = ? ORDER BY ordinal_position", (table,)).fetchall()
    return [str(row[0]) for row in rows]


def _canonical(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, float):
        return {"real": repr(value)}
    return value


def _quoted(column: str) -> str:
    return f'"{column}"' if column == "user" else column


def table_digest(store: Store, table: str, columns: list[str]) -> tuple[int, str]:
    """(rows, SHA-256 over every row's ``columns`` in id order) of ``table`` in ``store``."""
    digest = hashlib.sha256()
    count = 0
    names = ", ".join(columns)
    for row in store.db.execute(f"SELECT {names} FROM {table} ORDER BY id"):
        digest.update(json.dumps([_canonical(v) for v in row], default=str).encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


def _blob_digest(pairs: list[tuple[str, str]]) -> tuple[int, str]:
    digest = hashlib.sha256()
    for path, sha in sorted(pairs):
        digest.update(f"{path}\t{sha}\n".encode())
    return len(pairs), digest.hexdigest()


def _state_files(root: Path) -> list[Path]:
    """The files of a state folder that belong in a shared store's database."""
    found: list[Path] = []
    for top in ("keys", "versions", "backups", "acme"):
        folder = root / top
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.is_file())
    bands = root / "notify-bands.json"  # the expiry bands already told
    return [*found, bands] if bands.is_file() else found


def _secret(root: Path, path: Path) -> bool:
    return path.relative_to(root).parts[0] in ("keys", "backups", "acme")


def copy_store(source: Store, target: Store) -> list[TableCheck]:
    """Copy ``source`` (SQLite) into ``target`` (an empty PostgreSQL store on the same folder).

    Raises StateError (not SQLite into PostgreSQL, target not empty, no
    store key). The checks: one per table, then the files (``blobs``).
    """
    if not is_sqlite(source.db) or not target.shared:
        raise StateError("store migrate copies an SQLite store into a PostgreSQL one",
                         hint="pass --to postgresql://USER@HOST/DB and the SQLite --state-dir",
                         untouched=True)
    for table in (*TABLES, _BLOBS):
        row = target.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if row and int(row[0]):
            raise StateError(
                f"the target store is not empty: its table {table} has rows",
                hint="migrate into a new, empty database (createdb), never over a store in use",
                untouched=True)
    files = _state_files(source.root)
    if any(_secret(source.root, p) for p in files):
        target._cipher("store the keys and backups that come over")
    source.settle_interrupted()
    columns = {table: _columns(source, table) for table in TABLES}
    with target.transaction():
        for table in TABLES:
            names = columns[table]
            insert = (f"INSERT INTO {table} ({', '.join(_quoted(c) for c in names)})"
                      f" SELECT {', '.join('?' for _ in names)}")
            for row in source.db.execute(
                    f"SELECT {', '.join(_quoted(c) for c in names)} FROM {table} ORDER BY id"):
                target.db.execute(insert, tuple(row))
            # The next id of the copy follows the last one that came over.
            target.db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
        target.put_files([p for p in files if _secret(source.root, p)], secret=True)
        target.put_files([p for p in files if not _secret(source.root, p)], secret=False)
    checks = []
    for table in TABLES:
        rows, sha = table_digest(source, table, [_quoted(c) for c in columns[table]])
        copied_rows, copied_sha = table_digest(target, table, [_quoted(c) for c in columns[table]])
        checks.append(TableCheck(table, rows, sha, copied_rows, copied_sha))
    local = [(p.relative_to(source.root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
             for p in files]
    stored = [(str(r["path"]), str(r["sha256"])) for r in target.blob_rows()]
    checks.append(TableCheck(_BLOBS, *_blob_digest(local), *_blob_digest(stored)))
    return checks


def check_store(store: Store) -> list[str]:
    """The problems of ``store`` (none: it is whole). Raises StateError (no store key)."""
    problems: list[str] = []
    if is_sqlite(store.db):
        result = [str(r[0]) for r in store.db.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            problems += [f"database: {line}" for line in result]
        broken = store.db.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            problems.append(f"database: {len(broken)} dangling reference(s)")
    else:
        problems += _check_blobs(store)
    for key in store.all_keys():
        try:
            store.fetch_files(key.path)
            if not key.path.is_file():
                problems.append(f"key {key.id} of {key.certificate!r}: {key.path} is missing")
        except StateError as exc:
            problems.append(f"key {key.id} of {key.certificate!r}: {exc.message}")
    for version in store.versions():
        store.fetch_files(version.dir)
        if not (version.dir / "leaf.pem").is_file():
            problems.append(f"version {version.label}: {version.dir / 'leaf.pem'} is missing")
        else:
            from cryptography import x509

            from ...pki.model import cert_sha256

            try:
                leaf = cert_sha256(x509.load_pem_x509_certificate(
                    (version.dir / "leaf.pem").read_bytes()))
            except (OSError, ValueError) as exc:
                problems.append(f"version {version.label}: leaf.pem cannot be read: {exc}")
                continue
            if leaf != version.leaf_sha256:
                problems.append(f"version {version.label}: leaf.pem is not the stored leaf")
    for backup in store.backups():
        try:
            store.fetch_files(backup.dir)
        except StateError as exc:
            problems.append(f"backup {backup.id} of {backup.device!r}: {exc.message}")
            continue
        if not (backup.dir / BACKUP_MANIFEST).is_file():
            problems.append(f"backup {backup.id} of {backup.device!r}: {backup.dir} is missing")
    return problems


def _check_blobs(store: Store) -> list[str]:
    """Every blob decrypts (a secret: with the store key) to the bytes of its hash."""
    problems: list[str] = []
    rows = store.db.execute("SELECT path, data, secret, sha256 FROM blobs ORDER BY path").fetchall()
    cipher = store._cipher("check the keys and backups") if any(r[2] for r in rows) else None
    for path, data, secret, sha in rows:
        plain = bytes(data)
        if secret:
            assert cipher is not None
            try:
                plain = cipher.decrypt(plain, str(path))
            except StateError as exc:
                problems.append(f"{path}: {exc.message}")
                continue
        if hashlib.sha256(plain).hexdigest() != sha:
            problems.append(f"{path}: its bytes do not match their hash")
    return problems
