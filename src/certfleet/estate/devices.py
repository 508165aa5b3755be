"""Build a device driver from an inventory device, through the kind registry.

Each device kind builds its own driver (:mod:`certfleet.drivers.registry`,
``from_device``); this module gives it the run's credentials (resolved once,
before any connection: :mod:`certfleet.credentials`), the inventory's folder,
the progress callback and the stored keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..credentials import Credentials
from ..drivers.base import Driver, EventCallback
from ..drivers.registry import BuildContext, get_kind
from ..errors import CertfleetError
from ..inventory import Device, Inventory
from .store import Store
from .targets import DriverFactory

if TYPE_CHECKING:
    from ..pki.model import PrivateKey

__all__ = [
    "build_driver",
    "make_factory",
    "prepare_standalone_restore",
    "prompt_key_passphrases",
    "prompt_secrets",
]


def prompt_secrets(devices: Sequence[Device], inventory: Inventory | None = None
                   ) -> Credentials:
    """Resolve now every secret ``devices`` need, asking the ``prompt`` ones once each.

    Run before a deploy starts: prompts cannot share the terminal with the
    live progress, and a parallel run must not stop for one device's question.
    With ``inventory``, the key passphrases of the devices' certificates too
    (asked once each; later uses get the answer). Raises PasswordError when
    there is no terminal.
    """
    if inventory is not None:
        prompt_key_passphrases(devices, inventory)
    return Credentials.resolve(devices, ask=True)


def prompt_key_passphrases(devices: Sequence[Device], inventory: Inventory) -> None:
    """Ask now for the key passphrases of the devices' certificates that say ``prompt``
    (each once; the run reads the answer). Raises PasswordError when there is no terminal."""
    from .csr import key_passphrase

    for name in dict.fromkeys(device.certificate for device in devices):
        key_passphrase(inventory, name)


def make_factory(store: Store | None = None, credentials: Credentials | None = None,
                 extra_keys: Sequence[PrivateKey] = ()) -> DriverFactory:
    """A driver factory through the kind registry; with ``store``, drivers whose rollback
    needs the previous key get the stored keys.

    ``credentials``: the run's secrets, resolved before the run (:class:`Credentials`).
    Without them each device's are resolved when its driver is built, never asking
    (a ``prompt`` then fails with a message saying there is no terminal).
    ``extra_keys``: keys given for this run only (``deploy --previous-key``).
    """

    def factory(device: Device, inventory: Inventory, on_event: EventCallback | None) -> Driver:
        return build_driver(device, inventory, on_event, store=store, credentials=credentials,
                            extra_keys=extra_keys)

    return factory


def build_driver(
    device: Device,
    inventory: Inventory,
    on_event: EventCallback | None,
    *,
    store: Store | None = None,
    credentials: Credentials | None = None,
    extra_keys: Sequence[PrivateKey] = (),
) -> Driver:
    """The driver for ``device``, built by its kind. Raises ConfigError / PasswordError."""
    kind = get_kind(device.kind)
    if credentials is None or device.name not in credentials:
        credentials = Credentials.resolve([device], ask=True, interactive=False)

    def stored_keys() -> list[PrivateKey]:
        return [*_stored_keys(device, inventory, store), *extra_keys]

    context = BuildContext(
        base_dir=inventory.path.parent,
        on_event=on_event,
        stored_keys=stored_keys,
    )
    return kind.from_device(device, credentials.for_device(device.name), context)


def _stored_keys(
    device: Device, inventory: Inventory, store: Store | None,
) -> list[PrivateKey]:
    """Every stored key that may be installed now: the device's certificate's, and the
    keys of every other certificate (a version adopted or imported under another name
    serves as well when its fingerprint is what the device serves)."""
    if store is None:
        return []
    from .csr import key_passphrase

    passphrase = key_passphrase(inventory, device.certificate)
    keys: list[PrivateKey] = []
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


def prepare_standalone_restore(driver: Driver) -> None:
    """Make ``driver.restore`` act in a session that installed nothing itself.

    The drivers restore only what their own session changed (inside a deploy
    that is right: nothing changed, nothing to undo). ``certfleet rollback``
    restores a backup taken by an earlier run, so it tells the driver that
    the device was changed.
    """
    driver.assume_changed()
