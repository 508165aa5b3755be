"""Estate commands: plan, deploy, verify, rollback, history, status, unlock (init, import
and adopt are in `intake`)."""

from __future__ import annotations

from collections.abc import Coroutine
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from .common import (
    console,
    err_console,
    fail,
    handle_errors,
    load_private_keys,
    print_error,
    print_json,
    read_password,
    run_interruptible,
    text,
)
from .crash import crash_guard
from .estate_tables import OUTCOME_STYLE, _short, render_history
from .estate_tables import render_status as render_status  # used by the lab demo
from .progress import Progress as Progress
from .progress import run_deploy_cli as run_deploy_cli
from .redeploy import FORCE_OPTION, IGNORE_OPTION, REDEPLOY_OPTION, resolve

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Group

    from ..estate.deploy import DeployReport, DriverFactory
    from ..estate.plan import DevicePlan
    from ..estate.status import DeviceStatus
    from ..estate.store import Store
    from ..inventory import Device, Inventory
    from ..pki.model import Finding, PrivateKey

from .options import INVENTORY_OPTION as INVENTORY_OPTION
from .options import JSON_OPTION as JSON_OPTION
from .options import ONLY_OPTION as ONLY_OPTION
from .options import STATE_OPTION as STATE_OPTION
from .options import STATE_URL_OPTION as STATE_URL_OPTION
from .options import load as load
from .options import open_estate as open_estate
from .options import open_store as open_store


def _known_device(name: str, inventory: Path, in_history: list[str], *, json_out: bool) -> None:
    """Exit 2 naming the known devices when ``name`` is neither in the inventory (when it
    can be read: the history needs none) nor in the history."""
    from ..errors import CertfleetError

    known = set(in_history)
    with suppress(CertfleetError):  # no readable inventory: the history alone
        known |= set(load(inventory).devices)
    if name not in known:
        fail(f"no device named {name!r} in {inventory} or in the history",
             ("devices: " + ", ".join(sorted(known))) if known else
             "name a device of the inventory (--inventory FILE)", json_out=json_out)


def default_factory(
    store: Store,
    devices: list[Device] | None = None,
    extra_keys: list[PrivateKey] | None = None,
    inventory: Inventory | None = None,
    *,
    ask: bool = True,
) -> DriverFactory:
    """The real drivers, built with the secrets of ``devices`` resolved now, before any
    connection: ``prompt`` questions are asked now (``ask``; with ``inventory``, the
    certificates' key passphrases too), else left blank (a plan, a dry run)."""
    from ..estate.decide import placeholder_secrets
    from ..estate.devices import make_factory, prompt_secrets

    credentials = (prompt_secrets(devices or [], inventory) if ask
                   else placeholder_secrets(devices or []))
    return make_factory(store, credentials, extra_keys or ())


PREVIOUS_KEY_OPTION = typer.Option(
    None, "--previous-key", metavar="FILE",
    help="The private key the SBCs serve now (PEM, or a pfx), for this run's rollback.")
PREVIOUS_KEY_PASSWORD_OPTION = typer.Option(
    None, "--previous-key-password-env", metavar="VAR",
    help="Variable holding the password of an encrypted --previous-key.")


def load_previous_key(path: Path | None, password_env: str | None) -> list[PrivateKey]:
    """The private keys of ``--previous-key FILE`` (none without it). Raises PrivateKeyError."""
    if path is None:
        if password_env:
            fail("--previous-key-password-env is given without --previous-key",
                 "pass --previous-key FILE as well, or drop --previous-key-password-env")
        return []
    from .common import password_from

    password = read_password(password_env, what="previous key password")
    with password_from("--previous-key-password-env"):
        return load_private_keys(
            path, password,
            hint="pass the key of the certificate the SBCs serve now to --previous-key")


# ---- rendering shared with the demo ---------------------------------------------------


def _served_change(before: dict[str, str | None], after: dict[str, str | None]) -> str:
    def short(values: dict[str, str | None]) -> str:
        return ",".join(sorted({_short(v)[:8] for v in values.values()})) or "-"

    return f"{short(before)} → {short(after)}"


