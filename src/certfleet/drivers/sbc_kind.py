"""The ``sbc`` device kind: a Mediant SBC over REST (:class:`~certfleet.drivers.sbc.SbcDriver`).

Registered in the ``certfleet.drivers`` entry points; kept apart from the
driver so that reading an inventory does not import httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .registry import BuildContext, DriverKind, KeySpec, SecretSpec, device_profile

if TYPE_CHECKING:
    from ..credentials import DeviceCredentials
    from ..inventory import Device
    from .base import Driver

__all__ = ["KIND"]


def from_device(device: Device, credentials: DeviceCredentials, context: BuildContext) -> Driver:
    """The SBC driver for ``device``, with the stored keys for a rollback. Raises ConfigError.

    Besides the schema's keys, ``device.options`` may carry what ``certfleet sbc``
    takes from its flags for a device that no inventory describes: ``url`` (the
    management URL as given, instead of address and port) and ``insecure``.
    """
    from .sbc import SbcDriver, SbcSettings

    host = f"[{device.address}]" if ":" in device.address else device.address
    options = device.options
    settings = SbcSettings(
        password=credentials.require("password"),
        contexts=device.tls_contexts,
        user=device.user or "Admin",
        listeners=device.listeners,
        ca_bundle=_ca_bundle(device, context),
        pin_sha256=device.tls_pin,
        profile=device_profile(device),
        previous_keys=context.stored_keys(),
        on_event=context.on_event,
        verify_timeout=device.verify_timeout,
        x509_strict=device.x509_strict,
        insecure=bool(options.get("insecure", False)),
        timeout=float(options.get("timeout", 30.0)),
        busy_retries=int(options.get("busy_retries", 6)),
        busy_delay=float(options.get("busy_delay", 0.5)),
    )
    return SbcDriver(device.name, options.get("url") or f"https://{host}:{device.port}", settings)


def _ca_bundle(device: Device, context: BuildContext) -> bytes | None:
    if device.ca_file is None:
        return None
    path = context.path(device.ca_file)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"device {device.name!r}: cannot read ca_file {str(path)!r}: {exc.strerror or exc}",
            hint="point ca_file at the PEM of the CA that issued the management certificate",
            device=device.name,
        ) from None


KIND = DriverKind(
    name="sbc",
    from_device=from_device,
    schema={
        "timeout": KeySpec("number", "seconds per REST request (30)"),
        "busy_retries": KeySpec("integer", "retries of a request answered 409 busy (6)"),
        "busy_delay": KeySpec("number", "seconds before the first 409 retry, doubling (0.5)"),
    },
    secrets={"password": SecretSpec("REST password")},
    default_port=443,
    listener_port="port",
    default_user="Admin",
    rollback_needs_key=True,
    rollback_key_note="the SBC never returns its private key",
    steps=(
        "REST: back up INI and contexts",
        "upload key, certificate, trusted roots",
        "save the configuration",
        "verify by handshake",
    ),
    description="AudioCodes Mediant SBC: TLS contexts over the REST API",
)
