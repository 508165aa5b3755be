"""File writing that keeps secrets private on every platform."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["write_file_atomic", "write_private_file"]


_TEMP_ATTEMPTS = 100


def _create_temporary(directory: Path, name: str, mode: int) -> tuple[int, Path]:
    """A new file next to ``name`` in ``directory``, created with ``mode`` less the umask.

    The kernel applies the process umask at creation, so the umask is never
    read by changing it (``os.umask`` is process-wide: a thread that changes
    it, even for an instant, lets other threads create 0666 files and 0777
    folders).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {directory}")


def write_file_atomic(path: Path, data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    With ``private`` the file is created 0600 on POSIX; on Windows, where
    POSIX modes do not apply, the file inherits the user profile's ACL,
    which is private to the user by default. Otherwise the file gets 0666
    less the process umask, as ``open()`` would give it. The umask is never
    changed (see :func:`_create_temporary`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path.parent, path.name, 0o600 if private else 0o666)
    try:
        if private and os.name == "posix":
            os.fchmod(fd, 0o600)  # exact, whatever the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_private_file(path: Path, data: bytes) -> Path:
    """Write a secret (a private key, a backup) readable by its owner only."""
    return write_file_atomic(path, data, private=True)
