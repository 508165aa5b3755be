"""A second OVOC emulation, written apart from the lab's, for the driver's tests.

Where the story is silent this appliance makes other choices than
:mod:`certfleet.lab.ovoc`, each a knob of :class:`Variant`: shell prompts and
banners, colours and clear-screen sequences, ``\\n`` or ``\\r\\n``, asyncssh's
line editor or a raw terminal, su's wording, menu layouts (numbering,
separators, labels, quit keys, prompts), pagers, a confirmation, one or two
password prompts, verdict wording, a silent web restart, an SFTP server
without the posix-rename extension. No ``whoami`` and no ``echo``: the driver
must not need them.

The import is done here too, independently: the PEM files under the story's
names are read from the staging folder, checked, packed into a PKCS#12 file,
and on success the loopback HTTPS server's certificate slot is swapped, so
that the driver's verification is a real TLS handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import asyncssh
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet.lab.ca import Issued
from certfleet.lab.tls import CertSlot, LabHTTPSServer

__all__ = ["AltOvoc", "Variant"]

CLEAR = "\x1b[H\x1b[2J"
STORY_SUCCESS = (
    "PKCS#12 file and JKS Keystore generated successfully",
    "Imported files and generated PKCS#12 with JKS Keystore files",
)


@dataclass(frozen=True)
class Variant:
    """One way an OVOC appliance could look where the story does not say."""

    name: str = "default"
    shell_prompt: str = "[acems@ovoc ~]$ "
    root_prompt: str = "[root@ovoc acems]# "
    banner: str = ""
    crlf: bool = True  # "\r\n" line ends; "\n" only when False (raw terminal only)
    colour: bool = False  # colour codes in prompts and menus, a window title in the prompt
    clear: bool = False  # clear the screen before each menu
    line_editor: bool = False  # asyncssh's line editor instead of a raw terminal
    enter_keys: str = "\r\n"  # raw terminal: the characters that end a typed line
    su_prompt: str = "Password: "
    su_failure: str = "su: Authentication failure"
    su_retry: bool = False  # a wrong password is asked again (twice) before su gives up
    su_forms: tuple[str, ...] = ()  # the only su command lines understood (all when empty)
    option: str = "{key:>3}. {label}"
    security: tuple[str, str] = ("4", "Security")
    certificates_key: str = "11"
    import_key: str = "3"
    choice_prompt: str = "Choose an option: "
    exit_option: tuple[str, str] = ("q", "Quit")
    back_option: tuple[str, str] = ("q", "Back")
    confirm_exit: bool = False
    start_pager: str | None = None  # a key press asked before the main menu
    menu_pager: str | None = None  # a pager inside the security menu
    pager_after: int = 5  # entries drawn before the pager (99: all, then the pager)
    confirm: str | None = None  # asked after "Press Enter", before the password
    continue_prompt: str = "Press Enter to continue"
    passwords: tuple[str, ...] = ("Enter password: ",)
    check_before_password: bool = False  # missing files refused before the password
    success: tuple[str, ...] = STORY_SUCCESS
    failure: tuple[str, ...] = ("Failed to generate SEM PKCS#12 file",)
    restart: tuple[str, ...] = ("Restarting OVOC services, please wait...",)
    restart_delay: float = 0.0  # silence after the restart lines
    exit_after_import: bool = False  # EmsServerManager ends after the verdict
    posix_rename: bool = True  # offer the posix-rename SFTP extension
    unknown_question: str | None = None  # asked once, before the password
    sftp_home_root: bool = False  # SFTP rooted in acems' home ("/" is /home/acems)
    setstat: bool = True  # the SFTP server can change modes
    show_back: bool = True  # draw the back entry of submenus (it works either way)
    silent_after_verdict: bool = False  # wait for a key after the verdict, with no prompt
    hangup_after_verdict: bool = False  # close the SSH session after the verdict
    start_in_security: bool = False  # EmsServerManager opens straight in the Security menu


@dataclass
class _Record:
    """What the appliance saw, for assertions."""

    imports: list[bool] = field(default_factory=list)
    passwords: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # every line typed in the menu
    commands: list[str] = field(default_factory=list)  # every shell command


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"OVOC"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Term:
    """The terminal of one session, raw or through asyncssh's line editor."""

    def __init__(self, process: asyncssh.SSHServerProcess[str], variant: Variant) -> None:
        self.process = process
        self.variant = variant
        self.buffer = ""

    def write(self, text: str) -> None:
        if self.variant.crlf and not self.variant.line_editor:
            text = text.replace("\n", "\r\n")
        self.process.stdout.write(text)

    async def _more(self) -> bool:
        try:
            data = await self.process.stdin.read(1024)
        except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived, asyncssh.SignalReceived):
            return True
        if not data:
            return False
        self.buffer += data
        return True

    async def readline(self, echo: bool = True) -> str | None:
        if self.variant.line_editor:
            self.process.channel.set_echo(echo)  # type: ignore[attr-defined]  # line editor
            try:
                while "\n" not in self.buffer:
                    if not await self._more():
                        return None
            finally:
                self.process.channel.set_echo(True)  # type: ignore[attr-defined]  # line editor
            line, _, self.buffer = self.buffer.partition("\n")
            return line
        while True:
            for index, char in enumerate(self.buffer):
                if char in self.variant.enter_keys:
                    line, rest = self.buffer[:index], self.buffer[index + 1:]
                    if char == "\r" and rest.startswith("\n"):
                        rest = rest[1:]
                    self.buffer = rest
                    self.write((line if echo else "") + "\n")
                    return line
            if not await self._more():
                return None

    async def key(self) -> bool:
        """One key press (a whole line with the line editor)."""
        if self.variant.line_editor:
            return await self.readline() is not None
        while not self.buffer:
            if not await self._more():
                return False
        self.buffer = self.buffer[1:]
        return True


