"""``certfleet lab up`` and ``certfleet demo``: the lab estate, and the whole job on it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import console, err_console, handle_errors

if TYPE_CHECKING:
    from ..estate.store import Store
    from ..lab.estate import LabEstate

DIR_OPTION = typer.Option(
    None, "--dir", help="Where to write the inventory, secrets and state (kept)."
)


def _seed_previous(lab: LabEstate, store: Store) -> None:
    """Store what the lab serves as the previous version, key included (last renewal)."""
    from ..estate.importer import import_certificate
    from ..fsutil import write_private_file
    from ..inventory import load_inventory

    previous = lab.directory / "previous-renewal.pem"
    write_private_file(previous, lab.old.fullchain_pem + lab.old.key_pem())
    import_certificate(load_inventory(lab.inventory_path), store, "wildcard", [previous])


def _step(number: int, text: str) -> None:
    console.print()
    console.rule(f"[bold]{number}. {text}", align="left")


def run_demo() -> int:
    """The demo; returns its exit code. Everything it starts is stopped, its files removed."""
    import asyncio
    import shutil
    import tempfile

    from ..estate.csr import make_inventory_csr
    from ..estate.devices import make_factory
    from ..estate.importer import import_certificate
    from ..estate.plan import make_plan
    from ..estate.status import collect_status
    from ..estate.store import Store
    from ..inventory import load_inventory
    from ..lab.estate import LabEstate
    from .estate import print_findings, render_plan, render_report, render_status, run_deploy_cli

    work = Path(tempfile.mkdtemp(prefix="certfleet-demo-"))
    lab: LabEstate | None = None
    store: Store | None = None
    try:
        console.print("[bold]certfleet demo[/]: renew the wildcard certificate of a lab estate "
                      "(1 OVOC, 3 SBCs, one of them an HA pair) on 127.0.0.1")
        _step(1, "Start the lab estate, serving last year's certificate")
        lab = LabEstate(work / "lab", sbcs=3)
        lab.start()
        store = Store.open(work / "state")
        _seed_previous(lab, store)
        inventory = load_inventory(lab.inventory_path)
        console.print(f"inventory: {lab.inventory_path} ({len(inventory.devices)} devices); "
                      f"state: {store.root}", soft_wrap=True)
        with lab.environment():
            _step(2, "Status before: what every listener serves (by handshake)")
            before = asyncio.run(collect_status(inventory, store))
            console.print(render_status(before, inventory.expiry_warn_days))

            _step(3, "Make the key (kept in the state store) and the CSR: certfleet csr wildcard")
            made = make_inventory_csr("wildcard", inventory=inventory, store=store,
                                      out_dir=work / "csr")
            console.print(f"key stored: {made.key_path.name} (0600), spki "
                          f"{made.key.spki_sha256[:16]}…; CSR for "
                          f"{', '.join(inventory.certificates['wildcard'].names)}",
                          soft_wrap=True)

            _step(4, "The CA issues the renewed wildcard: a .crt and a .p7b (chain in the "
                     "wrong order)")
            issued = lab.ca.issue(csr=made.csr)
            download = work / "from-the-ca"
            download.mkdir()
            (download / "star_example_com.crt").write_bytes(issued.leaf_pem)
            (download / "star_example_com.p7b").write_bytes(issued.p7b(wrong_order=True))
            console.print("received: star_example_com.crt, star_example_com.p7b (no key)")

            _step(5, "Import and check: certfleet import wildcard star_example_com.crt "
                     "star_example_com.p7b")
            imported = import_certificate(
                inventory, store, "wildcard",
                [download / "star_example_com.crt", download / "star_example_com.p7b"],
            )
            print_findings(imported.findings)
            version = imported.version
            console.print(f"[green]stored[/] wildcard v{version.id}: {version.subject}, valid to "
                          f"{version.not_after[:10]}, key found in the store by public key")

            _step(6, "Plan: certfleet plan")
            plans = asyncio.run(make_plan(inventory, store))
            console.print(render_plan(plans))

            _step(7, "Deploy to every device: certfleet deploy --canary ovoc")
            report = run_deploy_cli(
                inventory, store, make_factory(store), only=[], concurrency=None,
                canary="ovoc" if "ovoc" in inventory.devices else None, force=False,
                dry_run=False, allow_no_rollback=False, break_lock=False, quiet=False,
            )
            console.print(render_report(report))

            _step(8, "Verify by handshake and show the status after: certfleet status")
            after = asyncio.run(collect_status(inventory, store))
            console.print(render_status(after, inventory.expiry_warn_days))
        not_current = [s.name for s in after if not s.is_current]
        if report.exit_code != 0 or not_current:
            err_console.print(f"[bold red]demo failed:[/] deploy exit {report.exit_code}; "
                              f"not serving v{version.id}: {', '.join(not_current) or 'none'}")
            return report.exit_code or 1
        console.print()
        console.print(f"[bold green]done[/]: {len(after)} devices serve wildcard v{version.id} "
                      f"on every listener; the lab is stopped and its files removed.")
        return 0
    finally:
        if store is not None:
            store.close()
        if lab is not None:
            lab.stop()
        shutil.rmtree(work, ignore_errors=True)


def register(app: typer.Typer) -> None:
    lab_app = typer.Typer(help="The lab estate: simulated OVOC and SBCs on 127.0.0.1.",
                          no_args_is_help=True)
    app.add_typer(lab_app, name="lab")

    @lab_app.command("up")
    @handle_errors
    def lab_up(
        sbcs: int = typer.Option(3, "--sbcs", min=1, help="Lab SBCs (the last is an HA pair)."),
        directory: Path | None = DIR_OPTION,
        acme: bool = typer.Option(
            False, "--acme", help="Also start Pebble (ACME CA) and challtestsrv (its DNS)."),
    ) -> None:
        """Start a lab OVOC, N lab SBCs and a lab CA; run until Ctrl-C."""
        import shutil
        import tempfile

        from ..estate.store import Store
        from ..lab.estate import LabEstate

        if acme:
            from .acme_lab import require_pebble

            require_pebble()
        temporary = directory is None
        where = Path(tempfile.mkdtemp(prefix="certfleet-lab-")) if directory is None else directory
        lab = LabEstate(where, sbcs=sbcs)
        pebble = None
        try:
            lab.start()
            if acme:
                from .acme_lab import attach_pebble

                pebble = attach_pebble(lab, where)
                console.print(f"Pebble: {pebble.directory_url} (DNS-01 through challtestsrv "
                              f"{pebble.dns_server}); try: certfleet renew", soft_wrap=True,
                              markup=False)
            with Store.open(where / "state") as store:
                _seed_previous(lab, store)
            console.print(f"[bold]lab estate up[/]: {', '.join(lab.device_names)} on 127.0.0.1, "
                          f"serving a wildcard with {lab.old.leaf.not_valid_after_utc:%Y-%m-%d} "
                          "as its end date", soft_wrap=True)
            console.print(f"  inventory: {lab.inventory_path}", soft_wrap=True)
            console.print(f"  secrets:   {lab.env_path} (0600)", soft_wrap=True)
            console.print(f"  state:     {where / 'state'} (last renewal imported as v1)",
                          soft_wrap=True)
            console.print("In another shell:", soft_wrap=True)
            console.print(f"  set -a; . {lab.env_path}; set +a\n"
                          f"  export CERTFLEET_INVENTORY={lab.inventory_path} "
                          f"CERTFLEET_STATE_DIR={where / 'state'}\n"
                          "  certfleet status; certfleet csr wildcard; certfleet plan; "
                          "certfleet deploy", soft_wrap=True, markup=False, highlight=False)
            console.print("Press Ctrl-C to stop the lab.")
            try:
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("stopping the lab")
        finally:
            lab.stop()
            if pebble is not None:
                pebble.stop()
            if temporary:
                shutil.rmtree(where, ignore_errors=True)

    @app.command("demo")
    @handle_errors
    def demo(
        acme: bool = typer.Option(
            False, "--acme", help="The unattended story: renew from Pebble by DNS-01."),
    ) -> None:
        """Renew and deploy a wildcard across a lab estate, end to end (starts nothing lasting)."""
        if acme:
            from .acme_lab import run_acme_demo

            raise typer.Exit(run_acme_demo())
        raise typer.Exit(run_demo())
