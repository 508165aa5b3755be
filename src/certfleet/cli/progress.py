"""Live deploy progress and the deploy run of the CLI (Ctrl-C and SIGTERM handled)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import err_console, run_interruptible, text

if TYPE_CHECKING:
    from rich.live import Live
    from rich.table import Table

    from ..drivers.base import StepEvent
    from ..estate.deploy import DeployReport, DeviceResult, DriverFactory
    from ..estate.options import DeployOptions
    from ..estate.store import Store
    from ..inventory import Inventory

__all__ = ["Progress", "run_deploy_cli"]


class Progress:
    """Live per-device progress: a rich Live table on a terminal, plain lines otherwise."""

    def __init__(self, names: list[str], *, quiet: bool = False) -> None:
        self.names = names
        self.state: dict[str, tuple[str, str, str]] = {n: ("waiting", "", "") for n in names}
        self.quiet = quiet
        self.live: Live | None = None
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

    def _table(self) -> Table:
        from rich.table import Table

        table = Table(title="Deploying", title_justify="left")
        table.add_column("device")
        table.add_column("step")
        table.add_column("status")
        table.add_column("detail")
        for name in self.names:
            step, status, detail = self.state.get(name, ("", "", ""))
            style = {"ok": "green", "failed": "red", "start": "cyan"}.get(status, "dim")
            table.add_row(text(name), text(step), f"[{style}]{text(status)}[/]", text(detail[:80]))
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
            why = ""
            if result.status in ("refused", "interrupted", "failed", "restored"):
                why = ": " + result.message.removeprefix(f"{result.device}: ")
            err_console.print(f"{result.device}: {result.status}{why}", markup=False,
                              highlight=False, soft_wrap=True)


def run_deploy_cli(
    inventory: Inventory,
    store: Store,
    factory: DriverFactory,
    options: DeployOptions,
    *,
    quiet: bool,
) -> DeployReport:
    from ..estate.deploy import run_deploy
    from ..inventory import select_devices

    names = [d.name for d in select_devices(inventory, options.only)]
    with Progress(names, quiet=quiet) as progress:
        return run_interruptible(
            run_deploy(inventory, store, factory, options, on_event=progress.event,
                       on_result=progress.result),
            what="deploy",
        )
