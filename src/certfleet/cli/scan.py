"""``certfleet scan`` and ``certfleet exporter``: watch every listener's certificate."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand

from .common import console, err_console, fail, handle_errors, option_group, print_json
from .options import STATE_URL_OPTION

if TYPE_CHECKING:
    from typer._click import Context  # the click typer vendors (and types)

    from ..scan.engine import ScanResult, TrustStore
    from ..scan.metrics import DeployRecord
    from ..scan.targets import Endpoint

INVENTORY_FILE_OPTION = typer.Option(
    Path("certfleet.toml"), "--inventory-file", "-i", envvar="CERTFLEET_INVENTORY",
    help="The inventory file read by --inventory (env CERTFLEET_INVENTORY).")
STATE_OPTION = typer.Option(
    None, "--state-dir", envvar="CERTFLEET_STATE_DIR",
    help="The state folder: which version is current (env CERTFLEET_STATE_DIR).")
CONCURRENCY_OPTION = typer.Option(100, "--concurrency", min=1, max=10000,
                                  help="Handshakes at once.")
TIMEOUT_OPTION = typer.Option(5.0, "--timeout", min=0.1, help="Seconds per endpoint.")
SNI_OPTION = typer.Option(None, "--sni", help="The server name to send and to match.")
CA_OPTION = typer.Option([], "--ca-bundle",
                         help="PEM roots to trust instead of the system store (repeatable).")
TARGETS_ARGUMENT = typer.Argument(
    None, help="host:port, host (port 443), or CIDR:ports such as 10.0.1.0/28:443,5061.")
TARGET_OPTION = typer.Option([], "--target",
                             help="A scan target besides the inventory (repeatable).")
TEXTFILE_OPTION = typer.Option(
    None, "--textfile",
    help="Scan once and write the metrics to this file (node_exporter's textfile collector) "
         "instead of serving.")
EXPORTER_INVENTORY_OPTION = typer.Option(
    None, "--inventory",
    help="The inventory file, as plan, deploy and status take it (same as --inventory-file).")
FROM_FILE_OPTION = typer.Option(None, "--from-file", help="A file of targets, one a line.")

#: The tip of "nothing to scan": each names the options of its own command.
SCAN_NOTHING_HINT = ("name targets (host:port, host, 10.0.1.0/28:443,5061), --from-file FILE "
                     "or --inventory")
EXPORTER_NOTHING_HINT = ("name endpoints with --target HOST:PORT (repeatable), or drop "
                         "--no-inventory to scan the inventory's listeners")


def inventory_args(args: list[str]) -> list[str]:
    """``args`` with ``--inventory FILE`` (or ``--inventory=FILE``) spelled as
    ``--inventory --inventory-file FILE``; a bare ``--inventory`` stays the switch.

    The token after ``--inventory`` is its FILE when it names one: an existing
    file, or a name ending in ``.toml``. Anything else (``10.0.1.0/28:443``, an
    option) is left to be a target or an option, as before FILE was accepted.
    """
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        nxt = args[index + 1] if index + 1 < len(args) else None
        if arg == "--":
            out.extend(args[index:])
            break
        if arg.startswith("--inventory="):
            out += ["--inventory", "--inventory-file", arg.partition("=")[2]]
        elif arg == "--inventory" and nxt is not None and _names_inventory(nxt):
            out += ["--inventory", "--inventory-file", nxt]
            index += 1
        else:
            out.append(arg)
        index += 1
    return out


def _names_inventory(token: str) -> bool:
    if token.startswith("-"):
        return False
    if token.lower().endswith(".toml"):
        return True
    try:
        return Path(token).is_file()
    except OSError:  # a name the platform cannot have (too long, reserved)
        return False


class ScanCommand(TyperCommand):
    """``scan``: takes ``--inventory FILE`` as ``plan``, ``deploy`` and ``status`` do,
    and the bare ``--inventory`` switch (file from ``--inventory-file``) as before."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        result: list[str] = super().parse_args(ctx, inventory_args(args))
        return result


