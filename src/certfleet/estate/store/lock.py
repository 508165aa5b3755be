"""Locks held by the operating system, so that a dead process never holds one.

:class:`FileLock` is an exclusive lock on a file in the state folder:
``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows. The kernel drops
it when the process ends, however it ends (``kill -9``, a crash, power).
The holder's pid, host, user, command and start time are written beside it
(``NAME.lock.json``) so that a refusal names who holds it.

On a PostgreSQL store the lock is a session advisory lock of the store's
connection instead: the server drops it when that connection ends (the
process killed, its machine off the network), and the holder is named by
its connection's ``application_name`` (command, pid, user and host) and
start time, whichever machine it runs on.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from ...errors import StateError
from ...fsutil import write_file_atomic
from .backend import Database, PostgresDatabase, application_name
from .schema import now, os_user

__all__ = ["LOCK_CLASS", "FileLock", "LockInfo", "LockMixin", "advisory_key"]


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


# The first key of certfleet's PostgreSQL advisory locks (the second: the lock's name, hashed).
LOCK_CLASS = 0x63660002


def advisory_key(name: str) -> int:
    """The second key of the advisory lock ``name`` (a non-negative int4, as pg_locks shows it)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _pg_holder(db: PostgresDatabase, classid: int, objid: int) -> LockInfo | None:
    """Who holds advisory lock (classid, objid) on the server, None when nobody does."""
    row = db.execute(
        "SELECT a.application_name, a.backend_start, a.client_addr FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
        " AND l.granted AND l.classid = ? AND l.objid = ? AND l.objsubid = 2",
        (classid, objid),
    ).fetchone()
    if row is None:
        return None
    return _parse_application_name(str(row[0] or ""), row[1], row[2])


def _parse_application_name(name: str, started: object, address: object) -> LockInfo:
    # "certfleet COMMAND PID USER@HOST" (application_name)
    parts = name.split(" ")
    at = started.isoformat(timespec="seconds") if hasattr(started, "isoformat") else "?"
    if len(parts) == 4 and parts[0] == "certfleet" and parts[2].isdigit():
        user, _, host = parts[3].partition("@")
        return LockInfo(int(parts[2]), host or str(address or "?"), user, at, parts[1])
    return LockInfo(0, str(address or "?"), "?", at, name or "(not a certfleet connection)")


class LockMixin:
    """The named locks of a store (``deploy`` serialises deploys and rollbacks)."""

    root: Path
    db: Database
    _locks: dict[str, FileLock]
    _pg_locks: set[str]

    def _pg_acquire(self, name: str, command: str) -> LockInfo:
        assert isinstance(self.db, PostgresDatabase)
        info = LockInfo.mine(command)
        if name not in self._pg_locks:
            self.db.execute(
                "SELECT set_config('application_name', ?, false)",
                (application_name(command, info.pid, info.user),),
            )
            row = self.db.execute(
                "SELECT pg_try_advisory_lock(?, ?)", (LOCK_CLASS, advisory_key(name))
            ).fetchone()
            got = bool(row and row[0])
            if not got:
                held = _pg_holder(self.db, LOCK_CLASS, advisory_key(name)) or LockInfo(
                    0, "?", "?", "?", "(released meanwhile: try again)")
                raise StateError(
                    f"another {name} holds the lock: {held.describe()}",
                    hint="wait for it to finish (the database releases the lock of a process "
                    "that died, or whose connection ended)",
                    lock=held,
                )
            self._pg_locks.add(name)
        return info

    def _lock_paths(self, name: str) -> tuple[Path, Path]:
        folder = self.root / "locks"
        return folder / f"{name}.lock", folder / f"{name}.lock.json"

    def acquire_lock(
        self, command: str, *, name: str = "deploy", break_lock: bool = False
    ) -> LockInfo:
        """Take the ``name`` lock. Raises StateError (with ``lock=``) while a live process holds it.

        ``break_lock`` is accepted for compatibility: a lock whose process
        died is free already, and a live one is never taken over.
        """
        del break_lock
        if isinstance(self.db, PostgresDatabase):
            return self._pg_acquire(name, command)
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
            if name not in self._pg_locks:
                return None
            held = _pg_holder(self.db, LOCK_CLASS, advisory_key(name))
            self._pg_locks.discard(name)
            if not self.db.closed:
                self.db.execute(
                    "SELECT pg_advisory_unlock(?, ?)", (LOCK_CLASS, advisory_key(name))
                )
            return held
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
            if name in self._pg_locks:
                return None
            return _pg_holder(self.db, LOCK_CLASS, advisory_key(name))
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
