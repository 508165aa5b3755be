"""``certfleet sbc``: deploy, backup, status and trusted roots of one Mediant SBC.

Thin by design: the work is done by :class:`certfleet.drivers.sbc.SbcDriver`
and ``certfleet.pki``; heavy libraries are imported inside the commands.
Exit codes of ``deploy``: 0 installed and verified, 1 failed and restored,
2 bad input or refused before any change, 3 failed and not restored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NotRequired, TypedDict

import typer

from ..errors import ConfigError, InputError
from ..pki.names import is_ip_literal
from .common import (
    SbcConnection,
    build_driver,
    console,
    err_console,
    handle_errors,
    load_private_keys,
    option_group,
    print_json,
    read_password,
    text,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..drivers.base import Backup, DeployOutcome, EventCallback, StepEvent
    from ..drivers.sbc import SbcDriver
    from ..drivers.sbc_model import SbcContext, SbcContextDict
    from ..drivers.tlsprobe import Listener
    from ..pki.model import PrivateKey

    class _StatusRow(SbcContextDict):
        """A TLS context as ``sbc status --json`` prints it."""

        serves_management: bool
        days_left: int | None


__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``sbc`` command group to ``app``."""
    sbc_app = typer.Typer(
        help="Mediant SBCs over the REST API: deploy, backup, status, trusted roots.",
        no_args_is_help=True,
    )
    trust_app = typer.Typer(
        help="Named trusted root sets (teams-2026) in a TLS context: audit or add.",
        no_args_is_help=True,
    )
    sbc_app.add_typer(trust_app, name="trust")
    sbc_app.command("deploy")(deploy)
    sbc_app.command("backup")(backup)
    sbc_app.command("status")(status)
    trust_app.command("audit")(trust_audit)
    trust_app.command("add")(trust_add)
    app.add_typer(sbc_app, name="sbc")


# ---- shared options ---------------------------------------------------------------

# The connection settings (common.py): --url, --user, --password-env, --ca-bundle,
# --pin-sha256, --insecure, --relaxed-x509, --timeout, taken by every command as one
# SbcConnection (parameter ``conn``).
connection = option_group("conn", SbcConnection)
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def _driver(
    conn: SbcConnection,
    *,
    contexts: Sequence[int] = (0,),
    listeners: Sequence[Listener] = (),
    previous_keys: Sequence[PrivateKey] = (),
    on_event: EventCallback | None = None,
    verify_timeout: float = 120.0,
    busy_retries: int = 6,
    busy_delay: float = 0.5,
) -> SbcDriver:
    """The driver of the SBC the flags name, built by the ``sbc`` kind from the device
    description the flags make (as an inventory's ``[devices.NAME]`` would)."""
    from urllib.parse import urlsplit

    from ..inventory import Device

    password = read_password(conn.password_env, what="SBC REST password")
    if not password:
        raise ConfigError(
            f"the SBC REST password in {conn.password_env!r} is empty",
            hint=f"export {conn.password_env}=... before running",
        )
    if conn.insecure:
        err_console.print(
            "[bold red]WARNING:[/] --insecure: the SBC's certificate is NOT checked; "
            "anyone on the path can read the password. Use --pin-sha256 or --ca-bundle.",
            soft_wrap=True,
        )
    if conn.ca_bundle is not None:  # readable? (said of the flag; the kind then reads it)
        try:
            conn.ca_bundle.read_bytes()
        except OSError as exc:
            raise ConfigError.from_os_error(
                "read the CA bundle", conn.ca_bundle, exc,
                hint="pass the PEM file of the CA that issued the SBC's certificate",
            ) from exc
    parts = urlsplit(conn.url)
    try:
        port = parts.port or 443
    except ValueError:  # the driver names what is wrong with the URL
        port = 443
    name = parts.hostname or conn.url
    device = Device(
        name=name, kind="sbc", address=name, certificate="", port=port,
        listeners=tuple(listeners), user=conn.user, tls_pin=conn.pin_sha256,
        ca_file=None if conn.ca_bundle is None else str(conn.ca_bundle),
        tls_contexts=tuple(contexts), verify_timeout=verify_timeout,
        x509_strict=False if conn.relaxed_x509 else None,
        options={"url": conn.url, "insecure": conn.insecure, "timeout": conn.timeout,
                 "busy_retries": busy_retries, "busy_delay": busy_delay},
    )
    driver = build_driver(device, {"password": password}, on_event=on_event,
                          stored_keys=previous_keys)
    from ..drivers.sbc import SbcDriver

    assert isinstance(driver, SbcDriver)  # what the sbc kind builds
    return driver