@dataclass(frozen=True)
class _Reach:
    """What ``scan`` and ``exporter`` share: where to look up, how to reach, what to trust."""

    inventory_file: Path = INVENTORY_FILE_OPTION
    state_dir: Path | None = STATE_OPTION
    state_url: str | None = STATE_URL_OPTION
    concurrency: int = CONCURRENCY_OPTION
    timeout: float = TIMEOUT_OPTION
    sni: str | None = SNI_OPTION
    ca_bundle: list[Path] = CA_OPTION


#: The default of a ``_Reach`` parameter, never used: ``option_group`` passes the options given.
REACH = _Reach()


@dataclass
class _Plan:
    endpoints: list[Endpoint]
    store: TrustStore
    current: dict[str, str | None]
    listed: set[tuple[str, int]] | None
    devices: list[str]
    state_dir: Path | None
    warn_days: int
    #: The store's URL, password and key (None: SQLite in ``state_dir``).
    shared: tuple[str | None, str | None, str | None] = (None, None, None)


def _current_versions(
    state_dir: Path | None, certificates: list[str],
    shared: tuple[str | None, str | None, str | None] = (None, None, None),
) -> dict[str, str | None]:
    """The current version's leaf SHA-256 per certificate, when a state store exists."""
    from ..errors import StateError
    from ..estate.store import Store, default_state_dir

    where = state_dir or default_state_dir()
    url, password, key = shared
    if not url and not where.is_dir():
        return {}
    try:
        with (Store.open(where, url=url, password=password, key=key) if url
              else Store.open_sqlite(where)) as store:
            return {name: (v.leaf_sha256 if (v := store.current_version(name)) else None)
                    for name in certificates}
    except StateError:
        return {}


def _prepare(
    targets: list[str], from_file: Path | None, use_inventory: bool, inventory_file: Path,
    state_dir: Path | None, sni: str | None, ca_bundle: list[Path], *,
    nothing_hint: str = SCAN_NOTHING_HINT, state_url: str | None = None,
) -> _Plan:
    from ..errors import ConfigError
    from ..scan.engine import TrustStore, inventory_endpoints
    from ..scan.targets import Endpoint, merge, parse_target, read_target_file

    groups: list[list[Endpoint]] = []
    listed: set[tuple[str, int]] | None = None
    management: dict[tuple[str, int], Endpoint] = {}
    current: dict[str, str | None] = {}
    devices: list[str] = []
    warn_days = 30
    shared: tuple[str | None, str | None, str | None] = (state_url, None, None)
    if use_inventory:
        from ..inventory import load_inventory

        try:
            inventory = load_inventory(inventory_file)
        except ConfigError as exc:
            if exc.hint:  # here the file is given with --inventory-file, not --inventory
                exc.hint = exc.hint.replace("--inventory FILE", "--inventory-file FILE")
            raise
        found = inventory_endpoints(inventory, sni)
        groups.append(found)
        # Management addresses are known to the inventory too, though not scanned here.
        listed = {e.key for e in found} | {
            (d.address.lower(), p) for d in inventory.devices.values()
            for p in (d.port, d.https_port)}
        # A device's management port (its `port`) is a listener of that device when a
        # target names it: labelled so, its certificate not the inventory's to check.
        management = {
            (d.address.lower(), d.port): Endpoint(d.address, d.port, sni, device=d.name,
                                                  label="management")
            for d in inventory.devices.values()}
        devices = list(inventory.devices)
        warn_days = inventory.expiry_warn_days
        from .options import store_settings

        shared = store_settings(state_url, inventory)
        current = _current_versions(state_dir, sorted(inventory.certificates), shared)
    for target in targets:
        groups.append(parse_target(target, server_name=sni))
    if from_file is not None:
        groups.append(read_target_file(from_file, server_name=sni))
    endpoints = [management.get(e.key, e) if e.device is None else e for e in merge(groups)]
    if not endpoints:
        raise ConfigError("nothing to scan", hint=nothing_hint)
    store = TrustStore.from_files(ca_bundle) if ca_bundle else TrustStore.system()
    return _Plan(endpoints, store, current, listed, devices, state_dir, warn_days, shared)


