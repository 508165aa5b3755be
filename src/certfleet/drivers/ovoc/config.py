"""The OVOC driver's settings as small frozen objects, and its progress as one state.

The way httpx groups ``Timeout`` and ``Limits``: :class:`SshLogin` (where and
as whom to log in, how the host key is checked), :class:`SuSettings` (whom
``su`` becomes and how its dialogue looks), :class:`StagingSettings` (the
folder EmsServerManager imports from and the modes), :class:`Timeouts` and
:class:`TerminalSettings`. Each validates itself; :func:`from_flat_options`
builds them from the flat keywords the driver took before (``ssh_port=``,
``su_password=``, ``prompt_timeout=``...), which it still accepts.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError

__all__ = [
    "FLAT_OPTIONS",
    "OvocProgress",
    "SshLogin",
    "StagingSettings",
    "SuSettings",
    "TerminalSettings",
    "Timeouts",
    "from_flat_options",
]


@dataclass(frozen=True)
class SshLogin:
    """The SSH login: ``port``, ``user`` (``acems``) and ``password`` or ``client_keys``;
    the host key is verified against ``host_key`` (an OpenSSH public key line or a
    ``SHA256:`` fingerprint) or ``known_hosts`` (a file); neither refuses."""

    port: int = 22
    user: str = "acems"
    password: str | None = field(default=None, repr=False)
    client_keys: tuple[str, ...] | None = None
    known_hosts: Path | None = None
    host_key: str | None = None

    def __post_init__(self) -> None:
        if self.host_key is not None and not (self.host_key.startswith("SHA256:")
                                              or len(self.host_key.split()) >= 2):
            raise ConfigError(
                f"host key pin {self.host_key!r} is neither 'SHA256:...' nor an OpenSSH "
                "key line",
                hint="pin the fingerprint ssh-keygen -lf prints, or the key line itself",
            )
        if self.known_hosts is not None and not isinstance(self.known_hosts, Path):
            object.__setattr__(self, "known_hosts", Path(self.known_hosts))
        if self.client_keys is not None:
            object.__setattr__(self, "client_keys", tuple(self.client_keys) or None)


@dataclass(frozen=True)
class SuSettings:
    """Whom ``su`` becomes (``user``, ``password``) and how: ``command`` (``{user}`` is
    replaced), and the patterns searched in the last line of a quiet screen for the login
    shell's prompt (``shell_prompt``), su's question (``prompt``), and in all su printed
    for its refusal (``failure``)."""

    user: str = "root"
    password: str | None = field(default=None, repr=False)
    command: str = "su - {user}"
    shell_prompt: str = r"[$#>%][ \t]*\Z"
    prompt: str = r"password[^\n]*:[ \t]*\Z"
    failure: str = (r"authentication failure|incorrect password|\bsorry\b"
                    r"|wrong password|su:\s*(?:failure|permission denied)")

    def __post_init__(self) -> None:
        for what, pattern in (("shell_prompt", self.shell_prompt), ("su_prompt", self.prompt),
                              ("su_failure", self.failure)):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{what} {pattern!r} is not a regular expression: {exc}",
                                  hint="fix the pattern") from exc


@dataclass(frozen=True)
class StagingSettings:
    """The folder EmsServerManager imports from, the mode it gets when created (or found
    world-writable), and the mode of the staged files."""

    dir: str = "/home/acems/server_certs"
    dir_mode: int = 0o750
    file_mode: int = 0o600

    def __post_init__(self) -> None:
        if not self.dir.startswith("/"):
            raise ConfigError(f"the staging folder {self.dir!r} must be an absolute path",
                              hint="use e.g. /home/acems/server_certs (--staging-dir; "
                              "inventory: staging_dir)")
        object.__setattr__(self, "dir", self.dir.rstrip("/") or "/")


@dataclass(frozen=True)
class Timeouts:
    """Seconds: the SSH ``connect``, each screen (``prompt``), OVOC's import verdict
    (``import_``), and until the new certificate is served (``verify``)."""

    connect: float = 30.0
    prompt: float = 60.0
    import_: float = 600.0
    verify: float = 600.0


@dataclass(frozen=True)
class TerminalSettings:
    """``settle_time``: how long the output must stay quiet before a screen that only
    looks like a prompt is answered; ``newline``: what Enter sends."""

    settle_time: float = 0.3
    newline: str = "\n"


class OvocProgress(enum.IntEnum):
    """How far the driver got on the device, in order; it only moves forward.

    ``LOCATED``: the staging folder was checked against the SFTP home.
    ``STAGED``: staged files were replaced or removed (the device is changed).
    ``IMPORT_REFUSED``: OVOC refused an import (its previous keystore stands).
    ``KEYSTORE_REFUSED``: OVOC did not take the keystore password (an import of the
    previous files under it would be refused too).
    ``IMPORTED``: an import of the new files succeeded.
    """

    NEW = 0
    LOCATED = 1
    STAGED = 2
    IMPORT_REFUSED = 3
    KEYSTORE_REFUSED = 4
    IMPORTED = 5


#: The flat keywords of the driver's constructor: (settings object, its field).
FLAT_OPTIONS: dict[str, tuple[str, str]] = {
    "ssh_port": ("login", "port"), "user": ("login", "user"),
    "password": ("login", "password"), "client_keys": ("login", "client_keys"),
    "known_hosts": ("login", "known_hosts"), "host_key": ("login", "host_key"),
    "su_user": ("su", "user"), "su_password": ("su", "password"),
    "su_command": ("su", "command"), "shell_prompt": ("su", "shell_prompt"),
    "su_prompt": ("su", "prompt"), "su_failure": ("su", "failure"),
    "staging_dir": ("staging", "dir"), "dir_mode": ("staging", "dir_mode"),
    "file_mode": ("staging", "file_mode"),
    "connect_timeout": ("timeouts", "connect"), "prompt_timeout": ("timeouts", "prompt"),
    "import_timeout": ("timeouts", "import_"), "verify_timeout": ("timeouts", "verify"),
    "settle_time": ("terminal", "settle_time"), "newline": ("terminal", "newline"),
}


def from_flat_options(settings: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (name → settings object) with the flat ``options`` applied.

    Raises TypeError for an unknown keyword, as a constructor would.
    """
    changes: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        if key not in FLAT_OPTIONS:
            raise TypeError(f"OvocDriver() got an unexpected keyword argument {key!r}")
        group, name = FLAT_OPTIONS[key]
        if key == "known_hosts" and value is not None:
            value = Path(value)
        if key == "client_keys" and value is not None:
            value = tuple(value)
        changes.setdefault(group, {})[name] = value
    result = dict(settings)
    for group, values in changes.items():
        result[group] = dataclasses.replace(settings[group], **values)
    return result
