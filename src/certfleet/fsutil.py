"""File writing that keeps secrets private on every platform."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_file_atomic", "write_private_file"]


def write_file_atomic(path: Path, data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    With ``private`` the file is created 0600 on POSIX; on Windows, where
    POSIX modes do not apply, the file inherits the user profile's ACL,
    which is private to the user by default.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if private and os.name == "posix":
            os.fchmod(fd, 0o600)
        elif not private and os.name == "posix":
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
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