def run_scan(plan: _Plan, concurrency: int, timeout: float, *, progress: bool) -> list[ScanResult]:
    import asyncio

    from ..scan.engine import scan

    if not progress:
        return asyncio.run(scan(plan.endpoints, store=plan.store, current=plan.current,
                                listed=plan.listed, concurrency=concurrency, timeout=timeout))
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("scanning", total=len(plan.endpoints))
        return asyncio.run(scan(
            plan.endpoints, store=plan.store, current=plan.current, listed=plan.listed,
            concurrency=concurrency, timeout=timeout,
            on_done=lambda _result: bar.advance(task)))


def _summary(results: list[ScanResult]) -> str:
    bad = [r for r in results if not r.ok]
    unlisted = [r for r in results if r.listed is False and r.leaf is not None]
    text = f"{len(results)} endpoints: {len(results) - len(bad)} ok, {len(bad)} with problems"
    if unlisted:
        text += f"; {len(unlisted)} serving TLS but not in the inventory"
    return text


def silent_line(results: list[ScanResult]) -> str:
    """One line for the endpoints that did not answer, counted by what happened."""
    from collections import Counter

    words = {"refused": "refused", "connect-timeout": "silent (timed out)",
             "unreachable": "unreachable", "unresolved": "names that do not resolve"}
    counts = Counter(words.get(r.failure or "", r.failure or "?") for r in results)
    detail = ", ".join(f"{n:,} {what}" for what, n in counts.most_common())
    return (f"{len(results):,} endpoints did not answer ({detail}); list only the ones that "
            "did with --open-only, or every row with --json")