class AltOvoc:
    """The second emulation on 127.0.0.1: SSH/SFTP, su, the menu, and an HTTPS port."""

    def __init__(self, variant: Variant, initial: Issued, *, acems_password: str = "acems-Alt1",
                 root_password: str = "root-Alt1") -> None:
        self.variant = variant
        self.initial = initial
        self.acems_password = acems_password
        self.root_password = root_password
        self.record = _Record()
        self.base = Path(tempfile.mkdtemp(prefix="certfleet-alt-ovoc-"))
        self.staging = self.base / "home" / "acems" / "server_certs"
        self.staging.mkdir(parents=True, mode=0o750)
        files = {"server.crt": initial.leaf_pem, "server.key": initial.key_pem("pkcs1")
                 if _is_rsa(initial) else initial.key_pem("sec1"), "root.crt": initial.root_pem}
        for n, cert in enumerate(initial.chain, 1):
            files[f"ca{n}.crt"] = initial.pem(cert)
        for name, data in files.items():
            (self.staging / name).write_bytes(data)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.slot = CertSlot(initial.leaf_pem, initial.key_pem("pkcs8"), initial.chain_pem)
        self.https = LabHTTPSServer(_Handler, self.slot)
        self.ssh_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="alt-ovoc")
        self._server: asyncssh.SSHAcceptor | None = None
        self._asked_unknown = False
        self._pending: tuple[bytes, bytes, bytes] = (b"", b"", b"")

    @property
    def fingerprint(self) -> str:
        return str(self.host_key.get_fingerprint("sha256"))

    def served(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.slot.cert_pem)

    def staged(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.staging.iterdir()) if p.is_file()}

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> AltOvoc:
        self.https.start()
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.ssh_port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        server = self._server
        if server is not None:
            async def shutdown() -> None:
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self.https.stop()
        self.slot.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> AltOvoc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> asyncssh.SSHAcceptor:
        appliance = self

        class Server(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                return username == "acems" and password == appliance.acems_password

        return await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[self.host_key],
            process_factory=self._session, sftp_factory=self._sftp,
            line_editor=self.variant.line_editor, encoding="utf-8", allow_scp=False,
        )

    # ---- SFTP ----------------------------------------------------------------------

    def _sftp(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        variant = self.variant

        class Sftp(asyncssh.SFTPServer):
            def map_path(self, path: bytes) -> bytes:
                if not path.startswith(b"/") and not variant.sftp_home_root:
                    path = b"/home/acems/" + path
                return super().map_path(path)

            def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
                if not variant.posix_rename:
                    raise asyncssh.SFTPOpUnsupported("posix-rename is not supported")
                super().posix_rename(oldpath, newpath)

            def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
                if not variant.setstat:
                    raise asyncssh.SFTPOpUnsupported("setstat is not supported")
                super().setstat(path, attrs)

            def rename(self, oldpath: bytes, newpath: bytes) -> None:
                # As OpenSSH's sftp-server: a plain rename never replaces a file.
                if Path(self.map_path(newpath).decode()).exists():
                    raise asyncssh.SFTPFailure("file exists")
                super().rename(oldpath, newpath)

        root = self.base / "home" / "acems" if variant.sftp_home_root else self.base
        return Sftp(chan, chroot=str(root).encode())

    # ---- shell ---------------------------------------------------------------------

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.variant.colour else text

    def _prompt(self, root: bool) -> str:
        """The shell prompt; "{n}" in it counts the commands (as bash's \\#)."""
        prompt = self.variant.root_prompt if root else self.variant.shell_prompt
        prompt = prompt.replace("{n}", str(len(self.record.commands) + 1))
        if not self.variant.colour:
            return prompt
        title = "\x1b]0;root@ovoc:~\x07" if root else "\x1b]0;acems@ovoc:~\x07"
        return title + self._paint(prompt.rstrip(), "1;31" if root else "1;32") + " "

    async def _session(self, process: asyncssh.SSHServerProcess[str]) -> None:
        term = _Term(process, self.variant)
        root = False
        try:
            if self.variant.banner:
                term.write(self.variant.banner)
                await asyncio.sleep(0.05)  # the prompt comes a moment after the banner
            while True:
                term.write(self._prompt(root))
                line = await term.readline()
                if line is None:
                    break
                self.record.commands.append(line)
                try:
                    argv = shlex.split(line)
                except ValueError:
                    argv = line.split()
                if not argv:
                    continue
                if argv[0] in ("exit", "logout"):
                    if root:
                        root = False
                        continue
                    break
                if argv[0] == "su" and self.variant.su_forms \
                        and line.strip() not in self.variant.su_forms:
                    term.write("su: user - root does not exist\n")
                elif argv[0] == "su":
                    target = next((a for a in argv[1:] if not a.startswith("-")), "root")
                    password: str | None = None
                    for _ in range(3 if self.variant.su_retry else 1):
                        term.write(self.variant.su_prompt)
                        password = await term.readline(echo=False)
                        if password is None or password == self.root_password:
                            break
                    if password is None:
                        break
                    if target == "root" and password == self.root_password:
                        root = True
                    else:
                        await asyncio.sleep(0.05)
                        term.write(self.variant.su_failure + "\n")
                elif argv[0] == "EmsServerManager" and root:
                    if not await _Menu(self, term).run():
                        break
                elif argv[0] == "EmsServerManager":
                    term.write("EmsServerManager: must be run as root\n")
                else:
                    term.write(f"bash: {argv[0]}: command not found\n")
            process.exit(0)
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, BrokenPipeError):
            return

    # ---- the import ------------------------------------------------------------------

    def missing(self) -> list[str]:
        return [n for n in ("server.crt", "server.key", "root.crt")
                if not (self.staging / n).is_file()]

    def do_import(self, password: str) -> bool:
        """Read the staged PEM files, build a PKCS#12 file; on success swap the served cert."""
        try:
            cert = x509.load_pem_x509_certificate((self.staging / "server.crt").read_bytes())
            key = serialization.load_pem_private_key((self.staging / "server.key").read_bytes(),
                                                     None)
            chain = []
            n = 1
            while (self.staging / f"ca{n}.crt").is_file():
                chain.append(x509.load_pem_x509_certificate(
                    (self.staging / f"ca{n}.crt").read_bytes()))
                n += 1
            x509.load_pem_x509_certificate((self.staging / "root.crt").read_bytes())
        except (OSError, ValueError, TypeError):
            return False
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            return False
        p12 = pkcs12.serialize_key_and_certificates(
            b"sem", key, cert, chain or None,  # type: ignore[arg-type]  # a PEM server key
            serialization.BestAvailableEncryption(password.encode()))
        (self.base / "sem.p12").write_bytes(p12)
        pem = serialization.Encoding.PEM
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self._pending = (cert.public_bytes(pem), key_pem, b"".join(c.public_bytes(pem)
                                                                   for c in chain))
        return True

    def swap(self) -> None:
        self.slot.set(*self._pending)


