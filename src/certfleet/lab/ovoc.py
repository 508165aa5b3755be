"""A lab OVOC appliance on loopback: SSH/SFTP as ``acems``, ``su``, EmsServerManager, HTTPS.

:class:`LabOvoc` behaves as the appliance of the story does for the
certificate job, and nothing more:

* SSH (asyncssh) on 127.0.0.1 (or ``host``): password login for ``acems`` only (root is
  refused, as on a real OVOC); SFTP rooted in a temporary folder that stands
  for ``/`` of the appliance, so the driver uses the real paths
  (``/home/acems/server_certs``); relative SFTP paths start in
  ``/home/acems``.
* An interactive shell (``[acems@ovoc ~]$``) with ``su``/``su -``,
  ``whoami``, ``id``, ``which``, ``ls``, ``mkdir``, ``chmod``, ``echo``, ``exit`` and
  ``EmsServerManager`` (root only), which draws the menus of
  ``ovoc_menus.json`` (or the menus given) and imports the staged files for
  real: a PKCS#12 file and a JKS keystore under the lab's folder.
* An HTTPS "web server" presenting the imported certificate. After a
  successful import the web server restarts: its port refuses connections
  for ``restart_delay`` seconds, then serves the new certificate.

Fault knobs (attributes, changeable while running): ``web_fail_restarts``
(the next N restarts leave the web server down), ``drop_after_upload_bytes``
(drop the SSH connection once that many bytes were uploaded over SFTP; fires
once), ``faults.inject_prompt`` (an unexpected question in the import
dialogue), ``faults.keystore_error`` (every import fails as keytool does on a
keystore password it cannot take), ``restart_delay``, and
:meth:`LabOvoc.stop_at`: hold (``hang``) or drop the SSH connection
(``drop``) at one step of a deploy (mid-upload, after a rename, at the import
menu, after the import before its verdict), with an event set once the step
is reached.

Everything the lab writes stays under its temporary folder, removed by
:meth:`LabOvoc.stop`. POSIX only, like the rest of the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Literal

import asyncssh
from asyncssh.connection import SSHConnection
from cryptography import x509

from .ca import Issued, LabCA
from .ems_emulator import (
    EmsFaults,
    ImportResult,
    MenuIO,
    load_menus,
    process_import,
    run_ems_manager,
)
from .tls import CertSlot, LabHTTPSServer

__all__ = ["LabOvoc", "StopPoint"]

Staging = Literal["files", "empty", "missing"]
STOP_POINTS = ("upload", "rename", "menu", "import")
EMS_PATH = "/opt/acems/bin/EmsServerManager"


@dataclass
class StopPoint:
    """Where :meth:`LabOvoc.stop_at` stops a deploy, and whether it got there.

    ``upload``: the ``nth`` SFTP write (a file is half staged); ``rename``:
    after the ``nth`` rename into place (the staging folder holds a mix of
    new and old files); ``menu``: in the import dialogue, before the
    password prompt; ``import``: the import done (the keystore and the web
    server changed), before OVOC shows its verdict. ``action`` is ``hang``
    (hold until the client goes or the lab stops) or ``drop`` (close the
    SSH connection). ``reached`` is set once the point is reached (and the
    change of that step made). Fires once.
    """

    point: str
    action: str = "hang"
    nth: int = 1
    seen: int = 0
    reached: threading.Event = field(default_factory=threading.Event)


def _http_handler() -> type[BaseHTTPRequestHandler]:

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>OVOC (lab)</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


class _Term:
    """The session's terminal: echoes typed input unless a password is being read."""

    def __init__(self, process: asyncssh.SSHServerProcess[str]) -> None:
        self._process = process
        self._buffer = ""

    async def write(self, text: str) -> None:
        self._process.stdout.write(text.replace("\r\n", "\n").replace("\n", "\r\n"))

    async def readline(self, echo: bool = True) -> str | None:
        while True:
            for index, char in enumerate(self._buffer):
                if char in "\r\n":
                    line = self._buffer[:index]
                    rest = self._buffer[index + 1 :]
                    if char == "\r" and rest.startswith("\n"):
                        rest = rest[1:]
                    self._buffer = rest
                    return line
            try:
                data = await self._process.stdin.read(4096)
            except (asyncssh.BreakReceived, asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
                continue
            if not data:
                return None
            if echo:
                self._process.stdout.write(data.replace("\r\n", "\n").replace("\r", "\n")
                                           .replace("\n", "\r\n"))
            self._buffer += data


class LabOvoc:
    """A lab OVOC appliance; see the module docstring.

    ``initial`` is the certificate served at start (a fresh lab CA issues one
    for ``ovoc.lab.example`` when omitted). ``staging`` says what
    ``/home/acems/server_certs`` holds at start: the files of the initial
    certificate as a previous renewal left them (``files``), nothing
    (``empty``), or no folder at all (``missing``). ``menus`` replaces the
    packaged menu definition (a path or a dict of the same shape).
    """

    def __init__(
        self,
        initial: Issued | None = None,
        *,
        staging: Staging = "files",
        acems_password: str = "acems-lab-Pa55",
        root_password: str = "root-lab-Pa55",
        menus: Path | str | Mapping[str, object] | None = None,
        restart_delay: float = 0.2,
        hostname: str = "ovoc",
        host: str = "127.0.0.1",
        ssh_port: int = 0,
        https_port: int = 0,
    ) -> None:
        self.host = host
        self._want_ports = (ssh_port, https_port)
        self.acems_password = acems_password
        self.root_password = root_password
        self.menus = load_menus(menus)
        self.restart_delay = restart_delay
        self.hostname = hostname
        self.faults = EmsFaults(hook=self._menu_hook)
        self.stop_point: StopPoint | None = None
        self.web_fail_restarts = 0
        self.drop_after_upload_bytes: int | None = None
        self.keystore_password: str | None = None
        self.last_import: ImportResult | None = None
        self.import_count = 0
        self.base = Path(tempfile.mkdtemp(prefix="certfleet-lab-ovoc-"))
        self.root_dir = self.base / "fs"
        self.home = self.root_dir / "home" / "acems"
        self.staging_dir = self.home / "server_certs"
        self.keystore_dir = self.root_dir / "opt" / "acems" / "keystore"
        self.home.mkdir(parents=True)
        (self.root_dir / "root").mkdir()
        if initial is None:
            initial = LabCA("OVOC Lab Previous").issue(["ovoc.lab.example"], key_type="ec-p256")
        self.initial = initial
        if staging != "missing":
            self.staging_dir.mkdir(mode=0o750)
        if staging == "files":
            self._stage(initial)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.slot = CertSlot(initial.leaf_pem, initial.key_pem("pkcs8"), initial.chain_pem)
        self._https: LabHTTPSServer | None = None
        self.https_port = 0
        self.ssh_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ssh_server: asyncssh.SSHAcceptor | None = None
        self._web_lock = threading.Lock()
        self._restart_timer: threading.Timer | None = None

    # ---- what a test reads -----------------------------------------------------

    @property
    def known_hosts_line(self) -> str:
        """The host key as an OpenSSH known_hosts line for ``[HOST]:port``."""
        return f"[{self.host}]:{self.ssh_port} {self.host_public_key_line}"

    @property
    def host_public_key_line(self) -> str:
        """``ssh-ed25519 AAAA...`` as an OpenSSH public key line."""
        return self.host_key.export_public_key("openssh").decode().split(" comment")[0].strip()

    @property
    def host_key_sha256(self) -> str:
        """``SHA256:...`` as ssh-keygen -l prints it."""
        return str(self.host_key.get_fingerprint("sha256"))

    def served_certificate(self) -> x509.Certificate:
        """The certificate the web server presents (or will, once it is back)."""
        return x509.load_pem_x509_certificate(self.slot.cert_pem)

    @property
    def web_up(self) -> bool:
        return self._https is not None

    def staged_files(self) -> dict[str, bytes]:
        """What ``/home/acems/server_certs`` holds now, by name."""
        if not self.staging_dir.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sorted(self.staging_dir.iterdir()) if p.is_file()}

    def stage_files(self, files: Mapping[str, bytes]) -> None:
        """Put files in the staging folder as an administrator would (creates it)."""
        self.staging_dir.mkdir(mode=0o750, exist_ok=True)
        for name, data in files.items():
            (self.staging_dir / name).write_bytes(data)

    def _stage(self, issued: Issued) -> None:
        files = {"server.crt": issued.leaf_pem, "root.crt": issued.root_pem}
        for index, cert in enumerate(issued.chain, 1):
            files[f"ca{index}.crt"] = issued.pem(cert)
        files["server.key"] = issued.key_pem("pkcs1" if _is_rsa(issued) else "sec1")
        self.stage_files(files)

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> LabOvoc:
        self._https = LabHTTPSServer(_http_handler(), self.slot, host=self.host,
                                     port=self._want_ports[1]).start()
        self.https_port = self._https.port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="lab-ovoc-ssh")
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start_ssh(), self._loop)
        self._ssh_server = future.result(15)
        self.ssh_port = int(self._ssh_server.sockets[0].getsockname()[1])
        return self

    async def _start_ssh(self) -> asyncssh.SSHAcceptor:
        lab = self

        class Server(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                # root may not log in over SSH, whatever its password (as on OVOC).
                return username == "acems" and password == lab.acems_password

        return await asyncssh.create_server(
            Server,
            self.host,
            self._want_ports[0],
            server_host_keys=[self.host_key],
            process_factory=self._session,
            sftp_factory=self._sftp_factory,
            allow_scp=False,
            line_editor=False,
            encoding="utf-8",
        )

    def stop(self) -> None:
        if self._restart_timer is not None:
            self._restart_timer.cancel()
        if self._loop is not None and self._ssh_server is not None:
            server = self._ssh_server

            async def shutdown() -> None:
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._ssh_server = None
        with self._web_lock:
            if self._https is not None:
                self._https.stop()
                self._https = None
        self.slot.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LabOvoc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- stop points -----------------------------------------------------------

    def stop_at(self, point: str, action: str = "hang", nth: int = 1) -> StopPoint:
        """Stop the next deploy at ``point`` (see :class:`StopPoint`)."""
        if point not in STOP_POINTS or action not in ("hang", "drop"):
            raise ValueError(f"unknown stop point {point!r} or action {action!r}")
        self.stop_point = StopPoint(point, action, nth)
        return self.stop_point

    def _stop_here(self, point: str) -> StopPoint | None:
        """The stop point when ``point`` is its ``nth`` passage (then it fires no more)."""
        stop = self.stop_point
        if stop is None or stop.point != point:
            return None
        stop.seen += 1
        if stop.seen < stop.nth:
            return None
        self.stop_point = None
        return stop

    async def _hold(self, stop: StopPoint, conn: SSHConnection) -> None:
        """Hang (until the connection or the lab goes) or drop the connection."""
        stop.reached.set()
        if stop.action == "drop":
            conn.abort()
            return
        for _ in range(1200):  # at most 60 s
            if conn.is_closed():
                break
            await asyncio.sleep(0.05)

    async def _menu_hook(self, point: str, io: MenuIO) -> bool:
        stop = self._stop_here(point)
        if stop is None:
            return True
        conn = io._process.channel.get_connection() if isinstance(io, _Term) else None
        if conn is None:
            return True
        await self._hold(stop, conn)
        return False

    # ---- web server restart --------------------------------------------------------

    def _restart_web(self, result: ImportResult) -> None:
        with self._web_lock:
            if self._https is not None:
                self._https.stop()
                self._https = None
        self.slot.set(result.cert_pem, result.key_pem, result.chain_pem)

        def come_back() -> None:
            with self._web_lock:
                if self.web_fail_restarts > 0:
                    self.web_fail_restarts -= 1
                    return
                if self._https is None and self._loop is not None:
                    self._https = LabHTTPSServer(_http_handler(), self.slot, host=self.host,
                                                 port=self.https_port).start()

        self._restart_timer = threading.Timer(self.restart_delay, come_back)
        self._restart_timer.daemon = True
        self._restart_timer.start()

    async def _on_import(self, password: str) -> tuple[bool, list[str]]:
        self.import_count += 1
        self.keystore_password = password
        if self.faults.keystore_error:
            self.last_import = ImportResult(False, "keystore password refused",
                                            output=[self.faults.keystore_error])
            return False, [self.faults.keystore_error]
        result = await asyncio.get_running_loop().run_in_executor(
            None, process_import, self.staging_dir, self.keystore_dir, password,
            self.menus["files"],
        )
        self.last_import = result
        if result.ok:
            self._restart_web(result)
        return result.ok, result.output

    @property
    def pkcs12_path(self) -> Path:
        return self.keystore_dir / "sem.p12"

    @property
    def jks_path(self) -> Path:
        return self.keystore_dir / "sem.jks"

    # ---- SFTP ----------------------------------------------------------------------

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        lab = self

        class Sftp(asyncssh.SFTPServer):
            def map_path(self, path: bytes) -> bytes:
                if not path.startswith(b"/"):
                    path = b"/home/acems/" + path
                return super().map_path(path)

            async def write(self, file_obj: object, offset: int, data: bytes) -> int:
                stop = lab._stop_here("upload")
                if stop is not None:
                    # Half the data in: a file half staged.
                    result = super().write(file_obj, offset, data[: len(data) // 2])
                    if asyncio.iscoroutine(result):
                        await result
                    await lab._hold(stop, self.connection)
                    raise asyncssh.SFTPConnectionLost("connection dropped")
                limit = lab.drop_after_upload_bytes
                if limit is not None:
                    lab.drop_after_upload_bytes = limit - len(data)
                    if limit - len(data) < 0:
                        lab.drop_after_upload_bytes = None
                        self.connection.abort()
                        raise asyncssh.SFTPConnectionLost("connection dropped")
                result = super().write(file_obj, offset, data)
                if asyncio.iscoroutine(result):
                    await result
                return len(data)

            async def _renamed(self, result: object) -> None:
                """Finish a rename of the base class; then the "rename" fault, if set."""
                if asyncio.iscoroutine(result):
                    await result
                stop = lab._stop_here("rename")
                if stop is not None:
                    await lab._hold(stop, self.connection)
                    raise asyncssh.SFTPConnectionLost("connection dropped")

            async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
                await self._renamed(super().posix_rename(oldpath, newpath))

            async def rename(self, oldpath: bytes, newpath: bytes) -> None:
                await self._renamed(super().rename(oldpath, newpath))

        return Sftp(chan, chroot=str(self.root_dir).encode())

    # ---- shell ---------------------------------------------------------------------

    async def _session(self, process: asyncssh.SSHServerProcess[str]) -> None:
        term = _Term(process)
        users = ["acems"]
        try:
            if process.command is not None:
                for command in process.command.split(";"):
                    await self._run_command(command, users, term, interactive=False)
                process.exit(0)
                return
            while True:
                user = users[-1]
                sign = "#" if user == "root" else "$"
                await term.write(f"[{user}@{self.hostname} ~]{sign} ")
                line = await term.readline()
                if line is None:
                    break
                if not await self._run_command(line, users, term, interactive=True):
                    break
            process.exit(0)
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, BrokenPipeError):
            return

    def _path(self, user: str, arg: str) -> Path:
        home = "/root" if user == "root" else "/home/acems"
        if arg == "~" or arg.startswith("~/"):
            arg = home + arg[1:]
        if not arg.startswith("/"):
            arg = f"{home}/{arg}"
        parts = [p for p in Path(arg).parts if p not in ("/", "..", ".")]
        return self.root_dir.joinpath(*parts)

    async def _run_command(
        self, line: str, users: list[str], term: _Term, *, interactive: bool
    ) -> bool:
        """Run one shell command; False when the session ends."""
        try:
            argv = shlex.split(line)
        except ValueError:
            await term.write("-bash: syntax error\n")
            return True
        if not argv:
            return True
        user, cmd, args = users[-1], argv[0], argv[1:]
        if cmd in ("exit", "logout"):
            if len(users) > 1:
                users.pop()
                await term.write("logout\n" if interactive else "")
                return True
            return False
        if cmd == "whoami":
            await term.write(user + "\n")
        elif cmd == "id":
            uid = 0 if user == "root" else 1000
            await term.write(f"uid={uid}({user}) gid={uid}({user}) groups={uid}({user})\n")
        elif cmd == "echo":
            await term.write(" ".join(args) + "\n")
        elif cmd == "su":
            target = next((a for a in args if not a.startswith("-")), "root")
            if not interactive:
                await term.write("su: must be run from a terminal\n")
                return True
            await term.write("Password: ")
            password = await term.readline(echo=False)
            await term.write("\n")
            if password is None:
                return False
            if target == "root" and password == self.root_password:
                users.append("root")
            else:
                await term.write("su: Authentication failure\n")
        elif cmd == "ls":
            paths = [a for a in args if not a.startswith("-")] or ["."]
            for arg in paths:
                target_path = self._path(user, arg)
                if target_path.is_dir():
                    names = sorted(p.name for p in target_path.iterdir())
                    await term.write("  ".join(names) + ("\n" if names else ""))
                elif target_path.exists():
                    await term.write(arg + "\n")
                else:
                    await term.write(
                        f"ls: cannot access '{arg}': No such file or directory\n")
        elif cmd == "mkdir":
            for arg in (a for a in args if not a.startswith("-")):
                try:
                    self._path(user, arg).mkdir(parents="-p" in args, exist_ok="-p" in args)
                except OSError as exc:
                    await term.write(f"mkdir: cannot create directory '{arg}': {exc.strerror}\n")
        elif cmd == "chmod" and len(args) >= 2:
            with contextlib.suppress(OSError, ValueError):
                self._path(user, args[1]).chmod(int(args[0], 8))
        elif cmd == "which":
            for arg in args:
                if arg in ("EmsServerManager", EMS_PATH):
                    await term.write(EMS_PATH + "\n")
                else:
                    await term.write(f"which: no {arg} in (/usr/bin:/bin:/opt/acems/bin)\n")
        elif cmd in ("EmsServerManager", EMS_PATH):
            if user != "root":
                await term.write("EmsServerManager: this tool must be run as root\n")
            else:
                await run_ems_manager(term, self._on_import, self.menus, self.faults)
        else:
            await term.write(f"-bash: {cmd}: command not found\n")
        return True


def _is_rsa(issued: Issued) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(issued.key, rsa.RSAPrivateKey)

