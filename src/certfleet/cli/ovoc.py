"""``certfleet ovoc deploy`` and ``certfleet ovoc doctor``: one OVOC appliance.

Exit codes of ``deploy``: 0 installed and verified; 1 failed, the previous
certificate restored and verified; 2 bad input or refused before any change;
3 failed and not restored. ``doctor``: 0 OVOC would accept the staged files,
1 it would reject them, 2 bad input or usage, 3 cannot connect.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import CertfleetError, ConfigError, InputError
from .common import (
    OVOC_SU_PASSWORD_ENV_OPT,
    OVOC_SU_USER_OPT,
    OvocLogin,
    build_driver,
    console,
    handle_errors,
    option_group,
    print_error,
    print_json,
    read_password,
)
from .common import text as _text

if TYPE_CHECKING:
    from ..drivers.base import DeployOutcome, EventCallback, StepEvent
    from ..drivers.ovoc import OvocDriver
    from ..drivers.ovoc.staging import StagingReport
    from ..pki.model import Finding

__all__ = ["register"]

# The connection settings (common.py): --host, --ssh-port, --user, --password-env,
# --known-hosts, --host-key-sha256, taken by every command as one OvocLogin (``login``).
login_options = option_group("login", OvocLogin)
SU_USER_OPT, SU_PASSWORD_ENV_OPT = OVOC_SU_USER_OPT, OVOC_SU_PASSWORD_ENV_OPT
KEYSTORE_ENV_OPT = typer.Option(
    None, "--keystore-password-env", metavar="VAR",
    help="Environment variable holding the password answered at the menu's password prompt "
    "(protects OVOC's PKCS#12 and JKS files).")
INPUT_PASSWORD_ENV_OPT = typer.Option(
    None, "--input-password-env", metavar="VAR",
    help="Environment variable holding the password of an encrypted input (.pfx, key).")
STAGING_OPT = typer.Option("/home/acems/server_certs", "--staging-dir",
                           help="Folder on OVOC that EmsServerManager imports from.")
VERIFY_PORT_OPT = typer.Option(None, "--verify-port",
                               help="HTTPS port(s) to verify after the import (default 443).")
VERIFY_TIMEOUT_OPT = typer.Option(600.0, "--verify-timeout", metavar="SECONDS",
                                  help="How long to wait for OVOC to serve the new certificate.")
PROMPT_TIMEOUT_OPT = typer.Option(60.0, "--prompt-timeout", metavar="SECONDS",
                                  help="How long to wait for each screen of the menu.")
IMPORT_TIMEOUT_OPT = typer.Option(600.0, "--import-timeout", metavar="SECONDS",
                                  help="How long to wait for OVOC's import verdict.")
MENU_OPT = typer.Option(
    None, "--menu", metavar="FILE",
    help="TOML or JSON file describing EmsServerManager on another firmware: labels, numbers, "
    "command, menu_prompt, continue_prompt, confirm_prompt, confirm_answer, password_prompt, "
    "success, failure, back_labels, back (a [menu] table or top-level keys).")
SETTLE_OPT = typer.Option(
    0.3, "--settle-time", metavar="SECONDS",
    help="How long OVOC's output must stay quiet before a line that only looks like a "
    "prompt (the shell's) is answered.")
ENTER_OPT = typer.Option(
    "lf", "--enter", metavar="lf|cr",
    help="What Enter sends: lf (\\n, as scripts do) or cr (\\r, as terminals such as PuTTY do).")
JSON_OPT = typer.Option(False, "--json", help="Print JSON only, on stdout.")
FILES_ARG = typer.Argument(..., help="Certificate, key, chain, .pfx... files (any format).",
                           show_default=False)
FORCE_OPT = typer.Option(False, "--force", help="Deploy even when preflight finds errors.")
TRANSCRIPT_OPT = typer.Option(None, "--transcript", metavar="FILE",
                              help="Write the (password-free) SSH session transcript to FILE.")
NAME_OPT = typer.Option(None, "--name", help="Host name(s) the certificate must cover.")
# deploy's options, accepted by doctor so one set of flags serves both (doctor needs no su).
DOCTOR_SU_USER_OPT = typer.Option("root", "--su-user", hidden=True)
DOCTOR_SU_PASSWORD_OPT = typer.Option(None, "--su-password-env", hidden=True)
DOCTOR_KEYSTORE_OPT = typer.Option(None, "--keystore-password-env", hidden=True)
DOCTOR_VERIFY_PORT_OPT = typer.Option(None, "--verify-port", hidden=True)
BACKUP_DIR_OPT = typer.Option(
    None, "--backup-dir", metavar="DIR",
    help="Save the previously staged files (key included, 0600) under DIR. Without it they "
    "are saved only when the deploy fails and cannot restore them (in certfleet's data "
    "folder).")

_STATUS_STYLE = {"start": "dim", "ok": "green", "failed": "bold red", "skipped": "yellow"}
_OUTCOME_STYLE = {"installed": "bold green", "restored": "bold yellow", "refused": "bold red",
                  "failed": "bold red", "skipped": "dim"}


def _secret(var: str | None, what: str, *, required: bool, json_out: bool) -> str | None:
    value = read_password(var, what=what)
    if value is None and required:
        if sys.stdin is not None and sys.stdin.isatty() and not json_out:
            return getpass.getpass(f"{what}: ")
        raise ConfigError(f"the {what} is not given",
                          hint="name the environment variable that holds it "
                          "(--password-env, --su-password-env, --keystore-password-env)")
    return value


def _known_hosts(path: Path | None, pin: str | None) -> Path | None:
    if path is not None:
        return path
    default = Path.home() / ".ssh" / "known_hosts"
    return default if pin is None and default.is_file() else None


def _driver(
    login: OvocLogin, *, password: str | None, staging_dir: str, prompt_timeout: float,
    su_user: str = "root", su_password: str | None = None,
    keystore_password: str | None = None, verify_ports: list[int] | None = None,
    verify_timeout: float = 600.0, import_timeout: float = 600.0,
    on_event: EventCallback | None = None,
    menu: Path | None = None, settle_time: float = 0.3, enter: str = "lf",
) -> OvocDriver:
    """The driver of the OVOC the flags name, built by the ``ovoc`` kind from the device
    description the flags make (as an inventory's ``[devices.NAME]`` would)."""
    from ..drivers.ovoc_kind import NEWLINES
    from ..drivers.tlsprobe import Listener
    from ..inventory import Device

    if enter.lower() not in NEWLINES:
        raise ConfigError(f"--enter {enter!r} is neither lf nor cr",
                          hint="use --enter lf (the default) or --enter cr")
    try:
        listeners = [Listener(login.host, port) for port in (verify_ports or [443])]
    except ValueError as exc:
        raise ConfigError(str(exc), hint="give --verify-port between 1 and 65535") from exc
    known_hosts = _known_hosts(login.known_hosts, login.host_key_sha256)
    device = Device(
        name=login.host, kind="ovoc", address=login.host, certificate="", port=login.ssh_port,
        listeners=tuple(listeners), user=login.user, ssh_host_key=login.host_key_sha256,
        verify_timeout=verify_timeout, su_user=su_user, staging_dir=staging_dir,
        menu=_load_menu(menu),
        options={"known_hosts": None if known_hosts is None else str(known_hosts),
                 "prompt_timeout": prompt_timeout, "import_timeout": import_timeout,
                 "settle_time": settle_time, "enter": enter},
    )
    driver = build_driver(
        device, {"password": password, "root_password": su_password,
                 "keystore_password": keystore_password}, on_event=on_event)
    from ..drivers.ovoc import OvocDriver

    assert isinstance(driver, OvocDriver)  # what the ovoc kind builds
    return driver


def _load_menu(path: Path | None) -> dict[str, object]:
    """The menu settings of a TOML or JSON file (keys of OvocMenu.from_mapping), checked;
    none without one."""
    if path is None:
        return {}
    import json
    import tomllib

    from ..drivers.ovoc import OvocMenu

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the menu file {str(path)!r}: {exc.strerror or exc}",
                          hint="give an existing TOML or JSON file to --menu") from None
    kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the menu file {str(path)!r} is not valid {kind}: {exc}",
                          hint="fix the file (.json files are read as JSON, others as TOML)"
                          ) from None
    except RecursionError:  # both parsers recurse: arrays nested thousands deep
        raise ConfigError(f"the menu file {str(path)!r} is not valid {kind}: nested too deep",
                          hint="fix the file (.json files are read as JSON, others as TOML)"
                          ) from None
    if isinstance(data, dict) and isinstance(data.get("menu"), dict):
        data = data["menu"]
    if not isinstance(data, dict):
        raise ConfigError(f"the menu file {str(path)!r} holds no table of settings",
                          hint="write the settings as keys, e.g. labels = [...]")
    OvocMenu.from_mapping(data)  # the file's own errors, before the kind reads the settings
    return data


