"""The errors certfleet raises.

Every error certfleet raises on purpose derives from :class:`CertfleetError`.
The CLI is the only place that catches them, prints ``message`` (one line)
and ``hint`` (the fix), and picks the exit code. The tree::

    CertfleetError
    ├── InputError                bad input: nothing on a device was touched
    │   ├── CertificateError      a certificate file cannot be read or used
    │   ├── PrivateKeyError       a key file cannot be read or used
    │   ├── PasswordError         a password is missing or wrong
    │   ├── ConfigError           inventory, flag or environment is wrong
    │   └── PreflightError        checks found errors (carries .findings)
    ├── DeviceError               talking to a device failed
    │   ├── DeviceConnectionError cannot connect, connection dropped
    │   ├── HostKeyError          SSH host key / TLS pin unknown or changed
    │   ├── DeviceAuthError       login, su or API credentials refused
    │   └── DeviceTimeoutError    a device did not answer in time
    ├── DeviceRefusedError        the device answered and said no
    ├── VerificationError         handshake did not show what was installed
    ├── RollbackError             the previous state could not be restored
    ├── StateError                local state store problem (lock, schema)
    └── AcmeError                 the CA refused an order, or validation failed
        └── DnsError              a TXT record not published, removed or seen

Errors carry context as attributes (``device``, ``path``, ``fingerprint``)
so that callers can act on them without parsing the message. Messages never
contain a password, an auth header or key material.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any, Self

__all__ = [
    "AcmeError",
    "CertfleetError",
    "CertificateError",
    "ConfigError",
    "DeviceAuthError",
    "DeviceConnectionError",
    "DeviceError",
    "DeviceRefusedError",
    "DeviceTimeoutError",
    "DnsError",
    "HostKeyError",
    "InputError",
    "PasswordError",
    "PreflightError",
    "PrivateKeyError",
    "RollbackError",
    "StateError",
    "VerificationError",
]


class CertfleetError(Exception):
    """Root of every error certfleet raises on purpose.

    ``message`` is one sentence naming the problem; ``hint`` names the fix.
    Extra keyword arguments become attributes (``device=``, ``path=``...).
    """

    def __init__(self, message: str, *, hint: str | None = None, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = dict(context)
        for key, value in context.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message

    @property
    def nothing_changed(self) -> bool:
        """Raised before any device was changed: bad input (an :class:`InputError`), a
        lock held by another run (``lock=``) or a refusal before any device work
        (``untouched=True``). The CLI and the dashboard exit 2 then, else 3."""
        return (isinstance(self, InputError) or self.context.get("lock") is not None
                or bool(self.context.get("untouched")))

    @classmethod
    def from_os_error(
        cls, action: str, path: str | PathLike[str], exc: OSError, *, hint: str,
        **context: object,
    ) -> Self:
        """``cannot ACTION 'PATH': REASON`` for ``exc`` raised on ``path`` (set as ``path=``)."""
        return cls(f"cannot {action} {str(path)!r}: {exc.strerror or exc}", hint=hint,
                   path=str(path), **context)


class InputError(CertfleetError):
    """Input (files, flags, inventory) is unusable; no device was touched."""


class CertificateError(InputError):
    """A certificate cannot be read or used."""


class PrivateKeyError(InputError):
    """A private key cannot be read or used."""


class PasswordError(InputError):
    """A password is needed and missing, or the one given is wrong."""


class ConfigError(InputError):
    """The inventory, a flag or an environment variable is wrong."""


class PreflightError(InputError):
    """Preflight checks found at least one error finding.

    ``findings`` holds every finding (errors, warnings and infos).
    """

    def __init__(
        self, message: str, findings: Sequence[Any], *, hint: str | None = None,
        **context: object,
    ) -> None:
        super().__init__(message, hint=hint, **context)
        self.findings = list(findings)


class DeviceError(CertfleetError):
    """Talking to a device failed."""


class DeviceConnectionError(DeviceError):
    """A device cannot be reached, or the connection dropped."""


class HostKeyError(DeviceError):
    """An SSH host key or TLS certificate pin is unknown or has changed."""


class DeviceAuthError(DeviceError):
    """A device refused the credentials (login, su, REST API)."""


class DeviceTimeoutError(DeviceError):
    """A device did not answer in time. ``screen`` may hold the last output."""


class DeviceRefusedError(CertfleetError):
    """The device answered and refused the operation."""


class VerificationError(CertfleetError):
    """A handshake did not show the certificate that was installed."""


class RollbackError(CertfleetError):
    """The previous state could not be restored."""


class StateError(CertfleetError):
    """The local state store cannot be used (lock held, schema too new...)."""

    @property
    def held(self) -> object | None:
        """What holds the lock this run was refused (``lock=``), or None for another cause."""
        return self.context.get("lock")


class AcmeError(CertfleetError):
    """The CA refused an order or a validation failed. ``problem``: the CA's words."""


class DnsError(AcmeError):
    """A TXT record could not be published, removed or seen on the nameservers."""
