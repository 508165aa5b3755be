"""The staging folder over SFTP: list, read back (bounded), upload and rename into place.

A mixin of :class:`~.driver.OvocDriver`: files go up under temporary names
(``.certfleet-NAME.tmp``) and are renamed over the staged ones, so OVOC never
sees half a file; a folder left world-writable is tightened. Names read from
the device become local names only through :func:`~.staging.safe_staged_name`.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from ...errors import DeviceRefusedError
from ...pki.profiles import Artifact, OvocProfile
from ..base import BACKUP_MANIFEST
from .config import OvocProgress, SshLogin, StagingSettings
from .staging import (
    MAX_STAGED_FILE_BYTES,
    MAX_STAGED_FILES,
    TMP_PREFIX,
    profile_names,
    safe_staged_name,
)

if TYPE_CHECKING:
    import asyncssh

T = TypeVar("T")


__all__ = ["SftpStaging"]

_TMP_PREFIX = TMP_PREFIX


class SftpStaging:
    """The staging-folder operations of the OVOC driver (see the module docstring)."""

    name: str
    login: SshLogin
    staging: StagingSettings
    staging_dir: str
    profile: OvocProfile
    progress: OvocProgress
    _sftp: asyncssh.SFTPClient | None
    _session_stale: bool

    def emit(self, step: str, status: Literal["start", "ok", "failed", "skipped"],
             detail: str = "") -> None:
        raise NotImplementedError  # Driver.emit

    def _advance(self, state: OvocProgress) -> None:
        raise NotImplementedError

    async def _op(self, what: str, coro: Awaitable[T]) -> T:
        raise NotImplementedError

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
            if name == BACKUP_MANIFEST and name not in owned:
                # Left as it is (certfleet never changes a file it does not stage), and
                # out of the backup, whose manifest has this name.
                self.emit("names", "skipped", f"not copied (a backup manifest's name): {name!r}")
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
        # One write request (block_size=0: the files are small), so that a write cut
        # short leaves no background task behind.
        handle = await sftp.open(path, "wb", attrs, block_size=0)
        try:
            await handle.write(data)
        except BaseException:
            # Not closed here: a session stuck on the write would hold the close too.
            # It is dropped instead, and the rollback opens a new one (see _restore).
            self._session_stale = True
            raise
        await handle.close()
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
