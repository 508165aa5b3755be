"""``certfleet probe``: rehearse a deploy on every selected device, changing nothing.

Also run by ``certfleet plan --probe`` (see :func:`run_probe`). Exit 0 when
every device is ready, 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import console, handle_errors, print_json

if TYPE_CHECKING:
    from ..estate.probe import DeviceProbe
    from ..estate.store import Store
    from ..inventory import Inventory


def run_probe(inventory: Inventory, store: Store, only: list[str], *,
              concurrency: int | None = None,
              allow_no_rollback: bool = False) -> list[DeviceProbe]:
    """Rehearse on the selected devices (secrets set to ``prompt`` are asked first)."""
    import asyncio

    from ..estate.devices import make_factory, prompt_secrets
    from ..estate.probe import probe_devices
    from ..inventory import select_devices

    devices = select_devices(inventory, only)
    factory = make_factory(store, prompt_secrets(devices))
    return asyncio.run(probe_devices(devices, inventory, factory, concurrency=concurrency,
                                     allow_no_rollback=allow_no_rollback,
                                     state_root=store.root))


def print_probes(probes: list[DeviceProbe]) -> None:
    """One line per device (device text is data: never markup), then the count."""
    for item in probes:
        console.print(item.line(), markup=False, highlight=False, soft_wrap=True,
                      style="green" if item.ready else "red")
    kept = [p.transcript_file for p in probes if p.transcript_file]
    ready = sum(1 for p in probes if p.ready)
    console.print(f"{ready}/{len(probes)} device(s) ready; nothing was changed"
                  + (f"; OVOC transcripts in {Path(kept[0]).parent}" if kept else ""),
                  markup=False, highlight=False, soft_wrap=True)


def exit_code(probes: list[DeviceProbe]) -> int:
    return 0 if all(p.ready for p in probes) else 1


def register(app: typer.Typer) -> None:
    from .options import (
        INVENTORY_OPTION,
        JSON_OPTION,
        ONLY_OPTION,
        STATE_OPTION,
        STATE_URL_OPTION,
        open_estate,
    )

    @app.command("probe")
    @handle_errors
    def probe_command(
        only: list[str] = ONLY_OPTION,
        concurrency: int | None = typer.Option(
            None, "--concurrency", min=1, help="Devices at once (default 8 or the inventory's)."),
        allow_no_rollback: bool = typer.Option(
            False, "--allow-no-rollback",
            help="Rehearse as deploy --allow-no-rollback: no previous key needed."),
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        state_url: str | None = STATE_URL_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Log in to every device and do all a deploy does up to the first change; change nothing.

        OVOC: SSH (host key), SFTP listing, su, EmsServerManager walked to the
        import entry without selecting it (transcript kept under the state
        folder, probes/NAME.txt). SBC: trust, credentials, HA, INI, each TLS
        context, rollback possible. One line per device: ready, or not and why
        with the fix. Exit 0 when every device is ready, 1 otherwise.
        """
        with open_estate(inventory, state_dir, state_url) as (inv, store):
            probes = run_probe(inv, store, only, concurrency=concurrency,
                               allow_no_rollback=allow_no_rollback)
        if json_out:
            print_json([p.to_dict() for p in probes])
        else:
            print_probes(probes)
        raise typer.Exit(exit_code(probes))
