"""The state store: a SQLite database and files in one state folder.

It keeps certificate versions (leaf, chain, root and the key, key files
0600 and optionally passphrase-encrypted), imports, deploy runs with the
exact inventory text they used, per-device deployments and steps (a
journal written as the deploy goes), backups written before the first
change on a device, an audit log, and the deploy lock (held by the
operating system). One module per concept:

- :mod:`.schema`: tables and migrations (``PRAGMA user_version``);
- :mod:`.versions`: certificates, versions, keys and imports;
- :mod:`.runs`: runs, deployments, steps, history and the audit log;
- :mod:`.backups`: device backups (write-ahead, optionally encrypted);
- :mod:`.lock`: OS file locks;
- :mod:`.readonly`: the store opened to read only, from many threads.

Nothing is ever deleted automatically.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import StateError
from .backups import BackupRecord, BackupsMixin
from .lock import FileLock, LockInfo, LockMixin
from .runs import IN_PROGRESS, INTERRUPTED, RunsMixin
from .schema import MIGRATIONS, SCHEMA_VERSION, default_state_dir, migrate, os_user
from .versions import KeyRecord, VersionRecord, VersionsMixin

if TYPE_CHECKING:
    from ...pki.model import PrivateKey
    from .readonly import ReadOnlyStore

__all__ = [
    "INTERRUPTED",
    "IN_PROGRESS",
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


class Store(VersionsMixin, RunsMixin, BackupsMixin, LockMixin):
    """The state folder. Open with :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self.db = db
        self._keys: dict[int, PrivateKey] = {}
        self._locks: dict[str, FileLock] = {}
        self._run_locks: dict[int, FileLock] = {}

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
        # (a deploy records every step of every device as it goes). A commit
        # survives the process being killed; NORMAL risks the last commits
        # only on a power loss.
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        store = cls(path, db)
        try:
            migrate(db, path)
        except BaseException:
            db.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, root: Path | str | None = None) -> ReadOnlyStore:
        """The existing store in ``root``, to read only (see :mod:`.readonly`)."""
        from .readonly import ReadOnlyStore

        return ReadOnlyStore.open_readonly(root)

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.release_all_locks()
        self.release_run_locks()
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
