"""``certfleet store``: move an SQLite store into PostgreSQL, check a store, change its key."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, fail, handle_errors, print_json, text
from .options import (
    INVENTORY_OPTION,
    JSON_OPTION,
    STATE_OPTION,
    STATE_URL_OPTION,
    open_store,
    store_settings,
)

__all__ = ["register"]


@handle_errors
def migrate_command(
    to: str = typer.Option(..., "--to", metavar="URL",
                           help="The empty PostgreSQL store: postgresql://USER@HOST/DB."),
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Copy the SQLite store of --state-dir into the empty PostgreSQL store --to.

    Every table, key, version, backup and ACME account; then prints, per
    table, the rows and a SHA-256 on both sides. Exit 0: all match; 3: a
    table differs; 2: refused (not empty, no store key), nothing copied.
    The password and the store key: the inventory's [state] password and key.
    """
    from ..estate.store import Store
    from ..estate.store.backend import redact_url
    from ..estate.store.transfer import copy_store

    _, password, key = store_settings(to, inventory if inventory.exists() else None)
    with Store.open_sqlite(state_dir) as source, \
            Store.open(source.root, url=to, password=password, key=key) as target:
        checks = copy_store(source, target)
    ok = all(check.ok for check in checks)
    if json_out:
        print_json({"to": redact_url(to), "ok": ok,
                    "tables": [check.to_dict() for check in checks]})
    else:
        for check in checks:
            mark = "ok" if check.ok else "DIFFERS"
            console.print(
                text(f"{check.table:<13} {check.rows:>7} rows  {check.sha256[:16]}  "
                     f"-> {check.copied_rows:>7} rows  {check.copied_sha256[:16]}  {mark}"),
                highlight=False)
        console.print(text(f"{'copied into' if ok else 'MISMATCH copying into'} "
                           f"{redact_url(to)}"), highlight=False)
    if not ok:
        raise typer.Exit(3)


@handle_errors
def check_command(
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Verify the store: the database, every key, version and backup, their hashes.

    Exit 0: whole; 1: problems (each printed); 2: the store cannot be opened.
    """
    from ..estate.store.transfer import check_store

    with open_store(state_dir, state_url, inventory) as store:
        problems = check_store(store)
        backend = "postgresql" if store.shared else "sqlite"
    if json_out:
        print_json({"backend": backend, "ok": not problems, "problems": problems})
    else:
        for problem in problems:
            console.print(text(problem), highlight=False)
        console.print(text(f"{backend} store: " + (f"{len(problems)} problem(s)"
                                                  if problems else "ok")), highlight=False)
    if problems:
        raise typer.Exit(1)


@handle_errors
def rekey_command(
    new_key: str = typer.Option(..., "--new-key", metavar="REF",
                                help="The new store key: env:VAR, keyring:SERVICE/USER or "
                                "file:PATH (never the key itself)."),
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Re-encrypt the shared store's keys and backups under a new store key, at once.

    One transaction: every secret moves to the new key, or none does.
    Then change [state] key (or its variable) to the new key.
    """
    from ..inventory import SECRET_SCHEMES
    from ..secrets import resolve_secret

    if not new_key.startswith(SECRET_SCHEMES):
        fail("--new-key takes a secret reference, not the key itself",
             'write --new-key env:VAR (or "keyring:SERVICE/USER", "file:PATH")', 2,
             json_out=json_out)
    key = resolve_secret(new_key, what="new store key")
    with open_store(state_dir, state_url, inventory) as store:
        count = store.rekey(key)
    if json_out:
        print_json({"ok": True, "reencrypted": count})
    else:
        console.print(text(f"{count} secret(s) re-encrypted under the new store key; "
                           "set [state] key to it now"), highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``certfleet store`` (migrate, check, rekey) to ``app``."""
    store_app = typer.Typer(
        help="The state store: migrate SQLite into PostgreSQL, check it, change its key.",
        no_args_is_help=True)
    app.add_typer(store_app, name="store")
    store_app.command("migrate")(migrate_command)
    store_app.command("check")(check_command)
    store_app.command("rekey")(rekey_command)
