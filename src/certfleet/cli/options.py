"""The options and openers every estate command shares: the inventory, the state
folder, ``--json``, ``--only``; the store and the inventory opened for a command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ..estate.store import Store
    from ..inventory import Inventory

__all__ = ["INVENTORY_OPTION", "JSON_OPTION", "ONLY_OPTION", "STATE_OPTION", "STATE_URL_OPTION",
           "load", "open_estate", "open_store", "store_settings"]

INVENTORY_OPTION = typer.Option(
    Path("certfleet.toml"),
    "--inventory",
    "-i",
    envvar="CERTFLEET_INVENTORY",
    help="The inventory file (env CERTFLEET_INVENTORY).",
)
STATE_OPTION = typer.Option(
    None,
    "--state-dir",
    envvar="CERTFLEET_STATE_DIR",
    help="The state folder (env CERTFLEET_STATE_DIR; default: the user data folder).",
)
STATE_URL_OPTION = typer.Option(
    None,
    "--state-url",
    envvar="CERTFLEET_STATE_URL",
    help="A shared state store: postgresql://USER@HOST/DB (env CERTFLEET_STATE_URL; default: "
    "the inventory's [state] url, else SQLite in the state folder).",
)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON only, on stdout.")
ONLY_OPTION = typer.Option([], "--only", help="A device name or tag (repeatable).")


def store_settings(
    state_url: str | None, inventory: Inventory | Path | None,
) -> tuple[str | None, str | None, str | None]:
    """The store's URL (None: SQLite), its password and its key, resolved.

    ``--state-url`` (or ``CERTFLEET_STATE_URL``) wins over the inventory's
    ``[state] url``; the password and the key are the inventory's secret
    references (``env:``, ``keyring:``, ``file:``), resolved only when used.
    """
    from ..errors import PasswordError
    from ..inventory import Inventory, StateConfig, load_state_config
    from ..secrets import resolve_secret

    if isinstance(inventory, Inventory):
        state = inventory.state
    elif inventory is not None:
        state = load_state_config(inventory)
    else:
        state = StateConfig()
    url = state_url or state.url
    password = (resolve_secret(state.password, what="state database password")
                if url and state.password else None)
    key = None
    if url and state.key:
        try:
            key = resolve_secret(state.key, what="state store key")
        except PasswordError as exc:
            # Only what reads or writes a secret needs the key: it says so then.
            _KEY_PROBLEMS[url] = exc.message
    return url, password, key


#: Why the store key of a URL could not be had (said by what needs it).
_KEY_PROBLEMS: dict[str, str] = {}


@contextmanager
def open_store(
    state_dir: Path | None, state_url: str | None = None,
    inventory: Inventory | Path | None = None,
) -> Iterator[Store]:
    """The store: SQLite in ``state_dir``, or the PostgreSQL of ``state_url`` / ``[state]``."""
    from ..estate.store import Store

    url, password, key = store_settings(state_url, inventory)
    store = Store.open(state_dir, url=url, password=password, key=key)
    if url and url in _KEY_PROBLEMS and not store.store_key:
        store.store_key_problem = _KEY_PROBLEMS[url]
    try:
        yield store
    finally:
        store.close()


def load(inventory: Path) -> Inventory:
    from ..inventory import load_inventory

    return load_inventory(inventory)


@contextmanager
def open_estate(
    inventory: Path, state_dir: Path | None, state_url: str | None = None,
) -> Iterator[tuple[Inventory, Store]]:
    """The inventory (read first: a bad one fails before the store is touched) and the store."""
    inv = load(inventory)
    with open_store(state_dir, state_url, inv) as store:
        yield inv, store
