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

__all__ = ["INVENTORY_OPTION", "JSON_OPTION", "ONLY_OPTION", "STATE_OPTION", "load",
           "open_estate", "open_store"]

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
JSON_OPTION = typer.Option(False, "--json", help="Print JSON only, on stdout.")
ONLY_OPTION = typer.Option([], "--only", help="A device name or tag (repeatable).")


@contextmanager
def open_store(state_dir: Path | None) -> Iterator[Store]:
    from ..estate.store import Store

    store = Store.open(state_dir)
    try:
        yield store
    finally:
        store.close()


def load(inventory: Path) -> Inventory:
    from ..inventory import load_inventory

    return load_inventory(inventory)


@contextmanager
def open_estate(inventory: Path, state_dir: Path | None) -> Iterator[tuple[Inventory, Store]]:
    """The inventory (read first: a bad one fails before the store is touched) and the store."""
    inv = load(inventory)
    with open_store(state_dir) as store:
        yield inv, store