def _step_printer(enabled: bool) -> EventCallback | None:
    marks = {"start": "…", "ok": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "-"}

    def show(event: StepEvent) -> None:
        if enabled and event.status != "start":
            detail = f" {text(event.detail)}" if event.detail else ""  # device text
            err_console.print(f"{marks[event.status]} {text(event.step)}{detail}", soft_wrap=True,
                              markup=True, highlight=False)

    return show if enabled else None


def _print_outcome(outcome: DeployOutcome) -> None:
    from rich.table import Table

    if outcome.served_before or outcome.served_after:
        table = Table(title=f"{text(outcome.device)}: TLS listeners")
        table.add_column("listener")
        table.add_column("before")
        table.add_column("after")
        for listener in dict.fromkeys([*outcome.served_before, *outcome.served_after]):
            before = outcome.served_before.get(listener)
            after = outcome.served_after.get(listener)
            table.add_row(text(listener), text((before or "-")[:16]), text((after or "-")[:16]))
        console.print(table)
    style = {"installed": "bold green", "restored": "yellow", "refused": "bold red",
             "failed": "bold red", "skipped": "cyan"}[outcome.outcome]
    console.print(f"[{style}]{outcome.outcome}[/] {text(outcome.message)}", soft_wrap=True)
    for finding in outcome.findings:
        if finding.severity != "info":
            console.print(f"  {finding.severity}: {finding.code} {finding.message}",
                          soft_wrap=True, markup=False)
    if outcome.hint:
        console.print(f"[yellow]Tip:[/] {text(outcome.hint)}", soft_wrap=True)


# ---- deploy ---------------------------------------------------------------------------


