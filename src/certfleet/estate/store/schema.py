"""The store's schema: SQLite tables, versioned by ``PRAGMA user_version``.

:data:`MIGRATIONS` holds one script per schema version; :func:`migrate`
runs the missing ones in order, each in its own transaction, and refuses a
store newer than this release. Scripts are split on ``;``: no semicolon in
a comment or a string literal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import sqlite3
from pathlib import Path

from ...errors import StateError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "default_state_dir", "migrate", "now", "os_user"]

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
    # 2: a certificates table referenced by id (the name was free text in four
    # tables), version numbers per certificate, the deploy journal (a
    # deployment is written when it starts, its steps as they happen), an
    # index on steps by deployment, encrypted backups; the lock is a file
    # held by the operating system, no longer a row.
    """
    CREATE TABLE certificates (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL
    );
    INSERT INTO certificates (name, created)
        SELECT name, MIN(at) FROM (
            SELECT certificate AS name, created AS at FROM keys
            UNION ALL SELECT certificate, created FROM versions
            UNION ALL SELECT certificate, at FROM imports
            UNION ALL SELECT certificate, started FROM deployments WHERE certificate IS NOT NULL
        ) GROUP BY name ORDER BY MIN(at), name;

    CREATE TABLE keys_v2 (
        id INTEGER PRIMARY KEY,
        certificate_id INTEGER NOT NULL REFERENCES certificates (id),
        spki_sha256 TEXT NOT NULL,
        key_type TEXT NOT NULL,
        path TEXT NOT NULL,
        encrypted INTEGER NOT NULL DEFAULT 0,
        csr_pem TEXT,
        origin TEXT NOT NULL,
        created TEXT NOT NULL
    );
    INSERT INTO keys_v2 (id, certificate_id, spki_sha256, key_type, path, encrypted, csr_pem,
                         origin, created)
        SELECT k.id, c.id, k.spki_sha256, k.key_type, k.path, k.encrypted, k.csr_pem, k.origin,
               k.created
        FROM keys k JOIN certificates c ON c.name = k.certificate;
    DROP TABLE keys;
    ALTER TABLE keys_v2 RENAME TO keys;
    CREATE INDEX keys_spki ON keys (spki_sha256);
    CREATE INDEX keys_certificate ON keys (certificate_id);

    CREATE TABLE versions_v2 (
        id INTEGER PRIMARY KEY,
        certificate_id INTEGER NOT NULL REFERENCES certificates (id),
        number INTEGER NOT NULL,
        leaf_sha256 TEXT NOT NULL,
        spki_sha256 TEXT NOT NULL,
        subject TEXT NOT NULL,
        issuer TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        names TEXT NOT NULL,
        dir TEXT NOT NULL,
        key_id INTEGER REFERENCES keys (id),
        created TEXT NOT NULL,
        UNIQUE (certificate_id, number)
    );
    INSERT INTO versions_v2 (id, certificate_id, number, leaf_sha256, spki_sha256, subject,
                             issuer, not_before, not_after, names, dir, key_id, created)
        SELECT v.id, c.id,
               (SELECT COUNT(*) FROM versions o WHERE o.certificate = v.certificate
                AND o.id <= v.id),
               v.leaf_sha256, v.spki_sha256, v.subject, v.issuer, v.not_before, v.not_after,
               v.names, v.dir, v.key_id, v.created
        FROM versions v JOIN certificates c ON c.name = v.certificate;
    DROP TABLE versions;
    ALTER TABLE versions_v2 RENAME TO versions;
    CREATE INDEX versions_leaf ON versions (leaf_sha256);

    CREATE TABLE imports_v2 (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        user TEXT NOT NULL,
        certificate_id INTEGER NOT NULL REFERENCES certificates (id),
        files TEXT NOT NULL,
        version_id INTEGER REFERENCES versions (id),
        findings TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    INSERT INTO imports_v2 (id, at, user, certificate_id, files, version_id, findings, outcome)
        SELECT i.id, i.at, i.user, c.id, i.files, i.version_id, i.findings, i.outcome
        FROM imports i JOIN certificates c ON c.name = i.certificate;
    DROP TABLE imports;
    ALTER TABLE imports_v2 RENAME TO imports;

    CREATE TABLE deployments_v2 (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs (id),
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        certificate_id INTEGER REFERENCES certificates (id),
        version_id INTEGER REFERENCES versions (id),
        target_sha256 TEXT,
        outcome TEXT NOT NULL,
        exit_code INTEGER,
        message TEXT NOT NULL,
        hint TEXT,
        served_before TEXT NOT NULL,
        served_after TEXT NOT NULL,
        backup_id INTEGER REFERENCES backups (id),
        started TEXT NOT NULL,
        finished TEXT
    );
    INSERT INTO deployments_v2 (id, run_id, device, kind, certificate_id, version_id,
                                target_sha256, outcome, exit_code, message, hint, served_before,
                                served_after, backup_id, started, finished)
        SELECT d.id, d.run_id, d.device, d.kind, c.id, d.version_id, d.target_sha256, d.outcome,
               d.exit_code, d.message, d.hint, d.served_before, d.served_after, d.backup_id,
               d.started, d.finished
        FROM deployments d LEFT JOIN certificates c ON c.name = d.certificate;
    DROP TABLE deployments;
    ALTER TABLE deployments_v2 RENAME TO deployments;
    CREATE INDEX deployments_device ON deployments (device);
    CREATE INDEX deployments_outcome ON deployments (outcome);

    CREATE INDEX steps_deployment ON steps (deployment_id);
    ALTER TABLE backups ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN lock TEXT;
    DROP TABLE locks
    """,
    # 3: where a version came from: "import" (a deploy target) or "adopt" (what the
    # devices served when the estate was taken over: known, never the target while
    # an imported version exists)
    """
    ALTER TABLE versions ADD COLUMN origin TEXT NOT NULL DEFAULT 'import'
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


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, root: Path) -> None:
    """Bring ``db`` to :data:`SCHEMA_VERSION`. Raises StateError (too new, or failed).

    Foreign keys are off while tables are rebuilt (SQLite's documented way
    to change a table's columns) and checked before each commit.
    """
    version = user_version(db)
    target = len(MIGRATIONS)
    if version > target:
        raise StateError(
            f"the state store in {str(root)!r} has schema {version}, newer than this "
            f"certfleet understands ({target})",
            hint="upgrade certfleet, or use another --state-dir",
            path=str(root),
        )
    if version == target:
        return
    db.execute("PRAGMA foreign_keys = OFF")
    try:
        for number in range(version, target):
            try:
                db.execute("BEGIN IMMEDIATE")
                if user_version(db) > number:  # another process migrated meanwhile
                    db.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
                broken = db.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise sqlite3.IntegrityError(f"{len(broken)} dangling reference(s)")
                db.execute(f"PRAGMA user_version = {number + 1}")
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise StateError(
                    f"cannot migrate the state store to schema {number + 1}: {exc}",
                    hint="check that the state folder is writable and not on a network share",
                    path=str(root),
                ) from None
    finally:
        db.execute("PRAGMA foreign_keys = ON")
