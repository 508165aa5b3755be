"""Estate commands: init, import, plan, deploy, verify, rollback, history, status, unlock."""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from .common import console, err_console, fail, handle_errors, print_json, read_password

if TYPE_CHECKING:
    from ..drivers.base import StepEvent
    from ..estate.deploy import DeployReport, DeviceResult, DriverFactory
    from ..estate.status import DeviceStatus
    from ..estate.store import Store
    from ..inventory import Inventory

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
FILES_ARGUMENT = typer.Argument(..., help="What the CA sent: .crt, .p7b, .pfx, key...")

BAND_STYLE = {
    "expired": "bold red",
    "critical": "red",
    "warning": "yellow",
    "ok": "green",
    "unknown": "dim",
}
OUTCOME_STYLE = {
    "installed": "green",
    "skipped": "dim",
    "would-deploy": "cyan",
    "restored": "yellow",
    "refused": "magenta",
    "failed": "bold red",
    "not-attempted": "dim",
    "interrupted": "bold red",
    "in-progress": "cyan",
}


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


def default_factory(store: Store, devices: list[Any] | None = None) -> DriverFactory:
    """The real drivers; secrets the inventory says to ``prompt`` for are asked now."""
    from ..estate.devices import make_factory, prompt_secrets

    return make_factory(store, prompt_secrets(devices or []))


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


# ---- rendering shared with the demo ---------------------------------------------------


def _cn(rfc4514: str | None) -> str:
    """The CN of an RFC 4514 name string, or the whole string when it has none."""
    if not rfc4514:
        return ""
    for part in rfc4514.split(","):
        if part.startswith("CN="):
            return part[3:]
    return rfc4514


def render_status(
    statuses: list[DeviceStatus], warn_days: int = 30, *, wide: bool | None = None
) -> Any:
    """The status table (rich): one line per listener, devices sorted by days left.

    Device, kind, listener and label are columns of their own, repeated on
    every line (each line reads alone); it fits 100 columns. The issuer gets
    a column on a wide terminal (``wide``: decided from the console width
    when None). Devices whose listeners disagree, or whose last deploy was
    interrupted, get a line under the table.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..estate.status import band

    if wide is None:
        wide = console.width >= 120
    table = Table(title="Estate status", title_justify="left", box=box.SIMPLE_HEAD,
                  collapse_padding=True, pad_edge=False)
    table.add_column("device", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("listener", no_wrap=True)
    table.add_column("label", max_width=12)
    table.add_column("certificate", max_width=28)
    if wide:
        table.add_column("issuer", max_width=28)
    table.add_column("sha256", no_wrap=True)
    table.add_column("days", justify="right", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("current", no_wrap=True)
    disagree = []
    for status in statuses:
        count = len(status.listeners)
        if not status.agree and count > 1:
            same = max(
                sum(1 for other in status.listeners if other.sha256 == x.sha256 and x.sha256)
                for x in status.listeners
            )
            disagree.append(Text(f"{status.name}: {same}/{count} listeners serve the same "
                                 "certificate", style="yellow"))
        for item in status.listeners:
            where = [Text(status.name), Text(status.kind, style="dim"), Text(item.listener),
                     Text(item.label or "-", style="dim")]
            if not item.reachable:
                error = Text("unreachable", style="red")
                error.append(f" {item.error}" if item.error else "", style="dim")
                table.add_row(*where, error, *([""] if wide else []), "", "", "", "")
                continue
            days = item.days_left
            days_text = Text(f"{days}{' expired' if days is not None and days < 0 else ''}",
                             style=BAND_STYLE[band(days, warn_days)])
            name_ok = {True: Text("ok", style="green"), False: Text("mismatch", style="red"),
                       None: Text("-")}[item.hostname_ok]
            if item.is_current:
                current = Text(f"v{status.current_version}", style="green")
            elif status.current_sha256:
                current = Text("no", style="yellow")
            else:
                current = Text("none", style="dim")
            issuer = [Text(_cn(item.issuer))] if wide else []
            table.add_row(*where, Text(_cn(item.subject)), *issuer,
                          _short(item.sha256)[:8], days_text, name_ok, current)
    notes = disagree + _journal_notes(statuses)
    if not notes:
        return table
    from rich.console import Group

    return Group(table, *notes)


def _journal_notes(statuses: list[DeviceStatus]) -> list[Any]:
    """One line per device whose newest deploy died mid-way (or still runs)."""
    from rich.text import Text

    notes = []
    for status in sorted(statuses, key=lambda s: s.name):
        last = status.last_deployment
        if not last or last["outcome"] not in ("interrupted", "in-progress"):
            continue
        line = Text()
        line.append(f"{status.name}: ", style="bold")
        line.append(last["outcome"], style=OUTCOME_STYLE[last["outcome"]])
        line.append(f" deploy (run {last['run_id']}) at {last['last_step'] or 'its start'}")
        if last["outcome"] == "interrupted":
            line.append("; run 'certfleet deploy' to finish it or "
                        f"'certfleet rollback {status.name}' to restore the backup before it")
        notes.append(line)
    return notes


def _served_change(before: dict[str, str | None], after: dict[str, str | None]) -> str:
    def short(values: dict[str, str | None]) -> str:
        return ",".join(sorted({_short(v)[:8] for v in values.values()})) or "-"

    return f"{short(before)} → {short(after)}"


def render_report(report: DeployReport) -> Any:
    """The deploy summary table and a line of counts with the run's exit code."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = "Deploy summary" + (" (dry run)" if report.dry_run else "")
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
            result.device,
            f"[{style}]{result.status}[/]",
            str(result.exit_code),
            _served_change(result.served_before, result.served_after),
            f"{result.seconds:.1f}s",
            message + (f"\n[yellow]Tip:[/] {result.hint}" if result.hint else ""),
        )
    counts: dict[str, int] = {}
    for result in report.results:
        counts[result.status] = counts.get(result.status, 0) + 1
    line = ", ".join(f"{n} {status}" for status, n in counts.items()) or "no device"
    return Group(table, Text(f"{line}; exit code {report.exit_code}"
                             + (f" (run {report.run_id})" if report.run_id else "")))


