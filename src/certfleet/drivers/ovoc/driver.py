"""The OVOC driver: stage the files over SFTP, ``su`` to root, walk EmsServerManager.

The job of the story, done by a program: the files of the ``ovoc`` profile
(``server.crt``, ``server.key``, ``root.crt``, ``ca1.crt``…) go into
``/home/acems/server_certs`` under temporary names and are renamed into
place; a PTY session as ``acems`` runs ``su -``, ``EmsServerManager``, and
picks Security → Server Certificate Updates → Import Server Certificates
from Certificate Authority (CA) by matching the labels on the screen (the
numbers are a fallback only), answers "Press Enter to continue" and the
keystore password prompt, and reads OVOC's verdict (:mod:`.ems`). A refusal
is explained from the staged files (:func:`~.staging.inspect_staged`); the
template in :mod:`certfleet.drivers.base` verifies the served certificate
and rolls back (re-stage the previous files, import again) when needed.
Passwords are scrubbed from the transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import (
    ConfigError,
    DeviceRefusedError,
    InputError,
    RollbackError,
)
from ...pki.model import Bundle, Finding
from ...pki.profiles import (
    KEYSTORE_PASSWORD_SAFE,
    OVOC_PROFILE,
    Artifact,
    Artifacts,
    OvocProfile,
    keystore_password_findings,
    render_target,
)
from ..base import Backup, Driver, EventCallback
from ..tlsprobe import Listener
from .config import (
    OvocProgress,
    SshLogin,
    StagingSettings,
    SuSettings,
    TerminalSettings,
    Timeouts,
    from_flat_options,
)
from .ems import EmsDialogue
from .menu import OvocMenu, answer_for, import_verdict, keystore_refused
from .ssh import open_connection, sftp_op, start_root_shell
from .staging import (
    MAX_STAGED_FILE_BYTES,
    MAX_STAGED_FILES,
    TMP_PREFIX,
    StagingReport,
    _finding,
    diagnosis_line,
    inspect_staged,
    profile_names,
    safe_staged_name,
)
from .terminal import Screen

if TYPE_CHECKING:
    import asyncssh

__all__ = ["OvocDriver"]

_TMP_PREFIX = TMP_PREFIX


class OvocDriver(Driver):
    """Deploys the ``ovoc`` file set to one OVOC appliance over SSH/SFTP.

    Settings come as small frozen objects (:mod:`.config`): ``login``
    (:class:`SshLogin`: port, user, password or client keys, host key pin or
    known_hosts file; neither refuses), ``su`` (:class:`SuSettings`: whom su
    becomes, its password, command and prompts), ``staging``
    (:class:`StagingSettings`: the folder and modes), ``timeouts``
    (:class:`Timeouts`) and ``terminal`` (:class:`TerminalSettings`). Besides:
    ``keystore_password`` (the answer to EmsServerManager's password prompt),
    ``listeners`` (the TLS ports to verify, default ``host:443``), ``profile``
    (the file names) and ``menu`` (:class:`OvocMenu`: labels, fallback numbers,
    prompts). The flat keywords of before (``ssh_port=``, ``user=``,
    ``password=``, ``su_user=``, ``su_password=``, ``staging_dir=``,
    ``prompt_timeout=``... see :data:`~.config.FLAT_OPTIONS`) are still
    accepted and override the objects' fields.

    ``progress`` (:class:`OvocProgress`) says how far the driver got on the
    device; the rollback decides from it.
    """

    kind = "ovoc"

    def __init__(
        self,
        name: str,
        host: str,
        *,
        login: SshLogin | None = None,
        su: SuSettings | None = None,
        staging: StagingSettings | None = None,
        timeouts: Timeouts | None = None,
        terminal: TerminalSettings | None = None,
        keystore_password: str | None = None,
        listeners: Sequence[Listener] | None = None,
        profile: OvocProfile = OVOC_PROFILE,
        menu: OvocMenu | None = None,
        on_event: EventCallback | None = None,
        **options: Any,
    ) -> None:
        settings = from_flat_options(
            {"login": login or SshLogin(), "su": su or SuSettings(),
             "staging": staging or StagingSettings(), "timeouts": timeouts or Timeouts(),
             "terminal": terminal or TerminalSettings()}, options)
        self.timeouts: Timeouts = settings["timeouts"]
        super().__init__(name, listeners if listeners is not None else [Listener(host, 443)],
                         on_event=on_event, verify_timeout=self.timeouts.verify)
        self.host = host
        self.login: SshLogin = settings["login"]
        self.su: SuSettings = settings["su"]
        self.staging: StagingSettings = settings["staging"]
        self.terminal: TerminalSettings = settings["terminal"]
        self.keystore_password = keystore_password
        self.staging_dir = self.staging.dir  # may move to the SFTP home (see _locate...)
        self.profile = profile
        self.menu = menu or OvocMenu()
        self.progress = OvocProgress.NEW
        self.last_diagnosis: str | None = None  # why OVOC refused the last import
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._screen: Screen | None = None
        self._ems: EmsDialogue | None = None
        self._root_prompt: str | None = None  # the root shell's prompt line, as seen
        self._transcripts: list[str] = []
        self._import_text = ""  # what the last import printed after the password

    @property
    def su_user(self) -> str:
        return self.su.user

    def _advance(self, state: OvocProgress) -> None:
        self.progress = max(self.progress, state)

    # ---- connection ------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        return [s for s in (self.login.password, self.su.password, self.keystore_password) if s]

    async def _open(self) -> asyncssh.SSHClientConnection:
        return await open_connection(self.host, self.login, self.timeouts, self.name)

    async def _op(self, what: str, coro: Any) -> Any:
        """Run one SFTP operation with a timeout, mapping failures to DeviceErrors."""
        return await sftp_op(what, coro, timeout=self.timeouts.prompt, device=self.name,
                             user=self.login.user, staging_dir=self.staging_dir)

    async def connect(self) -> None:
        """SSH in as ``user``, open SFTP, and become ``su_user`` (checked with whoami)."""
        problems = keystore_password_findings(self.keystore_password)
        if problems:  # refused even when preflight errors are overridden: nothing changed yet
            raise ConfigError(problems[0].message,
                              hint="set it with --keystore-password-env VAR; "
                              + (problems[0].hint or ""))
        if self.su.password is None:
            raise ConfigError(f"the password of {self.su.user!r} for su is missing",
                              hint="set it with --su-password-env VAR")
        await self._connect_all()

    async def _connect_all(self) -> None:
        await self._close_quietly()
        self._conn = await self._open()
        self._sftp = await self._op("starting SFTP", self._conn.start_sftp_client())
        await self._locate_staging_dir()
        await self._start_root_shell()


    async def _start_root_shell(self) -> None:
        assert self._conn is not None
        if self._screen is not None:
            self._transcripts.append(self._screen.text)
        self._screen, self._ems, self._root_prompt = None, None, None
        screen, prompt = await start_root_shell(
            self._conn, host=self.host, login=self.login, su=self.su, menu=self.menu,
            terminal=self.terminal, timeouts=self.timeouts, device=self.name,
            secrets=self._secrets())
        self._screen, self._root_prompt = screen, prompt
        self._ems = EmsDialogue(screen, self.menu, prompt, self.timeouts, self.name,
                                self.keystore_password)

    async def _close_quietly(self) -> None:
        if self._screen is not None:
            self._transcripts.append(self._screen.text)
            self._screen = None
            self._ems = None
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # closing must not raise
                self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            try:
                self._conn.close()
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            except Exception:  # closing must not raise
                pass
            self._conn = None

    async def close(self) -> None:
        screen = self._screen
        if screen is not None:
            try:
                screen.send("exit")
                screen.send("exit")
                await asyncio.sleep(0)
            except Exception:  # closing must not raise
                pass
        await self._close_quietly()

    def transcript(self) -> str | None:
        parts = [*self._transcripts]
        if self._screen is not None:
            parts.append(self._screen.text)
        text = "\n".join(p for p in parts if p)
        for secret in self._secrets():
            text = text.replace(secret, "********")
        return text or None

    # ---- staging ---------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return posixpath.join(self.staging_dir, name)

    async def list_staging(self) -> list[tuple[str, int]] | None:
        """(name, size) of the regular files staged now; None when the folder is missing.

        Names are as the device gives them (see :func:`~.staging.safe_staged_name`
        before one becomes a local path). More than :data:`~.staging.MAX_STAGED_FILES`
        entries is a DeviceRefusedError (bounded reads).
        """
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp
        try:
            entries = await self._op(f"listing {self.staging_dir!r}",
                                     sftp.readdir(self.staging_dir))
        except DeviceRefusedError as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                return None
            raise
        if len(entries) > MAX_STAGED_FILES + 2:
            raise DeviceRefusedError(
                f"{self.staging_dir!r} holds more than {MAX_STAGED_FILES} entries; certfleet "
                "reads no more", hint="clear out the staging folder on OVOC and rerun",
                device=self.name)
        files = []
        for entry in entries:
            mode = entry.attrs.permissions
            name = entry.filename if isinstance(entry.filename, str) \
                else entry.filename.decode("utf-8", "replace")
            if name in (".", "..") or (mode is not None and not stat.S_ISREG(mode)):
                continue
            files.append((name, int(entry.attrs.size or 0)))
        return sorted(files)

    async def download_staging(self) -> tuple[bool, dict[str, bytes]]:
        """(exists, files) of the staging folder, leaving out certfleet's temporary files.

        Only files whose name is safe as a local file name and that are at most
        :data:`~.staging.MAX_STAGED_FILE_BYTES` long are read; others are left
        on the device (install and restore never touch them) and said so in a
        ``names`` step. A file of the profile (``server.key``...) over the bound is
        a DeviceRefusedError: it could not be put back.
        """
        assert self._sftp is not None
        listing = await self.list_staging()
        if listing is None:
            return False, {}
        files: dict[str, bytes] = {}
        owned = set(profile_names(self.profile, [name for name, _ in listing]))
        for name, size in listing:
            if name.startswith(_TMP_PREFIX):
                continue
            if not safe_staged_name(name):
                self.emit("names", "skipped", f"not copied (not a safe file name): {name!r}")
                continue
            if size > MAX_STAGED_FILE_BYTES and name not in owned:
                self.emit("names", "skipped", f"not copied ({size} bytes): {name!r}")
                continue
            files[name] = await self._read(name)
        return True, files

    async def _read(self, name: str) -> bytes:
        """The bytes of staged file ``name``, at most MAX_STAGED_FILE_BYTES."""
        assert self._sftp is not None
        sftp = self._sftp
        limit = MAX_STAGED_FILE_BYTES

        async def read() -> bytes:
            async with sftp.open(self._path(name), "rb") as handle:
                data: bytes = await handle.read(limit + 1)
                return data

        result: bytes = await self._op(f"downloading {name!r}", read())
        if len(result) > limit:
            raise DeviceRefusedError(
                f"{name!r} in {self.staging_dir!r} is larger than {limit} bytes; certfleet "
                "reads no more (a certificate or key file is a few kilobytes)",
                hint=f"look at {name!r} on OVOC: remove or replace it, then rerun",
                device=self.name)
        return result

    async def _exists(self, path: str) -> bool:
        import asyncssh

        assert self._sftp is not None
        try:
            await self._op(f"checking {path!r}", self._sftp.stat(path))
        except DeviceRefusedError as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                return False
            raise
        return True

    async def _locate_staging_dir(self) -> None:
        """Follow an SFTP server rooted in the user's home folder.

        When neither the staging folder nor its parent exists as given
        (``/home/acems/server_certs``) but the SFTP session starts in a home
        folder of another name, the same place under that home is used.
        """
        assert self._sftp is not None
        home_prefix = f"/home/{self.login.user}/"
        if not self.staging_dir.startswith(home_prefix) or self.progress >= OvocProgress.LOCATED:
            return
        self._advance(OvocProgress.LOCATED)
        parent = posixpath.dirname(self.staging_dir)
        if await self._exists(self.staging_dir) or await self._exists(parent):
            return
        home = str(await self._op("finding the SFTP home folder", self._sftp.realpath(".")))
        if not home.startswith("/") or home.rstrip("/") + "/" == home_prefix:
            return
        candidate = posixpath.join(home, self.staging_dir[len(home_prefix):])
        if await self._exists(posixpath.dirname(candidate)):
            self.emit("locate", "ok", f"SFTP starts in {home!r}: staging in {candidate!r}")
            self.staging_dir = candidate

    async def _ensure_staging_dir(self) -> None:
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp
        try:
            attrs = await self._op(f"checking {self.staging_dir!r}", sftp.stat(self.staging_dir))
        except DeviceRefusedError as exc:
            if not isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                raise
            await self._op(f"creating {self.staging_dir!r}",
                           sftp.mkdir(self.staging_dir,
                                      asyncssh.SFTPAttrs(permissions=self.staging.dir_mode)))
            await self._chmod(self.staging_dir, self.staging.dir_mode)
            return
        if attrs.permissions is not None and attrs.permissions & 0o002:
            # The story's chmod 777 lets any local user swap the key: tighten it.
            await self._chmod(self.staging_dir, self.staging.dir_mode)

    async def _stage(self, files: Sequence[Artifact], remove_others: Sequence[str]) -> None:
        """Upload ``files`` under temporary names, rename them into place, remove others."""
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp
        await self._ensure_staging_dir()
        temps: list[tuple[str, str]] = []
        for artifact in files:
            tmp = self._path(f"{_TMP_PREFIX}{artifact.name}.tmp")
            await self._op(f"uploading {artifact.name!r}",
                           self._write(sftp, tmp, artifact.data))
            temps.append((tmp, self._path(artifact.name)))
        for tmp, final in temps:
            self._advance(OvocProgress.STAGED)
            try:
                await self._op(f"renaming into {final!r}", sftp.posix_rename(tmp, final))
            except DeviceRefusedError as exc:
                if not isinstance(exc.__cause__, asyncssh.SFTPOpUnsupported):
                    raise
                await self._remove(final)
                await self._op(f"renaming into {final!r}", sftp.rename(tmp, final))
        for name in remove_others:
            self._advance(OvocProgress.STAGED)
            await self._remove(self._path(name))

    async def _write(self, sftp: asyncssh.SFTPClient, path: str, data: bytes) -> None:
        import asyncssh

        attrs = asyncssh.SFTPAttrs(permissions=self.staging.file_mode)
        async with sftp.open(path, "wb", attrs) as handle:
            await handle.write(data)
        await self._chmod(path, self.staging.file_mode)

    async def _chmod(self, path: str, mode: int) -> None:
        """Set ``mode``; a server that cannot (no setstat) keeps the mode asked at creation."""
        import asyncssh

        assert self._sftp is not None
        try:
            await self._op(f"setting the mode of {path!r}", self._sftp.chmod(path, mode))
        except DeviceRefusedError as exc:
            if not isinstance(exc.__cause__, asyncssh.SFTPOpUnsupported):
                raise

    async def _remove(self, path: str) -> None:
        import asyncssh

        assert self._sftp is not None
        try:
            await self._op(f"removing {path!r}", self._sftp.remove(path))
        except DeviceRefusedError as exc:
            if not isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                raise

    async def _remove_temps(self) -> None:
        listing = await self.list_staging()
        for name, _ in listing or []:
            if name.startswith(_TMP_PREFIX) and not any(c in name for c in "/\\\0"):
                await self._remove(self._path(name))

    def render(self, bundle: Bundle) -> Artifacts:
        """The profile's files for ``bundle``; what can be made when forced past errors."""
        from cryptography.hazmat.primitives import serialization

        try:
            return render_target(bundle, self.profile)
        except InputError:
            # Only reached when preflight errors were overridden (--force): stage what
            # exists and let OVOC answer, as the user asked.
            pem = serialization.Encoding.PEM
            files = [Artifact(self.profile.cert_file, bundle.leaf.public_bytes(pem))]
            if bundle.root is not None:
                files.append(Artifact(self.profile.root_file, bundle.root.public_bytes(pem)))
            for n, cert in enumerate(bundle.chain, 1):
                files.append(Artifact(self.profile.intermediate_pattern.format(n=n),
                                      cert.public_bytes(pem)))
            return Artifacts(tuple(files))


    # ---- hooks -----------------------------------------------------------------------

    def preflight(self, bundle: Bundle) -> list[Finding]:
        """The profile's findings (key and root present, key type, keystore password)."""
        return [*self.profile.preflight(bundle),
                *self.profile.keystore_password_findings(self.keystore_password)]

    async def backup(self) -> Backup:
        """Download what is staged now (server.key included)."""
        exists, files = await self.download_staging()
        return Backup(
            device=self.name,
            kind=self.kind,
            files=files,
            meta={"staging_dir": self.staging_dir, "staging_existed": exists,
                  "host": self.host},
            has_private_key=self.profile.key_file in files,
        )

    async def install(self, bundle: Bundle) -> None:
        """Stage the rendered files and run the import. Raises DeviceRefusedError."""
        artifacts = self.render(bundle)
        listing = await self.list_staging() or []
        stale = [n for n in profile_names(self.profile, [n for n, _ in listing])
                 if n not in artifacts.names()]
        self.emit("stage", "start", ", ".join(artifacts.names()))
        await self._stage(artifacts.files, stale)
        self.emit("stage", "ok", f"{len(artifacts)} file(s) in {self.staging_dir}")
        self.emit("import", "start")
        ok, verdict = await self._run_import()
        if not ok:
            self._advance(OvocProgress.KEYSTORE_REFUSED
                          if keystore_refused(self.menu, self._import_text)
                          else OvocProgress.IMPORT_REFUSED)
            if self.progress == OvocProgress.KEYSTORE_REFUSED:
                raise DeviceRefusedError(
                    f"OVOC refused the import ({verdict}): it did not take the keystore "
                    "password; importing the previous files again under the same password "
                    "would be refused too, so the rollback stages them back without importing",
                    hint=f"choose a keystore password of {KEYSTORE_PASSWORD_SAFE} "
                    "that OVOC accepts, and rerun", device=self.name)
            if self._sftp is None:  # OVOC hung up after its verdict
                await self._connect_all()
            exists, staged = await self.download_staging()
            diagnosis = diagnosis_line(inspect_staged(staged, self.profile)) if exists else None
            self.last_diagnosis = diagnosis
            why = diagnosis or "OVOC gave no reason and the staged files look right"
            raise DeviceRefusedError(
                f"OVOC refused the import ({verdict}); {why}",
                hint="fix the files and rerun; `certfleet ovoc doctor` explains what is staged",
                device=self.name, diagnosis=diagnosis,
            )
        self._advance(OvocProgress.IMPORTED)
        self.emit("import", "ok", verdict)

    async def restore(self, backup: Backup) -> None:
        """Put the backed-up files back and import them again."""
        if self._conn is None or self._conn.is_closed() or self._screen is None \
                or self._screen_dirty():
            await self._connect_all()
        if self.progress < OvocProgress.STAGED:
            await self._remove_temps()  # nothing was replaced: only clean up
            return
        files = [Artifact(n, d, n == self.profile.key_file) for n, d in backup.files.items()]
        listing = await self.list_staging() or []
        stale = [n for n, _ in listing if n not in backup.files and not n.startswith(_TMP_PREFIX)]
        await self._stage(files, profile_names(self.profile, stale))
        await self._remove_temps()
        if self.progress == OvocProgress.KEYSTORE_REFUSED:
            # OVOC's previous keystore is untouched and an import would be refused again:
            # the handshake that follows tells whether the previous certificate is served.
            self.emit("rollback", "ok", "previous files staged back; not imported again "
                      "(OVOC refused the keystore password)")
            return
        if self.profile.cert_file not in backup.files or not backup.has_private_key:
            if self.progress == OvocProgress.IMPORTED:
                raise RollbackError(
                    "the previous certificate cannot be imported again: no previous files "
                    f"were staged in {self.staging_dir!r}",
                    hint="import the previous certificate by hand in EmsServerManager",
                    device=self.name,
                )
            return  # the import failed, so OVOC still has its previous keystore
        ok, verdict = await self._run_import()
        if not ok:
            raise RollbackError(f"OVOC refused to import the previous files again ({verdict})",
                                hint="check the files in the backup and import them by hand",
                                device=self.name)

    def assume_changed(self) -> None:
        """Treat the device as changed by this session, so that restore() puts a backup from
        an earlier run back: the staged files are replaced and imported again."""
        self._advance(OvocProgress.IMPORTED)

    def _screen_dirty(self) -> bool:
        """Whether the shell may be stuck inside a menu (after a timeout)."""
        return self._ems is not None and self._ems.in_menu

    # ---- EmsServerManager (see .ems) --------------------------------------------------

    async def _run_import(self) -> tuple[bool, str]:
        ems = self._ems
        assert ems is not None
        try:
            ok, verdict = await ems.run_import()
        finally:
            self._import_text = ems.import_text
            if ems.keystore_refused:
                self._advance(OvocProgress.KEYSTORE_REFUSED)
        if ems.hung_up:
            await self._close_quietly()  # reopened when needed (restore)
        return ok, verdict

    def _classify(self, window: str, *, loose_menu: bool = False,
                  menu_window: str | None = None) -> tuple[str, str] | None:
        """What a quiet screen asks (see :func:`~.terminal.classify`)."""
        from .terminal import classify

        return classify(window, self.menu, self._root_prompt, loose_menu=loose_menu,
                        menu_window=menu_window)

    def _answer(self, kind: str, line: str) -> str:
        return answer_for(self.menu, kind, line)

    def _verdict(self, output: str, *, known_only: bool = False) -> tuple[bool, str]:
        return import_verdict(self.menu, output, known_only=known_only)

    # ---- doctor ------------------------------------------------------------------------

    async def inspect(self, hosts: Sequence[str] = ()) -> StagingReport:
        """Read-only: list and download the staging folder and say what OVOC would do."""
        if self._conn is None:
            self._conn = await self._open()
            self._sftp = await self._op("starting SFTP", self._conn.start_sftp_client())
            await self._locate_staging_dir()
        exists, files = await self.download_staging()
        listing = await self.list_staging() or []
        report = StagingReport(self.staging_dir, exists, listing)
        if not exists:
            report.findings = [_finding(
                "OVOC_STAGING_MISSING", f"{self.staging_dir} does not exist",
                "certfleet ovoc deploy creates it with safe permissions", self.staging_dir)]
        else:
            report.findings = inspect_staged(files, self.profile, hosts)
        return report

