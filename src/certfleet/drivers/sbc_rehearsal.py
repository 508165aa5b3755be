"""A read-only rehearsal of an SBC deploy: everything up to the first change.

:func:`rehearse` (also :meth:`SbcDriver.rehearse`) connects with the same
trust and credentials a deploy uses and sends GET requests only: trust (pin
or CA, in the handshake), credentials (``GET /status``), HA state, the INI
(backup possible), each configured TLS context, and whether a failed deploy
could be rolled back (the previous key known). Device failures are results,
never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..errors import (
    CertfleetError,
    DeviceAuthError,
    DeviceConnectionError,
    DeviceRefusedError,
    DeviceTimeoutError,
    HostKeyError,
)

if TYPE_CHECKING:
    from cryptography import x509

    from ..pki.model import PrivateKey
    from .sbc_model import SbcContext


class SbcDriver(Protocol):
    """What the rehearsal drives (:class:`certfleet.drivers.sbc.SbcDriver`)."""

    name: str
    user: str
    insecure: bool
    contexts: list[int]
    status: dict[str, object]
    management_sha256: str | None

    @property
    def pinned(self) -> bool: ...

    @property
    def auth_scheme(self) -> str: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read_ini(self) -> bytes: ...

    async def read_context(self, index: int, name: str | None = None) -> SbcContext: ...

    def _previous_key_for(self, cert: x509.Certificate | None) -> PrivateKey | None: ...

__all__ = ["Check", "Readiness", "rehearse"]


@dataclass(frozen=True)
class Check:
    """One rehearsal check. ``name``: trust, credentials, ha, ini, context N, rollback.
    ``ok`` False with ``blocking`` True makes the device not ready; ``fix`` says what to do."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    blocking: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix,
                "blocking": self.blocking}


@dataclass
class Readiness:
    """The rehearsal of one device: ready, or not and why (each reason with its fix)."""

    device: str
    checks: list[Check] = field(default_factory=list)
    auth: str | None = None  # basic / digest, once the credentials were accepted
    management_sha256: str | None = None

    @property
    def ready(self) -> bool:
        return all(c.ok or not c.blocking for c in self.checks)

    @property
    def reasons(self) -> list[Check]:
        """The failed blocking checks."""
        return [c for c in self.checks if not c.ok and c.blocking]

    def summary(self) -> str:
        """One line: ``ready`` or ``not ready: why (fix: ...); ...``."""
        if self.ready:
            return f"{self.device}: ready"
        why = "; ".join(f"{c.detail}" + (f" (fix: {c.fix})" if c.fix else "")
                        for c in self.reasons)
        return f"{self.device}: not ready: {why}"

    def to_dict(self) -> dict[str, object]:
        return {"device": self.device, "ready": self.ready, "auth": self.auth,
                "management_sha256": self.management_sha256,
                "checks": [c.to_dict() for c in self.checks]}


def _failed(name: str, exc: CertfleetError) -> Check:
    return Check(name, False, exc.message, exc.hint)


async def rehearse(driver: SbcDriver, *, allow_no_rollback: bool = False) -> Readiness:
    """Rehearse a deploy on ``driver``'s device, changing nothing (GET requests only).

    ``allow_no_rollback``: a deploy that will be run with it does not need the
    previous key, so its absence does not block.
    """
    result = Readiness(driver.name)
    try:
        await driver.connect()
    except HostKeyError as exc:
        result.checks.append(_failed("trust", exc))
        await driver.close()
        return result
    except DeviceAuthError as exc:
        result.checks.append(Check("trust", True, "the management certificate was accepted"))
        result.checks.append(_failed("credentials", exc))
        await driver.close()
        return result
    except (DeviceConnectionError, DeviceTimeoutError, DeviceRefusedError) as exc:
        result.checks.append(_failed("reachable", exc))
        await driver.close()
        return result
    try:
        result.auth = driver.auth_scheme
        result.management_sha256 = driver.management_sha256
        how = "pinned" if driver.pinned else ("not checked" if driver.insecure else "CA")
        result.checks.append(Check("trust", True, f"management certificate "
                                   f"{(driver.management_sha256 or '?')[:16]}… ({how})"))
        result.checks.append(Check("credentials", True,
                                   f"user {driver.user!r} accepted ({driver.auth_scheme})"))
        await _checks(driver, result, allow_no_rollback)
    except CertfleetError as exc:
        result.checks.append(_failed("device", exc))
    finally:
        await driver.close()
    return result


async def _checks(driver: SbcDriver, result: Readiness, allow_no_rollback: bool) -> None:
    from .sbc_model import NO_ROLLBACK_HINT, tls_contexts_in_ini

    status = driver.status
    role = str(status.get("haUnitRole") or "")
    ha = str(status.get("highAvailability") or "?")
    if role.lower() == "standby":
        result.checks.append(Check(
            "ha", False, f"this unit is the HA standby (HA {ha}): it refuses changes",
            "point the inventory at the active unit's address"))
    else:
        result.checks.append(Check("ha", True, f"HA {ha}" + (f", {role} unit" if role else "")))
    ini = await driver.read_ini()
    names = tls_contexts_in_ini(ini.decode("utf-8", "replace"))
    if ini:
        result.checks.append(Check("ini", True, f"INI readable ({len(ini)} bytes), "
                                   f"{len(names)} TLS context(s) listed"))
    else:
        result.checks.append(Check(
            "ini", False, "the SBC gives no INI file: a backup would hold the contexts only",
            "check the user's rights to GET /api/v1/files/ini", blocking=False))
    keys_missing: list[str] = []
    for index in driver.contexts:
        name = f"context {index}"
        if names and index not in names:
            listed = ", ".join(str(n) for n in sorted(names))
            result.checks.append(Check(
                name, False, f"TLS context {index} does not exist (the SBC has {listed})",
                "set --context (inventory: tls_contexts) to existing contexts"))
            continue
        try:
            ctx = await driver.read_context(index, names.get(index))
        except DeviceRefusedError as exc:
            result.checks.append(_failed(name, exc))
            continue
        label = f" ({ctx.name})" if ctx.name else ""
        held = f"holds {ctx.sha256[:16]}…" if ctx.sha256 else "holds no certificate"
        result.checks.append(Check(name, True, f"TLS context {index}{label} {held}"))
        if ctx.certificate is None:
            keys_missing.append(f"context {index} has no certificate (nothing to go back to)")
        elif driver._previous_key_for(ctx.certificate) is None:
            keys_missing.append(f"the key of context {index}'s certificate "
                                f"{(ctx.sha256 or '')[:16]}… is not known")
    if keys_missing:
        result.checks.append(Check(
            "rollback", False, "no rollback possible: " + "; ".join(keys_missing),
            NO_ROLLBACK_HINT, blocking=not allow_no_rollback))
    else:
        result.checks.append(Check("rollback", True, "the previous key of every context is known"))
