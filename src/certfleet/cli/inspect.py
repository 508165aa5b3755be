"""``certfleet inspect`` and ``certfleet check``: look at files before they reach a device."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import PasswordError
from ..pki.quiet import quietly
from .common import (
    JsonUsageCommand,
    console,
    handle_errors,
    print_json,
    read_password,
    text,
)

if TYPE_CHECKING:
    from ..pki.model import Bundle, Finding, LoadedObject

__all__ = ["register"]

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}

FILES_ARG = typer.Argument(
    ...,
    help="Certificate, key, chain, .p7b, .pfx/.p12 or JKS files (format found from content).",
    show_default=False,
    # certfleet reads the files itself and names the cause (Permission denied...)
    readable=False,
)
PASSWORD_ENV_OPT = typer.Option(
    None, "--password-env", metavar="VAR",
    help="Environment variable holding the password of encrypted inputs.",
)
PASSWORD_FILE_OPT = typer.Option(
    None, "--password-file", metavar="PATH",
    help="File holding the password of encrypted inputs (first line).",
)
JSON_OPT = typer.Option(False, "--json", help="Print JSON only, on stdout.")


def _password(env_var: str | None, file: Path | None) -> bytes | None:
    value = read_password(
        env_var, what="password of the input files", file=str(file) if file else None
    )
    return value.encode("utf-8") if value is not None else None


def _load_objects(
    files: list[Path], env_var: str | None, file: Path | None
) -> list[LoadedObject]:
    """Load the files; prompt once for a password when one is needed and none was given."""
    from ..pki.load import load_files

    password = _password(env_var, file)
    try:
        return load_files(files, password)
    except PasswordError as exc:
        asked = password is not None or env_var or file
        terminal = sys.stdin is not None and sys.stdin.isatty()
        if asked or getattr(exc, "reason", None) != "missing" or not terminal:
            raise
    typed = getpass.getpass("Password of the input files: ")
    return load_files(files, typed.encode("utf-8"))


def _short(digest: str | None) -> str:
    return f"{digest[:12]}…" if digest else "-"


@quietly
def _inspect(files: list[Path], password_env: str | None, password_file: Path | None,
             json_out: bool) -> None:
    from rich.table import Table

    from ..pki.describe import describe_object

    objects = _load_objects(files, password_env, password_file)
    described = [describe_object(o) for o in objects]
    if json_out:
        print_json({"objects": described})
        return
    table = Table(title="Objects found")
    for column in ("#", "Source", "Type", "Format", "Details", "Not after", "SHA-256"):
        table.add_column(column, overflow="fold")
    for number, item in enumerate(described, start=1):
        key = f"{item['key_type']} {item['key_bits']}"
        if item["type"] == "private_key":
            details = key + (", encrypted" if item["encrypted"] else "")
            digest = item["spki_sha256"]
        else:
            sans = item.get("sans")
            names = ", ".join(str(n) for n in sans) if isinstance(sans, list) else ""
            details = str(item["subject"])
            details += f"\nnames: {names}" if names else ""
            details += f"\n{key}" + (", CA" if item.get("is_ca") else "")
            digest = item.get("sha256") or item["spki_sha256"]
        not_after = str(item.get("not_after", "-"))[:10]
        kind = {"certificate": "cert", "private_key": "key"}.get(str(item["type"]), "csr")
        # File names and subjects are text: "[/]" or "[red]" in one is not markup.
        table.add_row(
            str(number), text(str(item["source"])), kind, str(item["format"]),
            text(details), not_after, _short(str(digest) if digest else None),
        )
    console.print(table)


def _bundle_json(bundle: Bundle) -> dict[str, object]:
    from ..pki.bundle import safe_spki_sha256, subject_text
    from ..pki.describe import iso_utc
    from ..pki.model import cert_sha256
    from ..pki.names import certificate_names

    leaf = bundle.leaf
    return {
        "leaf": {
            "sha256": cert_sha256(leaf),
            "subject": subject_text(leaf),
            "not_after": iso_utc(leaf.not_valid_after_utc),
            "names": certificate_names(leaf),
        },
        "chain": [{"sha256": cert_sha256(c), "subject": subject_text(c)} for c in bundle.chain],
        "root": (
            {"sha256": cert_sha256(bundle.root), "subject": subject_text(bundle.root)}
            if bundle.root is not None else None
        ),
        "private_key": (
            {
                "spki_sha256": safe_spki_sha256(bundle.private_key),
                "format": bundle.key_format,
                "encrypted": bundle.key_encrypted,
                "source": bundle.key_source,
            }
            if bundle.private_key is not None else None
        ),
        "unrelated": [
            {"sha256": cert_sha256(c), "subject": subject_text(c)} for c in bundle.unrelated
        ],
    }


def _print_check(bundle: Bundle, findings: list[Finding], ok: bool) -> None:
    import datetime as dt

    from ..pki.bundle import subject_text
    from ..pki.describe import iso_utc
    from ..pki.names import certificate_names, san_entries

    leaf = bundle.leaf
    chain = list(bundle.chain)
    if any(f.code == "CSR_GIVEN" for f in findings):
        # Only a request and the CA's chain: the lowest CA is no leaf, say so.
        console.print("[bold]Leaf[/]     [red]none: the input holds the request, not the "
                      "issued certificate[/]")
        chain.insert(0, leaf)
    else:
        days = (leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
        names = ", ".join(certificate_names(leaf)) or "-"
        if san_entries(leaf) is None:
            names = f"- (no subjectAltName; CN {names})"
        console.print(f"[bold]Leaf[/]     {text(subject_text(leaf))}")
        console.print(f"[bold]Names[/]    {text(names)}")
        when = f"in {days} days" if days >= 0 else f"expired {-days} days ago"
        console.print(f"[bold]Expires[/]  {iso_utc(leaf.not_valid_after_utc)} ({when})")
    for number, cert in enumerate(chain, start=1):
        console.print(f"[bold]Chain {number}[/]  {text(subject_text(cert))}")
    if bundle.root is not None:
        console.print(f"[bold]Root[/]     {text(subject_text(bundle.root))}")
    if bundle.private_key is not None:
        state = "encrypted" if bundle.key_encrypted else "unencrypted"
        console.print(
            f"[bold]Key[/]      {text(str(bundle.key_source))} ({bundle.key_format}, {state})"
        )
    elif any(f.code == "KEY_MISMATCH" for f in findings):
        console.print("[bold]Key[/]      [red]none that matches the leaf[/]")
    else:
        console.print("[bold]Key[/]      -")
    console.print()
    for finding in findings:
        style = _SEVERITY_STYLE[finding.severity]
        console.print(
            f"[{style}]{finding.severity.upper():7}[/] [bold]{finding.code}[/] "
            f"{text(finding.message)}",
            soft_wrap=True,
        )
        if finding.hint:
            console.print(f"          [dim]{text(finding.hint)}[/]", soft_wrap=True)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    summary = ", ".join(
        f"{count} {name}{'' if count == 1 else 's'}" for name, count in counts.items()
    )
    if ok:
        console.print(f"[green]OK[/]: no errors ({summary})")
    else:
        console.print(f"[bold red]NOT OK[/]: {summary}")


@quietly
def _check(files: list[Path], hosts: list[str], password_env: str | None,
           password_file: Path | None, expiry_warn_days: int, json_out: bool) -> None:
    from ..pki.bundle import assemble
    from ..pki.checks import check_bundle, has_errors

    objects = _load_objects(files, password_env, password_file)
    bundle = assemble(objects)
    findings = check_bundle(bundle, hosts, expiry_warn_days=expiry_warn_days)
    ok = not has_errors(findings)
    if json_out:
        print_json(
            {
                "ok": ok,
                "findings": [f.to_dict() for f in findings],
                "bundle": _bundle_json(bundle),
            }
        )
    else:
        _print_check(bundle, findings, ok)
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``inspect`` and ``check`` to ``app``."""

    @app.command("inspect", cls=JsonUsageCommand)
    @handle_errors
    def inspect_command(
        files: list[Path] = FILES_ARG,
        password_env: str | None = PASSWORD_ENV_OPT,
        password_file: Path | None = PASSWORD_FILE_OPT,
        json_out: bool = JSON_OPT,
    ) -> None:
        """List every certificate, key and CSR in FILE... (any format)."""
        _inspect(files, password_env, password_file, json_out)

    @app.command("check", cls=JsonUsageCommand)
    @handle_errors
    def check_command(
        files: list[Path] = FILES_ARG,
        hosts: list[str] = typer.Option(  # noqa: B008 - typer declares options this way
            [], "--host", metavar="FQDN", help="A host name the certificate must cover."
        ),
        password_env: str | None = PASSWORD_ENV_OPT,
        password_file: Path | None = PASSWORD_FILE_OPT,
        expiry_warn_days: int = typer.Option(
            30, "--expiry-warn-days", min=0, metavar="N",
            help="Warn when a certificate expires within N days.",
        ),
        json_out: bool = JSON_OPT,
    ) -> None:
        """Check a certificate bundle before deploying it: exit 0 ok, 1 errors, 2 unusable."""
        _check(files, hosts, password_env, password_file, expiry_warn_days, json_out)
