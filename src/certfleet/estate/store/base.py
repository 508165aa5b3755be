"""What every part of the store shares: the folder, the connection, transactions, certificates."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .backend import Database
from .schema import now

__all__ = ["StoreBase"]


class StoreBase:
    """The state folder ``root`` and its database ``db`` (autocommit; see :meth:`transaction`).

    ``db`` is SQLite's connection or PostgreSQL's (:mod:`.backend`): the same SQL runs on both.
    """

    root: Path
    db: Database

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
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