def _print_event(event: StepEvent) -> None:
    if event.status == "start":
        return
    style = _STATUS_STYLE[event.status]
    detail = f" [dim]{_text(event.detail)}[/]" if event.detail else ""
    console.print(f"  [{style}]{event.status:>6}[/] {event.step}{detail}", soft_wrap=True,
                  markup=True)


def _print_findings(findings: list[Finding]) -> None:
    styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
    for finding in findings:
        if finding.severity == "info":
            continue
        console.print(f"  [{styles[finding.severity]}]{finding.severity}[/] "
                      f"{finding.code}: {_text(finding.message)}", soft_wrap=True)


def _print_outcome(outcome: DeployOutcome) -> None:
    style = _OUTCOME_STYLE.get(outcome.outcome, "")
    if outcome.outcome == "refused" and outcome.findings:
        _print_findings(outcome.findings)
    console.print(f"[{style}]{outcome.outcome}[/] {_text(outcome.message)}", soft_wrap=True)
    if outcome.hint:
        console.print(f"[yellow]Tip:[/] {_text(outcome.hint)}", soft_wrap=True)
    elif outcome.outcome == "installed":
        console.print("[yellow]Tip:[/] `certfleet ovoc doctor` shows what is staged on OVOC",
                      soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``ovoc`` command group to ``app``."""
    ovoc_app = typer.Typer(help="OVOC appliance: deploy a certificate, diagnose staged files.",
                           no_args_is_help=True)
    ovoc_app.command("deploy")(deploy)
    ovoc_app.command("doctor")(doctor)
    app.add_typer(ovoc_app, name="ovoc")


@handle_errors
@login_options
def deploy(
    files: list[Path] = FILES_ARG,
    *,
    login: OvocLogin,
    su_user: str = SU_USER_OPT,
    su_password_env: str | None = SU_PASSWORD_ENV_OPT,
    keystore_password_env: str | None = KEYSTORE_ENV_OPT,
    input_password_env: str | None = INPUT_PASSWORD_ENV_OPT,
    staging_dir: str = STAGING_OPT,
    verify_port: list[int] | None = VERIFY_PORT_OPT,
    verify_timeout: float = VERIFY_TIMEOUT_OPT,
    prompt_timeout: float = PROMPT_TIMEOUT_OPT,
    import_timeout: float = IMPORT_TIMEOUT_OPT,
    force: bool = FORCE_OPT,
    transcript: Path | None = TRANSCRIPT_OPT,
    backup_dir: Path | None = BACKUP_DIR_OPT,
    menu: Path | None = MENU_OPT,
    settle_time: float = SETTLE_OPT,
    enter: str = ENTER_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Stage the files on OVOC, run EmsServerManager's import, verify, roll back on failure."""
    try:
        code = _deploy(
            files, login, su_user=su_user, su_password_env=su_password_env,
            keystore_password_env=keystore_password_env,
            input_password_env=input_password_env, staging_dir=staging_dir,
            verify_ports=verify_port, verify_timeout=verify_timeout,
            prompt_timeout=prompt_timeout, import_timeout=import_timeout, force=force,
            transcript=transcript, backup_dir=backup_dir, json_out=json_out, menu=menu,
            settle_time=settle_time, enter=enter,
        )
    except KeyboardInterrupt:  # before the device was reached (files, passwords)
        print_error("interrupted before any change on the device", label="refused")
        code = 2
    raise typer.Exit(code)


@handle_errors
@login_options
def doctor(
    *,
    login: OvocLogin,
    staging_dir: str = STAGING_OPT,
    name: list[str] | None = NAME_OPT,
    prompt_timeout: float = PROMPT_TIMEOUT_OPT,
    su_user: str = DOCTOR_SU_USER_OPT,
    su_password_env: str | None = DOCTOR_SU_PASSWORD_OPT,
    keystore_password_env: str | None = DOCTOR_KEYSTORE_OPT,
    verify_port: list[int] | None = DOCTOR_VERIFY_PORT_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Read-only: say whether OVOC would accept the staged files, and why not.

    Only SFTP as the login user is used: no su, no menu, nothing written.
    """
    del su_user, su_password_env, keystore_password_env, verify_port  # accepted, unused
    raise typer.Exit(_doctor(login, staging_dir=staging_dir, names=name or [],
                             prompt_timeout=prompt_timeout, json_out=json_out))


def _deploy(files: list[Path], login: OvocLogin, *, su_user: str,
            su_password_env: str | None, keystore_password_env: str | None,
            input_password_env: str | None, staging_dir: str, verify_ports: list[int] | None,
            verify_timeout: float, prompt_timeout: float,
            import_timeout: float, force: bool, transcript: Path | None,
            backup_dir: Path | None, json_out: bool, menu: Path | None = None,
            settle_time: float = 0.3, enter: str = "lf") -> int:
    from ..drivers.base import refuse_on_input_error

    host = login.host

    def emit_outcome(outcome: DeployOutcome, text: str | None) -> int:
        if transcript is not None and text:
            from ..fsutil import write_private_file

            write_private_file(transcript, text.encode("utf-8"))
        if json_out:
            data = outcome.to_dict()
            data["transcript"] = text
            data["diagnosis"] = diagnosis
            print_json(data)
        else:
            _print_outcome(outcome)
        return outcome.exit_code

    diagnosis: str | None = None
    try:
        from ..errors import PreflightError
        from ..pki.checks import preflight
        from ..pki.profiles import keystore_password_findings

        input_password = read_password(input_password_env, what="password of the input files")
        password = _secret(login.password_env, f"SSH password of {login.user}", required=True,
                           json_out=json_out)
        su_password = _secret(su_password_env, f"password of {su_user} (su)", required=True,
                              json_out=json_out)
        keystore = _secret(keystore_password_env, "keystore password", required=True,
                           json_out=json_out)
        problems = keystore_password_findings(keystore)
        if problems:  # before the files are read and before any connection: exit 2
            raise PreflightError(problems[0].message, problems, hint=problems[0].hint)
        from .common import password_from

        with password_from("--input-password-env"):
            bundle, findings = preflight(
                files, input_password.encode("utf-8") if input_password is not None else None)
        driver = _driver(
            login, password=password, su_user=su_user,
            su_password=su_password, keystore_password=keystore,
            staging_dir=staging_dir, verify_ports=verify_ports,
            verify_timeout=verify_timeout, prompt_timeout=prompt_timeout,
            import_timeout=import_timeout, on_event=None if json_out else _print_event,
            menu=menu, settle_time=settle_time, enter=enter,
        )
    except InputError as exc:
        return emit_outcome(refuse_on_input_error(host, exc), None)
    except CertfleetError as exc:  # pragma: no cover - only input errors happen here
        print_error(exc.message, exc.hint)
        return 2
    if not json_out:
        subject = bundle.leaf.subject.rfc4514_string()
        console.print(f"[bold]OVOC {_text(host)}[/]: deploying {_text(subject)}",
                      soft_wrap=True)

    import asyncio

    from .common import sigterm_as_ctrl_c

    try:
        # Ctrl-C (and SIGTERM, taken as Ctrl-C) cancels the deploy: the template rolls back.
        with sigterm_as_ctrl_c():
            outcome = asyncio.run(driver.deploy(bundle, findings, force=force))
    except (Exception, KeyboardInterrupt) as exc:  # a second Ctrl-C, or a bug: no traceback
        return _deploy_aborted(driver, host, exc, json_out)
    diagnosis = driver.last_diagnosis
    _save_backup(outcome, host, staging_dir, backup_dir)
    return emit_outcome(outcome, outcome.transcript)


def _deploy_aborted(driver: OvocDriver, host: str, exc: BaseException, json_out: bool) -> int:
    """The deploy stopped outside its own outcome (a second Ctrl-C while rolling back, or a
    bug): exit 2 when the device was not changed yet, 3 when it may be."""
    from ..drivers.ovoc import OvocProgress

    changed = driver.progress >= OvocProgress.STAGED
    what = "interrupted" if isinstance(exc, KeyboardInterrupt) \
        else f"stopped by an unexpected {type(exc).__name__}: {exc}"
    message = f"{host}: the deploy was {what}; " + (
        "the device may be changed and is NOT verified" if changed else "nothing was changed")
    hint = (f"run `certfleet ovoc doctor` to see what is staged in {driver.staging_dir}, then "
            "rerun the deploy (or import the previous files by hand in EmsServerManager)"
            if changed else "rerun the deploy")
    if json_out:
        print_json({"device": host, "outcome": "failed" if changed else "refused",
                    "exit_code": 3 if changed else 2, "message": message, "hint": hint,
                    "findings": [], "steps": [], "transcript": driver.transcript()})
    else:
        print_error(message, hint, label="failed" if changed else "refused")
    return 3 if changed else 2


def _save_backup(outcome: DeployOutcome, host: str, staging_dir: str,
                 backup_dir: Path | None) -> None:
    """Keep the previous files where the user can find them when they are needed by hand."""
    import datetime as dt
    import re

    backup = outcome.backup
    if backup is None or not backup.files or (backup_dir is None and outcome.outcome != "failed"):
        return
    if backup_dir is None:
        import platformdirs

        backup_dir = Path(platformdirs.user_data_dir("certfleet")) / "backups"
    import dataclasses

    from ..drivers.base import BACKUP_MANIFEST
    from ..drivers.ovoc.staging import safe_staged_name
    from ..estate.store.backups import write_backup_files

    # Names came from the device: only plain file names become local paths.
    backup = dataclasses.replace(backup, files={
        name: data for name, data in backup.files.items()
        if safe_staged_name(name) and name != BACKUP_MANIFEST})
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = backup_dir / f"ovoc-{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}-{stamp}"
    try:
        write_backup_files(backup, target)
    except OSError as exc:
        outcome.hint = (outcome.hint or "") + f" (the backup could not be saved: {exc.strerror})"
        return
    if outcome.outcome == "failed":
        outcome.hint = (f"the previous files are saved in {target}: copy them back into "
                        f"{staging_dir} and run Security > Server Certificate Updates > Import "
                        "Server Certificates from Certificate Authority (CA) in EmsServerManager"
                        + (f"; {outcome.hint}" if outcome.hint else ""))


def _doctor(login: OvocLogin, *, staging_dir: str, names: list[str], prompt_timeout: float,
            json_out: bool) -> int:
    from rich.table import Table

    from ..errors import DeviceError, DeviceRefusedError

    try:
        password = _secret(login.password_env, f"SSH password of {login.user}", required=True,
                           json_out=json_out)
        # No su and no import: blank stand-ins for their secrets, as a plan has.
        driver = _driver(login, password=password, su_password="", keystore_password="",
                         staging_dir=staging_dir, prompt_timeout=prompt_timeout)
    except InputError as exc:
        return _doctor_error(exc, 2, json_out)

    async def run() -> StagingReport:
        try:
            return await driver.inspect(names)
        finally:
            await driver.close()

    try:
        import asyncio

        report = asyncio.run(run())
    except InputError as exc:
        return _doctor_error(exc, 2, json_out)
    except (DeviceError, DeviceRefusedError) as exc:
        return _doctor_error(exc, 3, json_out)
    if json_out:
        data = report.to_dict()
        print_json(data)
        return 0 if report.ok else 1
    table = Table()
    table.add_column("File")
    table.add_column("Size", justify="right")
    for file_name, size in report.files:
        table.add_row(_text(file_name), str(size))
    if report.exists:
        console.print(f"[bold]{_text(staging_dir)}[/] on {_text(login.host)}:", soft_wrap=True)
        console.print(table)
    _print_findings(report.findings)
    if report.ok:
        console.print("[bold green]ok[/] OVOC would accept these files", soft_wrap=True)
        return 0
    console.print(f"[bold red]rejected[/] {_text(report.diagnosis or '')}", soft_wrap=True)
    first = next((f for f in report.findings if f.severity == "error"), None)
    if first is not None and first.hint:
        console.print(f"[yellow]Tip:[/] {_text(first.hint)}", soft_wrap=True)
    return 1


def _doctor_error(exc: CertfleetError, code: int, json_out: bool) -> int:
    print_error(exc.message, exc.hint, json_out=json_out,
                json_fields={"ok": False, "files": [], "findings": [], "diagnosis": None})
    return code
