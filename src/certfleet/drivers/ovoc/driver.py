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
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import (
    CertfleetError,
    ConfigError,
    DeviceConnectionError,
    DeviceError,
    DeviceRefusedError,
    DeviceTimeoutError,
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
from ..base import Backup, Driver, EventCallback, Rehearsal
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
from .sftp import SftpStaging
from .ssh import ShellSettings, open_connection, sftp_op, start_root_shell
from .staging import (
    TMP_PREFIX,
    StagingReport,
    _finding,
    diagnosis_line,
    inspect_staged,
    profile_names,
)
from .terminal import Screen

if TYPE_CHECKING:
    import asyncssh

    from .probe import ProbeReport

__all__ = ["OvocDriver", "OvocSettings"]

_TMP_PREFIX = TMP_PREFIX


@dataclass(frozen=True)
class OvocSettings:
    """What an :class:`OvocDriver` is built with besides its name and host (see the
    driver's docstring); None takes the default of each settings object."""

    login: SshLogin | None = None
    su: SuSettings | None = None
    staging: StagingSettings | None = None
    timeouts: Timeouts | None = None
    terminal: TerminalSettings | None = None
    keystore_password: str | None = field(default=None, repr=False)
    listeners: Sequence[Listener] | None = None
    profile: OvocProfile = OVOC_PROFILE
    menu: OvocMenu | None = None
    on_event: EventCallback | None = None


class OvocDriver(Driver, SftpStaging):
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

    def __init__(self, name: str, host: str, settings: OvocSettings | None = None,
                 **options: Any) -> None:
        """``settings``, or its fields as keywords, besides the flat options (``user``,
        ``password``, ``ssh_port``...: see :data:`~.config.FLAT_OPTIONS`)."""
        fields = {f.name for f in dataclasses.fields(OvocSettings)}
        given = {k: options.pop(k) for k in list(options) if k in fields}
        if settings is None:
            settings = OvocSettings(**given)
        elif given:
            raise TypeError("OvocDriver takes settings or their fields as keywords, not both")
        self._init_settings(name, host, settings, options)

    def _init_settings(self, name: str, host: str, given: OvocSettings,
                       options: dict[str, Any]) -> None:
        settings = from_flat_options(
            {"login": given.login or SshLogin(), "su": given.su or SuSettings(),
             "staging": given.staging or StagingSettings(),
             "timeouts": given.timeouts or Timeouts(),
             "terminal": given.terminal or TerminalSettings()}, options)
        listeners, keystore_password = given.listeners, given.keystore_password
        profile, menu, on_event = given.profile, given.menu, given.on_event
        self.timeouts: Timeouts = settings["timeouts"]
        super().__init__(name, listeners if listeners is not None else [Listener(host, 443)],
                         on_event=on_event, verify_timeout=self.timeouts.verify)
        self.host = host
        self.login: SshLogin = settings["login"]
        self.su: SuSettings = settings["su"]
        self.staging: StagingSettings = settings["staging"]
        self.terminal: TerminalSettings = settings["terminal"]
        self.keystore_password = keystore_password
        # The inventory says ``prompt`` and it was not asked (a plan): see deferred_findings.
        self.keystore_password_deferred = False
        self.staging_dir = self.staging.dir  # may move to the SFTP home (see _locate...)
        self.profile = profile
        self.menu = menu or OvocMenu()
        self.progress = OvocProgress.NEW
        self.last_diagnosis: str | None = None  # why OVOC refused the last import
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._session_stale = False  # an operation was cut short: reconnect before reuse
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
        try:
            return await sftp_op(what, coro, timeout=self.timeouts.prompt, device=self.name,
                                 user=self.login.user, staging_dir=self.staging_dir)
        except (asyncio.CancelledError, DeviceTimeoutError):
            # Cut short (Ctrl-C, SIGTERM, a timeout): the session may still be busy with the
            # operation, so the rollback opens a new one (see _restore).
            self._session_stale = True
            raise

    async def connect(self) -> None:
        """SSH in as ``user``, open SFTP, and become ``su_user`` (checked with whoami)."""
        problems = keystore_password_findings(self.keystore_password)
        if problems:  # refused even when preflight errors are overridden: nothing changed yet
            raise ConfigError(problems[0].message,
                              hint="set it with --keystore-password-env VAR (inventory: "
                              "keystore_password); "
                              + (problems[0].hint or ""))
        if self.su.password is None:
            raise ConfigError(f"the password of {self.su.user!r} for su is missing",
                              hint="set it with --su-password-env VAR (inventory: "
                              "root_password)")
        await self._connect_all()

    async def _connect_all(self) -> None:
        await self._close_quietly()
        self._session_stale = False
        self._conn = await self._open()
        self._sftp = await self._op("starting SFTP", self._conn.start_sftp_client())
        await self._locate_staging_dir()
        await self._start_root_shell()


    async def _start_root_shell(self) -> None:
        assert self._conn is not None
        if self._screen is not None:
            self._transcripts.append(self._screen.text)
        self._screen, self._ems, self._root_prompt = None, None, None
        screen, prompt = await start_root_shell(self._conn, ShellSettings(
            self.host, self.login, self.su, self.menu, self.terminal, self.timeouts,
            self.name, tuple(self._secrets())))
        self._screen, self._root_prompt = screen, prompt
        self._ems = EmsDialogue(screen, self.menu, prompt, self.timeouts, self.name,
                                self.keystore_password)

    async def _close_quietly(self) -> None:
        from .ssh import close_connection

        screen, sftp, conn = self._screen, self._sftp, self._conn
        if screen is not None:
            self._transcripts.append(screen.text)
        self._screen, self._ems, self._sftp, self._conn = None, None, None, None
        if conn is not None:
            await close_connection(conn, sftp=sftp,
                                   process=screen.process if screen is not None else None)
        elif sftp is not None:
            with contextlib.suppress(Exception):  # closing must not raise
                sftp.exit()

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

    def render(self, bundle: Bundle) -> Artifacts:
        """The profile's files for ``bundle``; what can be made when forced past errors."""
        return self._render(bundle)[0]

    def _render(self, bundle: Bundle) -> tuple[Artifacts, bool]:
        """(files, complete). An incomplete bundle is only reached when preflight errors
        were overridden: every file the bundle can make is staged (the key included) and
        OVOC answers, as the user asked."""
        try:
            return render_target(bundle, self.profile), True
        except InputError:
            return self.profile.render_available(bundle), False

    # ---- hooks -----------------------------------------------------------------------

    def preflight(self, bundle: Bundle) -> list[Finding]:
        """The profile's findings (key and root present, key type, keystore password)."""
        return [*self.profile.preflight(bundle),
                *self.profile.keystore_password_findings(self.keystore_password)]

    def deferred_findings(self) -> frozenset[str]:
        """The keystore password's check waits for the run that asks for it."""
        if self.keystore_password_deferred and not self.keystore_password:
            return frozenset({"OVOC_KEYSTORE_PASSWORD"})
        return frozenset()

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
        """Stage the rendered files and run the import. Raises DeviceRefusedError.

        Any other exception, a cancellation (``asyncio.CancelledError``) or Ctrl-C
        (``KeyboardInterrupt``) is raised as a DeviceError (see :func:`_as_error`), so
        that the template's rollback runs: a device is never left half-changed because
        the error was of an unexpected kind.
        """
        try:
            await self._install(bundle)
        except CertfleetError:
            raise
        except (Exception, asyncio.CancelledError, KeyboardInterrupt) as exc:
            raise _as_error(exc, "the install", self.name) from exc

    async def _install(self, bundle: Bundle) -> None:
        artifacts, complete = self._render(bundle)
        listing = await self.list_staging() or []
        stale = [n for n in profile_names(self.profile, [n for n, _ in listing])
                 if n not in artifacts.names()]
        kept: list[str] = []
        if not complete:  # forced: remove nothing the bundle cannot replace
            stale, kept = [], stale
        self.emit("stage", "start", ", ".join(artifacts.names()))
        await self._stage(artifacts.files, stale)
        self.emit("stage", "ok", f"{len(artifacts)} file(s) in {self.staging_dir}"
                  + (f"; kept {', '.join(kept)} (the bundle has no replacement)"
                     if kept else ""))
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
                    hint="check the keystore password OVOC expects (--keystore-password-env; "
                    "inventory: keystore_password) and rerun (safe "
                    f"characters: {KEYSTORE_PASSWORD_SAFE})", device=self.name)
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
        await asyncio.sleep(0)  # a cancellation asked for during the install is answered here

    async def restore(self, backup: Backup) -> None:
        """Put the backed-up files back and import them again. Raises RollbackError, also
        for any other exception, a cancellation or Ctrl-C during the rollback."""
        try:
            await self._restore(backup)
        except CertfleetError:
            raise
        except (Exception, asyncio.CancelledError, KeyboardInterrupt) as exc:
            cause = _as_error(exc, "the rollback", self.name)
            raise RollbackError(cause.message, hint="the previous files are in the backup; "
                                "stage them and import them by hand", device=self.name
                                ) from exc

    async def _restore(self, backup: Backup) -> None:
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
        """Whether the session may be stuck: inside a menu, or on an operation cut short."""
        return self._session_stale or (self._ems is not None and self._ems.in_menu)

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

    # ---- rehearsal ---------------------------------------------------------------------

    async def probe(self, hosts: Sequence[str] = ()) -> ProbeReport:
        """Everything a deploy does up to the first change, then back out (see
        :mod:`.probe`). Never raises a CertfleetError; closes the session."""
        from .probe import probe_ovoc

        return await probe_ovoc(self, tuple(hosts))

    async def rehearsal(self, hosts: Sequence[str], *,
                        allow_no_rollback: bool = False) -> Rehearsal:
        """:meth:`probe`, in the template's terms."""
        report = await self.probe(hosts=hosts)
        reason = str(report.reason)
        for prefix in ("ready: ", "not ready: "):
            reason = reason.removeprefix(prefix)
        checks = [c.to_dict() for c in report.checks]
        if report.labels:
            checks.append({"name": "labels", "ok": report.ready, "detail": dict(report.labels),
                           "fix": None})
        return Rehearsal(bool(report.ready), reason, report.fix, checks,
                         transcript=report.transcript)

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


def _as_error(exc: BaseException, during: str, device: str) -> CertfleetError:
    """A DeviceError saying what ``exc`` (not a CertfleetError) means for the deploy.

    A cancellation is taken back from the current task (it was answered: the
    rollback runs instead), so that later timeouts of the rollback still work.
    """
    import asyncssh

    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        task = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
            task.uncancel()
        return DeviceError(f"interrupted during {during} (cancelled or Ctrl-C)",
                           hint="rerun the deploy when ready", device=device)
    if isinstance(exc, (OSError, asyncssh.Error)):
        return DeviceConnectionError(f"the connection failed during {during}: "
                                     f"{type(exc).__name__}: {exc}",
                                     hint="check the device and retry", device=device)
    return DeviceError(f"unexpected {type(exc).__name__} during {during}: {exc}",
                       hint="an answer certfleet did not expect: keep the session transcript "
                       "and report it",
                       device=device)
