"""``certfleet issue`` and ``certfleet renew``: ACME issuance and unattended renewal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from .common import (
    console,
    err_console,
    fail,
    handle_errors,
    print_error,
    print_json,
    text,
)
from .crash import breadcrumb, crash_guard
from .estate import (
    INVENTORY_OPTION,
    JSON_OPTION,
    STATE_OPTION,
    STATE_URL_OPTION,
    Progress,
    _run_async,
    default_factory,
    load,
    open_store,
    render_report,
)

RENEW_ONLY_OPTION = typer.Option([], "--only", help="A certificate, device or tag (repeatable).")


def _logger(quiet: bool) -> Callable[[str], None]:
    import logging

    logger = logging.getLogger("certfleet.renew")

    def log(text: str) -> None:
        logger.info(text)
        breadcrumb(text)
        if not quiet:
            err_console.print(text, markup=False, highlight=False, soft_wrap=True)

    return log


@handle_errors
@crash_guard("issue")
def issue_command(
    name: str = typer.Argument(..., help="The inventory certificate with an acme table."),
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Order NAME from its ACME CA now (DNS-01) and store the new version.

    Exit 0: stored; 1: the CA refused or validation failed (its reason
    is printed); 2: bad configuration or issued files that fail the checks.
    """
    from ..acme import AcmeError
    from ..estate.issue import issue_certificate
    from ..estate.renew import renew_lock

    inv = load(inventory)
    log = _logger(json_out)
    with open_store(state_dir, state_url, inv) as store:
        try:
            with renew_lock(store, f"issue {name}"):
                result = issue_certificate(inv, store, name, log=log)
        except AcmeError as exc:
            store.audit("issue", "failed", detail=f"{name}: {exc.message}"[:500])
            fail(exc.message, exc.hint, 1, json_out=json_out)
    assert result is not None
    if json_out:
        print_json(result.to_dict())
        return

    version = result.imported.version
    # Subject and issuer come from the CA: text, never markup.
    console.print(f"[green]stored[/] {name} v{version.id}: {text(version.subject)}, "
                  f"{version.leaf_sha256[:12]}, valid to {version.not_after[:10]}, "
                  f"chain to {text(result.chain_issuer)}", highlight=False, soft_wrap=True)
    console.print(f"Next: certfleet deploy --only {name}  (or certfleet renew)",
                  markup=False)


@handle_errors
@crash_guard("renew")
def renew_command(
    only: list[str] = RENEW_ONLY_OPTION,
    force: bool = typer.Option(False, "--force", help="Order even when not due."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Validate against the CA's staging directory (or stop before finalising); "
        "store and change nothing."),
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Renew every certificate with an ACME issuer that is due, deploy it, verify.

    Exit code: the worst, as deploy's: 3 (failed, not restored) > 1
    (failed, restored; or the CA refused) > 2 (refused, untouched) > 0.
    """
    from ..estate.options import RenewOptions
    from ..estate.renew import run_renew
    from ..inventory import select_devices

    inv = load(inventory)
    log = _logger(json_out)
    with open_store(state_dir, state_url, inv) as store:
        # A shared store locks each device: the deploy's own lock names the one held.
        holder = None if store.shared else store.lock_holder()
        if holder is not None and not dry_run:
            fail(f"another deploy holds the lock: {holder.describe()}",
                 "wait for it to finish; if it died, run 'certfleet unlock'",
                 json_out=json_out)
        from ..estate.renew import _selection

        _, device_names = _selection(inv, only)
        devices = select_devices(inv, device_names) if device_names else []
        factory = default_factory(store, devices, ask=not dry_run)
        with Progress([d.name for d in devices], quiet=json_out) as progress:
            report = _run_async(run_renew(
                inv, store, factory, RenewOptions(tuple(only), force, dry_run), log=log,
                on_event=progress.event, on_result=progress.result,
            ))
    if json_out:
        print_json(report.to_dict())
    else:
        for item in report.items:
            style = {"issued": "green", "failed": "bold red", "would-issue": "cyan"}.get(
                item.action, "dim")

            action = item.action if item.action != "none" else "not due"
            # The reason may quote a CA's answer: text, never markup.
            line = f"{text(item.certificate)}: [{style}]{action}[/] ({text(item.reason)})"
            if item.version is not None:
                line += f" → v{item.version.id}, valid to {item.version.not_after[:10]}"
            console.print(line, highlight=False, soft_wrap=True)
            if item.error:
                print_error(item.error, item.hint)
        if report.deploy is not None:
            console.print(render_report(report.deploy))
        console.print(f"renew: {report.ordered} ordered; exit code {report.exit_code}")
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add the ACME commands (issue, renew) to ``app``."""
    app.command("issue")(issue_command)
    app.command("renew")(renew_command)
