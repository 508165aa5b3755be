"""``certfleet serve``: the estate on web pages; ``serve adduser`` and ``serve token``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import console, err_console, fail, handle_errors, read_password
from .estate import INVENTORY_OPTION, STATE_OPTION, STATE_URL_OPTION

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..web.view import EstateView

USERS_OPTION = typer.Option(
    None, "--users", metavar="FILE",
    help="The users file (default: serve-users.json in the state folder).")

TLS_CERT_OPTION = typer.Option(
    None, "--tls-cert", metavar="FILE",
    help="Serve HTTPS with this certificate (PEM, the chain after it); needs --tls-key.")
TLS_KEY_OPTION = typer.Option(
    None, "--tls-key", metavar="FILE", help="The private key of --tls-cert (PEM).")


def _users_path(users: Path | None, state_dir: Path | None) -> Path:
    from ..estate.store import default_state_dir
    from ..web.users import USERS_FILE

    if users is not None:
        return users
    return (state_dir.expanduser() if state_dir else default_state_dir()) / USERS_FILE


def _metrics(view: EstateView, inventory: Path, state: Path,
             state_url: str | None = None) -> CollectorRegistry:
    """The exporter's registry, refreshed after each of the dashboard's scans by the same
    scan as ``certfleet exporter`` (its listeners, trust and deployments)."""
    import time

    from ..scan.metrics import deploy_records, make_registry
    from .scan import EXPORTER_NOTHING_HINT, _prepare, run_scan

    plan = _prepare([], None, True, inventory, state, None, [],
                    nothing_hint=EXPORTER_NOTHING_HINT, state_url=state_url)
    registry, collector = make_registry()

    def once() -> None:
        started = time.perf_counter()
        results = run_scan(plan, 100, view.timeout, progress=False)
        collector.update(results, time.perf_counter() - started,
                         deploy_records(view.store, plan.devices))

    view.after_scan = once
    return registry


@handle_errors
def serve_command(
    ctx: typer.Context,
    listen: str = typer.Option("127.0.0.1:8443", "--listen", metavar="HOST:PORT",
                               help="Where to listen (port 0: any free port)."),
    tls_cert: Path | None = TLS_CERT_OPTION,
    tls_key: Path | None = TLS_KEY_OPTION,
    read_only: bool = typer.Option(
        False, "--read-only", help="No actions (deploy, renew, rollback) from the page."),
    refresh: float = typer.Option(
        5.0, "--refresh-minutes", min=0.1,
        help="Scan every listener at most this often, shared by every viewer."),
    metrics: bool = typer.Option(
        False, "--metrics",
        help="Also serve certfleet exporter's Prometheus metrics at /metrics (login or "
             "Authorization: Bearer TOKEN), scanned at the pace of --refresh-minutes."),
    users: Path | None = USERS_OPTION,
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
) -> None:
    """Serve the estate's pages (login needed) from the inventory and the state store.

    Add users first: certfleet serve adduser NAME --password-env VAR.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..estate.store import default_state_dir
    from ..inventory import load_inventory
    from ..web.app import WebConfig, create_app
    from ..web.server import bind, parse_listen, serve
    from ..web.users import Users
    from ..web.view import EstateView
    from .options import store_settings

    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together",
             "pass both (the certificate and its private key), or neither for HTTP")
    for given, flag in ((tls_cert, "--tls-cert"), (tls_key, "--tls-key")):
        if given is not None and not given.is_file():
            fail(f"{flag} {given}: no such file", f"pass {flag} an existing PEM file")
    host, port = parse_listen(listen)
    state = state_dir.expanduser() if state_dir else default_state_dir()
    users_path = _users_path(users, state_dir)
    if not Users(users_path).exists:
        fail(f"no users in {users_path}: nobody could log in",
             "add one first: certfleet serve adduser NAME --password-env VAR "
             "--role operator")
    inv = load_inventory(inventory)  # a bad inventory fails now, with its message
    url, password, key = store_settings(state_url, inv)
    config = WebConfig(inventory, state, users_path, read_only=read_only,
                       https=tls_cert is not None, refresh_minutes=refresh,
                       metrics=metrics, state_url=url, state_password=password, state_key=key)
    store = config.open_reader()
    view = EstateView(inventory, store, refresh=refresh * 60)
    registry = _metrics(view, inventory, state, url) if metrics else None
    sock = bind(host, port)
    err_console.print("scanning the estate…", markup=False)
    view.scan()
    view.start()
    web = create_app(config, view, registry)

    def ready(url: str) -> None:
        console.print(f"certfleet serve: {url} (Ctrl-C stops)", markup=False,
                      highlight=False, soft_wrap=True)

    try:
        serve(web, sock, tls_cert=tls_cert, tls_key=tls_key, on_ready=ready)
    finally:
        view.stop()
        store.close()


@handle_errors
def adduser_command(
    name: str = typer.Argument(..., help="The user name."),
    password_env: str = typer.Option(
        ..., "--password-env", metavar="VAR", help="The variable holding the password."),
    role: str = typer.Option("viewer", "--role", help="viewer or operator."),
    users: Path | None = USERS_OPTION,
    state_dir: Path | None = STATE_OPTION,
) -> None:
    """Add a user of certfleet serve (or set its password and role)."""
    from ..web.users import Users

    password = read_password(password_env, what="password")
    if not password:
        fail(f"--password-env {password_env}: the variable is not set or empty",
             f"set {password_env} to the password, then run this again")
    path = _users_path(users, state_dir)
    new = Users(path).add_user(name, password, role)
    console.print(f"{'added' if new else 'updated'} {name} ({role}) in {path}",
                  markup=False, highlight=False, soft_wrap=True)


@handle_errors
def token_command(
    name: str = typer.Argument(..., help="A name for the token (who uses it)."),
    users: Path | None = USERS_OPTION,
    state_dir: Path | None = STATE_OPTION,
) -> None:
    """Make an API token (read-only: Authorization: Bearer TOKEN); printed once."""
    from ..web.users import Users

    path = _users_path(users, state_dir)
    token = Users(path).add_token(name)
    err_console.print(f"token {name} stored (hashed) in {path}; it is shown once:",
                      markup=False, highlight=False, soft_wrap=True)
    console.print(token, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``serve`` (the dashboard) and its user and token commands to ``app``."""
    serve_app = typer.Typer(
        help="The estate on web pages: estate, timeline, devices, certificates, runs, actions.",
        invoke_without_command=True, no_args_is_help=False)
    app.add_typer(serve_app, name="serve")

    serve_app.callback(invoke_without_command=True)(serve_command)
    serve_app.command("adduser")(adduser_command)
    serve_app.command("token")(token_command)
