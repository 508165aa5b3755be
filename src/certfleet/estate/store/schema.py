"""The store's schema, one for SQLite and PostgreSQL, versioned by ``PRAGMA user_version``.

:data:`MIGRATIONS` holds one script per schema version; :func:`migrate`
runs the missing ones in order, each in its own transaction, and refuses a
store newer than this release. Scripts are split on ``;``: no semicolon in
a comment or a string literal. They are written in SQLite's words; on
PostgreSQL :func:`.backend.postgres_sql` says each statement in its own,
and the version is the one row of the table ``schema_version``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...errors import StateError
from .backend import Database, is_sqlite
from .backend import os_user as os_user

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "default_state_dir", "default_state_url", "migrate",
           "now", "os_user", "user_version"]

# 1: the first schema. Stores written by the first release hold exactly these
# tables; schema 2 rebuilds four of them from the columns written here. Each
# table comes after the tables it references (PostgreSQL needs them to exist).
_SCHEMA_1 = """
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
"""

_CERTIFICATE_ID = "certificate_id INTEGER NOT NULL REFERENCES certificates (id)"


def _columns_1(table: str) -> list[str]:
    """The column definitions of ``table`` in :data:`_SCHEMA_1`."""
    match = re.search(rf"CREATE TABLE {table} \((.*?)\n\s*\);", _SCHEMA_1, re.DOTALL)
    assert match is not None, table
    return [column.strip() for column in match[1].split(",\n")]


def _rebuild(
    table: str,
    changes: Mapping[str, Sequence[str]],
    *,
    constraints: Sequence[str] = (),
    join: str = "JOIN certificates c ON c.name = t.certificate",
    **computed: str,
) -> str:
    """Statements that change the columns of schema-1 ``table`` (SQLite's documented way).

    A new table is made, the rows are copied, the old table is dropped and
    the new one renamed. ``changes`` maps a schema-1 column to the definitions
    that replace it (the other columns stay as they were); a new column takes
    the old row's column of its name (``t.NAME``) unless ``computed`` gives its
    value. ``c`` is the row of ``certificates`` that ``join`` finds.
    """
    columns: list[str] = []
    for column in _columns_1(table):
        columns += changes.get(column.split()[0], [column])
    names = [column.split()[0] for column in columns]
    values = {"certificate_id": "c.id", **computed}
    body = ",\n    ".join([*columns, *constraints])
    return ";\n".join([
        f"CREATE TABLE {table}_v2 (\n    {body}\n)",
        f"INSERT INTO {table}_v2 ({', '.join(names)})\n"
        f"    SELECT {', '.join(values.get(name, f't.{name}') for name in names)}\n"
        f"    FROM {table} t {join}",
        f"DROP TABLE {table}",
        f"ALTER TABLE {table}_v2 RENAME TO {table}",
    ])


# 2: a certificates table referenced by id (the name was free text in four
# tables), version numbers per certificate, the deploy journal (a deployment
# is written when it starts, its steps as they happen), an index on steps by
# deployment, encrypted backups; the lock is a file held by the operating
# system, no longer a row.
_SCHEMA_2 = ";\n".join([
    """
    CREATE TABLE certificates (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL
    )""",
    """
    INSERT INTO certificates (name, created)
        SELECT name, MIN(at) FROM (
            SELECT certificate AS name, created AS at FROM keys
            UNION ALL SELECT certificate, created FROM versions
            UNION ALL SELECT certificate, at FROM imports
            UNION ALL SELECT certificate, started FROM deployments WHERE certificate IS NOT NULL
        ) AS named GROUP BY name ORDER BY MIN(at), name""",
    _rebuild("keys", {"certificate": [_CERTIFICATE_ID]}),
    "CREATE INDEX keys_spki ON keys (spki_sha256)",
    "CREATE INDEX keys_certificate ON keys (certificate_id)",
    _rebuild(
        "versions",
        {"certificate": [_CERTIFICATE_ID, "number INTEGER NOT NULL"]},
        constraints=["UNIQUE (certificate_id, number)"],
        number="(SELECT COUNT(*) FROM versions o"
        " WHERE o.certificate = t.certificate AND o.id <= t.id)",
    ),
    "CREATE INDEX versions_leaf ON versions (leaf_sha256)",
    _rebuild("imports", {"certificate": [_CERTIFICATE_ID]}),
    _rebuild(
        "deployments",
        {
            "certificate": ["certificate_id INTEGER REFERENCES certificates (id)"],
            "exit_code": ["exit_code INTEGER"],  # NULL while the deployment runs
            "finished": ["finished TEXT"],
        },
        join="LEFT JOIN certificates c ON c.name = t.certificate",
    ),
    "CREATE INDEX deployments_device ON deployments (device)",
    "CREATE INDEX deployments_outcome ON deployments (outcome)",
    "CREATE INDEX steps_deployment ON steps (deployment_id)",
    "ALTER TABLE backups ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN lock TEXT",
    "DROP TABLE locks",
])

MIGRATIONS: list[str] = [
    _SCHEMA_1,
    _SCHEMA_2,
    # 3: where a version came from: "import" (a deploy target) or "adopt" (what the
    # devices served when the estate was taken over: known, never the target while
    # an imported version exists)
    """
    ALTER TABLE versions ADD COLUMN origin TEXT NOT NULL DEFAULT 'import'
    """,
    # 4: who holds a lock of a shared (PostgreSQL) store: the lock itself is the
    # server's advisory lock, the row names its holder (unused on SQLite, whose
    # holders are written beside their lock files)
    """
    CREATE TABLE lock_holders (
        name TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        user TEXT NOT NULL,
        at TEXT NOT NULL,
        command TEXT NOT NULL
    )
    """,
    # 5: the files of a shared (PostgreSQL) store in the database (see .blobs): keys,
    # versions, backups and ACME accounts, the secret ones encrypted under the store
    # key, whose check value is in store_meta (both unused on SQLite); the host of
    # each audit line (a shared store hears from many machines)
    """
    CREATE TABLE blobs (
        path TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        secret INTEGER NOT NULL,
        sha256 TEXT NOT NULL
    );
    CREATE TABLE store_meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    ALTER TABLE audit ADD COLUMN host TEXT
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


def default_state_url() -> str | None:
    """``$CERTFLEET_STATE_URL`` (a shared PostgreSQL store), else None (SQLite)."""
    return os.environ.get("CERTFLEET_STATE_URL") or None


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def user_version(db: Database) -> int:
    """The schema version of ``db`` (0: a new store)."""
    if is_sqlite(db):
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _set_user_version(db: Database, version: int) -> None:
    if is_sqlite(db):
        db.execute(f"PRAGMA user_version = {version}")
    else:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) SELECT ?", (version,))


