"""The ``ovoc`` device kind: OVOC over SSH/SFTP (:class:`~certfleet.drivers.ovoc.OvocDriver`).

Registered in the ``certfleet.drivers`` entry points; kept apart from the
driver package so that reading an inventory does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .registry import BuildContext, DriverKind, SecretSpec, device_profile

if TYPE_CHECKING:
    from ..credentials import DeviceCredentials
    from ..inventory import Device
    from .base import Driver

__all__ = ["KIND"]


def from_device(device: Device, credentials: DeviceCredentials, context: BuildContext) -> Driver:
    """The OVOC driver for ``device``. Raises ConfigError / PasswordError."""
    from .ovoc import OvocDriver

    host_key, known_hosts = context.ssh_host_key(device)
    return OvocDriver(
        device.name,
        device.address,
        ssh_port=device.port,
        user=device.user or "acems",
        password=credentials.require("password"),
        su_password=credentials.require("root_password"),
        keystore_password=credentials.require("keystore_password"),
        host_key=host_key,
        known_hosts=known_hosts,
        listeners=device.listeners,
        profile=device_profile(device),
        on_event=context.on_event,
        verify_timeout=device.verify_timeout,
        **_options(device),
    )


def _options(device: Device) -> dict[str, Any]:
    """The OVOC settings an inventory may give: su target, staging folder, menu wording."""
    from .ovoc import OvocMenu

    options: dict[str, Any] = {}
    if device.su_user:
        options["su_user"] = device.su_user
    if device.staging_dir:
        options["staging_dir"] = device.staging_dir
    if device.menu:
        try:
            options["menu"] = OvocMenu.from_mapping(device.menu)
        except ConfigError as exc:
            raise ConfigError(f"device {device.name!r}: {exc.message}", hint=exc.hint) from exc
    return options


KIND = DriverKind(
    name="ovoc",
    from_device=from_device,
    secrets={
        "password": SecretSpec("SSH password"),
        "root_password": SecretSpec("root password"),
        "keystore_password": SecretSpec("keystore password"),
    },
    default_port=22,
    port_alias="ssh_port",
    listener_port="https_port",
    default_user="acems",
    rollback_note="the staged files (with the key) are backed up before the upload",
    steps=(
        "SFTP: back up the staging folder",
        "upload server.crt, server.key, root.crt, caN.crt",
        "SSH, su, EmsServerManager: import",
        "verify by handshake",
    ),
    description="AudioCodes OVOC: SFTP upload, then EmsServerManager over SSH as root",
)
