"""Where passwords come from: environment, a file, the keyring or a prompt.

Never from a command line or the inventory file. A reference is written
``env:VAR``, ``file:PATH``, ``keyring:SERVICE/USER`` or ``prompt``.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from .errors import ConfigError, PasswordError

__all__ = ["env_references", "resolve_secret", "secret_from_env"]


def env_references(inventory_text: str) -> list[str]:
    """The environment variables an inventory's ``env:VAR`` references name, sorted.

    Every string value of the TOML is looked at (devices, defaults, acme, dns,
    notify): a comment is not a reference. An unreadable text names none.
    """
    import re
    import tomllib

    try:
        data = tomllib.loads(inventory_text)
    except tomllib.TOMLDecodeError:
        return []
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            match = re.fullmatch(r"env:([A-Za-z_][A-Za-z0-9_]*)", value.strip())
            if match:
                found.add(match.group(1))

    walk(data)
    return sorted(found)


def secret_from_env(var: str, *, what: str) -> str:
    """Return the value of environment variable ``var``. Raises PasswordError."""
    value = os.environ.get(var)
    if value is None:
        raise PasswordError(
            f"environment variable {var!r} for the {what} is not set",
            hint=f"export {var}=... before running, or name another variable",
            variable=var,
        )
    return value


# What was typed at a prompt, by what was asked: each secret is asked once per process.
_typed: dict[str, str] = {}


def _in_event_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def resolve_secret(ref: str, *, what: str, interactive: bool | None = None) -> str:
    """Resolve a secret reference (see module doc). Raises ConfigError/PasswordError.

    A ``prompt`` is asked once per process (later calls get the same answer),
    and never from inside a running event loop: a run asks its secrets before
    it starts (see :func:`certfleet.estate.devices.prompt_secrets`).
    """
    scheme, sep, rest = ref.partition(":")
    if scheme == "prompt" and not sep:
        if what in _typed:
            return _typed[what]
        if _in_event_loop():
            raise PasswordError(
                f"the {what} must be typed at a prompt, but the run has started",
                hint="use env:VAR or keyring:SERVICE/USER, or report this as a bug",
            )
        if interactive is None:
            interactive = sys.stdin is not None and sys.stdin.isatty()
        if not interactive:
            raise PasswordError(
                f"the {what} must be typed at a prompt, but there is no terminal",
                hint="use env:VAR or keyring:SERVICE/USER for unattended runs",
            )
        _typed[what] = getpass.getpass(f"{what}: ")
        return _typed[what]
    if not sep or not rest:
        raise ConfigError(
            f"secret reference {ref!r} for the {what} is not env:VAR, file:PATH, "
            "keyring:SERVICE/USER or prompt",
            hint="write e.g. password = \"env:SBC_PASSWORD\"",
        )
    if scheme == "env":
        return secret_from_env(rest, what=what)
    if scheme == "file":
        try:
            return Path(rest).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise PasswordError(
                f"cannot read the {what} from {rest!r}: {exc.strerror or exc}",
                hint="check the path of the secret file",
            ) from exc
    if scheme == "keyring":
        service, slash, user = rest.partition("/")
        if not slash or not service or not user:
            raise ConfigError(
                f"keyring reference {ref!r} must be keyring:SERVICE/USER",
                hint="write e.g. keyring:certfleet/ovoc-acems",
            )
        try:
            import keyring  # imported lazily: it probes OS backends at import time

            value = keyring.get_password(service, user)
        except Exception as exc:
            raise PasswordError(
                f"the keyring could not be read for {service}/{user}: {type(exc).__name__}",
                hint="use env:VAR, or set up a keyring backend",
            ) from exc
        if value is None:
            raise PasswordError(
                f"no {what} stored in the keyring under {service}/{user}",
                hint=f"store it with: keyring set {service} {user}",
            )
        return str(value)
    raise ConfigError(
        f"unknown secret scheme {scheme!r} in {ref!r} for the {what}",
        hint="use env:VAR, file:PATH, keyring:SERVICE/USER or prompt",
    )
