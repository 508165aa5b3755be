"""What both demos (``certfleet demo`` and ``demo --acme``) stand on: a lab estate
serving last year's certificate with a store holding it, and the numbered steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .common import console

if TYPE_CHECKING:
    from ..estate.store import Store
    from ..lab.estate import LabEstate

__all__ = ["demo_estate"]


def _seed_previous(lab: LabEstate, store: Store) -> None:
    """Store what the lab serves as the previous version (last renewal): key, chain and root.

    The full chain with its root, as the CA handed it over: a device that wants
    the root (OVOC's root.crt) can be given this version again without
    forcing past a preflight error.
    """
    from ..estate.importer import import_certificate
    from ..fsutil import write_private_file
    from ..inventory import load_inventory

    previous = lab.directory / "previous-renewal.pem"
    write_private_file(previous, lab.old.fullchain_pem + lab.old.root_pem + lab.old.key_pem())
    import_certificate(load_inventory(lab.inventory_path), store, "wildcard", [previous])


def _step(number: int, text: str) -> None:
    console.print()
    console.rule(f"[bold]{number}. {text}", align="left")


@contextmanager
def demo_estate(prefix: str, intro: str,
                first_step: str) -> Iterator[tuple[Path, LabEstate, Store]]:
    """A demo's lab estate (1 OVOC, 3 SBCs) in a new folder, serving last year's certificate,
    with a state store holding it: ``(folder, lab, store)``; all stopped and removed after."""
    import shutil
    import tempfile

    from ..estate.store import Store
    from ..lab.estate import LabEstate

    work = Path(tempfile.mkdtemp(prefix=prefix))
    lab: LabEstate | None = None
    store: Store | None = None
    try:
        console.print(intro)
        _step(1, first_step)
        lab = LabEstate(work / "lab", sbcs=3)
        lab.start()
        store = Store.open(work / "state")
        _seed_previous(lab, store)
        yield work, lab, store
    finally:
        if store is not None:
            store.close()
        if lab is not None:
            lab.stop()
        shutil.rmtree(work, ignore_errors=True)