@handle_errors
@connection
def deploy(
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE...", help="Certificate, chain and key files (PEM, DER, PKCS#7, PKCS#12).",
        show_default=False)],
    conn: SbcConnection,
    context: Annotated[list[int], typer.Option(
        "--context", metavar="N", help="TLS context to change (repeatable).",
        show_default=False)],
    input_password_env: Annotated[str | None, typer.Option(
        "--input-password-env", metavar="VAR",
        help="Environment variable with the password of encrypted input files.")] = None,
    verify: Annotated[list[str] | None, typer.Option(
        "--verify", metavar="HOST:PORT",
        help="TLS listener that must serve the new certificate (repeatable): management "
        "HTTPS, SIP-TLS...")] = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Deploy without any handshake to verify it (said in the outcome).")
    ] = False,
    allow_no_rollback: Annotated[bool, typer.Option(
        "--allow-no-rollback",
        help="Deploy although the previous certificate cannot be restored (first deploy).")
    ] = False,
    previous_key: Annotated[Path | None, typer.Option(
        "--previous-key", metavar="FILE",
        help="The private key installed now, so that a failure can be rolled back.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Deploy despite preflight errors.")] = False,
    verify_timeout: Annotated[float, typer.Option(
        "--verify-timeout", help="Seconds to wait for the listeners to serve it.")] = 120.0,
    busy_retries: Annotated[int, typer.Option(
        "--busy-retries", min=0, help="Retries of a request the SBC answers 409 (busy, HA sync).")
    ] = 6,
    busy_delay: Annotated[float, typer.Option(
        "--busy-delay", min=0.0, help="Seconds before the first 409 retry (doubling).")] = 0.5,
    json_out: JsonOut = False,
) -> None:
    """Install a certificate into TLS contexts of one SBC: backup, install, verify, rollback.

    The SBC never returns its private key: rolling back needs --previous-key
    (the key installed now); a first deploy without it needs --allow-no-rollback.
    """
    from ..pki.checks import preflight

    _check_verify(verify, no_verify, context)
    input_password = read_password(input_password_env, what="input file password")
    password_bytes = input_password.encode("utf-8") if input_password else None
    listeners = _verify_listeners(verify)
    host = _url_host(conn.url)
    hosts = [host] if host and not is_ip_literal(host) else []
    from .common import password_from

    with password_from("--input-password-env"):
        bundle, findings = preflight([str(f) for f in files], password_bytes, hosts)
        previous = [] if previous_key is None else load_private_keys(
            previous_key, input_password,
            hint="pass the PEM private key installed on the SBC now")
    driver = _driver(conn, contexts=context, listeners=listeners, previous_keys=previous,
                     on_event=_step_printer(not json_out), verify_timeout=verify_timeout,
                     busy_retries=busy_retries, busy_delay=busy_delay)
    driver.allow_unverified = no_verify
    driver.no_listener_hint = ("pass --verify HOST:PORT (a TLS listener of the changed "
                               "context), or --no-verify to deploy without a handshake")
    if no_verify and not json_out:
        err_console.print("[yellow]note:[/] --no-verify: only the SBC's own answers confirm "
                          "the install, no handshake does", soft_wrap=True)
    from .common import run_interruptible  # Ctrl-C and SIGTERM: the template rolls back

    outcome = run_interruptible(driver.deploy(bundle, findings, force=force,
                                              allow_no_rollback=allow_no_rollback), what="deploy")
    if json_out:
        print_json(outcome.to_dict())
    else:
        _print_outcome(outcome)
    raise typer.Exit(outcome.exit_code)


def _check_verify(verify: list[str] | None, no_verify: bool, context: list[int]) -> None:
    """Refuse ``--verify`` with ``--no-verify``, and a deploy nothing would check."""
    if verify and no_verify:
        raise ConfigError("--verify and --no-verify contradict each other",
                          hint="pass --verify HOST:PORT, or --no-verify alone")
    if not verify and not no_verify and 0 not in context:
        # Context 0 (management HTTPS) is verified on the REST port itself; others need --verify.
        raise ConfigError(
            "no --verify HOST:PORT given: nothing would check the install by handshake",
            hint="pass --verify HOST:PORT (a TLS listener of the changed context), "
            "or --no-verify to deploy without a handshake")


def _verify_listeners(verify: list[str] | None) -> list[Listener]:
    """The listeners of ``--verify``."""
    from ..drivers.tlsprobe import Listener

    listeners = []
    for item in verify or []:
        try:
            listeners.append(Listener.parse(item, label="verify"))
        except ValueError as exc:
            raise ConfigError(str(exc), hint="write --verify HOST:PORT, e.g. sbc1:5061") from None
    return listeners


def _url_host(url: str) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname




# ---- backup ------------------------------------------------------------------------------


