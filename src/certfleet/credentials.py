"""The secrets of a run, resolved once before any connection.

:meth:`Credentials.resolve` reads every secret reference of the selected
devices (the ones each device's kind declares: see
:class:`~certfleet.drivers.registry.SecretSpec`) into one object that the
drivers are built with. It runs before the event loop starts, so no driver
ever reads a file, the keyring or the terminal while devices are being
changed.

* Each reference is resolved once: ``env:SBC_PASSWORD`` shared by fifty
  SBCs is read once.
* ``prompt`` asks once per place it is written: ``password = "prompt"`` in
  ``[defaults.sbc]`` is one question for every SBC that inherits it; the
  same line in ``[devices.sbc1]`` is sbc1's own question.
* A plan or a dry run resolves with ``ask=False``: prompts are answered by
  an empty stand-in (nothing is sent with it).
* A reference that cannot be resolved (a variable not set) does not stop the
  run here: the device that needs it is refused when its driver is built,
  with the message naming the variable; the other devices go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import CertfleetError, ConfigError
from .kinds import INSTALLED, KindCatalog
from .secrets import resolve_secret

if TYPE_CHECKING:
    from .model import Device

__all__ = ["Credentials", "DeviceCredentials"]


@dataclass(frozen=True)
class DeviceCredentials:
    """One device's resolved secrets, by inventory key (``password``, ``root_password``...)."""

    device: str
    values: Mapping[str, str] = field(default_factory=dict, repr=False)
    errors: Mapping[str, CertfleetError] = field(default_factory=dict, repr=False)

    def get(self, key: str) -> str | None:
        """The secret ``key``, None when the inventory gives none. Raises the error met
        resolving it (a variable not set, an unreadable file)."""
        error = self.errors.get(key)
        if error is not None:
            raise error
        return self.values.get(key)

    def require(self, key: str) -> str:
        """The secret ``key``. Raises ConfigError when the inventory gives none."""
        value = self.get(key)
        if value is None:
            raise ConfigError(
                f"device {self.device!r} has no {key}",
                hint=f'add {key} = "env:VAR" to [devices.{self.device}] or its defaults',
                device=self.device,
            )
        return value


class Credentials:
    """Every device's secrets for one run (see the module docstring)."""

    def __init__(self, devices: Mapping[str, DeviceCredentials] | None = None) -> None:
        self._devices = dict(devices or {})

    def __repr__(self) -> str:  # never the values
        return f"Credentials({sorted(self._devices)})"

    def for_device(self, name: str) -> DeviceCredentials:
        """The secrets of device ``name`` (none when it was not among those resolved)."""
        return self._devices.get(name) or DeviceCredentials(name)

    def __contains__(self, name: object) -> bool:
        return name in self._devices

    @classmethod
    def resolve(
        cls, devices: Iterable[Device], *, ask: bool = True, interactive: bool | None = None,
        kinds: KindCatalog = INSTALLED,
    ) -> Credentials:
        """Resolve the secrets ``devices`` need. ``ask``: put the ``prompt`` questions
        (else empty stand-ins). Raises ConfigError (an unknown kind) and
        PasswordError (a question with no terminal); other failures are kept per
        device (see :meth:`DeviceCredentials.get`). ``kinds``: where each device's
        kind says which secrets it needs (by default the installed kinds)."""
        chosen = list(devices)
        resolved: dict[tuple[str, str], str | CertfleetError] = {}
        questions = _questions(chosen)
        result: dict[str, DeviceCredentials] = {}
        for device in chosen:
            values: dict[str, str] = {}
            errors: dict[str, CertfleetError] = {}
            for key, spec in kinds.get(device.kind).secrets.items():
                ref = device.secret_ref(key)
                if ref is None:
                    continue
                if ref == "prompt":
                    source = device.secret_source(key)
                    cache = ("prompt", f"{source}.{key}")
                    if cache not in resolved:
                        what = f"{spec.what} of {questions[cache]}"
                        resolved[cache] = (
                            resolve_secret("prompt", what=what, interactive=interactive)
                            if ask else ""
                        )
                else:
                    cache = ("ref", ref)
                    if cache not in resolved:
                        try:
                            resolved[cache] = resolve_secret(
                                ref, what=f"{spec.what} of {device.name}")
                        except CertfleetError as exc:
                            resolved[cache] = exc
                value = resolved[cache]
                if isinstance(value, CertfleetError):
                    errors[key] = value
                else:
                    values[key] = value
            result[device.name] = DeviceCredentials(device.name, values, errors)
        return cls(result)


def _questions(devices: list[Device]) -> dict[tuple[str, str], str]:
    """For each ``prompt`` (by where it is written): the devices that share it, in words."""
    users: dict[tuple[str, str], list[str]] = {}
    for device in devices:
        for key in device.secret_keys():
            if device.secret_ref(key) == "prompt":
                cache = ("prompt", f"{device.secret_source(key)}.{key}")
                users.setdefault(cache, []).append(device.name)
    return {cache: ", ".join(names) for cache, names in users.items()}
