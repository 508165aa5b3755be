"""What every part of the store shares: the folder, the connection, transactions, certificates."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .schema import now

__all__ = ["StoreBase"]


class StoreBase:
    """The state folder ``root`` and its database ``db`` (autocommit; see :meth:`transaction`)."""

    root: Path
    db: sqlite3.Connection

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

    def certificate_id(self, name: str) -> int:
        """The id of inventory certificate ``name`` (added on first use)."""
        row = self.db.execute("SELECT id FROM certificates WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        self.db.execute(
            "INSERT OR IGNORE INTO certificates (name, created) VALUES (?, ?)", (name, now())
        )
        row = self.db.execute("SELECT id FROM certificates WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def certificate_names(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM certificates ORDER BY id")]