@handle_errors
@connection
def backup(
    conn: SbcConnection,
    out_dir: Annotated[Path, typer.Option(
        "--out-dir", metavar="DIR", help="Folder for the backup (created).")],
    context: Annotated[list[int] | None, typer.Option(
        "--context", metavar="N", help="TLS context to save (repeatable; default all).")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Save the INI file and each TLS context's certificate and trusted roots."""
    import asyncio

    driver = _driver(conn, contexts=context or [0])

    async def run() -> Backup:
        async with driver.session():
            if not context:
                driver.contexts = sorted(await driver.list_contexts()) or [0]
            return await driver.backup()

    from ..estate.store.backups import write_backup_files

    saved = asyncio.run(run())
    try:
        directory = write_backup_files(saved, out_dir)
    except OSError as exc:
        raise InputError(
            f"cannot write the backup to {str(out_dir)!r}: {exc.strerror or exc}",
            hint="choose a writable --out-dir",
        ) from exc
    if json_out:
        print_json({"device": saved.device, "directory": str(directory),
                    "files": sorted(saved.files), "meta": saved.meta})
        return
    console.print(f"[green]saved[/] {len(saved.files)} file(s) of {text(saved.device)} to "
                  f"{text(directory)}", soft_wrap=True)
    for name in sorted(saved.files):
        console.print(f"  {name}", markup=False)


# ---- status -------------------------------------------------------------------------------


@handle_errors
@connection
def status(
    conn: SbcConnection,
    json_out: JsonOut = False,
) -> None:
    """Show the device, its TLS contexts, what each holds and what management serves.

    "as management" marks the contexts holding the certificate that management
    HTTPS presents (several may hold the same wildcard).
    """
    import asyncio
    import datetime as dt

    driver = _driver(conn)

    async def run() -> list[SbcContext]:
        async with driver.session():
            names = await driver.list_contexts() or {0: "default"}
            return [await driver.read_context(i, n) for i, n in sorted(names.items())]

    contexts = asyncio.run(run())
    now = dt.datetime.now(dt.UTC)
    rows: list[_StatusRow] = []
    for ctx in contexts:
        rows.append({
            **ctx.to_dict(),
            "serves_management": driver.serves_management(ctx),
            "days_left": ((ctx.certificate.not_valid_after_utc - now).days
                          if ctx.certificate is not None else None),
        })
    device = {k: driver.status.get(k) for k in
              ("productType", "versionID", "highAvailability", "serialNumber")}
    if json_out:
        print_json({"url": driver.url, "device": device, "auth": driver.auth_scheme,
                    "management": {"served_sha256": driver.management_sha256},
                    "contexts": rows})
        return
    from rich.table import Table

    console.print(f"{driver.url}: {_field(device.get('productType'))} "
                  f"{_field(device.get('versionID'))}, "
                  f"HA {_field(device.get('highAvailability'))}, "
                  f"REST auth {driver.auth_scheme.capitalize()}",
                  soft_wrap=True, markup=False)
    table = Table(title="TLS contexts")
    for column in ("#", "name", "certificate", "sha256", "expires", "days", "key", "roots",
                   "as management"):
        table.add_column(column)
    for row in rows:
        valid = row["key_valid"]
        table.add_row(
            # Names and subjects come from the device: text, not markup.
            str(row["index"]), text(row["name"] or ""), text(row["subject"] or "-"),
            text((row["sha256"] or "-")[:16]), text((row["not_after"] or "-")[:10]),
            str(row["days_left"] if row["days_left"] is not None else "-"),
            "valid" if valid else ("MISMATCH" if valid is False else "?"),
            str(len(row["trusted_roots"])), "same" if row["serves_management"] else "",
        )
    console.print(table)
    console.print(f"management serves {driver.management_sha256}", markup=False)


# ---- trust -----------------------------------------------------------------------------------

SetName = Annotated[str, typer.Option("--set", metavar="NAME", help="Root set, e.g. teams-2026.")]
TrustContext = Annotated[int, typer.Option(
    "--context", metavar="N", help="TLS context whose trusted roots are checked.")]


def _field(value: object) -> str:
    """A status field as the device gave it, on one line: ``?`` when missing, an
    object as ``key=value`` pairs."""
    if value is None or value == "":
        return "?"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_field(v)}" for k, v in value.items()) or "?"
    if isinstance(value, list):
        return ", ".join(_field(v) for v in value) or "?"
    return " ".join(str(value).split())


def _backup_dir(given: Path | None, device: str) -> Path:
    """``given``, else a new folder under the user's state folder (as the estate's)."""
    import datetime as dt
    import os

    if given is not None:
        return given
    env = os.environ.get("CERTFLEET_STATE_DIR")
    if env:
        root = Path(env).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_data_dir("certfleet"))
    import re

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", device).lstrip(".")[:64] or "sbc"
    return root / "device-backups" / folder / stamp


