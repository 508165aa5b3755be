"""The state store: a database (SQLite in the state folder, or a shared PostgreSQL) and files.

It keeps certificate versions (leaf, chain, root and the key, key files
0600 and optionally passphrase-encrypted), imports, deploy runs with the
exact inventory text they used, per-device deployments and steps (a
journal written as the deploy goes), backups written before the first
change on a device, an audit log, and the deploy lock (held by the
operating system). One module per concept:

- :mod:`.backend`: the database, SQLite or PostgreSQL (one SQL for both);
- :mod:`.schema`: tables and migrations (``PRAGMA user_version``);
- :mod:`.versions`: certificates, versions, keys and imports;
- :mod:`.runs`: runs, deployments, steps, history and the audit log;
- :mod:`.backups`: device backups (write-ahead, optionally encrypted);
- :mod:`.blobs`: a shared store's files in its database, secrets under the store key;
- :mod:`.lock`: OS file locks (PostgreSQL: session advisory locks);
- :class:`ReadOnlyStore` (below): the store opened to read only, from many threads.

Nothing is ever deleted automatically.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import StateError
from .backend import Database, connect_postgres, is_postgres_url, redact_url
from .backups import BackupRecord, BackupsMixin
from .blobs import BlobsMixin
from .lock import AdvisoryLock, FileLock, LockInfo, LockMixin
from .runs import IN_PROGRESS, INTERRUPTED, RunsMixin
from .schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    default_state_dir,
    default_state_url,
    migrate,
    os_user,
    user_version,
)
from .versions import KeyRecord, VersionRecord, VersionsMixin

if TYPE_CHECKING:
    from ...pki.model import PrivateKey

__all__ = [
    "INTERRUPTED",
    "IN_PROGRESS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BackupRecord",
    "KeyRecord",
    "LockInfo",
    "ReadOnlyStore",
    "Store",
    "VersionRecord",
    "default_state_dir",
    "default_state_url",
    "os_user",
]


class Store(VersionsMixin, RunsMixin, BackupsMixin, BlobsMixin, LockMixin):
    """The state folder. Open with :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, root: Path, db: Database | sqlite3.Connection) -> None:
        self.root = root
        self.db = db
        self.store_key: str | None = None
        self._keys: dict[int, PrivateKey] = {}
        self._locks: dict[str, FileLock] = {}
        self._pg_locks: dict[str, list[tuple[str, bool]]] = {}
        self._run_locks: dict[int, FileLock | AdvisoryLock] = {}

    @classmethod
    def open(
        cls, root: Path | str | None = None, *, url: str | None = None,
        password: str | None = None, key: str | None = None,
    ) -> Store:
        """Open (creating, migrating) the store in ``root``. Raises StateError.

        ``url`` (else ``$CERTFLEET_STATE_URL``), a ``postgresql://`` URL, puts
        the database on that PostgreSQL server (``password``: its password, when
        the URL and libpq's own files do not give it); ``root`` keeps the files.
        ``key`` (else ``$CERTFLEET_STORE_KEY``): the store key (see :mod:`.blobs`),
        needed by what reads or writes a private key or a backup in a shared store.
        """
        path = Path(root).expanduser() if root is not None else default_state_dir()
        url = url or default_state_url()
        if url:
            store = cls._open_postgres(path, url, password)
            store.store_key = key or os.environ.get("CERTFLEET_STORE_KEY") or None
            return store
        return cls.open_sqlite(path, key=key)

    @classmethod
    def open_sqlite(cls, root: Path | str | None = None, *, key: str | None = None) -> Store:
        """The SQLite store in ``root``, whatever ``$CERTFLEET_STATE_URL`` says."""
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
        # (a deploy records every step of every device as it goes). A commit
        # survives the process being killed; NORMAL risks the last commits
        # only on a power loss.
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        store = cls(path, db)
        store.store_key = key
        try:
            migrate(db, path)
        except BaseException:
            db.close()
            raise
        return store

    @classmethod
    def open_readonly(
        cls, root: Path | str | None = None, *, url: str | None = None,
        password: str | None = None, key: str | None = None,
    ) -> ReadOnlyStore:
        """The existing store in ``root`` (or at ``url``), to read only (see below)."""
        return ReadOnlyStore.open_readonly(root, url=url, password=password, key=key)

    @classmethod
    def _open_postgres(cls, path: Path, url: str, password: str | None) -> Store:
        if not is_postgres_url(url):
            raise StateError(
                f"the state URL {redact_url(url)!r} is not a postgresql:// URL",
                hint="write [state] url = \"postgresql://USER@HOST/DB\" (or leave it out "
                "for the SQLite store in the state folder)",
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError.from_os_error(
                "create the state folder", path, exc,
                hint="pass --state-dir to a writable folder (or set CERTFLEET_STATE_DIR)",
            ) from None
        db = connect_postgres(url, password)
        store = cls(path, db)
        try:
            migrate(db, redact_url(url))
        except BaseException:
            db.close()
            raise
        return store

    @property
    def schema_version(self) -> int:
        return user_version(self.db)

    def close(self) -> None:
        self.release_all_locks()
        self.release_run_locks()
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the store opened to read only ----------------------------------------------------
#
# The store opened to read only: never created, migrated or written, safe from many threads.
#
# :meth:`ReadOnlyStore.open` opens ``state.db`` with SQLite's ``mode=ro``:
# any statement that would write fails inside SQLite, whatever code path
# asks for it. A missing store or one of another schema is refused (a
# reader never migrates: the next command that writes does). Each thread
# gets a connection of its own on first use (SQLite connections are not
# shared between threads), so a web server's workers and a background scan
# read side by side while a deploy in another process writes (WAL: readers
# never block the writer, nor the writer them).
#
# Everything that reads (versions, history, latest deployments, backups,
# lock holders) is the writable store's own query code; what would write
# (``settle_interrupted``, adding a certificate name) is a no-op or refused.


def _connect(database: Path) -> sqlite3.Connection:
    # A file: URI so that mode=ro applies; the path part is quoted as a URI needs
    # (Path.as_uri would refuse a relative path and differs on Windows drives).
    from urllib.parse import quote

    uri = "file:" + quote(database.resolve().as_posix(), safe="/:") + "?mode=ro"
    # Used by the thread that made it only; closed by whichever thread closes the store.
    db = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None,
                         check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA query_only = ON")
    return db


class ReadOnlyStore(Store):
    """A :class:`Store` that reads only; open with :meth:`open_readonly`.

    ``db`` is the calling thread's own read-only connection.
    """

    def __init__(self, root: Path, url: str | None = None, password: str | None = None) -> None:
        self.root = root
        self._database = root / "state.db"
        self._url = url
        self._password = password
        self._local = threading.local()
        self._all: list[Database] = []
        self._guard = threading.Lock()
        self.store_key: str | None = None
        self._keys: dict[int, PrivateKey] = {}
        self._locks: dict[str, FileLock] = {}
        self._pg_locks: dict[str, list[tuple[str, bool]]] = {}
        self._run_locks: dict[int, FileLock | AdvisoryLock] = {}

    @classmethod
    def open_readonly(
        cls, root: Path | str | None = None, *, url: str | None = None,
        password: str | None = None, key: str | None = None,
    ) -> ReadOnlyStore:
        """Open the existing store in ``root`` (or the PostgreSQL store of ``url``, its
        files fetched into ``root``) to read. Raises StateError (none, other schema)."""
        path = Path(root).expanduser() if root is not None else default_state_dir()
        if url:
            return cls._open_postgres_readonly(path, url, password, key)
        if not (path / "state.db").is_file():
            raise StateError(
                f"no state store in {str(path)!r}",
                hint="pass --state-dir to the folder certfleet deploy and import use "
                "(or set CERTFLEET_STATE_DIR)",
                path=str(path),
            )
        store = cls(path)
        try:
            version = user_version(store.db)
        except sqlite3.Error as exc:
            store.close()
            raise StateError(
                f"cannot read the state store in {str(path)!r}: {exc}",
                hint="check that the state folder is readable (or pass --state-dir)",
                path=str(path),
            ) from None
        store._check_schema(version, str(path))
        return store

    @classmethod
    def _open_postgres_readonly(
        cls, path: Path, url: str, password: str | None, key: str | None,
    ) -> ReadOnlyStore:
        if not is_postgres_url(url):
            raise StateError(
                f"the state URL {redact_url(url)!r} is not a postgresql:// URL",
                hint="write [state] url = \"postgresql://USER@HOST/DB\" (or leave it out "
                "for the SQLite store in the state folder)",
            )
        try:
            path.mkdir(parents=True, exist_ok=True)  # where the database's files are fetched
        except OSError as exc:
            raise StateError.from_os_error(
                "create the state folder", path, exc,
                hint="pass --state-dir to a writable folder (or set CERTFLEET_STATE_DIR)",
            ) from None
        store = cls(path, url, password)
        store.store_key = key or os.environ.get("CERTFLEET_STORE_KEY") or None
        try:
            row = store.db.execute(
                "SELECT version FROM schema_version").fetchone()
        except StateError as exc:
            store.close()
            raise StateError(
                f"cannot read the state store {redact_url(url)}: {exc.message}",
                hint="run 'certfleet history --state-url URL' once: it creates the store "
                "and brings it up to date",
            ) from None
        store._check_schema(int(row[0]) if row else 0, redact_url(url))
        return store

    def _check_schema(self, version: int, where: str) -> None:
        if version == SCHEMA_VERSION:
            return
        self.close()
        newer = version > SCHEMA_VERSION
        raise StateError(
            f"the state store in {where!r} has schema {version}, "
            + ("newer than" if newer else "older than")
            + f" this certfleet reads ({SCHEMA_VERSION})",
            hint="upgrade certfleet" if newer else
            "run 'certfleet history' once with this --state-dir: it brings the store "
            "up to date",
            path=where,
        )

    @property
    def db(self) -> Database:
        """This thread's read-only connection (opened on first use)."""
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect_pg() if self._url else self._connect_sqlite()
            self._local.db = db
            with self._guard:
                self._all.append(db)
        return db

    @db.setter
    def db(self, value: Database) -> None:
        raise AttributeError("the read-only store opens its own connections")

    def _connect_sqlite(self) -> Database:
        try:
            return _connect(self._database)
        except sqlite3.Error as exc:
            raise StateError(
                f"cannot read the state store in {str(self.root)!r}: {exc}",
                hint="check that the state folder is readable (or pass --state-dir)",
                path=str(self.root),
            ) from None

    def _connect_pg(self) -> Database:
        assert self._url is not None
        db = connect_postgres(self._url, self._password)
        # Every transaction of this session reads only: a write fails inside the server.
        db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        return db

    def settle_interrupted(self) -> list[int]:
        """Nothing: a reader never writes (the next deploy or history settles them)."""
        return []

    def certificate_id(self, name: str) -> int:
        row = self.db.execute("SELECT id FROM certificates WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StateError(f"no certificate named {name!r} in the state store",
                             hint="import a version of it first (certfleet import NAME FILE...)")
        return int(row[0])

    def close(self) -> None:
        """Close every thread's connection (call once no thread reads any more)."""
        with self._guard:
            connections, self._all = self._all, []
        for db in connections:
            db.close()
        self._local = threading.local()

    def __enter__(self) -> ReadOnlyStore:
        return self
