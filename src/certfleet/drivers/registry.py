"""The device kinds: each registers itself through the ``certfleet.drivers`` entry points.

A kind is a module that exposes a :class:`DriverKind` (by convention named
``KIND``) and names it in its distribution's metadata, the way certbot finds
its plugins::

    [project.entry-points."certfleet.drivers"]
    sftp = "certfleet.drivers.sftp:KIND"

The kind tells the inventory which keys its devices accept (``schema``) and
which secrets it needs (``secrets``), and builds a driver from an inventory
device and the run's resolved credentials (``from_device``). The estate and
the CLI only ask this registry: adding a kind is adding a module and one
entry point, no edit of :mod:`certfleet.estate` or :mod:`certfleet.cli`.

Entry points are loaded lazily, the one named only: reading an inventory of
SBCs never imports the OVOC driver. A plugin that cannot be imported, or
whose entry point is not a :class:`DriverKind`, is named in a ConfigError
with the distribution it came from. The built-in kinds are also found when
the package runs from a source tree without installed metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..kinds import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from ..kinds import KeySpec as KeySpec
from ..kinds import SecretSpec as SecretSpec
from ..kinds import kind_names as kind_names
from ..kinds import load_kind, not_a_kind, origin
from ..kinds import reset as reset

if TYPE_CHECKING:
    from ..credentials import DeviceCredentials
    from ..inventory import Device
    from ..pki.model import PrivateKey
    from .base import Driver, EventCallback

__all__ = [
    "ENTRY_POINT_GROUP",
    "BuildContext",
    "DriverKind",
    "KeySpec",
    "SecretSpec",
    "device_profile",
    "find_kind",
    "get_kind",
    "kind_names",
    "reset",
]

@dataclass(frozen=True)
class BuildContext:
    """What a driver is built with besides the device and its credentials.

    ``base_dir``: the inventory's folder (relative paths in it are relative to
    it). ``on_event``: the progress callback. ``stored_keys``: every stored
    private key of the device's certificate (what may be installed now: for
    drivers whose rollback needs the previous key), loaded on demand.
    """

    base_dir: Path = Path()
    on_event: EventCallback | None = None
    stored_keys: Callable[[], list[PrivateKey]] = field(default=lambda: [])

    def path(self, value: str) -> Path:
        """``value`` as a path: ``~`` expanded, relative to :attr:`base_dir`."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def ssh_host_key(self, device: Device) -> tuple[str | None, Path | None]:
        """The device's ``ssh_host_key`` as (a pinned key line or ``SHA256:`` fingerprint,
        a known_hosts file): one of them, or neither when the inventory gives none."""
        if device.ssh_host_key is None:
            return None, None
        pin = device.ssh_host_key.strip()
        if pin.startswith("SHA256:") or " " in pin:
            return pin, None
        return None, self.path(pin)


@dataclass(frozen=True)
class DriverKind:
    """A device kind: how the inventory describes its devices and how to drive one.

    ``from_device(device, credentials, context)`` returns the driver (raises
    ConfigError for a setting it cannot use). ``schema``: the inventory keys
    of this kind beyond the common ones (``address``, ``port``, ``user``,
    ``password``, ``listeners``, ``certificate``, ``tags``, ``profile``...);
    their values reach the driver in ``device.options``. ``secrets``: the
    secret keys it needs, resolved once before any connection.
    ``default_port``: the management port; ``port_alias``: another name of
    ``port`` (``ssh_port``); ``listener_port``: which of ``port`` and
    ``https_port`` the default listener uses. ``rollback_needs_key``: the
    device never gives its key back, so a rollback needs a stored one (else
    ``rollback_note`` says why a rollback is possible). ``steps``: what a deploy
    does, in words, for ``certfleet plan``. ``default_user``: the login when the
    inventory names none. ``canary_preference``: how strongly a device of this
    kind is preferred as the canary of ``deploy --canary auto`` and ``renew``
    (the highest goes first; 0, the default, never makes a device the canary).
    ``rollback_key_note``: why a rollback needs a stored key, in words (for a
    kind with ``rollback_needs_key``); the driver names the keys a restore may
    use (:meth:`~certfleet.drivers.base.Driver.rollback_keys`). ``key_types``:
    the key types its devices accept (``rsa2048``...; empty: every one); a
    certificate one of its devices uses is issued with the first of them when
    the inventory's is not among them. ``blocking_findings``: preflight codes
    that are errors on this kind and that ``--ignore-finding`` cannot pass,
    with why (beyond :data:`certfleet.pki.profiles.NOT_OVERRIDABLE`).
    """

    name: str
    from_device: Callable[[Device, DeviceCredentials, BuildContext], Driver]
    schema: Mapping[str, KeySpec] = field(default_factory=dict)
    secrets: Mapping[str, SecretSpec] = field(default_factory=dict)
    default_port: int = 443
    port_alias: str | None = None
    listener_port: str = "port"
    default_user: str | None = None
    rollback_needs_key: bool = False
    rollback_note: str = "the driver backs up what it changes, key included"
    steps: tuple[str, ...] = ()
    description: str = ""
    canary_preference: int = 0
    rollback_key_note: str = "the device never returns its private key"
    key_types: tuple[str, ...] = ()
    blocking_findings: Mapping[str, str] = field(default_factory=dict)

    def key_type_for(self, wanted: str) -> str:
        """``wanted`` when this kind's devices accept it, else the first type they accept."""
        if not self.key_types or wanted in self.key_types:
            return wanted
        return self.key_types[0]


def get_kind(name: str) -> DriverKind:
    """The kind registered as ``name``, imported on first use. Raises ConfigError."""
    kind = load_kind(name)
    if not isinstance(kind, DriverKind):
        raise not_a_kind(name, origin(name))
    return kind


def find_kind(name: str) -> DriverKind | None:
    """The kind registered as ``name``, None when none is (or its plugin cannot load)."""
    try:
        return get_kind(name)
    except ConfigError:
        return None


def device_profile(device: Device) -> Any:
    """The device's ``profile`` table as its kind's profile (which files go where).

    For kinds with a profile in :mod:`certfleet.pki.profiles`. Raises ConfigError
    naming the device."""
    from ..pki.profiles import profile_from_mapping

    try:
        return profile_from_mapping(device.kind, device.profile)
    except ConfigError as exc:
        raise ConfigError(
            f"device {device.name!r}: {exc.message}", hint=exc.hint, device=device.name
        ) from None
