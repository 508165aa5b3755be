"""Locks held by the operating system, so that a dead process never holds one.

:class:`FileLock` is an exclusive lock on a file in the state folder:
``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows. The kernel drops
it when the process ends, however it ends (``kill -9``, a crash, power).
The holder's pid, host, user, command and start time are written beside it
(``NAME.lock.json``) so that a refusal names who holds it.

On a PostgreSQL store the lock is a session advisory lock of the store's
connection instead (one per device for a deploy): the server drops it when
that connection ends (the process killed, its machine off the network), and
the holder is named by its row in ``lock_holders`` (pid, host, user, since
when, command), whichever machine it runs on.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import StateError
from ...fsutil import write_file_atomic
from .backend import Database, PostgresDatabase
from .schema import now, os_user

__all__ = ["LOCK_CLASS", "RUN_CLASS", "AdvisoryLock", "FileLock", "LockInfo", "LockMixin",
           "advisory_key", "device_lock_name", "pg_try_lock", "pg_unlock"]


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    user: str
    at: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.user}) since {self.at}, {self.command}"

    @classmethod
    def mine(cls, command: str) -> LockInfo:
        return cls(os.getpid(), socket.gethostname(), os_user(), now(), command)


class FileLock:
    """An exclusive, non-blocking OS lock on ``path`` (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock; False when another open file (any process) holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock (and delete the file when ``remove``); never raises."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):  # Windows: another process has it open
                self.path.unlink()
        with contextlib.suppress(OSError):
            _unlock(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


# The first key of certfleet's PostgreSQL advisory locks (the second: the lock's name, hashed);
# RUN_CLASS: the lock each live run holds (its liveness, as the run's lock file on SQLite).
LOCK_CLASS = 0x63660002
RUN_CLASS = 0x63660003


def advisory_key(name: str) -> int:
    """The second key of the advisory lock ``name`` (a non-negative int4, as pg_locks shows it)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def pg_try_lock(db: PostgresDatabase, classid: int, name: str, *, shared: bool = False) -> bool:
    """Take session advisory lock (classid, name) of ``db``'s connection; False when held.

    ``shared``: a shared lock (many holders; none while someone holds it exclusively).
    """
    function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
    row = db.execute(f"SELECT {function}(?, ?)", (classid, advisory_key(name))).fetchone()
    return bool(row and row[0])


def pg_unlock(db: PostgresDatabase, classid: int, name: str, *, shared: bool = False) -> None:
    if not db.closed:
        function = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
        db.execute(f"SELECT {function}(?, ?)", (classid, advisory_key(name)))


def _pg_held(db: PostgresDatabase, classid: int, name: str) -> bool:
    """Whether a session (this one too) holds (classid, name) exclusively in this database."""
    row = db.execute(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND mode = 'ExclusiveLock'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = ? AND objid = ? AND objsubid = 2",
        (classid, advisory_key(name)),
    ).fetchone()
    return row is not None


def _pg_holder(db: PostgresDatabase, name: str) -> LockInfo | None:
    """Who holds lock ``name`` (its row in ``lock_holders``), None when nobody does."""
    if not _pg_held(db, LOCK_CLASS, name):
        return None
    row = db.execute(
        "SELECT pid, host, user, at, command FROM lock_holders WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        return LockInfo(0, "?", "?", "?", "(holder not recorded yet)")
    return LockInfo(int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]))


class AdvisoryLock:
    """A PostgreSQL session advisory lock used as a :class:`FileLock` is (a run's liveness)."""

    def __init__(self, db: PostgresDatabase, classid: int, name: str) -> None:
        self.db = db
        self.classid = classid
        self.name = name
        self.held = False

    def try_acquire(self) -> bool:
        if not self.held:
            self.held = pg_try_lock(self.db, self.classid, self.name)
        return self.held

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock; never raises (``remove``: nothing to delete)."""
        del remove
        if self.held:
            self.held = False
            with contextlib.suppress(StateError):
                pg_unlock(self.db, self.classid, self.name)


def device_lock_name(name: str, device: str) -> str:
    """The PostgreSQL lock of ``device`` within the ``name`` lock (deploy: one per device)."""
    return f"{name}:{device}"


class LockMixin:
    """The named locks of a store (``deploy`` serialises deploys and rollbacks).

    On PostgreSQL, a ``deploy`` lock taken for devices is one advisory lock
    per device: two deploys of different devices run side by side, the same
    device is never deployed twice at once. Each holder is written in the
    table ``lock_holders`` (OS user, host, pid, since when, command).
    """

    root: Path
    db: Database
    _locks: dict[str, FileLock]
    _pg_locks: dict[str, list[tuple[str, bool]]]

    def _pg_acquire(self, name: str, command: str, devices: Sequence[str] | None) -> LockInfo:
        """``name`` for ``devices``: the name shared, then each device's lock exclusively;
        without devices, the name exclusively (which waits for no device lock: refused)."""
        assert isinstance(self.db, PostgresDatabase)
        info = LockInfo.mine(command)
        if name in self._pg_locks:
            return info
        wanted = ([(name, True)] + [(device_lock_name(name, d), False)
                                    for d in sorted(set(devices))]
                  if devices else [(name, False)])
        taken: list[tuple[str, bool]] = []
        for lock, shared in wanted:
            if pg_try_lock(self.db, LOCK_CLASS, lock, shared=shared):
                taken.append((lock, shared))
                continue
            held = (_pg_holder(self.db, lock) if shared or devices
                    else self._pg_lock_holder(name)) or LockInfo(
                0, "?", "?", "?", "(released meanwhile: try again)")
            for mine, mine_shared in taken:
                pg_unlock(self.db, LOCK_CLASS, mine, shared=mine_shared)
            device = lock.partition(":")[2]
            what = f"the lock of device {device!r}" if device else "the lock"
            raise StateError(
                f"another {name} holds {what}: {held.describe()}",
                hint="wait for it to finish (the database releases the lock of a process "
                "that died, or whose connection ended)",
                lock=held,
            )
        self.db.execute("BEGIN")
        for lock, shared in taken:
            if shared:
                continue
            self.db.execute("DELETE FROM lock_holders WHERE name = ?", (lock,))
            self.db.execute(
                "INSERT INTO lock_holders (name, pid, host, user, at, command)"
                " SELECT ?, ?, ?, ?, ?, ?",
                (lock, info.pid, info.host, info.user, info.at, info.command),
            )
        self.db.execute("COMMIT")
        self._pg_locks[name] = taken
        return info

    def _pg_release(self, name: str) -> LockInfo | None:
        assert isinstance(self.db, PostgresDatabase)
        taken = self._pg_locks.pop(name, None)
        if taken is None or self.db.closed:
            return None
        mine = [lock for lock, shared in taken if not shared]
        held = _pg_holder(self.db, mine[0]) if mine else None
        for lock, shared in reversed(taken):
            if not shared:
                self.db.execute("DELETE FROM lock_holders WHERE name = ?", (lock,))
            pg_unlock(self.db, LOCK_CLASS, lock, shared=shared)
        return held

    def _pg_lock_holder(self, name: str) -> LockInfo | None:
        """Who else holds ``name`` or one of its device locks (the oldest), None when free."""
        assert isinstance(self.db, PostgresDatabase)
        if name in self._pg_locks:
            return None
        rows = self.db.execute(
            "SELECT name FROM lock_holders WHERE name = ? OR name LIKE ? ORDER BY at, name",
            (name, name + ":%"),
        ).fetchall()
        for (lock,) in rows:
            held = _pg_holder(self.db, str(lock))
            if held is not None:
                return held
        return None

    def _lock_paths(self, name: str) -> tuple[Path, Path]:
        folder = self.root / "locks"
        return folder / f"{name}.lock", folder / f"{name}.lock.json"

    def acquire_lock(
        self, command: str, *, name: str = "deploy", break_lock: bool = False,
        devices: Sequence[str] | None = None,
    ) -> LockInfo:
        """Take the ``name`` lock. Raises StateError (with ``lock=``) while a live process holds it.

        ``break_lock`` is accepted for compatibility: a lock whose process
        died is free already, and a live one is never taken over. ``devices``:
        the devices the lock is for (PostgreSQL locks each; SQLite the whole store).
        """
        del break_lock
        if isinstance(self.db, PostgresDatabase):
            return self._pg_acquire(name, command, devices)
        path, info_path = self._lock_paths(name)
        lock = self._locks.get(name) or FileLock(path)
        try:
            acquired = lock.try_acquire()
        except OSError as exc:
            raise StateError.from_os_error(
                f"create the {name} lock", path, exc,
                hint="check that the state folder is writable (or pass --state-dir)",
            ) from None
        if not acquired:
            held = self._read_holder(info_path)
            raise StateError(
                f"another {name} holds the lock: {held.describe()}",
                hint="wait for it to finish (a lock of a process that died is released "
                "by the system)",
                lock=held,
            )
        self._locks[name] = lock
        info = LockInfo.mine(command)
        with contextlib.suppress(OSError):
            write_file_atomic(info_path, json.dumps(info.__dict__).encode(), private=True)
        return info

    def release_lock(self, name: str = "deploy", *, pid: int | None = None) -> LockInfo | None:
        """Drop the lock this store holds; returns what was held (None when not held here)."""
        del pid
        if isinstance(self.db, PostgresDatabase):
            return self._pg_release(name)
        lock = self._locks.pop(name, None)
        if lock is None:
            return None
        _, info_path = self._lock_paths(name)
        info = self._read_holder(info_path)
        with contextlib.suppress(OSError):
            info_path.unlink()
        lock.release()
        return info

    def lock_holder(self, name: str = "deploy") -> LockInfo | None:
        """Who holds the ``name`` lock now (None when it is free or held by this store)."""
        if name in self._locks:
            return None
        if isinstance(self.db, PostgresDatabase):
            return self._pg_lock_holder(name)
        path, info_path = self._lock_paths(name)
        probe = FileLock(path)
        try:
            if probe.try_acquire():
                probe.release()
                return None
        except OSError:
            return None
        return self._read_holder(info_path)

    def release_all_locks(self) -> None:
        for name in [*self._locks, *self._pg_locks]:
            self.release_lock(name)

    @staticmethod
    def _read_holder(info_path: Path) -> LockInfo:
        try:
            data = json.loads(info_path.read_text(encoding="utf-8"))
            return LockInfo(int(data["pid"]), str(data["host"]), str(data["user"]),
                            str(data["at"]), str(data["command"]))
        except (OSError, ValueError, KeyError, TypeError):
            return LockInfo(0, "?", "?", "?", "(holder not recorded yet)")
