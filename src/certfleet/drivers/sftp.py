"""The ``sftp`` device kind: copy the files over SFTP, run a command, verify by handshake.

A generic target for any server that reads its certificate from files: a
Linux reverse proxy (nginx, HAProxy, Apache) in front of OVOC, a syslog or
LDAP server, an appliance with SSH. One run, per device:

1. connect over SSH (the host key checked: ``ssh_host_key`` is a pinned key
   line, a ``SHA256:`` fingerprint or a known_hosts file), log in with
   ``client_key`` or the ``password``;
2. back up: read the files now at ``cert_path``, ``key_path`` and, when given,
   ``chain_path`` and ``fullchain_path`` (a file that does not exist yet is
   noted as absent);
3. install: upload each file under a temporary name in its own folder (the
   key created 0600, the others 0644), then rename each over its target
   (``posix-rename``: atomic, a reader sees the old or the new file, never
   half of one); then run ``reload_command`` (exit status 0 or the deploy
   fails);
4. verify: every listener must serve the new certificate;
5. on failure, rollback: the previous files are put back the same way (files
   that did not exist are removed) and ``reload_command`` runs again.

It is also the example of the driver contract (``docs/drivers.md``): a
module with a :class:`~certfleet.drivers.base.Driver` and a ``KIND``
registered in the ``certfleet.drivers`` entry points.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from cryptography.hazmat.primitives import serialization

from ..errors import ConfigError, DeviceConnectionError, DeviceRefusedError, DeviceTimeoutError
from ..pki.model import Bundle, Finding
from .base import Backup, Driver, EventCallback
from .registry import BuildContext, DriverKind, KeySpec, SecretSpec
from .tlsprobe import Listener

if TYPE_CHECKING:
    import asyncssh

    from ..credentials import DeviceCredentials
    from ..inventory import Device

__all__ = ["KIND", "MAX_FILE_BYTES", "SftpDriver", "SftpSettings"]

MAX_FILE_BYTES = 1 << 20  # a certificate or key file is a few kilobytes
_OUTPUT_BYTES = 2000  # of a failed command's output, in the message
_TMP_SUFFIX = ".certfleet-new"
_ROLES = ("cert", "key", "chain", "fullchain")


@dataclass(frozen=True)
class SftpSettings:
    """Everything an :class:`SftpDriver` is built with besides its name and address
    (the fields are those of the driver's docstring)."""

    paths: Mapping[str, str]
    reload_command: str
    listeners: Sequence[Listener] = ()
    port: int = 22
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    client_keys: Sequence[str] | None = None
    host_key: str | None = None
    known_hosts: str | None = None
    key_format: str = "pkcs8"
    cert_includes_chain: bool = False
    command_timeout: float = 60.0
    connect_timeout: float = 30.0
    on_event: EventCallback | None = None
    verify_timeout: float = 120.0


class SftpOptions(TypedDict, total=False):
    """:class:`SftpSettings` as keyword arguments (``paths`` and ``reload_command`` needed)."""

    paths: Mapping[str, str]
    reload_command: str
    listeners: Sequence[Listener]
    port: int
    user: str
    password: str | None
    client_keys: Sequence[str] | None
    host_key: str | None
    known_hosts: str | None
    key_format: str
    cert_includes_chain: bool
    command_timeout: float
    connect_timeout: float
    on_event: EventCallback | None
    verify_timeout: float


class SftpDriver(Driver):
    """Install a certificate as files over SFTP, then run a reload command.

    ``paths``: role → remote path, for the roles ``cert`` (the leaf, or the
    leaf and its chain when ``cert_includes_chain``), ``key`` (required),
    ``chain`` (the intermediates) and ``fullchain`` (leaf and intermediates).
    ``reload_command``: run after the upload and after a restore, must exit 0.
    ``password`` or ``client_keys`` log in as ``user``; the host key must be
    ``host_key`` (a key line or ``SHA256:`` fingerprint) or in ``known_hosts``.
    """

    kind = "sftp"

    def __init__(self, name: str, address: str, settings: SftpSettings | None = None,
                 **options: Unpack[SftpOptions]) -> None:
        """``settings``, or the same as keyword ``options`` (see :class:`SftpSettings`)."""
        if settings is None:
            settings = SftpSettings(**options)
        elif options:
            raise TypeError("SftpDriver takes settings or keyword options, not both")
        super().__init__(name, settings.listeners, on_event=settings.on_event,
                         verify_timeout=settings.verify_timeout)
        from .ovoc.config import SshLogin

        paths, reload_command, key_format = (settings.paths, settings.reload_command,
                                             settings.key_format)
        password, client_keys = settings.password, settings.client_keys
        unknown = set(paths) - set(_ROLES)
        if unknown:
            raise ConfigError(f"device {name!r}: unknown file role {sorted(unknown)[0]!r}",
                              hint="the roles are cert, key, chain and fullchain")
        for role in ("cert", "key"):
            if not paths.get(role):
                raise ConfigError(f"device {name!r} has no {role}_path",
                                  hint=f'add {role}_path = "/etc/ssl/..." to [devices.{name}]')
        for role, path in paths.items():
            if not posixpath.isabs(path) or path.endswith("/"):
                raise ConfigError(f"device {name!r}: {role}_path {path!r} is not an absolute "
                                  "file path", hint="write the full path, e.g. /etc/ssl/site.pem")
        if len(set(paths.values())) != len(paths):
            raise ConfigError(f"device {name!r}: two files have the same path",
                              hint="give each of cert_path, key_path, chain_path its own file")
        if not reload_command.strip():
            raise ConfigError(f"device {name!r} has an empty reload_command",
                              hint='write e.g. reload_command = "systemctl reload nginx"')
        if key_format not in ("pkcs8", "pkcs1"):
            raise ConfigError(f"device {name!r}: key_format {key_format!r} is not pkcs8 or pkcs1",
                              hint='write key_format = "pkcs8" (or "pkcs1": PKCS#1 / SEC1)')
        if password is None and not client_keys:
            raise ConfigError(f"device {name!r} has neither a password nor a client_key",
                              hint=f'add client_key = "~/.ssh/id_ed25519" (or password = '
                              f'"env:VAR") to [devices.{name}]')
        self.address = address
        self.paths = dict(paths)
        self.reload_command = reload_command
        self.login = SshLogin(port=settings.port, user=settings.user, password=password,
                              client_keys=tuple(client_keys) if client_keys else None,
                              host_key=settings.host_key,
                              known_hosts=(Path(settings.known_hosts) if settings.known_hosts
                                           else None))
        self.key_format = key_format
        self.cert_includes_chain = settings.cert_includes_chain
        self.command_timeout = settings.command_timeout
        self.connect_timeout = settings.connect_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._changed = False
        self.no_listener_hint = "add listeners = [443] (the ports serving the certificate)"

    # ---- connection ----------------------------------------------------------------

    async def connect(self) -> None:
        from .ovoc.config import Timeouts
        from .ovoc.ssh import LoginHints, open_connection

        timeouts = Timeouts(connect=self.connect_timeout)
        where = f"[devices.{self.name}]"
        hints = LoginHints(password=f"password or client_key in {where}",
                           pin=f'ssh_host_key = "{{fp}}" in {where}', note="")
        self._conn = await open_connection(self.address, self.login, timeouts, self.name,
                                           hints=hints)
        self._sftp = await self._op("starting SFTP", self._conn.start_sftp_client())

    async def close(self) -> None:
        sftp, self._sftp = self._sftp, None
        conn, self._conn = self._conn, None
        if conn is not None:
            from .ovoc.ssh import close_connection

            await close_connection(conn, sftp=sftp)
        elif sftp is not None:
            sftp.exit()

    async def _op(self, what: str, coro: Any) -> Any:
        from .ovoc.ssh import sftp_op

        return await sftp_op(what, coro, timeout=self.connect_timeout, device=self.name,
                             user=self.login.user, staging_dir="the target folder")

    # ---- files -----------------------------------------------------------------------

    def render(self, bundle: Bundle) -> dict[str, bytes]:
        """Role → the bytes that go to its path."""
        from ..pki.keygen import profile_key_pem

        if bundle.private_key is None:
            raise ConfigError("the bundle has no private key",
                              hint="import the key with the certificate (certfleet import)")

        def pem(certs: Sequence[Any]) -> bytes:
            return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

        files = {
            "cert": pem(bundle.fullchain if self.cert_includes_chain else (bundle.leaf,)),
            "key": profile_key_pem(bundle.private_key, self.key_format),
            "chain": pem(bundle.chain),
            "fullchain": pem(bundle.fullchain),
        }
        return {role: files[role] for role in self.paths}

    async def _read(self, path: str) -> bytes | None:
        """The file at ``path`` (at most MAX_FILE_BYTES), None when there is none."""
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp

        async def read() -> bytes:
            async with sftp.open(path, "rb") as handle:
                data: bytes = await handle.read(MAX_FILE_BYTES + 1)
                return data

        try:
            data: bytes = await self._op(f"reading {path!r}", read())
        except DeviceRefusedError as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                return None
            raise
        if len(data) > MAX_FILE_BYTES:
            raise DeviceRefusedError(
                f"{path!r} is larger than {MAX_FILE_BYTES} bytes: not a certificate or key file",
                hint="check the path in the inventory", device=self.name)
        return data

    async def _put(self, files: dict[str, bytes | None]) -> None:
        """Path → bytes (None: remove): each written under a temporary name, then renamed."""
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp
        key_path = self.paths["key"]
        staged: list[tuple[str, str]] = []
        for path, data in files.items():
            if data is None:
                continue
            tmp = path + _TMP_SUFFIX
            mode = 0o600 if path == key_path else 0o644

            async def write(tmp: str = tmp, data: bytes = data, mode: int = mode) -> None:
                attrs = asyncssh.SFTPAttrs(permissions=mode)
                async with sftp.open(tmp, "wb", attrs) as handle:
                    await handle.write(data)
                await sftp.chmod(tmp, mode)

            staged.append((tmp, path))
            try:
                await self._op(f"uploading {tmp!r}", write())
            except BaseException:
                await self._remove_quietly(tmp for tmp, _ in staged)
                raise
        for tmp, path in staged:
            self._changed = True
            await self._op(f"renaming {tmp!r} over {path!r}", sftp.posix_rename(tmp, path))
        for path, data in files.items():
            if data is None:
                self._changed = True
                try:
                    await self._op(f"removing {path!r}", sftp.remove(path))
                except DeviceRefusedError as exc:
                    if not isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                        raise

    async def _remove_quietly(self, paths: Any) -> None:
        """Remove what an interrupted upload left (best effort: the targets are untouched)."""
        assert self._sftp is not None
        for path in list(paths):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sftp.remove(path), 10)

    async def run_reload(self) -> str:
        """Run ``reload_command``; its output. Raises DeviceRefusedError unless it exits 0."""
        import asyncssh

        assert self._conn is not None
        try:
            result = await asyncio.wait_for(
                self._conn.run(self.reload_command, check=False, stdin=asyncssh.DEVNULL),
                self.command_timeout)
        except TimeoutError as exc:
            raise DeviceTimeoutError(
                f"the reload command did not finish within {self.command_timeout:g} s",
                hint="check the command on the host; raise command_timeout for a slow one",
                device=self.name) from exc
        except (OSError, asyncssh.Error) as exc:
            raise DeviceConnectionError(f"running the reload command: {exc}",
                                        hint="check the device and retry",
                                        device=self.name) from exc
        output = _text(result.stdout) + _text(result.stderr)
        if result.exit_status != 0:
            said = " ".join(output.split())[:_OUTPUT_BYTES]
            raise DeviceRefusedError(
                f"the reload command exited with status {result.exit_status}"
                + (f": {said}" if said else ""),
                hint="run the command on the host by hand to see why (a configuration test "
                "such as 'nginx -t &&' before the reload refuses a bad file safely)",
                device=self.name)
        return output

    # ---- hooks -------------------------------------------------------------------------

    def preflight(self, bundle: Bundle) -> list[Finding]:
        if bundle.private_key is None:
            return [Finding("KEY_MISSING", "error", "the bundle has no private key: the "
                            "server needs one", hint="import the key with the certificate")]
        return []

    async def backup(self) -> Backup:
        """The files now at every path (an absent one is noted as absent)."""
        backup = Backup(self.name, self.kind)
        absent: list[str] = []
        for role, path in self.paths.items():
            data = await self._read(path)
            if data is None:
                absent.append(role)
            else:
                backup.files[role] = data
        backup.has_private_key = "key" in backup.files or "key" in absent
        backup.meta = {"paths": self.paths, "absent": absent,
                       "reload_command": self.reload_command}
        return backup

    async def install(self, bundle: Bundle) -> None:
        files = self.render(bundle)
        await self._put({self.paths[role]: data for role, data in files.items()})
        self.emit("reload", "start", self.reload_command)
        await self.run_reload()
        self.emit("reload", "ok")

    def assume_changed(self) -> None:
        self._changed = True

    async def restore(self, backup: Backup) -> None:
        """The previous files back (absent ones removed), then the reload command again."""
        if not self._changed:
            return  # nothing was renamed into place: the files are as they were
        absent = set(backup.meta.get("absent", []))
        paths = backup.meta.get("paths") or self.paths
        files: dict[str, bytes | None] = {}
        for role, path in paths.items():
            if role in backup.files:
                files[path] = backup.files[role]
            elif role in absent:
                files[path] = None
        if self._sftp is None:
            await self.connect()
        await self._put(files)
        await self.run_reload()


