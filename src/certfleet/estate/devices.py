"""Build a device driver from an inventory device.

This is the one place that knows how inventory fields map to each driver's
constructor: secrets are resolved here (never stored), profiles built from
the device's ``profile`` table, listeners passed through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..drivers.base import Driver, EventCallback
from ..errors import CertfleetError, ConfigError
from ..inventory import Device, Inventory
from ..secrets import resolve_secret
from .deploy import DriverFactory
from .store import Store

__all__ = [
    "build_driver",
    "make_factory",
    "prepare_standalone_restore",
    "prompt_key_passphrases",
    "prompt_secrets",
    "secret",
]


Prefetched = Mapping[tuple[str, str], str]

# What each secret field is called in prompts and messages.
SECRET_FIELDS = {
    "password": "password",
    "root_password": "root password",
    "keystore_password": "keystore password",
}


def secret(
    device: Device,
    field_name: str,
    ref: str | None,
    what: str,
    prefetched: Prefetched | None = None,
) -> str:
    """Resolve ``ref`` for ``device`` (or take it from ``prefetched``). Raises ConfigError."""
    if prefetched is not None and (device.name, field_name) in prefetched:
        return prefetched[(device.name, field_name)]
    if ref is None:
        raise ConfigError(
            f"device {device.name!r} has no {field_name}",
            hint=f'add {field_name} = "env:VAR" to [devices.{device.name}] or its defaults',
            device=device.name,
        )
    return resolve_secret(ref, what=f"{what} of {device.name}")


def prompt_secrets(
    devices: Sequence[Device], inventory: Inventory | None = None
) -> dict[tuple[str, str], str]:
    """Ask now for every secret the inventory says to ``prompt`` for.

    Run before a deploy starts: prompts cannot share the terminal with the
    live progress, and a parallel run must not stop for one device's question.
    With ``inventory``, the key passphrases of the devices' certificates too
    (asked once each; later uses get the answer). Raises PasswordError when
    there is no terminal.
    """
    if inventory is not None:
        prompt_key_passphrases(devices, inventory)
    answers: dict[tuple[str, str], str] = {}
    for device in devices:
        for field_name, what in SECRET_FIELDS.items():
            if getattr(device, field_name) == "prompt":
                answers[(device.name, field_name)] = resolve_secret(
                    "prompt", what=f"{what} of {device.name}"
                )
    return answers


def prompt_key_passphrases(devices: Sequence[Device], inventory: Inventory) -> None:
    """Ask now for the key passphrases of the devices' certificates that say ``prompt``
    (each once; the run reads the answer). Raises PasswordError when there is no terminal."""
    from .csr import key_passphrase

    for name in dict.fromkeys(device.certificate for device in devices):
        key_passphrase(inventory, name)


def make_factory(
    store: Store | None = None,
    prefetched: Prefetched | None = None,
    extra_keys: Sequence[Any] = (),
) -> DriverFactory:
    """A driver factory; with ``store``, SBC drivers get the stored keys for rollback.

    ``prefetched`` holds secrets already asked for (see :func:`prompt_secrets`);
    ``extra_keys``: keys given for this run only (``deploy --previous-key``).
    """

    def factory(device: Device, inventory: Inventory, on_event: EventCallback | None) -> Driver:
        return build_driver(device, inventory, on_event, store=store, prefetched=prefetched,
                            extra_keys=extra_keys)

    return factory


def build_driver(
    device: Device,
    inventory: Inventory,
    on_event: EventCallback | None,
    *,
    store: Store | None = None,
    prefetched: Prefetched | None = None,
    extra_keys: Sequence[Any] = (),
) -> Driver:
    """The driver for ``device``. Raises ConfigError / PasswordError (secrets, profile)."""
    if device.kind == "ovoc":
        return _ovoc_driver(device, inventory, on_event, prefetched)
    if device.kind == "sbc":
        return _sbc_driver(device, inventory, on_event, store, prefetched, extra_keys)
    raise ConfigError(f"no driver for device kind {device.kind!r}", hint="use ovoc or sbc")


def _profile(device: Device) -> Any:
    from ..pki.profiles import profile_from_mapping

    try:
        return profile_from_mapping(device.kind, device.profile)
    except ConfigError as exc:
        raise ConfigError(
            f"device {device.name!r}: {exc.message}", hint=exc.hint, device=device.name
        ) from None


def _ca_bundle(device: Device, inventory: Inventory) -> bytes | None:
    if device.ca_file is None:
        return None
    path = Path(device.ca_file).expanduser()
    if not path.is_absolute():
        path = inventory.path.parent / path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"device {device.name!r}: cannot read ca_file {str(path)!r}: {exc.strerror or exc}",
            hint="point ca_file at the PEM of the CA that issued the management certificate",
            device=device.name,
        ) from None


def _stored_keys(device: Device, inventory: Inventory, store: Store | None) -> list[Any]:
    """Every stored key that may be installed now: the device's certificate's, and the
    keys of every other certificate (a version adopted or imported under another name
    serves as well when its fingerprint is what the device serves)."""
    if store is None:
        return []
    from .csr import key_passphrase

    passphrase = key_passphrase(inventory, device.certificate)
    keys = []
    for record in store.keys_for(device.certificate):
        try:
            keys.append(store.load_key(record, passphrase))
        except CertfleetError:
            continue  # a key under an older passphrase: no rollback with it
    for record in store.all_keys():
        if record.certificate == device.certificate:
            continue
        try:
            other = (key_passphrase(inventory, record.certificate)
                     if record.certificate in inventory.certificates else None)
            keys.append(store.load_key(record, other))
        except CertfleetError:
            continue  # encrypted under a passphrase the inventory no longer names
    return keys


def _ovoc_driver(
    device: Device,
    inventory: Inventory,
    on_event: EventCallback | None,
    prefetched: Prefetched | None = None,
) -> Driver:
    from ..drivers.ovoc import OvocDriver

    host_key: str | None = None
    known_hosts: Path | None = None
    if device.ssh_host_key is not None:
        pin = device.ssh_host_key.strip()
        if pin.startswith("SHA256:") or " " in pin:
            host_key = pin
        else:
            known_hosts = Path(pin).expanduser()
            if not known_hosts.is_absolute():
                known_hosts = inventory.path.parent / known_hosts
    return OvocDriver(
        device.name,
        device.address,
        ssh_port=device.port,
        user=device.user or "acems",
        password=secret(device, "password", device.password, "SSH password", prefetched),
        su_password=secret(
            device, "root_password", device.root_password, "root password", prefetched
        ),
        keystore_password=secret(
            device, "keystore_password", device.keystore_password, "keystore password", prefetched
        ),
        host_key=host_key,
        known_hosts=known_hosts,
        listeners=device.listeners,
        profile=_profile(device),
        on_event=on_event,
        verify_timeout=device.verify_timeout,
        **_ovoc_options(device),
    )


def _ovoc_options(device: Device) -> dict[str, Any]:
    """The OVOC settings an inventory may give: su target, staging folder, menu wording."""
    from ..drivers.ovoc import OvocMenu

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


def _sbc_driver(
    device: Device,
    inventory: Inventory,
    on_event: EventCallback | None,
    store: Store | None,
    prefetched: Prefetched | None = None,
    extra_keys: Sequence[Any] = (),
) -> Driver:
    from ..drivers.sbc import SbcDriver

    host = f"[{device.address}]" if ":" in device.address else device.address
    return SbcDriver(
        device.name,
        f"https://{host}:{device.port}",
        password=secret(device, "password", device.password, "REST password", prefetched),
        contexts=device.tls_contexts,
        user=device.user or "Admin",
        listeners=device.listeners,
        ca_bundle=_ca_bundle(device, inventory),
        pin_sha256=device.tls_pin,
        profile=_profile(device),
        previous_keys=[*_stored_keys(device, inventory, store), *extra_keys],
        on_event=on_event,
        verify_timeout=device.verify_timeout,
        x509_strict=device.x509_strict,
    )


def prepare_standalone_restore(driver: Driver) -> None:
    """Make ``driver.restore`` act in a session that installed nothing itself.

    The drivers restore only what their own session changed (inside a deploy
    that is right: nothing changed, nothing to undo). ``certfleet rollback``
    restores a backup taken by an earlier run, so it tells the driver that
    the device was changed.
    """
    driver.assume_changed()