class TrustResult(TypedDict):
    """What ``sbc trust audit|add`` prints with ``--json`` (audit without the last two)."""

    set: str
    context: int
    present: list[str]
    missing: list[str]
    added: NotRequired[list[str]]
    backup: NotRequired[str | None]


def _audit(conn: SbcConnection, set_name: str, context: int, add: bool,
           backup_dir: Path | None = None, json_progress: bool = False) -> TrustResult:
    import asyncio

    from ..estate.store.backups import write_backup_files
    from ..trust import audit_roots, get_root_set

    driver = _driver(conn, contexts=[context])
    root_set = get_root_set(set_name)
    pinned = root_set.certificates()

    async def run() -> TrustResult:
        async with driver.session():
            ctx = await driver.read_context(context)
            result = audit_roots(root_set, ctx.trusted_roots)
            added: list[str] = []
            saved_to: str | None = None
            if add and result.missing:
                # Before any change: the INI and the context's certificate and trusted roots.
                saved = await driver.backup()
                target = _backup_dir(backup_dir, driver.name)
                try:
                    saved_to = str(write_backup_files(saved, target))
                except OSError as exc:
                    raise InputError(
                        f"cannot write the backup to {str(target)!r}: {exc.strerror or exc}; "
                        "nothing was changed",
                        hint="choose a writable --backup-dir",
                    ) from exc
                if not json_progress:
                    console.print(f"backup of {driver.name} saved to {saved_to}",
                                  soft_wrap=True, markup=False, highlight=False)
                for root, cert in pinned:
                    if root.name in result.missing:
                        await driver.add_trusted_root(context, cert)
                        added.append(root.name)
                await driver.save_configuration()
                after = await driver.read_context(context)
                result = audit_roots(root_set, after.trusted_roots)
            return {"set": root_set.name, "context": context, "present": list(result.present),
                    "missing": list(result.missing), "added": added, "backup": saved_to}

    return asyncio.run(run())


@handle_errors
@connection
def trust_audit(
    conn: SbcConnection,
    set_name: SetName,
    context: TrustContext,
    json_out: JsonOut = False,
) -> None:
    """Check that a TLS context trusts every root of a set (exit 1 when any is missing)."""
    result = _audit(conn, set_name, context, add=False)
    result.pop("added")
    result.pop("backup")
    if json_out:
        print_json(result)
    else:
        _print_trust(result)
    raise typer.Exit(1 if result["missing"] else 0)


@handle_errors
@connection
def trust_add(
    conn: SbcConnection,
    set_name: SetName,
    context: TrustContext,
    backup_dir: Annotated[Path | None, typer.Option(
        "--backup-dir", metavar="DIR",
        help="Folder for the backup taken before the change (default: a new folder under "
        "the state folder).")] = None,
    json_out: JsonOut = False,
) -> None:
    """Add the roots of a set that a TLS context lacks (trustedRoot/incremental), then save.

    A backup (the INI, the context's certificate and trusted roots) is written
    before the first change, to --backup-dir or a new folder under the state folder.
    """
    result = _audit(conn, set_name, context, add=True, backup_dir=backup_dir,
                    json_progress=json_out)
    if json_out:
        print_json(result)
    else:
        for name in result["added"]:
            console.print(f"[green]added[/] {name}", soft_wrap=True)
        _print_trust(result)
    raise typer.Exit(1 if result["missing"] else 0)


def _print_trust(result: TrustResult) -> None:
    for name in result["present"]:
        console.print(f"[green]present[/] {name}", soft_wrap=True)
    for name in result["missing"]:
        console.print(f"[bold red]missing[/] {name}", soft_wrap=True)
    total = len(result["present"]) + len(result["missing"])
    console.print(f"context {result['context']}: {len(result['present'])} of {total} roots of "
                  f"{result['set']} present", soft_wrap=True)
    if result["missing"]:
        console.print(f"[yellow]Tip:[/] certfleet sbc trust add --set {result['set']} "
                      f"--context {result['context']} ... adds them", soft_wrap=True)
