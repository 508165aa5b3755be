"""The ``ovoc`` device kind: OVOC over SSH/SFTP (:class:`~certfleet.drivers.ovoc.OvocDriver`).

Registered in the ``certfleet.drivers`` entry points; kept apart from the
driver package so that reading an inventory does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..pki.profiles import OvocProfile
from .registry import BuildContext, DriverKind, KeySpec, SecretSpec, device_profile

if TYPE_CHECKING:
    from ..credentials import DeviceCredentials
    from ..inventory import Device
    from .base import Driver

__all__ = ["KIND", "NEWLINES"]

#: What Enter sends, by the name of the ``enter`` setting.
NEWLINES = {"lf": "\n", "cr": "\r"}


def from_device(device: Device, credentials: DeviceCredentials, context: BuildContext) -> Driver:
    """The OVOC driver for ``device``. Raises ConfigError / PasswordError."""
    from .ovoc import OvocDriver

    if "known_hosts" in device.options:  # given apart: ssh_host_key is then only a pin
        host_key, path = device.ssh_host_key, device.options["known_hosts"]
        known_hosts = None if path is None else context.path(path)
    else:
        host_key, known_hosts = context.ssh_host_key(device)
    driver = OvocDriver(
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
    # A plan leaves a ``prompt`` unasked: its keystore check waits for the deploy.
    driver.keystore_password_deferred = device.keystore_password == "prompt"
    return driver


def _options(device: Device) -> dict[str, Any]:
    """The OVOC settings an inventory may give: su target, staging folder, menu wording,
    timeouts of the menu walk and the terminal."""
    from .ovoc import OvocMenu

    options: dict[str, Any] = {key: device.options[key] for key in
                               ("prompt_timeout", "import_timeout", "settle_time")
                               if key in device.options}
    enter = device.options.get("enter")
    if enter is not None:
        if str(enter).lower() not in NEWLINES:
            raise ConfigError(f"device {device.name!r}: enter {enter!r} is neither lf nor cr",
                              hint='write enter = "lf" (the default) or enter = "cr"',
                              device=device.name)
        options["newline"] = NEWLINES[str(enter).lower()]
    if device.su_user:
        options["su_user"] = device.su_user
    if device.staging_dir is not None:
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
    schema={
        "known_hosts": KeySpec("string", "an OpenSSH known_hosts file (ssh_host_key then "
                               "holds only a pin)"),
        "prompt_timeout": KeySpec("number", "seconds to wait for each screen of the menu (60)"),
        "import_timeout": KeySpec("number", "seconds to wait for OVOC's import verdict (600)"),
        "settle_time": KeySpec("number", "seconds OVOC's output must stay quiet before a line "
                               "that only looks like a prompt is answered (0.3)"),
        "enter": KeySpec("string", '"lf" or "cr": what Enter sends (lf)'),
    },
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
    # The management appliance goes first: a failed import there stops the run
    # before any SBC, which carries calls, is touched.
    canary_preference=10,
    # OVOC's import is only known to take RSA keys.
    key_types=("rsa2048", "rsa3072", "rsa4096"),
    blocking_findings=OvocProfile.blocking_findings,
)