def render_report(report: DeployReport) -> Group:
    """The deploy summary table and a line of counts with the run's exit code."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = "Deploy summary" + (" (dry run)" if report.dry_run else "") + (
        " (interrupted)" if report.interrupted else "")
    table = Table(title=title, title_justify="left")
    table.add_column("device", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("exit", justify="right")
    table.add_column("served", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("message")
    for result in report.results:
        style = OUTCOME_STYLE.get(result.status, "")
        message = result.message.removeprefix(f"{result.device}: ")
        table.add_row(
            text(result.device),
            f"[{style}]{result.status}[/]",
            str(result.exit_code),
            _served_change(result.served_before, result.served_after),
            f"{result.seconds:.1f}s",
            text(message) + (f"\n[yellow]Tip:[/] {text(result.hint)}" if result.hint else ""),
        )
    counts: dict[str, int] = {}
    for result in report.results:
        counts[result.status] = counts.get(result.status, 0) + 1
    line = ", ".join(f"{n} {status}" for status, n in counts.items()) or "no device"
    return Group(table, Text(f"{line}; exit code {report.exit_code}"
                             + (f" (run {report.run_id})" if report.run_id else "")))


_T = TypeVar("_T")


def _run_async(coro: Coroutine[object, None, _T]) -> _T:
    """asyncio.run, imported on use: asyncio costs start-up time `--help` need not pay."""
    import asyncio

    return asyncio.run(coro)


@handle_errors
def plan_command(
    only: list[str] = ONLY_OPTION,
    force: bool = FORCE_OPTION,
    redeploy: bool = REDEPLOY_OPTION,
    ignore_finding: list[str] = IGNORE_OPTION,
    allow_no_rollback: bool = typer.Option(
        False, "--allow-no-rollback", help="Plan as deploy --allow-no-rollback would."),
    previous_key: Path | None = PREVIOUS_KEY_OPTION,
    previous_key_password_env: str | None = PREVIOUS_KEY_PASSWORD_OPTION,
    probe: bool = typer.Option(
        False, "--probe", help="Also rehearse on every device, changing nothing (exit 1 "
        "when one is not ready); see 'certfleet probe'."),
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Show, per device, what it serves now, what it will serve, the steps, rollback.

    Decided by the same code as deploy: a device planned "blocked" is one
    deploy refuses (and then, without --skip-refused, changes no device).
    With --probe, also rehearse on every device (see 'certfleet probe'):
    exit 1 when one is not ready.
    """
    from ..estate.decide import placeholder_secrets
    from ..estate.devices import make_factory, prompt_key_passphrases
    from ..estate.options import DeployOptions
    from ..estate.plan import make_plan
    from ..inventory import select_devices

    extra_keys = load_previous_key(previous_key, previous_key_password_env)
    redeploy, ignored = resolve(force, redeploy, ignore_finding, json_out=json_out)
    inv = load(inventory)
    prompt_key_passphrases(select_devices(inv, only), inv)  # asked before the run
    with open_store(state_dir, state_url, inv) as store:
        factory = make_factory(
            store, placeholder_secrets(select_devices(inv, only)), extra_keys)
        options = DeployOptions(only=tuple(only), force=redeploy,
                                allow_no_rollback=allow_no_rollback,
                                ignore_findings=tuple(ignored))
        plans = _run_async(make_plan(inv, store, options, factory=factory))
        if probe:
            from .probe import exit_code, print_probes, run_probe

            probes = run_probe(inv, store, only, allow_no_rollback=allow_no_rollback)
    if json_out:
        print_json({"devices": [p.to_dict() for p in plans]}
                   | ({"probe": [p.to_dict() for p in probes]} if probe else {}))
    else:
        console.print(render_plan(plans))
    if probe:
        if not json_out:
            print_probes(probes)
        raise typer.Exit(exit_code(probes))