class Progress:
    """Live per-device progress: a rich Live table on a terminal, plain lines otherwise."""

    def __init__(self, names: list[str], *, quiet: bool = False) -> None:
        self.names = names
        self.state: dict[str, tuple[str, str, str]] = {n: ("waiting", "", "") for n in names}
        self.quiet = quiet
        self.live: Any = None
        self.tty = err_console.is_terminal and not quiet

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.live import Live

            self.live = Live(self._table(), console=err_console, refresh_per_second=8,
                             transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title="Deploying", title_justify="left")
        table.add_column("device")
        table.add_column("step")
        table.add_column("status")
        table.add_column("detail")
        for name in self.names:
            step, status, detail = self.state.get(name, ("", "", ""))
            style = {"ok": "green", "failed": "red", "start": "cyan"}.get(status, "dim")
            table.add_row(name, step, f"[{style}]{status}[/]", detail[:80])
        return table

    def event(self, event: StepEvent) -> None:
        self.state[event.device] = (event.step, event.status, event.detail)
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(self._table())
        else:
            detail = f" ({event.detail})" if event.detail else ""
            err_console.print(f"{event.device}: {event.step} {event.status}{detail}",
                              markup=False, highlight=False, soft_wrap=True)

    def result(self, result: DeviceResult) -> None:
        self.state[result.device] = ("done", result.status, result.message)
        if self.live is not None:
            self.live.update(self._table())
        elif not self.quiet:
            err_console.print(f"{result.device}: {result.status}", markup=False)


def run_deploy_cli(
    inventory: Inventory,
    store: Store,
    factory: DriverFactory,
    *,
    only: list[str],
    concurrency: int | None,
    canary: str | None,
    force: bool,
    dry_run: bool,
    allow_no_rollback: bool,
    break_lock: bool,
    quiet: bool,
) -> DeployReport:
    from ..estate.deploy import run_deploy
    from ..inventory import select_devices

    names = [d.name for d in select_devices(inventory, only)]
    with Progress(names, quiet=quiet) as progress:
        return _run_async(
            run_deploy(
                inventory, store, factory, only=only, concurrency=concurrency, canary=canary,
                force=force, dry_run=dry_run, allow_no_rollback=allow_no_rollback,
                break_lock=break_lock, on_event=progress.event, on_result=progress.result,
            )
        )