def _begin_migration(db: Database) -> None:
    if is_sqlite(db):
        db.execute("BEGIN IMMEDIATE")
    else:  # one migrating process at a time (the lock ends with the transaction)
        db.execute("BEGIN")
        db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))


# The key of PostgreSQL's advisory lock that serialises migrations.
_MIGRATION_LOCK = 0x63660001


def _database_errors() -> tuple[type[Exception], ...]:
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    try:
        import psycopg
    except ImportError:
        return errors
    return (*errors, psycopg.Error)


def migrate(db: Database, root: Path | str) -> None:
    """Bring ``db`` to :data:`SCHEMA_VERSION`. Raises StateError (too new, or failed).

    On SQLite foreign keys are off while tables are rebuilt (SQLite's
    documented way to change a table's columns) and checked before each
    commit; PostgreSQL checks them as it goes.
    """
    errors = _database_errors()
    sqlite = is_sqlite(db)
    try:
        version = user_version(db)
    except errors as exc:
        raise StateError(
            f"cannot read the schema of the state store {str(root)!r}: {exc}",
            hint="check that the database user may create tables in it",
            path=str(root),
        ) from None
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
    if sqlite:
        db.execute("PRAGMA foreign_keys = OFF")
    try:
        for number in range(version, target):
            try:
                _begin_migration(db)
                if user_version(db) > number:  # another process migrated meanwhile
                    db.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
                if sqlite:
                    broken = db.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise sqlite3.IntegrityError(f"{len(broken)} dangling reference(s)")
                _set_user_version(db, number + 1)
                db.execute("COMMIT")
            except errors as exc:
                with contextlib.suppress(*errors):
                    db.execute("ROLLBACK")
                raise StateError(
                    f"cannot migrate the state store to schema {number + 1}: {exc}",
                    hint="check that the state folder is writable and not on a network share",
                    path=str(root),
                ) from None
    finally:
        if sqlite:
            db.execute("PRAGMA foreign_keys = ON")