@handle_errors
@crash_guard("deploy")
def deploy_command(
    only: list[str] = ONLY_OPTION,
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, help="Devices at once (default 8 or the inventory's)."),
    canary: str | None = typer.Option(
        None, "--canary",
        help="Deploy this device first; stop when it fails. 'auto': the kind preferred "
             "as the canary (an OVOC), as renew does. Default: no canary."),
    force: bool = FORCE_OPTION,
    redeploy: bool = REDEPLOY_OPTION,
    ignore_finding: list[str] = IGNORE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be done."),
    allow_no_rollback: bool = typer.Option(
        False, "--allow-no-rollback", help="Deploy where no rollback is possible."),
    break_lock: bool = typer.Option(
        False, "--break-lock",
        help="Accepted for old scripts: a lock whose process died is free already."),
    skip_refused: bool = typer.Option(
        False, "--skip-refused",
        help="Deploy the other devices when some would be refused (default: change none)."),
    previous_key: Path | None = PREVIOUS_KEY_OPTION,
    previous_key_password_env: str | None = PREVIOUS_KEY_PASSWORD_OPTION,
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Deploy the current version to every device that does not serve it yet.

    What would be refused (secrets, preflight, rollback possible, unreachable,
    lock, and a login and rehearsal on every device to change) is decided for
    every device first: then, by default, no device is changed and the
    refusals are listed (exit 2).

    Exit code: the worst device's, ranked 3 (failed, not restored) > 1
    (failed, restored) > 2 (refused, untouched) > 0 (installed/skipped);
    a run that changed any device never exits 2 (1 instead).
    """
    from ..errors import StateError
    from ..estate.options import DeployOptions
    from ..inventory import select_devices

    extra_keys = load_previous_key(previous_key, previous_key_password_env)
    redeploy, ignored = resolve(force, redeploy, ignore_finding, json_out=json_out)
    with open_estate(inventory, state_dir, state_url) as (inv, store):
        # A shared store locks each device: the deploy's own lock names the one held.
        holder = None if store.shared else store.lock_holder()
        if holder is not None and not break_lock and not dry_run:
            # Refused before anything was touched: exit 2, like any refusal.
            fail(f"another deploy holds the lock: {holder.describe()}",
                 "wait for it to finish (the lock goes with its process)",
                 json_out=json_out)
        if dry_run:
            from ..estate.decide import placeholder_secrets
            from ..estate.devices import make_factory, prompt_key_passphrases

            prompt_key_passphrases(select_devices(inv, only), inv)
            factory = make_factory(
                store, placeholder_secrets(select_devices(inv, only)), extra_keys)
        else:
            factory = default_factory(store, select_devices(inv, only), extra_keys, inv)
        try:
            options = DeployOptions(
                only=tuple(only), concurrency=concurrency, canary=canary, force=redeploy,
                dry_run=dry_run, allow_no_rollback=allow_no_rollback,
                break_lock=break_lock, skip_refused=skip_refused,
                ignore_findings=tuple(ignored or ()),
            )
            report = run_deploy_cli(inv, store, factory, options, quiet=json_out)
        except StateError as exc:
            if exc.held is None:
                raise
            fail(exc.message, exc.hint, json_out=json_out)
        _tell_deploy(inv, store, report, dry_run=dry_run)
    if json_out:
        print_json(report.to_dict())
    else:
        console.print(render_report(report))
    raise typer.Exit(report.exit_code)


def _tell_deploy(inv: Inventory, store: Store, report: DeployReport, *, dry_run: bool) -> None:
    """Tell the [notify] targets of the run, and of an earlier run killed mid-deploy."""
    from ..acme.config import notify_config
    from ..estate.interrupted import tell_interrupted
    from ..notify import notify_deploy  # [notify] targets; never changes the exit code

    notify_deploy(notify_config(inv), report, lambda text: err_console.print(text, markup=False))
    if not dry_run:  # an earlier run killed mid-deploy could not say so: this one does
        tell_interrupted(store, notify_config(inv),
                         lambda text: err_console.print(text, markup=False))


@handle_errors
def verify_command(
    only: list[str] = ONLY_OPTION,
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Handshake every listener; exit 1 when any device does not serve the current version."""
    from ..estate.status import collect_status
    from ..inventory import select_devices

    with open_estate(inventory, state_dir, state_url) as (inv, store):
        statuses = _run_async(collect_status(inv, store, select_devices(inv, only)))
        store.audit("verify", "ok" if all(s.is_current for s in statuses) else "mismatch")
    bad = [s for s in statuses if not s.is_current]
    down = {s.name: why for s in statuses if (why := _unreachable(s)) is not None}
    if json_out:
        devices = []
        for status in statuses:
            data = status.to_dict()
            data["state"] = ("unreachable" if status.name in down
                             else "current" if status.is_current else "not-current")
            data["unreachable"] = down.get(status.name)
            devices.append(data)
        print_json({"ok": not bad and not down, "unreachable": sorted(down),
                    "devices": devices})
    else:
        for status in sorted(statuses, key=lambda s: s.name):
            counts = (f"{status.serving_current}/{len(status.listeners)} listeners serve "
                      f"v{status.current_version or '-'}")
            if status.name in down:
                console.print(f"{text(status.name)}: [red]UNREACHABLE[/] ({counts}; "
                              f"{text(down[status.name])})", soft_wrap=True)
                continue
            mark = "[green]ok[/]" if status.is_current else "[red]NOT CURRENT[/]"
            console.print(f"{text(status.name)}: {mark} ({counts})")
    raise typer.Exit(1 if bad or down else 0)