_T = TypeVar("_T")


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run, imported on use: asyncio costs start-up time `--help` need not pay."""
    import asyncio

    return asyncio.run(coro)


def register(app: typer.Typer) -> None:
    @app.command("init")
    @handle_errors
    def init_command(inventory: Path = INVENTORY_OPTION) -> None:
        """Write a commented inventory skeleton (never overwrites)."""
        from ..fsutil import write_file_atomic
        from ..inventory import SKELETON

        if inventory.exists():
            fail(f"{str(inventory)!r} already exists; not overwriting it",
                 "edit it, or pass --inventory NEW_FILE")
        write_file_atomic(inventory, SKELETON.encode())
        console.print(f"wrote {inventory}: edit the certificates and devices, then run "
                      "'certfleet csr wildcard'")

    @app.command("import")
    @handle_errors
    def import_command(
        name: str = typer.Argument(..., help="The inventory certificate (e.g. wildcard)."),
        files: list[Path] = FILES_ARGUMENT,
        password_env: str | None = typer.Option(
            None, "--password-env", help="Variable holding the file password (PKCS#12/key)."),
        password_file: str | None = typer.Option(
            None, "--password-file", help="File holding the file password."),
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Check the issued files and store them as the new version of NAME."""
        from ..errors import PreflightError
        from ..estate.importer import import_certificate

        password = read_password(password_env, what="file password", file=password_file)
        inv = load(inventory)
        with open_store(state_dir) as store:
            try:
                result = import_certificate(
                    inv, store, name, files, password=password.encode() if password else None
                )
            except PreflightError as exc:
                if json_out:
                    print_json({"error": exc.message, "hint": exc.hint,
                                "findings": [f.to_dict() for f in exc.findings]})
                    raise typer.Exit(2) from None
                print_findings(exc.findings)
                raise
        if json_out:
            print_json(result.to_dict())
            return
        print_findings(result.findings)
        version = result.version
        verb = "stored" if result.new else "already stored"
        console.print(
            f"[green]{verb}[/] {name} v{version.number}: {version.subject}, "
            f"{_short(version.leaf_sha256)}, valid to {version.not_after[:10]}"
            + (" (key from the state store)" if result.key_from_store else "")
        )

    @app.command("plan")
    @handle_errors
    def plan_command(
        only: list[str] = ONLY_OPTION,
        force: bool = typer.Option(False, "--force", help="Plan as deploy --force would."),
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Show, per device, what it serves now, what it will serve, the steps, rollback."""
        from ..estate.plan import make_plan

        inv = load(inventory)
        with open_store(state_dir) as store:
            plans = _run_async(make_plan(inv, store, only, force=force))
        if json_out:
            print_json({"devices": [p.to_dict() for p in plans]})
            return
        console.print(render_plan(plans))

    @app.command("deploy")
    @handle_errors
    def deploy_command(
        only: list[str] = ONLY_OPTION,
        concurrency: int | None = typer.Option(
            None, "--concurrency", min=1, help="Devices at once (default 8 or the inventory's)."),
        canary: str | None = typer.Option(
            None, "--canary", help="Deploy this device first; stop when it fails."),
        force: bool = typer.Option(
            False, "--force", help="Deploy even where served already, or past check errors."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be done."),
        allow_no_rollback: bool = typer.Option(
            False, "--allow-no-rollback", help="Deploy where no rollback is possible."),
        break_lock: bool = typer.Option(
            False, "--break-lock",
            help="Accepted for old scripts: a lock whose process died is free already."),
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Deploy the current version to every device that does not serve it yet.

        Exit code: the worst device's, ranked 3 (failed, not restored) > 1
        (failed, restored) > 2 (refused, untouched) > 0 (installed/skipped).
        """
        from ..errors import StateError
        from ..inventory import select_devices

        inv = load(inventory)
        with open_store(state_dir) as store:
            holder = store.lock_holder()
            if holder is not None and not break_lock and not dry_run:
                # Refused before anything was touched: exit 2, like any refusal.
                fail(f"another deploy holds the lock: {holder.describe()}",
                     "wait for it to finish (the lock goes with its process)",
                     json_out=json_out)
            factory = default_factory(store, [] if dry_run else select_devices(inv, only))
            try:
                report = run_deploy_cli(
                    inv, store, factory, only=only, concurrency=concurrency,
                    canary=canary, force=force, dry_run=dry_run,
                    allow_no_rollback=allow_no_rollback, break_lock=break_lock, quiet=json_out,
                )
            except StateError as exc:
                if getattr(exc, "lock", None) is None:
                    raise
                fail(exc.message, exc.hint, json_out=json_out)
        if json_out:
            print_json(report.to_dict())
        else:
            console.print(render_report(report))
        raise typer.Exit(report.exit_code)

    @app.command("verify")
    @handle_errors
    def verify_command(
        only: list[str] = ONLY_OPTION,
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Handshake every listener; exit 1 when any device does not serve the current version."""
        from ..estate.status import collect_status
        from ..inventory import select_devices

        inv = load(inventory)
        with open_store(state_dir) as store:
            statuses = _run_async(collect_status(inv, store, select_devices(inv, only)))
            store.audit("verify", "ok" if all(s.is_current for s in statuses) else "mismatch")
        bad = [s for s in statuses if not s.is_current]
        if json_out:
            print_json({"ok": not bad, "devices": [s.to_dict() for s in statuses]})
        else:
            for status in sorted(statuses, key=lambda s: s.name):
                mark = "[green]ok[/]" if status.is_current else "[red]NOT CURRENT[/]"
                console.print(f"{status.name}: {mark} ({status.serving_current}/"
                              f"{len(status.listeners)} listeners serve "
                              f"v{status.current_version or '-'})")
        raise typer.Exit(1 if bad else 0)

    @app.command("rollback")
    @handle_errors
    def rollback_command(
        device: str = typer.Argument(..., help="The device to put back to its last backup."),
        break_lock: bool = typer.Option(
            False, "--break-lock",
            help="Accepted for old scripts: a lock whose process died is free already."),
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Restore DEVICE's last backup through its driver, then verify by handshake."""
        from ..errors import StateError
        from ..estate.rollback import rollback_device

        inv = load(inventory)
        with open_store(state_dir) as store:
            factory = default_factory(store, [d for d in inv.devices.values() if d.name == device])
            with Progress([device], quiet=json_out) as progress:
                try:
                    result = _run_async(rollback_device(
                        inv, store, factory, device, on_event=progress.event,
                        break_lock=break_lock,
                    ))
                except StateError as exc:
                    # Refused by the lock, or no backup: the device was not touched.
                    fail(exc.message, exc.hint, 2, json_out=json_out)
        if json_out:
            print_json(result.to_dict())
        elif result.ok:
            console.print(f"[green]{result.message}[/]")
        else:
            err_console.print(f"[bold red]error:[/] {result.message}")
            if result.hint:
                err_console.print(f"[yellow]Tip:[/] {result.hint}")
        raise typer.Exit(result.exit_code)

    @app.command("history")
    @handle_errors
    def history_command(
        device: str | None = typer.Option(None, "--device", help="Only this device."),
        limit: int = typer.Option(50, "--limit", min=1, help="At most this many entries."),
        steps: bool = typer.Option(False, "--steps", help="Show every step under each entry."),
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Past deployments and rollbacks, newest first: time, user, outcome, last step.

        A deploy whose process died is shown as interrupted, with the last
        step it reached.
        """
        del inventory  # accepted like every command's; history lives in the state store
        with open_store(state_dir) as store:
            store.settle_interrupted()
            rows = store.history(device=device, limit=limit)
        if json_out:
            print_json({"deployments": rows})
            return
        console.print(render_history(rows, steps=steps))

    @app.command("status")
    @handle_errors
    def status_command(
        only: list[str] = ONLY_OPTION,
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """What every listener serves now: certificate, days left, name match, current."""
        from ..estate.status import collect_status
        from ..inventory import select_devices

        inv = load(inventory)
        with open_store(state_dir) as store:
            statuses = _run_async(collect_status(inv, store, select_devices(inv, only)))
        if json_out:
            print_json({"devices": [s.to_dict() for s in statuses]})
            return
        console.print(render_status(statuses, inv.expiry_warn_days))

    @app.command("unlock")
    @handle_errors
    def unlock_command(
        inventory: Path = INVENTORY_OPTION, state_dir: Path | None = STATE_OPTION
    ) -> None:
        """Check the deploy lock; runs whose process died are recorded as interrupted.

        The lock is held by the operating system: it goes with the process
        that held it, so there is never a stale lock to clear. A lock held
        by a live process is named (exit 2).
        """
        del inventory  # accepted like every command's; the lock lives in the state store
        with open_store(state_dir) as store:
            held = store.lock_holder()
            if held is not None:
                fail(f"another deploy holds the lock: {held.describe()}",
                     "wait for it to finish; the lock goes when its process ends")
            settled = store.settle_interrupted()
            store.audit("unlock", "ok", detail=f"interrupted runs: {settled}")
        console.print("no lock is held (a process that ends releases it)"
                      + (f"; run(s) {', '.join(map(str, settled))} recorded as interrupted"
                         if settled else ""))


def render_plan(plans: list[Any]) -> Any:
    """The plan table, then the steps once per device kind."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Plan", title_justify="left")
    table.add_column("device", no_wrap=True)
    table.add_column("serves now", no_wrap=True)
    table.add_column("will serve", no_wrap=True)
    table.add_column("action")
    table.add_column("rollback")
    kinds: dict[str, tuple[str, ...]] = {}
    for plan in plans:
        served = ",".join(sorted({_short(v)[:8] for v in plan.served.values()}))
        action_style = {"deploy": "cyan", "skip": "dim", "blocked": "red"}[plan.action]
        target = f"v{plan.target_version} {_short(plan.target_sha256)[:8]}"
        table.add_row(
            f"{plan.name} [dim]{plan.kind}[/]",
            served,
            target if plan.target_version else "-",
            f"[{action_style}]{plan.action}[/] [dim]{plan.reason}[/]",
            "[green]yes[/]" if plan.rollback else f"[red]no[/] [dim]{plan.rollback_reason}[/]",
        )
        if plan.steps:
            kinds.setdefault(plan.kind, plan.steps)
    parts: list[Any] = [table]
    for kind, steps in kinds.items():
        parts.append(Text(f"{kind} steps: " + "; ".join(
            f"{number}. {step}" for number, step in enumerate(steps, 1)), style="dim"))
    return Group(*parts)


def _when(iso: str | None) -> str:
    """``2026-12-01 02:17:21`` from an ISO 8601 UTC time (the whole time, never cut)."""
    if not iso:
        return "-"
    return iso.replace("T", " ").removesuffix("+00:00")


def render_history(rows: list[dict[str, Any]], *, steps: bool = False) -> Any:
    """The history table (fits 100 columns); with ``steps`` every step under its entry."""
    import datetime as dt

    from rich.table import Table
    from rich.text import Text

    table = Table(title="History (times in UTC)", title_justify="left")
    table.add_column("time", no_wrap=True, min_width=19)
    table.add_column("run", justify="right", no_wrap=True)
    table.add_column("user", no_wrap=True, max_width=12, overflow="ellipsis")
    table.add_column("device", no_wrap=True)
    table.add_column("command", max_width=16, overflow="fold")
    table.add_column("outcome", no_wrap=True)
    table.add_column("last step / message", ratio=1, overflow="fold")
    for row in rows:
        style = OUTCOME_STYLE.get(row["outcome"], "")
        detail = Text()
        if row["outcome"] == "in-progress" and row.get("last_step"):
            detail.append(f"at {row['last_step']}: ", style="bold")
        detail.append(str(row["message"]).removeprefix(f"{row['device']}: "))
        table.add_row(
            _when(row["finished"] or row["started"]),
            str(row["run_id"] or "-"),
            Text(row["user"] or "-"),
            Text(row["device"]),
            Text(row["command"] or "-"),
            Text(row["outcome"], style=style),
            detail,
        )
        for step in row["steps"] if steps else ():
            clock = dt.datetime.fromtimestamp(step["at"], dt.UTC).strftime("%H:%M:%S")
            status_style = {"ok": "green", "failed": "red", "start": "cyan"}.get(step["status"])
            table.add_row(
                Text(f"  {clock}", style="dim"), "", "", "", "",
                Text(step["status"], style=status_style or "dim"),
                Text(step["step"] + (f": {step['detail']}" if step["detail"] else "")),
            )
    return table


def print_findings(findings: list[Any]) -> None:
    styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
    for finding in findings:
        style = styles.get(finding.severity, "")
        err_console.print(f"[{style}]{finding.severity}[/] {finding.code}: {finding.message}",
                          soft_wrap=True)