def _text(data: Any) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data if isinstance(data, str) else ""


# ---- the kind ---------------------------------------------------------------------------


def from_device(device: Device, credentials: DeviceCredentials, context: BuildContext) -> Driver:
    """The SFTP driver for an inventory device of kind ``sftp``. Raises ConfigError."""
    options = device.options
    paths = {role: options[f"{role}_path"] for role in _ROLES if options.get(f"{role}_path")}
    host_key, known_hosts = context.ssh_host_key(device)
    if host_key is None and known_hosts is None:
        raise ConfigError(f"device {device.name!r} has no ssh_host_key",
                          hint="pin the SSH host key: ssh_host_key = \"SHA256:...\" "
                          "(ssh-keygen -lf the host's key) or a known_hosts file")
    client_key = options.get("client_key")
    return SftpDriver(device.name, device.address, SftpSettings(
        paths=paths,
        reload_command=options["reload_command"],
        listeners=device.listeners,
        port=device.port,
        user=device.user or "root",
        password=credentials.get("password"),
        client_keys=[str(context.path(client_key))] if client_key else None,
        host_key=host_key,
        known_hosts=str(known_hosts) if known_hosts else None,
        key_format=options.get("key_format", "pkcs8"),
        cert_includes_chain=bool(options.get("cert_includes_chain", False)),
        command_timeout=float(options.get("command_timeout", 60.0)),
        on_event=context.on_event,
        verify_timeout=device.verify_timeout,
    ))


KIND = DriverKind(
    name="sftp",
    from_device=from_device,
    schema={
        "cert_path": KeySpec("string", "the remote path of the certificate", required=True),
        "key_path": KeySpec("string", "the remote path of the private key", required=True),
        "chain_path": KeySpec("string", "the remote path of the intermediates"),
        "fullchain_path": KeySpec("string", "the remote path of certificate + intermediates"),
        "reload_command": KeySpec("string", "the command that reloads the server",
                                  required=True),
        "client_key": KeySpec("string", "the path of an SSH private key to log in with"),
        "key_format": KeySpec("string", '"pkcs8" or "pkcs1"'),
        "cert_includes_chain": KeySpec("boolean", "true or false"),
        "command_timeout": KeySpec("number", "seconds"),
    },
    secrets={"password": SecretSpec("SSH password", required=False)},
    default_port=22,
    port_alias="ssh_port",
    listener_port="https_port",
    default_user="root",
    rollback_note="the files it replaces are backed up (key included) before the upload",
    steps=(
        "SFTP: back up the files at their paths",
        "upload each file, rename it over the old one",
        "run the reload command",
        "verify by handshake",
    ),
    description="any host over SSH: copy the files over SFTP, run a reload command",
)