@handle_errors
@crash_guard("rollback")
def rollback_command(
    device: str = typer.Argument(..., help="The device to put back to its last backup."),
    break_lock: bool = typer.Option(
        False, "--break-lock",
        help="Accepted for old scripts: a lock whose process died is free already."),
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Restore DEVICE's last backup through its driver, then verify by handshake."""
    from ..estate.rollback import rollback_device

    with open_estate(inventory, state_dir, state_url) as (inv, store):
        factory = default_factory(
            store, [d for d in inv.devices.values() if d.name == device], inventory=inv)
        with Progress([device], quiet=json_out) as progress:
            result = run_interruptible(rollback_device(
                inv, store, factory, device, on_event=progress.event, break_lock=break_lock
            ), what="rollback")
    if json_out:
        print_json(result.to_dict())
    elif result.ok:
        console.print(f"[green]{text(result.message)}[/]")
    else:
        print_error(result.message, result.hint)
    raise typer.Exit(result.exit_code)


@handle_errors
def history_command(
    device: str | None = typer.Option(None, "--device", help="Only this device."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many entries."),
    steps: bool = typer.Option(False, "--steps", help="Show every step under each entry."),
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Past deployments and rollbacks, newest first: time, user, outcome, last step.

    A deploy whose process died is shown as interrupted, with the last
    step it reached.
    """
    with open_store(state_dir, state_url, inventory) as store:
        store.settle_interrupted()
        rows = store.history(device=device, limit=limit)
        if device is not None and not rows:
            _known_device(device, inventory, store.device_names(), json_out=json_out)
    if json_out:
        print_json({"deployments": rows})
        return
    console.print(render_history(rows, steps=steps))


@handle_errors
@crash_guard("status --notify", when=lambda kwargs: bool(kwargs.get("notify")))
def status_command(
    only: list[str] = ONLY_OPTION,
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
    notify: bool = typer.Option(
        False, "--notify", help="Tell [notify] targets of certificates at 30/14/7/1 days."),
) -> None:
    """What every listener serves now: certificate, days left, name match, current.

    With --notify: how many expiry notices were sent and failed; exit 1 when
    notices were due and every target failed (they are tried again next run).
    """
    from ..estate.status import collect_status
    from ..inventory import select_devices
    from .bigtable import print_table, say_probing

    told = None
    with open_estate(inventory, state_dir, state_url) as (inv, store):
        chosen = select_devices(inv, only)
        say_probing(err_console, chosen)
        statuses = _run_async(collect_status(inv, store, chosen))
        if notify:  # each band told once per certificate and device (see certfleet.notify)
            from ..acme.config import notify_config
            from ..notify import notify_expiring

            bands = store.root / "notify-bands.json"
            store.fetch_files(bands, refresh=True)  # a shared store: the team's bands
            told = notify_expiring(notify_config(inv), statuses, store.root,
                                   lambda text: err_console.print(text, markup=False))
            store.put_files([bands], secret=False)
    code = 1 if told is not None and told.all_failed else 0
    if json_out:
        data: dict[str, object] = {"devices": [s.to_dict() for s in statuses]}
        if told is not None:
            data["notify"] = told.to_dict()
        print_json(data)
        raise typer.Exit(code)
    print_table(console, render_status(statuses, inv.expiry_warn_days))
    if told is not None:
        line = f"notify: {told.sent} notice(s) sent, {told.failed} failed"
        if told.all_failed:
            line += ("; every target failed: check the [notify] urls "
                     "(the notices are sent again at the next run)")
        console.print(line, markup=False, highlight=False)
    raise typer.Exit(code)


@handle_errors
def unlock_command(
    inventory: Path = INVENTORY_OPTION, state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
) -> None:
    """Check the deploy lock; runs whose process died are recorded as interrupted.

    The lock is held by the operating system: it goes with the process
    that held it, so there is never a stale lock to clear. A lock held
    by a live process is named (exit 2).
    """
    # The inventory gives only its [state] table: the lock lives in the state store.
    with open_store(state_dir, state_url, inventory) as store:
        held = store.lock_holder()
        if held is not None:
            fail(f"another deploy holds the lock: {held.describe()}",
                 "wait for it to finish; the lock goes when its process ends")
        settled = store.settle_interrupted()
        store.audit("unlock", "ok", detail=f"interrupted runs: {settled}")
    console.print("no lock is held (a process that ends releases it)"
                  + (f"; run(s) {', '.join(map(str, settled))} recorded as interrupted"
                     if settled else ""))


def register(app: typer.Typer) -> None:
    """Add the estate commands (plan, deploy, verify, rollback, history, status, unlock)."""
    app.command("plan")(plan_command)
    app.command("deploy")(deploy_command)
    app.command("verify")(verify_command)
    app.command("rollback")(rollback_command)
    app.command("history")(history_command)
    app.command("status")(status_command)
    app.command("unlock")(unlock_command)


def _unreachable(status: DeviceStatus) -> str | None:
    """``"LISTENER: error; ..."`` for a device's listeners that did not answer."""
    down = [f"{item.listener}: {item.error or 'no answer'}"
            for item in status.listeners if not item.reachable]
    return "unreachable: " + "; ".join(down) if down else None


def render_plan(plans: list[DevicePlan]) -> Group:
    """The plan table (one row per device, each value once), then the steps per kind.

    Fits 100 columns: identifiers never wrap; the reasons wrap between words.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Plan", title_justify="left")
    table.add_column("device", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("serves now", no_wrap=True)
    table.add_column("will serve", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("rollback", no_wrap=True)
    table.add_column("why", overflow="fold", ratio=1)
    kinds: dict[str, tuple[str, ...]] = {}
    for plan in plans:
        served = ",".join(sorted({_short(v)[:8] if v else "-" for v in plan.served.values()}))
        action_style = {"deploy": "cyan", "skip": "dim", "blocked": "red"}[plan.action]
        target = f"v{plan.target_version} {_short(plan.target_sha256)[:8]}"
        why = text(plan.reason)
        if not plan.rollback and plan.action == "deploy":  # --allow-no-rollback
            why += f"; [red]no rollback[/]: {text(plan.rollback_reason)}"
        table.add_row(
            text(plan.name),
            text(plan.kind),
            served or "-",
            target if plan.target_version else "-",
            f"[{action_style}]{plan.action}[/]",
            "[green]yes[/]" if plan.rollback else "[red]no[/]",
            f"[dim]{why}[/]",
        )
        if plan.steps:
            kinds.setdefault(plan.kind, plan.steps)
    parts: list[Table | Text] = [table]
    for kind, steps in kinds.items():
        parts.append(Text(f"{kind} steps: " + "; ".join(
            f"{number}. {step}" for number, step in enumerate(steps, 1)), style="dim"))
    return Group(*parts)


def print_findings(findings: Sequence[Finding]) -> None:
    styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
    for finding in findings:
        style = styles.get(finding.severity, "")
        err_console.print(f"[{style}]{finding.severity}[/] {text(finding.code)}: "
                          f"{text(finding.message)}", soft_wrap=True)



