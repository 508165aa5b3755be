"""SSH to OVOC: the host key check, the login, SFTP error mapping, and ``su`` to root.

Functions over the frozen settings of :mod:`.config`; the driver keeps the
connection. Every failure becomes a DeviceError naming the fix.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import (
    ConfigError,
    DeviceAuthError,
    DeviceConnectionError,
    DeviceRefusedError,
    DeviceTimeoutError,
    HostKeyError,
)
from .config import SshLogin, SuSettings, TerminalSettings, Timeouts
from .menu import OvocMenu
from .terminal import Screen, classify, last_line

if TYPE_CHECKING:
    import asyncssh

T = TypeVar("T")


__all__ = ["ShellSettings", "close_connection", "host_key_accepts", "host_key_sha256",
           "open_connection", "sftp_op", "start_root_shell"]


def host_key_sha256(key: asyncssh.SSHKey) -> str:
    """``SHA256:...`` fingerprint as ssh-keygen -l prints it."""
    digest = hashlib.sha256(key.public_data).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_key_accepts(login: SshLogin, host: str, key: asyncssh.SSHKey) -> bool:
    """Whether ``key`` is the pinned key, or in the known_hosts file, for ``host``."""
    import asyncssh

    fingerprint = host_key_sha256(key)
    if login.host_key is not None:
        if login.host_key.startswith("SHA256:"):
            return login.host_key.rstrip("=") == fingerprint
        try:
            pinned = asyncssh.import_public_key(login.host_key)
        except (asyncssh.KeyImportError, ValueError):
            return False
        return bool(pinned.public_data == key.public_data)
    if login.known_hosts is not None:
        try:
            known = asyncssh.read_known_hosts(str(login.known_hosts))
        except (OSError, ValueError):
            return False
        result = known.match(host, host, login.port)
        return any(k.public_data == key.public_data for k in result[0])
    return False


@dataclass(frozen=True)
class LoginHints:
    """Where a kind's user sets the password and the host key pin, for the hints of a
    refused login or an unknown host key (OVOC's: the inventory's keys or the flags of
    ``certfleet ovoc``, since one driver serves both)."""

    password: str = "the inventory's password, or --password-env with certfleet ovoc"
    pin: str = ('ssh_host_key = "{fp}" in the inventory, --host-key-sha256 {fp} with '
                "certfleet ovoc")
    note: str = "; OVOC lets only acems log in over SSH"


async def open_connection(host: str, login: SshLogin, timeouts: Timeouts, device: str,
                          *, hints: LoginHints = LoginHints(),
                          ) -> asyncssh.SSHClientConnection:
    """SSH in as the login user, the host key checked. Raises DeviceErrors, ConfigError."""
    import asyncssh

    if login.known_hosts is not None and not login.known_hosts.is_file():
        raise ConfigError(f"known_hosts file {str(login.known_hosts)!r} does not exist",
                          hint="give an existing file, or pin the host key instead: "
                          + hints.pin.replace("{fp}", "SHA256:..."))
    seen: list[asyncssh.SSHKey] = []

    class Client(asyncssh.SSHClient):
        def validate_host_public_key(self, host_name: str, addr: str, port: int,
                                     key: asyncssh.SSHKey) -> bool:
            seen.append(key)
            return host_key_accepts(login, host, key)

    options: dict[str, Any] = {}
    if login.client_keys is not None:
        options["client_keys"] = list(login.client_keys)
    else:
        options["client_keys"] = None
        options["agent_path"] = None
    try:
        async with asyncio.timeout(timeouts.connect + 5):
            conn, _ = await asyncssh.create_connection(
                Client, host, login.port, username=login.user,
                password=login.password, known_hosts=([], [], []),
                preferred_auth="publickey,keyboard-interactive,password",
                connect_timeout=timeouts.connect, **options,
            )
    except asyncssh.HostKeyNotVerifiable as exc:
        fingerprint = host_key_sha256(seen[-1]) if seen else "unknown"
        how = ("does not match the pinned key" if login.host_key
               else f"is not in {str(login.known_hosts)!r}" if login.known_hosts
               else "is not pinned")
        raise HostKeyError(
            f"SSH host key of {host}:{login.port} {how}: it is {fingerprint}",
            hint=f"if this is the right device, pin it: {hints.pin.replace('{fp}', fingerprint)} "
            "(or add it to the known_hosts file); if the key changed unexpectedly, find out "
            "why before going on",
            device=device, fingerprint=fingerprint,
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise DeviceAuthError(
            f"SSH login as {login.user!r} to {host}:{login.port} was refused",
            hint=f"check the user and the password ({hints.password}){hints.note}",
            device=device,
        ) from exc
    except (TimeoutError, asyncssh.misc.ChannelOpenError) as exc:
        raise DeviceTimeoutError(
            f"SSH to {host}:{login.port} did not answer within "
            f"{timeouts.connect:g} s", hint="check the host, port and firewall",
            device=device,
        ) from exc
    except (OSError, asyncssh.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DeviceConnectionError(
            f"cannot connect to {host}:{login.port} over SSH: {reason}",
            hint="check the host, port and that SSH is enabled", device=device,
        ) from exc
    return conn


async def close_connection(conn: asyncssh.SSHClientConnection, *,
                           sftp: asyncssh.SFTPClient | None = None,
                           process: asyncssh.SSHClientProcess[Any] | None = None,
                           timeout: float = 5.0) -> None:
    """Close ``conn`` as an SSH client should: its SFTP session and shell first, each until
    the server has closed it too, then the connection. Never raises.

    Disconnecting with a channel still open has the server answer that channel's close on
    a socket already gone (asyncio then reports ``socket.send() raised exception.``). A
    server that does not answer within ``timeout`` has its connection aborted.
    """
    import contextlib

    try:
        async with asyncio.timeout(timeout):
            if sftp is not None:
                sftp.exit()
            if process is not None:
                process.close()
            if sftp is not None:
                await sftp.wait_closed()
            if process is not None:
                await process.wait_closed()
            conn.close()
            await conn.wait_closed()
    except (Exception, asyncio.CancelledError):  # closing must not raise
        with contextlib.suppress(Exception):
            conn.abort()


async def sftp_op(what: str, coro: Awaitable[T], *, timeout: float, device: str, user: str,
                  staging_dir: str) -> T:
    """Run one SFTP operation with a timeout, mapping failures to DeviceErrors."""
    import asyncssh

    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
        # (Ctrl-C) that arrives as the operation completes.
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        raise DeviceTimeoutError(f"{what} did not finish within {timeout:g} s",
                                 hint="check the device and retry", device=device) from exc
    except asyncssh.SFTPPermissionDenied as exc:
        raise DeviceRefusedError(f"{what}: permission denied ({exc.reason})",
                                 hint=f"check that {user!r} may write "
                                 f"{staging_dir!r}", device=device) from exc
    except asyncssh.SFTPError as exc:
        if isinstance(exc, asyncssh.SFTPConnectionLost):
            raise DeviceConnectionError(f"{what}: the connection dropped",
                                        hint="check the device and retry",
                                        device=device) from exc
        raise DeviceRefusedError(f"{what}: {exc.reason}", hint="check the staging folder",
                                 device=device) from exc
    except (OSError, asyncssh.Error) as exc:
        raise DeviceConnectionError(f"{what}: the connection dropped ({exc})",
                                    hint="check the device and retry",
                                    device=device) from exc


@dataclass(frozen=True)
class ShellSettings:
    """What a root shell on one OVOC is opened with: the host and login, ``su``, the
    menu's wording, the terminal, the timeouts, the device's name (for messages) and
    the secrets to scrub from the screen."""

    host: str
    login: SshLogin
    su: SuSettings
    menu: OvocMenu
    terminal: TerminalSettings
    timeouts: Timeouts
    device: str
    secrets: tuple[str, ...] = ()


async def start_root_shell(
    conn: asyncssh.SSHClientConnection, shell_settings: ShellSettings,
) -> tuple[Screen, str]:
    """A PTY shell as the login user, then ``su`` to ``su.user`` (checked with whoami when
    the prompt does not say). Returns the screen and root's prompt line as seen."""
    import asyncssh

    host, login, su, menu = (shell_settings.host, shell_settings.login, shell_settings.su,
                             shell_settings.menu)
    terminal, timeouts, device = (shell_settings.terminal, shell_settings.timeouts,
                                  shell_settings.device)
    secrets = list(shell_settings.secrets)

    try:
        async with asyncio.timeout(timeouts.prompt):
            process = await conn.create_process(term_type="vt100", term_size=(132, 50),
                                                encoding="utf-8")
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise DeviceConnectionError(f"cannot open a shell on {host}: {exc}",
                                    hint="check that acems has a login shell",
                                    device=device) from exc
    screen = Screen(process, secrets, terminal.settle_time, terminal.newline)
    shell = re.compile(su.shell_prompt, re.IGNORECASE)
    su_prompt = re.compile(su.prompt, re.IGNORECASE)
    su_failure = re.compile(su.failure, re.IGNORECASE)

    def at_shell(window: str) -> tuple[str, str] | None:
        line = last_line(window)
        # "?": a banner line may end in $ or # too, so only a quiet one is a prompt
        return ("prompt?", line) if line and shell.search(line) else None

    def after_su(window: str) -> tuple[str, str] | None:
        line = last_line(window)
        if su_failure.search(window):
            return "fail", line
        if line and su_prompt.search(line):
            return "password", line
        return at_shell(window)

    def is_target(prompt: str) -> bool:
        return (su.user == "root" and prompt.rstrip().endswith("#")) \
            or bool(re.search(rf"\b{re.escape(su.user)}@", prompt))

    await screen.settle(at_shell, ["prompt"], timeouts.prompt, "shell prompt")
    # A shell that does not take the configured form ("su - root") may take a shorter one.
    forms = [su.command.format(user=su.user)]
    if su.user == "root":
        forms += ["su -", "su"]
    for form in dict.fromkeys(forms):
        screen.send(form)
        kind, line = await screen.settle(after_su, ["password", "fail", "prompt"],
                                         timeouts.prompt, "su password prompt")
        if kind != "prompt" or is_target(line):
            break
    if kind == "password":
        screen.send(su.password or "")
        kind, line = await screen.settle(after_su, ["fail", "prompt", "password"],
                                         timeouts.prompt, "shell prompt after su")
    if kind != "prompt":  # refused, or asked again (as sudo does after a wrong one)
        raise DeviceAuthError(f"su to {su.user!r} on {host} was refused "
                              "(wrong password)",
                              hint="check the password given with --su-password-env "
                              "(inventory: root_password)",
                              device=device)
    root_prompt = line
    if is_target(line):
        return screen, root_prompt  # root's prompt ('#', 'root@host'): no need for whoami
    before = len(screen.text)
    screen.send("whoami")
    kind, line = await screen.settle(lambda w: classify(w, menu, root_prompt), ["shell"],
                                     timeouts.prompt, "whoami answer")
    answer = [text.strip() for text in screen.text[before:].split("\n")]
    if su.user not in answer:
        raise DeviceAuthError(f"su did not make {login.user!r} {su.user!r}",
                              hint="check --su-user (inventory: su_user) and the su command",
                              device=device)
    return screen, root_prompt
