"""Commands that bring material in: init (the inventory skeleton), import and adopt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    console,
    err_console,
    fail,
    handle_errors,
    option_group,
    print_json,
    read_password,
    text,
)
from .estate import (
    INVENTORY_OPTION,
    JSON_OPTION,
    STATE_OPTION,
    STATE_URL_OPTION,
    open_estate,
    print_findings,
)
from .estate_tables import _short

FILES_ARGUMENT = typer.Argument(..., help="What the CA sent: .crt, .p7b, .pfx, key...")
ADOPT_FILES_ARGUMENT = typer.Argument(
    ..., help="What the devices serve today, with its key: a .pfx, or .crt and .key.")

#: import and adopt: the inventory certificate the files are for.
CertificateName = Annotated[str, typer.Argument(
    help="The inventory certificate (e.g. wildcard).", show_default=False)]


@dataclass(frozen=True)
class _FilePassword:
    """import and adopt: where the password of the files (PKCS#12 or key) comes from."""

    password_env: str | None = typer.Option(
        None, "--password-env", help="Variable holding the file password (PKCS#12/key).")
    password_file: str | None = typer.Option(
        None, "--password-file", help="File holding the file password.")

    def value(self) -> bytes | None:
        password = read_password(self.password_env, what="file password",
                                 file=self.password_file)
        return password.encode() if password else None


#: The default of a ``_FilePassword`` parameter, never used: ``option_group`` passes the options.
FILE_PASSWORD = _FilePassword()


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


@handle_errors
@option_group("file_password", _FilePassword)
def import_command(
    name: CertificateName,
    files: list[Path] = FILES_ARGUMENT,
    file_password: _FilePassword = FILE_PASSWORD,
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Check the issued files and store them as the new version of NAME."""
    from ..errors import PreflightError
    from ..estate.importer import import_certificate

    password = file_password.value()
    with open_estate(inventory, state_dir, state_url) as (inv, store):
        try:
            result = import_certificate(inv, store, name, files, password=password)
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


@handle_errors
@option_group("file_password", _FilePassword)
def adopt_command(
    name: CertificateName,
    files: list[Path] = ADOPT_FILES_ARGUMENT,
    file_password: _FilePassword = FILE_PASSWORD,
    inventory: Path = INVENTORY_OPTION,
    state_dir: Path | None = STATE_OPTION,
    state_url: str | None = STATE_URL_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Store the certificate the devices serve today (with its key) as a known version.

    Checked against what every device of NAME serves, by fingerprint: each
    device is reported as match, serving something else, or unreachable.
    The first deploy can then roll the SBCs back. An adopted version is not
    the deploy target when a version was imported. Stored even when no
    device serves it (said plainly); exit 0 when stored, 2 for bad input.
    """
    from ..estate.adopt import MATCH, OTHER, adopt_certificate

    password = file_password.value()
    with open_estate(inventory, state_dir, state_url) as (inv, store):
        result = adopt_certificate(inv, store, name, files, password=password)
        current = store.current_version(name)
    if json_out:
        print_json(result.to_dict())
        return
    version = result.version
    verb = "adopted" if result.new else "already stored"
    console.print(f"[green]{verb}[/] {text(version.label)}: {text(version.subject)}, "
                  f"{_short(version.leaf_sha256)}, valid to {version.not_after[:10]}",
                  soft_wrap=True)
    words = {MATCH: "[green]serves it[/]", OTHER: "[yellow]serves something else[/]"}

    width = max((len(d.device) for d in result.devices), default=0)
    for match in result.devices:
        word = words.get(match.state, "[red]unreachable[/]")
        detail = f" ({text(match.detail)})" if match.detail else ""
        console.print(f"  {text(match.device):<{width}}  {word}{detail}", soft_wrap=True)
    if not result.is_target and current is not None:
        console.print(f"the deploy target stays {current.label} (imported)")
    if not result.served_by:
        err_console.print(
            f"[yellow]warning:[/] no device of {name} serves it: stored all the same, but "
            "no rollback will use it until a device serves it", soft_wrap=True)
        err_console.print("[yellow]Tip:[/] 'certfleet status' shows what each device "
                          "serves; adopt the file exported for that certificate",
                          soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the intake commands (init, import, adopt) to ``app``."""
    app.command("init")(init_command)
    app.command("import")(import_command)
    app.command("adopt")(adopt_command)
