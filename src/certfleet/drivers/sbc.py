"""Mediant SBC driver: TLS contexts over the documented REST API (``/api/v1``).

One run, per device: ``GET /status`` → backup (INI, and each target
context's certificate and trusted roots) → per context: private key (PKCS#1
PEM), certificate, trusted roots (added one by one, skipping those present)
→ ``GET privateKey`` must say valid → ``saveConfiguration`` → handshakes on
every listener given → rollback on failure.

Trust in the device: a CA bundle, or a pinned SHA-256 of its management
certificate. Either is enforced inside every TLS handshake the driver makes,
before a single request byte is written (:mod:`certfleet.drivers.pinning`):
a connection whose certificate fails is closed unused. When a context that
serves the management interface is changed, the driver accepts the
certificate it just installed from then on, by adding its fingerprint to the
accepted ones (:attr:`SbcDriver.accepted_sha256`), never by turning
verification off.

Authentication: Basic, as documented; a device that answers 401 with a
``WWW-Authenticate: Digest`` challenge gets one retry with Digest, which is
then kept for the session (:attr:`SbcDriver.auth_scheme`).

Rollback needs the previous private key, which an SBC never returns: it is
possible only when the caller gives it (``previous_keys``: from an earlier
certfleet deploy, or ``--previous-key``). Without it :meth:`SbcDriver.can_restore`
is False and the deploy template refuses unless ``allow_no_rollback``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from cryptography import x509

from ..errors import (
    ConfigError,
    DeviceConnectionError,
    DeviceRefusedError,
    DeviceTimeoutError,
    RollbackError,
    VerificationError,
)
from ..pki.keygen import profile_key_pem
from ..pki.model import Bundle, Finding, PrivateKey, cert_sha256, spki_sha256
from ..pki.profiles import SbcProfile, render_target
from .base import Backup, DeployOutcome, Driver, EventCallback, Rehearsal, wait_for_previous
from .sbc_model import (
    NO_ROLLBACK_HINT,
    SbcContext,
    _certificates,
    _key_valid,
    _leaf,
    _load_key_pem,
    _pem,
    normalize_sha256,
    sha256_of,
    tls_contexts_in_ini,
)
from .sbc_rest import (
    API_PREFIX,
    MAX_BODY_BYTES,
    RELAXED_X509_HINT,
    RestSettings,
    SbcRest,
    _json,
)
from .tlsprobe import Listener, ProbeResult

if TYPE_CHECKING:
    from .sbc_rehearsal import Readiness

__all__ = [
    "API_PREFIX",
    "MAX_BODY_BYTES",
    "NO_ROLLBACK_HINT",
    "RELAXED_X509_HINT",
    "SbcContext",
    "SbcDriver",
    "SbcSettings",
    "normalize_sha256",
    "tls_contexts_in_ini",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SbcSettings:
    """Everything an :class:`SbcDriver` is built with besides its name and URL.

    The fields are those of the driver's docstring; ``rest()`` gives the part
    the REST session takes.
    """

    password: str = field(repr=False)
    contexts: Sequence[int] = (0,)
    user: str = "Admin"
    listeners: Sequence[Listener] = ()
    ca_bundle: bytes | None = None
    pin_sha256: str | None = None
    insecure: bool = False
    profile: SbcProfile | None = None
    previous_keys: Sequence[PrivateKey] = ()
    previous_key_pem: bytes | None = field(default=None, repr=False)
    replace_trusted_roots: bool = False
    timeout: float = 30.0
    busy_retries: int = 6
    busy_delay: float = 0.5
    on_event: EventCallback | None = None
    verify_timeout: float = 600.0
    x509_strict: bool | None = None

    def rest(self) -> RestSettings:
        return RestSettings(self.password, self.user, self.ca_bundle, self.pin_sha256,
                            self.insecure, self.x509_strict, self.timeout, self.busy_retries,
                            self.busy_delay)


class SbcOptions(TypedDict, total=False):
    """:class:`SbcSettings` as keyword arguments (``password`` is needed)."""

    password: str
    contexts: Sequence[int]
    user: str
    listeners: Sequence[Listener]
    ca_bundle: bytes | None
    pin_sha256: str | None
    insecure: bool
    profile: SbcProfile | None
    previous_keys: Sequence[PrivateKey]
    previous_key_pem: bytes | None
    replace_trusted_roots: bool
    timeout: float
    busy_retries: int
    busy_delay: float
    on_event: EventCallback | None
    verify_timeout: float
    x509_strict: bool | None


class SbcDriver(SbcRest, Driver):
    """Install a certificate into TLS contexts of one Mediant SBC over REST.

    ``url``: ``https://HOST[:PORT]`` of the management interface. ``password``:
    the REST (Administrator) password of ``user``. ``contexts``: the TLS
    context indexes to change (several in one run). ``listeners``: TLS
    endpoints whose handshakes must show the new certificate (management
    HTTPS, SIP-TLS...). Device trust: ``ca_bundle`` (PEM bytes), or
    ``pin_sha256`` (the management certificate's SHA-256), or ``insecure``
    (no check at all; for labs only); none of them → the system's trust store.
    ``x509_strict``: strict RFC 5280 checks (``VERIFY_X509_STRICT``) of a
    certificate verified by CA: None keeps this Python's default (on from
    3.13), False clears that flag only, True sets it.
    ``profile``: which files go where (:class:`~certfleet.pki.profiles.SbcProfile`).
    ``previous_keys``: private keys that may belong to the certificates now
    installed (matched by public key): with one for every context, a failed
    deploy is rolled back. ``replace_trusted_roots``: replace each context's
    trusted root store instead of adding what is missing. ``timeout``: seconds
    per request; ``busy_retries`` / ``busy_delay``: how often and how long
    (doubling) to retry a 409 answer.
    """

    kind = "sbc"

    def __init__(self, name: str, url: str, settings: SbcSettings | None = None,
                 **options: Unpack[SbcOptions]) -> None:
        """``settings``, or the same as keyword ``options`` (see :class:`SbcSettings`)."""
        if settings is None:
            settings = SbcSettings(**options)
        elif options:
            raise TypeError("SbcDriver takes settings or keyword options, not both")
        contexts = settings.contexts
        super().__init__(name, settings.listeners, on_event=settings.on_event,
                         verify_timeout=settings.verify_timeout)
        if not contexts:
            raise ConfigError("no TLS context given",
                              hint="pass --context N (inventory: tls_contexts = [N]; 0 is the "
                              "default)")
        bad = [c for c in contexts if not isinstance(c, int) or c < 0]
        if bad:
            raise ConfigError(f"TLS context {bad[0]!r} is not a number >= 0",
                              hint="pass --context N (inventory: tls_contexts = [N]; 0 is "
                              "the default)")
        self._init_rest(url, settings.rest())
        self.contexts = list(dict.fromkeys(contexts))
        self.profile = settings.profile or SbcProfile()
        keys = list(settings.previous_keys)
        if settings.previous_key_pem is not None:
            keys.append(_load_key_pem(settings.previous_key_pem))
        self.previous_keys = keys
        self.replace_trusted_roots = settings.replace_trusted_roots
        self._before: dict[int, SbcContext] = {}
        self._changed_roots: set[int] = set()
        self._new_sha256: str | None = None
        self._served_before: dict[Listener, str | None] = {}
        self._restoring = False
        # Whether a changing request may have changed the device: any PUT/POST
        # except one answered 4xx (a 4xx is a refusal; a 5xx or a lost answer
        # leaves it unknown, so it counts).
        self._changed = False
        if settings.insecure:
            log.warning("%s: TLS verification of %s is OFF (--insecure)", name, self.url)

    async def rehearse(self, *, allow_no_rollback: bool = False) -> Readiness:
        """Everything a deploy does up to the first change, then close: GET requests
        only. See :mod:`certfleet.drivers.sbc_rehearsal`."""
        from .sbc_rehearsal import rehearse

        return await rehearse(self, allow_no_rollback=allow_no_rollback)

    async def rehearsal(self, hosts: Sequence[str], *,
                        allow_no_rollback: bool = False) -> Rehearsal:
        """:meth:`rehearse`, in the template's terms."""
        readiness = await self.rehearse(allow_no_rollback=allow_no_rollback)
        checks = [c.to_dict() for c in readiness.checks]
        if readiness.ready:
            notes = [c.detail for c in readiness.checks if not c.ok]
            reason = "every check passed" + (f"; note: {'; '.join(notes)}" if notes else "")
            return Rehearsal(True, reason, None, checks)
        failed = list(readiness.reasons)
        reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        fix = "; ".join(c.fix for c in failed if c.fix) or None
        return Rehearsal(False, reason, fix, checks)

    def rollback_keys(self) -> Sequence[PrivateKey]:
        """The stored keys of the certificate and ``--previous-key``: an SBC never
        returns its own."""
        return self.previous_keys

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SbcDriver]:
        """``async with driver.session():`` connect, then close whatever happens."""
        try:
            await self.connect()
            yield self
        finally:
            await self.close()


    async def read_ini(self) -> bytes:
        """The INI file; b"" when the device answers 404 (the INI is a safety copy and a
        list of contexts, neither is needed to change a context)."""
        return await self._get_optional("/files/ini", what="reading the INI file")

    async def list_contexts(self) -> dict[int, str]:
        """The TLS contexts of the device (from the INI's ``TLSContexts`` table)."""
        return tls_contexts_in_ini((await self.read_ini()).decode("utf-8", "replace"))

    async def read_context(self, index: int, name: str | None = None) -> SbcContext:
        """Certificate, trusted roots and key state of context ``index``."""
        where = f"/files/tls/{index}"
        # An SBC may answer 404 for a key, certificate or trusted root store not set
        # yet; 404 for both key and certificate of a context the INI does not name
        # (``name`` None) means the context does not exist.
        key_answer = await self._send("GET", f"{where}/privateKey", missing_ok=True,
                                      what=f"reading context {index}'s key state")
        key = _json(key_answer) if key_answer is not None else None
        cert_answer = await self._send("GET", f"{where}/certificate", missing_ok=True,
                                       what=f"reading context {index}'s certificate")
        if key_answer is None and cert_answer is None and name is None:
            raise DeviceRefusedError(
                f"reading context {index}: GET {API_PREFIX}{where}/privateKey and "
                f"/certificate on {self.name} answered 404: no TLS context {index}",
                hint="check --context (inventory: tls_contexts): certfleet sbc status lists "
                "the TLS contexts of the device",
                device=self.name,
                status=404,
            )
        cert_pem = cert_answer.content if cert_answer is not None else b""
        roots_pem = await self._get_optional(f"{where}/trustedRoot",
                                             what=f"reading context {index}'s trusted roots")
        certs = _certificates(cert_pem)
        key_info = key if isinstance(key, dict) else {}
        size = key_info.get("size")
        if isinstance(size, str) and size.strip().isdigit():
            size = int(size)
        return SbcContext(
            index=index,
            name=name,
            certificate=_leaf(certs),
            trusted_roots=tuple(_certificates(roots_pem)),
            key_valid=_key_valid(key),
            key_size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        )

    async def read_certificate(self, index: int) -> x509.Certificate | None:
        """The certificate context ``index`` holds (one request), None when it has none."""
        pem = await self._get_optional(f"/files/tls/{index}/certificate",
                                       what=f"reading context {index}'s certificate")
        return _leaf(_certificates(pem))

    async def add_trusted_root(self, index: int, cert: x509.Certificate) -> None:
        """``PUT trustedRoot/incremental``: add ``cert`` to context ``index``'s store."""
        label = cert.subject.rfc4514_string()
        await self._request("PUT", f"/files/tls/{index}/trustedRoot/incremental",
                            what=f"adding trusted root {label!r} to context {index}",
                            upload=_pem(cert))

    async def save_configuration(self) -> None:
        await self._request("POST", "/actions/saveConfiguration", what="saving the configuration")

    def serves_management(self, context: SbcContext) -> bool:
        """Whether ``context`` holds the certificate management HTTPS presents."""
        return context.sha256 is not None and context.sha256 == self.management_sha256

    # ---- hooks -------------------------------------------------------------------------

    def preflight(self, bundle: Bundle) -> list[Finding]:
        return self.profile.preflight(bundle)

    def _previous_key_for(self, cert: x509.Certificate | None) -> PrivateKey | None:
        if cert is None:
            return None
        wanted = spki_sha256(cert)
        return next((k for k in self.previous_keys if spki_sha256(k) == wanted), None)

    async def backup(self) -> Backup:
        """INI file, and each target context's certificate, trusted roots (and known key)."""
        backup = Backup(self.name, self.kind)
        ini = await self.read_ini()
        if ini:
            backup.files["config.ini"] = ini
        else:
            log.warning("%s: the SBC gave no INI file: the backup holds the contexts only",
                        self.name)
        names = tls_contexts_in_ini(ini.decode("utf-8", "replace"))
        contexts_meta: dict[str, Any] = {}
        all_keys = True
        for index in self.contexts:
            try:
                ctx = await self.read_context(index, names.get(index))
            except DeviceRefusedError as exc:
                # The INI's list is a hint only (it may not parse): the device decides.
                if getattr(exc, "status", None) != 404 or not names or index in names:
                    raise
                raise DeviceRefusedError(
                    f"TLS context {index} does not exist on {self.name} "
                    f"(it has {', '.join(str(n) for n in sorted(names))})",
                    hint="check --context (inventory: tls_contexts): certfleet sbc status "
                    "lists the TLS contexts",
                    device=self.name,
                    status=404,
                ) from exc
            self._before[index] = ctx
            if ctx.certificate is not None:
                backup.files[f"tls{index}-certificate.pem"] = _pem(ctx.certificate)
            backup.files[f"tls{index}-trusted_roots.pem"] = b"".join(
                _pem(c) for c in ctx.trusted_roots)
            key = self._previous_key_for(ctx.certificate)
            if key is not None:
                backup.files[f"tls{index}-private_key.pem"] = profile_key_pem(
                    key, self.profile.key_format)
            else:
                all_keys = False
            contexts_meta[str(index)] = {
                **ctx.to_dict(),
                "serves_management": self.serves_management(ctx),
                "previous_key_known": key is not None,
            }
        backup.has_private_key = all_keys
        backup.meta = {
            "url": self.url,
            "management_sha256": self.management_sha256,
            "status": {k: self.status.get(k) for k in
                       ("productType", "versionID", "highAvailability", "serialNumber")},
            "contexts": contexts_meta,
            "tls_contexts": {str(k): v for k, v in names.items()},
        }
        return backup

    def _no_rollback_reasons(self) -> str:
        """Per context, why the previous state cannot be put back (one line)."""
        reasons = []
        for index in self.contexts:
            ctx = self._before.get(index)
            if ctx is None:
                continue
            if ctx.certificate is None:
                reasons.append(f"context {index} has no certificate yet (nothing to go back to)")
            elif self._previous_key_for(ctx.certificate) is None:
                reasons.append(f"context {index}: the key of its certificate "
                               f"{(ctx.sha256 or '')[:16]}… is not known")
        return "; ".join(reasons)

    def can_restore(self, backup: Backup) -> bool:
        return backup.has_private_key

    def extra_listeners(self, backup: Backup) -> list[Listener]:
        """The REST port itself when the management context (0, the web interface's
        default) is to change and holds what management HTTPS presents."""
        ctx = self._before.get(0) if 0 in self.contexts else None
        return [self.management] if ctx is not None and self.serves_management(ctx) else []

    async def install(self, bundle: Bundle) -> None:
        """Key, certificate and trusted roots into every context, then save."""
        artifacts = render_target(bundle, self.profile)
        key_pem = artifacts.get(SbcProfile.key_file)
        cert_pem = artifacts.get(SbcProfile.certificate_file)
        roots = (_certificates(artifacts.get(SbcProfile.trusted_roots_file))
                 if SbcProfile.trusted_roots_file in artifacts.names() else [])
        new_sha = bundle.leaf_sha256
        self._new_sha256 = new_sha
        for index in self.contexts:
            where = f"/files/tls/{index}"
            before = self._before.get(index)
            await self._request("PUT", f"{where}/privateKey", upload=key_pem,
                                what=f"uploading the private key to context {index}")
            management = before is not None and self.serves_management(before)
            await self._put_certificate(index, cert_pem, new_sha, management,
                                        what=f"uploading the certificate to context {index}")
            if management:
                await self._pin_installed(new_sha)
            await self._install_roots(index, roots, before)
            key = _json(await self._request("GET", f"{where}/privateKey",
                                            what=f"checking context {index}'s key"))
            if _key_valid(key) is not True:
                raise DeviceRefusedError(
                    f"context {index}: the SBC says the private key does not match the "
                    f"certificate after the upload (GET {API_PREFIX}{where}/privateKey on "
                    f"{self.name} answered {_short(key)})",
                    hint="check that the key file belongs to the certificate (certfleet check)",
                    device=self.name,
                )
        await self.save_configuration()

    async def _put_certificate(self, index: int, pem: bytes, sha256: str, management: bool,
                               *, what: str) -> None:
        """``PUT certificate``; a management session that drops on the change is
        reopened to ask whether the certificate went in."""
        try:
            await self._request("PUT", f"/files/tls/{index}/certificate", upload=pem, what=what)
        except (DeviceConnectionError, DeviceTimeoutError):
            if not management or not await self._holds(index, sha256):
                raise
            log.info("%s: the session dropped while context %d took the certificate; "
                     "it holds it", self.name, index)

    async def _holds(self, index: int, sha256: str) -> bool:
        """Whether context ``index`` holds certificate ``sha256``, asked on a new
        connection that accepts that certificate on the management interface."""
        await self._pin_installed(sha256)
        pem = await self._get_optional(f"/files/tls/{index}/certificate",
                                       what=f"reading context {index}'s certificate again")
        leaf = _leaf(_certificates(pem))
        return leaf is not None and cert_sha256(leaf) == sha256

    async def _install_roots(self, index: int, roots: Sequence[x509.Certificate],
                             before: SbcContext | None) -> None:
        if not roots:
            return
        if self.replace_trusted_roots:
            await self._request("PUT", f"/files/tls/{index}/trustedRoot",
                                upload=b"".join(_pem(c) for c in roots),
                                what=f"replacing context {index}'s trusted roots")
            self._changed_roots.add(index)
            return
        present = {sha256_of(c) for c in (before.trusted_roots if before else ())}
        for cert in roots:
            if sha256_of(cert) in present:
                continue
            await self.add_trusted_root(index, cert)
            self._changed_roots.add(index)

    def assume_changed(self) -> None:
        """Treat the device as changed by this session, so that restore() puts a
        backup from an earlier run back (``certfleet rollback``)."""
        self._changed = True
        self._changed_roots.update(self.contexts)

    async def restore(self, backup: Backup) -> None:
        """Previous key, certificate and trusted roots into every context, then save."""
        self._restoring = True
        if not self._changed:
            return  # every changing request was refused: the device is as it was
        if self._new_sha256 and any(self.serves_management(c) for c in self._before.values()):
            # The failure may have come after the management interface took the new
            # certificate (or with the answer that says so lost): accept it too.
            await self._pin_installed(self._new_sha256)
        if self._client is None:
            self._client = self._new_client()
        for index in self.contexts:
            key = backup.files.get(f"tls{index}-private_key.pem")
            cert = backup.files.get(f"tls{index}-certificate.pem")
            if key is None or cert is None:
                raise RollbackError(
                    f"context {index}: the backup has no previous key and certificate",
                    hint="upload the previous certificate and key by hand",
                    device=self.name,
                )
            where = f"/files/tls/{index}"
            await self._request("PUT", f"{where}/privateKey", upload=key,
                                what=f"restoring context {index}'s private key")
            before = self._before.get(index)
            previous = _leaf(_certificates(cert))
            await self._put_certificate(
                index, cert, cert_sha256(previous) if previous is not None else "",
                before is not None and self.serves_management(before),
                what=f"restoring context {index}'s certificate")
            roots = backup.files.get(f"tls{index}-trusted_roots.pem", b"")
            if index in self._changed_roots and _certificates(roots):
                await self._request("PUT", f"{where}/trustedRoot", upload=roots,
                                    what=f"restoring context {index}'s trusted roots")
            state = _json(await self._request("GET", f"{where}/privateKey",
                                              what=f"checking context {index}'s key"))
            if _key_valid(state) is not True:
                raise RollbackError(
                    f"context {index}: after the restore the SBC says key and certificate "
                    "do not match",
                    hint="upload the previous certificate and its key by hand",
                    device=self.name,
                )
        await self.save_configuration()

    # ---- lifecycle overrides -------------------------------------------------------------

    async def observe(self) -> list[ProbeResult]:
        results = await super().observe()
        self._served_before = {r.listener: r.sha256 for r in results}
        return results

    async def verify(self, expected_sha256: str, timeout: float | None = None) -> list[ProbeResult]:
        """Every listener serves what it should: the new certificate, or after a
        rollback what it served before. Also checks each context on the device."""
        wait = self.verify_timeout if timeout is None else timeout
        if self._restoring:
            # The previous certificates are back at once on a healthy device; a short
            # verify timeout (set to fail fast on the new one) must not fail the rollback.
            previous = {item: self._served_before.get(item) for item in self.listeners}
            return await wait_for_previous(previous, max(wait, 5.0))
        for index in self.contexts:
            held = await self.read_certificate(index)
            held_sha = cert_sha256(held) if held is not None else None
            if held_sha != expected_sha256:
                raise VerificationError(
                    f"context {index} holds {(held_sha or 'nothing')[:16]}…, not the "
                    f"certificate installed ({expected_sha256[:16]}…)",
                    hint="another change may have overwritten it; check the device",
                    device=self.name,
                    expected=expected_sha256,
                )
        return await super().verify(expected_sha256, timeout)

    def _begin_deploy(self) -> None:
        self._restoring = False
        self._changed = False
        self._changed_roots.clear()
        self._new_sha256 = None

    def _settle(self, outcome: DeployOutcome) -> DeployOutcome:
        """The SBC's own hint when no rollback is possible; a first change the device
        refused (4xx) is a refusal."""
        if (outcome.outcome == "refused" and outcome.steps
                and outcome.steps[-1].detail == "no rollback possible"):
            outcome.hint = NO_ROLLBACK_HINT
            why = self._no_rollback_reasons()
            if why:
                outcome.message = f"{self.name}: no rollback is possible: {why}"
        elif outcome.outcome in ("failed", "restored") and not self._changed:
            # The device refused the first change (4xx): nothing to restore.
            cause = next((s.detail for s in outcome.steps if s.status == "failed"), "")
            outcome.outcome = "refused"
            outcome.message = f"{self.name}: {cause} (nothing was changed)"
        return outcome


def _short(data: Any) -> str:
    """A device's JSON answer for a message: one line, at most 120 characters."""
    import json

    try:
        text = json.dumps(data, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(data)
    return text if len(text) <= 120 else text[:119] + "…"