class _Menu:
    """EmsServerManager as this appliance draws it."""

    def __init__(self, appliance: AltOvoc, term: _Term) -> None:
        self.a = appliance
        self.v = appliance.variant
        self.term = term

    def _draw(self, title: str, options: Sequence[tuple[str, str]],
              back: tuple[str, str], pager_after: int | None = None) -> list[str]:
        """The menu's lines; split in two at ``pager_after`` entries."""
        head = (CLEAR if self.v.clear else "") + "\n" + self.a._paint(f"  {title}", "1") + "\n"
        shown = [*options, back] if self.v.show_back or title == "OVOC Server Manager" \
            else list(options)
        rows = [self.v.option.format(key=self.a._paint(k, "1;33") if self.v.colour else k,
                                     label=label) for k, label in shown]
        if pager_after is None:
            return [head + "\n".join(rows) + "\n"]
        return [head + "\n".join(rows[:pager_after]) + "\n", "\n".join(rows[pager_after:]) + "\n"]

    async def _choose(self, title: str, options: Sequence[tuple[str, str]],
                      back: tuple[str, str], pager_after: int | None = None) -> str | None:
        parts = self._draw(title, options, back, pager_after)
        for index, part in enumerate(parts):
            self.term.write(part)
            if index < len(parts) - 1:
                self.term.write(self.v.menu_pager or "")
                if not await self.term.key():
                    return None
                self.term.write("\r\x1b[K")
        self.term.write(self.a._paint(self.v.choice_prompt, "1;36"))
        line = await self.term.readline()
        if line is not None:
            self.a.record.answers.append(line)
        return None if line is None else line.strip()

    async def run(self) -> bool:
        """The menu until its exit; False when the session ended."""
        v = self.v
        self.term.write("\nOVOC Server Manager - One Voice Operations Center 8.2\n")
        if v.start_pager:
            self.term.write(v.start_pager)
            if not await self.term.key():
                return False
        if v.start_in_security:
            return await self._security() != "eof"
        main = [("1", "Application Maintenance"), ("2", "Network Configuration"),
                ("3", "Date & Time"), v.security, ("7", "Collect Logs")]
        while True:
            choice = await self._choose("OVOC Server Manager", main, v.exit_option)
            if choice is None:
                return False
            if choice.lower() == v.exit_option[0].lower():
                if v.confirm_exit:
                    self.term.write("Exit OVOC Server Manager? (y/n) ")
                    answer = await self.term.readline()
                    if answer is None:
                        return False
                    if answer.strip().lower() != "y":
                        continue
                return True
            if choice == v.security[0]:
                result = await self._security()
                if result != "back":
                    return result == "done"
            else:
                self.term.write(f"Invalid choice '{choice}'\n")

    async def _security(self) -> str:
        v = self.v
        options = [("1", "Add OVOC User (OS)"), ("2", "Change DB Password"), ("3", "SSH"),
                   ("5", "USB Storage"), ("6", "Network Options"),
                   ("10", "Server Certificate Status"),
                   (v.certificates_key, "Server Certificate Updates"),
                   ("12", "HTTPS Cipher Settings"), ("15", "Security Audit Log")]
        while True:
            choice = await self._choose("Security", options, v.back_option,
                                        v.pager_after if v.menu_pager else None)
            if choice is None:
                return "eof"
            if choice.lower() == v.back_option[0].lower():
                return "back"
            if choice == v.certificates_key:
                result = await self._certificates()
                if result != "back":
                    return result
            else:
                self.term.write(f"Invalid choice '{choice}'\n")

    async def _certificates(self) -> str:
        v = self.v
        options = [("1", "Generate Server Private Key and Certificate Signing Request (CSR)"),
                   ("2", "Import Server Certificates (signed from CSR)"),
                   (v.import_key, "Import Server Certificates from Certificate Authority (CA)"),
                   ("4", "Restore Default Server Certificates")]
        while True:
            choice = await self._choose("Server Certificates Update", options, v.back_option)
            if choice is None:
                return "eof"
            if choice.lower() == v.back_option[0].lower():
                return "back"
            if choice != v.import_key:
                self.term.write("Not available here.\n")
                continue
            result = await self._import()
            if result != "again":
                return result

    async def _import(self) -> str:
        """The import dialogue: "again" (back to the menu), "done" (exit) or "eof"."""
        v, term, a = self.v, self.term, self.a
        term.write("\nImport Server Certificates\n"
                   "Place server.crt, server.key, root.crt (and ca1.crt, ca2.crt...) in\n"
                   "/home/acems/server_certs before you continue.\n")
        term.write(v.continue_prompt)
        if await term.readline() is None:
            return "eof"
        if v.confirm:
            term.write(v.confirm)
            answer = await term.readline()
            if answer is None:
                return "eof"
            a.record.answers.append(answer)
            if answer.strip().lower() not in ("y", "yes"):
                term.write("Cancelled.\n")
                return "again"
        if v.unknown_question and not a._asked_unknown:
            a._asked_unknown = True
            term.write(v.unknown_question)
            if await term.readline() is None:
                return "eof"
        ok = not (v.check_before_password and a.missing())
        if ok:
            typed = []
            for prompt in v.passwords:
                term.write(prompt)
                password = await term.readline(echo=False)
                if password is None:
                    return "eof"
                typed.append(password)
            a.record.passwords.extend(typed)
            ok = len(set(typed)) == 1 and len(typed[0]) >= 6
            if ok:
                term.write("Generating SEM PKCS#12 file...\n")
                ok = await asyncio.get_running_loop().run_in_executor(None, a.do_import, typed[0])
        a.record.imports.append(ok)
        if not ok:
            term.write(self.a._paint("\n".join(v.failure), "1;31") + "\n")
        else:
            term.write("\n".join(v.success) + "\n")
            if v.restart:
                term.write("\n".join(v.restart) + "\n")
            await asyncio.sleep(v.restart_delay)
            a.swap()
            term.write("Done.\n")
        if v.hangup_after_verdict:
            self.term.process.channel.get_connection().close()
            return "eof"
        if v.exit_after_import:
            return "done"
        if v.silent_after_verdict:
            return "again" if await term.key() else "eof"
        term.write(v.continue_prompt)
        if not await term.key():
            return "eof"
        return "again"


def _is_rsa(issued: Issued) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(issued.key, rsa.RSAPrivateKey)

