"""The users of ``certfleet serve``: a JSON file of argon2 hashes and roles, and API tokens.

The file (``serve-users.json`` in the state folder unless ``--users``) is
written 0600 and holds no password and no token: passwords as argon2id
hashes (``argon2-cffi``), tokens as their SHA-256 (a token is 256 random
bits, so a fast hash is enough). Roles: ``viewer`` (read every page and
API) and ``operator`` (also start deploy, renew and rollback).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, StateError
from ..fsutil import write_private_file

__all__ = ["ROLES", "USERS_FILE", "Users", "check_name"]

ROLES = ("viewer", "operator")
USERS_FILE = "serve-users.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def check_name(name: str) -> str:
    """``name`` when it is a valid user or token name. Raises InputError."""
    if not _NAME.fullmatch(name):
        raise InputError(
            f"{name!r} is not a valid name",
            hint="use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit",
        )
    return name


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


@dataclass(frozen=True)
class Account:
    """Who is logged in (a user) or calling the API (a token): a name and a role."""

    name: str
    role: str
    token: bool = False

    @property
    def operator(self) -> bool:
        return self.role == "operator" and not self.token


class Users:
    """The users file at ``path``; read on every check, so a new user needs no restart."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"users": {}, "tokens": {}}
        except (OSError, ValueError) as exc:
            raise StateError(
                f"cannot read the users file {str(self.path)!r}: {exc}",
                hint="fix or remove it, then add users with 'certfleet serve adduser NAME "
                "--password-env VAR'",
                path=str(self.path),
            ) from None
        if not isinstance(data, dict):
            data = {}
        data.setdefault("users", {})
        data.setdefault("tokens", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        try:
            write_private_file(self.path, (json.dumps(data, indent=2) + "\n").encode())
        except OSError as exc:
            raise StateError.from_os_error(
                "write the users file", self.path, exc,
                hint="pass --users to a writable file (or --state-dir)",
            ) from None

    @property
    def exists(self) -> bool:
        data = self._read()
        return bool(data["users"] or data["tokens"])

    def add_user(self, name: str, password: str, role: str) -> bool:
        """Add ``name`` (or set its password and role); True when it was new."""
        check_name(name)
        if role not in ROLES:
            raise InputError(f"--role {role!r} is not a role", hint="use --role viewer or "
                             "--role operator")
        if len(password) < 8:
            raise InputError("the password has fewer than 8 characters",
                             hint="put a longer password in the variable --password-env names")
        data = self._read()
        new = name not in data["users"]
        data["users"][name] = {"hash": _hasher().hash(password), "role": role}
        self._write(data)
        return new

    def add_token(self, name: str) -> str:
        """A new API token named ``name`` (read-only use), returned once, stored hashed."""
        check_name(name)
        token = "cft_" + secrets.token_urlsafe(32)
        data = self._read()
        data["tokens"][name] = {"sha256": hashlib.sha256(token.encode()).hexdigest()}
        self._write(data)
        return token

    def login(self, name: str, password: str) -> Account | None:
        """The account when ``password`` is ``name``'s, else None."""
        from argon2.exceptions import InvalidHashError, VerificationError

        user = self._read()["users"].get(name)
        hasher = _hasher()
        if not isinstance(user, dict):
            # The same work for an unknown name: no telling names apart by time.
            hasher.hash(password)
            return None
        try:
            hasher.verify(str(user.get("hash", "")), password)
        except (VerificationError, InvalidHashError):
            return None
        role = str(user.get("role", "viewer"))
        return Account(name, role if role in ROLES else "viewer")

    def bearer(self, token: str) -> Account | None:
        """The token's account (always a viewer), or None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        found: Account | None = None
        for name, item in self._read()["tokens"].items():
            if isinstance(item, dict) and hmac.compare_digest(str(item.get("sha256", "")),
                                                              digest):
                found = Account(str(name), "viewer", token=True)
        return found