@handle_errors
@option_group("reach", _Reach)
def scan_command(
    targets: list[str] = TARGETS_ARGUMENT,
    from_file: Path | None = FROM_FILE_OPTION,
    use_inventory: bool = typer.Option(
        False, "--inventory",
        help="Also scan every listener of the inventory: --inventory FILE, or the "
             "--inventory-file (default certfleet.toml) when given alone."),
    reach: _Reach = REACH,
    json_out: bool = typer.Option(False, "--json", help="Print JSON only, on stdout."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV only, on stdout."),
    open_only: bool = typer.Option(
        False, "--open-only",
        help="List only the endpoints that answered (a TCP connection was made)."),
) -> None:
    """One TLS handshake per endpoint: what it serves, checked, sorted by days left.

    Exit code: 1 when any endpoint is expired, unreachable or fails a check
    (trust, name, chain, current version), 2 for bad input, else 0. With
    --open-only, only the endpoints that answered count. In the table, a
    CIDR range's refused and silent endpoints are one count line.
    """
    if json_out and csv_out:
        fail("--json and --csv exclude each other", "choose one of --json and --csv")
    plan = _prepare(list(targets or []), from_file, use_inventory, reach.inventory_file,
                    reach.state_dir, reach.sni, list(reach.ca_bundle or []),
                    nothing_hint=SCAN_NOTHING_HINT, state_url=reach.state_url)
    quiet = json_out or csv_out
    results = run_scan(plan, reach.concurrency, reach.timeout,
                       progress=not quiet and err_console.is_terminal)
    silent: list[ScanResult] = []
    if open_only:
        results = [r for r in results if r.answered]
    elif not quiet and any("/" in t for t in targets or []):
        silent = [r for r in results if not r.answered and r.endpoint.device is None]
        results = [r for r in results if r.answered or r.endpoint.device is not None]
    if json_out:
        from ..scan.output import to_json

        print_json(to_json(results))
    elif csv_out:
        from ..scan.output import to_csv

        sys.stdout.write(to_csv(results))
        sys.stdout.flush()
    else:
        from .scan_table import render_table

        console.print(render_table(results, warn_days=plan.warn_days))
        if silent:
            console.print(silent_line(silent), markup=False, highlight=False)
        console.print(_summary(results), markup=False, highlight=False)
    raise typer.Exit(0 if all(r.ok for r in results) and not silent else 1)


@handle_errors
@option_group("reach", _Reach)
def exporter_command(
    listen: str = typer.Option("127.0.0.1:9793", "--listen",
                               help="HOST:PORT to serve /metrics on."),
    interval: float = typer.Option(300.0, "--interval", min=1.0,
                                   help="Seconds between scans."),
    target: list[str] = TARGET_OPTION,
    textfile: Path | None = TEXTFILE_OPTION,
    no_inventory: bool = typer.Option(False, "--no-inventory",
                                      help="Scan only the --target endpoints."),
    inventory: Path | None = EXPORTER_INVENTORY_OPTION,
    read_timeout: float = typer.Option(
        10.0, "--read-timeout", min=0.1,
        help="Seconds a scraper has to send its whole request; then its connection "
             "is closed."),
    max_connections: int = typer.Option(
        512, "--max-connections", min=1,
        help="Connections served at once (fewer if the open-files limit is lower). "
             "Beyond that a new connection closes the oldest one still sending its "
             "request, or is closed at once."),
    reach: _Reach = REACH,
) -> None:
    """Scan the inventory's listeners (and --target) every --interval; serve /metrics.

    The server queues up to 1024 connections, closes a connection that has not
    sent its request within --read-timeout and serves at most --max-connections
    at once, without a thread per connection.
    """
    import time

    from ..scan.metrics import make_registry

    if inventory is not None and no_inventory:
        fail("--inventory and --no-inventory exclude each other",
             "drop --no-inventory to scan the inventory, or --inventory to scan only --target")
    host, port = _listen_address(listen)
    plan = _prepare(list(target or []), None, not no_inventory,
                    inventory or reach.inventory_file,
                    reach.state_dir, reach.sni, list(reach.ca_bundle or []),
                    nothing_hint=EXPORTER_NOTHING_HINT, state_url=reach.state_url)
    registry, collector = make_registry()

    def once() -> None:
        started = time.perf_counter()
        results = run_scan(plan, reach.concurrency, reach.timeout, progress=False)
        collector.update(results, time.perf_counter() - started, _deploys(plan))

    once()
    if textfile is not None:
        from prometheus_client import write_to_textfile

        write_to_textfile(str(textfile), registry)
        console.print(f"wrote {textfile}", markup=False, highlight=False)
        return
    from ..scan.serve import MetricsServer

    server = MetricsServer(registry, host, port, generation=lambda: collector.generation,
                           read_timeout=read_timeout, max_connections=max_connections)
    try:
        _host, bound = server.start()
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc.strerror or exc}",
             "choose a free --listen HOST:PORT")
    console.print(f"serving metrics on http://{host}:{bound}/metrics "
                  f"({len(plan.endpoints)} endpoints every {interval:g} s)",
                  markup=False, highlight=False)
    sys.stdout.flush()
    try:
        while True:
            time.sleep(interval)
            once()
    except KeyboardInterrupt:
        console.print("stopped", markup=False)
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    """Add the network commands (scan, exporter) to ``app``."""
    app.command("scan", cls=ScanCommand)(scan_command)
    app.command("exporter")(exporter_command)


def _listen_address(text: str) -> tuple[str, int]:
    from ..errors import ConfigError

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) < 65536):
        raise ConfigError(f"--listen {text!r} is not HOST:PORT",
                          hint="use --listen 127.0.0.1:9793")
    return host.strip("[]") or "127.0.0.1", int(port)


def _deploys(plan: _Plan) -> list[DeployRecord]:
    """The devices' last deployments from the state store (none when it does not exist)."""
    from ..errors import StateError
    from ..estate.store import Store, default_state_dir
    from ..scan.metrics import deploy_records

    where = plan.state_dir or default_state_dir()
    url, password, key = plan.shared
    if not plan.devices or (not url and not where.is_dir()):
        return []
    try:
        with (Store.open(where, url=url, password=password, key=key) if url
              else Store.open_sqlite(where)) as store:
            return deploy_records(store, plan.devices)
    except StateError:
        return []
