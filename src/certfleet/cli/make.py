"""``certfleet csr`` and ``certfleet export``: make a key and CSR, write a bundle out.

Thin by design: arguments are parsed here, the work is done by
``certfleet.pki`` (and ``certfleet.estate.csr`` for inventory CSRs).
Heavy libraries are imported inside the commands to keep ``--help`` fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict

import typer

from ..errors import ConfigError, InputError, PasswordError, PrivateKeyError
from ..pki.quiet import quietly
from .common import (
    JsonUsageCommand,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
    read_password,
)

if TYPE_CHECKING:
    from ..pki.keygen import CsrSubject
    from ..pki.model import Bundle, Finding, PrivateKey

__all__ = ["register"]

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def register(app: typer.Typer) -> None:
    """Add ``csr`` and ``export`` to ``app``."""
    app.command("csr", cls=JsonUsageCommand)(csr)
    app.command("export", cls=JsonUsageCommand)(export)


def _password_bytes(env_var: str | None, file: str | None, *, what: str) -> bytes | None:
    value = read_password(env_var, what=what, file=file)
    if value is None:
        return None
    if not value:
        raise PasswordError(
            f"the {what} is empty",
            hint="set the variable or file to the password, or drop the option",
        )
    return value.encode("utf-8")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OS error while writing under ``path`` into a one-line InputError."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename is not None else path
        raise InputError(
            f"cannot write {str(where)!r}: {exc.strerror or exc}",
            hint="choose an output folder that exists as a folder and is writable",
            path=str(where),
        ) from None


def _refuse_existing(paths: list[Path]) -> None:
    for path in paths:
        if path.exists():
            raise ConfigError(
                f"{str(path)!r} exists; refusing to overwrite",
                hint="pass --force to overwrite it, or choose another output",
                path=str(path),
            )


# --------------------------------------------------------------------------- csr


@handle_errors
@quietly
def csr(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME",
        help="Inventory certificate name (its names, key type and passphrase come from the "
        "inventory). Use --cn instead for a one-off CSR.", show_default=False,
    )] = None,
    cn: Annotated[str | None, typer.Option(
        "--cn", help="Common name, e.g. '*.example.com'.")] = None,
    san: Annotated[list[str] | None, typer.Option(
        "--san", help="Extra subject alternative name (repeatable). The CN is always one.",
    )] = None,
    key_type: Annotated[str | None, typer.Option(
        "--key-type", help="rsa2048 (default), rsa3072, rsa4096, ec-p256 or ec-p384.",
    )] = None,
    org: Annotated[str | None, typer.Option("--org", help="Organisation (O).")] = None,
    ou: Annotated[str | None, typer.Option("--ou", help="Organisational unit (OU).")] = None,
    country: Annotated[str | None, typer.Option(
        "--country", help="Two-letter country code (C).")] = None,
    state: Annotated[str | None, typer.Option("--state", help="State or province (ST).")] = None,
    locality: Annotated[str | None, typer.Option(
        "--locality", help="Locality or city (L).")] = None,
    email: Annotated[str | None, typer.Option(
        "--email", help="E-mail address in the subject.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", help="Folder for <name>.key and <name>.csr (required with --cn); "
        "with NAME, the folder for NAME.csr (default: the inventory's folder).",
    )] = None,
    passphrase_env: Annotated[str | None, typer.Option(
        "--passphrase-env", metavar="VAR",
        help="Encrypt the key (PKCS#8) with the passphrase in this environment variable.",
    )] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite an existing key and CSR.")] = False,
    inventory: Annotated[Path | None, typer.Option(
        "--inventory", help="Inventory file for NAME (default certfleet.toml).",
    )] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="State folder that keeps the key of NAME.",
    )] = None,
    state_url: Annotated[str | None, typer.Option(
        "--state-url", envvar="CERTFLEET_STATE_URL",
        help="A shared state store that keeps the key of NAME: postgresql://USER@HOST/DB "
        "(env CERTFLEET_STATE_URL; default: the inventory's [state] url).",
    )] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    stdout: Annotated[bool, typer.Option(
        "--stdout", help="With NAME: also print the CSR (PEM) alone on stdout.")] = False,
) -> None:
    """Make a private key and a CSR off the devices (what a shared wildcard needs).

    The key is written 0600 as <name>.key where <name> is the CN with '*' as
    'wildcard': PKCS#1 'BEGIN RSA PRIVATE KEY' for RSA (SEC1 for EC), the
    unencrypted form OVOC imports, or encrypted PKCS#8 with --passphrase-env.
    """
    if name is not None and cn is not None:
        raise ConfigError(
            f"give either an inventory certificate NAME ({name!r}) or --cn, not both",
            hint="drop NAME for a one-off CSR, or drop --cn to use the inventory",
        )
    if name is not None:
        _refuse_one_off_flags(name, {
            "--san": san, "--key-type": key_type, "--org": org, "--ou": ou,
            "--country": country, "--state": state, "--locality": locality,
            "--email": email, "--passphrase-env": passphrase_env, "--force": force or None,
        }, stdout=stdout, json_out=json_out)
        _inventory_csr(name, inventory, state_dir, out_dir, json_out=json_out, stdout=stdout,
                       state_url=state_url)
        return
    cn, out_dir = _one_off_target(cn, out_dir, inventory, state_dir, stdout=stdout)
    passphrase = _password_bytes(passphrase_env, None, what="key passphrase")
    from ..pki.keygen import CsrSubject

    subject = CsrSubject(organization=org, organizational_unit=ou, locality=locality,
                         state=state, country=country, email=email)
    _one_off_csr(cn, out_dir, san or (), key_type or "rsa2048", subject, passphrase,
                 force=force, json_out=json_out)


def _refuse_one_off_flags(
    name: str, one_off: dict[str, object], *, stdout: bool, json_out: bool,
) -> None:
    """Refuse the flags of a one-off CSR given with inventory certificate ``name``."""
    given = [flag for flag, value in one_off.items() if value]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot be used with inventory certificate {name!r}",
            hint=f"set them in [certificates.{name}] of the inventory, or use --cn",
        )
    if stdout and json_out:
        raise ConfigError("--stdout and --json both print on stdout",
                          hint="pass one of them (--json holds the CSR as csr_pem)")


def _one_off_target(
    cn: str | None, out_dir: Path | None, inventory: Path | None, state_dir: Path | None,
    *, stdout: bool,
) -> tuple[str, Path]:
    """The CN and folder of a one-off CSR (``--cn``), its other flags checked."""
    if stdout:
        raise ConfigError("--stdout is for an inventory certificate NAME",
                          hint="with --cn the CSR is written to --out-dir")
    if cn is None:
        raise ConfigError(
            "no certificate to request: give --cn or an inventory certificate NAME",
            hint="e.g. certfleet csr --cn '*.example.com' --out-dir ./certs",
        )
    if inventory is not None or state_dir is not None:
        raise ConfigError(
            "--inventory and --state-dir are for an inventory certificate NAME, not --cn",
            hint="drop them, or give NAME instead of --cn",
        )
    if out_dir is None:
        raise ConfigError(
            "--out-dir is required with --cn",
            hint="e.g. certfleet csr --cn '*.example.com' --out-dir ./certs",
        )
    return cn, out_dir


def _one_off_csr(
    cn: str, out_dir: Path, san: Sequence[str], key_type: str,
    subject: CsrSubject, passphrase: bytes | None, *, force: bool,
    json_out: bool,
) -> None:
    """Make the key and CSR of ``--cn`` in ``out_dir`` and say what was written."""
    from cryptography import x509

    from ..fsutil import write_file_atomic, write_private_file
    from ..pki.keygen import (
        build_csr,
        csr_pem,
        generate_private_key,
        native_key_format,
        private_key_pem,
        stem_for_name,
    )
    from ..pki.model import spki_sha256

    stem = stem_for_name(cn)
    key_path, csr_path = out_dir / f"{stem}.key", out_dir / f"{stem}.csr"
    if not force:
        _refuse_existing([key_path, csr_path])
    try:
        key = generate_private_key(key_type)
    except ValueError as exc:
        raise ConfigError(str(exc), hint="pass --key-type with one of the values listed") from None
    try:
        request = build_csr(key, cn, san, subject)
    except ValueError as exc:
        raise ConfigError(
            f"cannot make the CSR: {exc}", hint="fix --cn, --san or the subject options"
        ) from None

    key_format = "pkcs8-encrypted" if passphrase else native_key_format(key)
    key_pem = private_key_pem(key, native_key_format(key), passphrase)
    with _writing(out_dir):
        write_private_file(key_path, key_pem)
        write_file_atomic(csr_path, csr_pem(request))
    spki = spki_sha256(key)
    san_ext = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    sans = [str(n.value) for n in san_ext.value]
    if json_out:
        print_json({
            "key": str(key_path), "csr": str(csr_path), "spki_sha256": spki,
            "common_name": cn, "sans": sans, "key_type": key_type,
            "key_format": key_format,
        })
        return
    _print_one_off(key, key_path, key_format, csr_path, sans, spki)


def _print_one_off(
    key: PrivateKey, key_path: Path, key_format: str, csr_path: Path, sans: list[str],
    spki: str,
) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..pki.model import key_description

    kind, bits = key_description(key)
    table = Table(show_header=False, box=None)
    for label, value in (
        ("key", f"{key_path}  ({kind.upper()} {bits}, {key_format}, mode 0600)"),
        ("csr", str(csr_path)),
        ("names", ", ".join(sans)),
        ("spki sha256", spki),
    ):
        table.add_row(label, Text(value))
    console.print(table)
    console.print(
        "Send the CSR to the CA; keep the key file: it is the only copy.", soft_wrap=True
    )


def _inventory_csr(
    name: str, inventory: Path | None, state_dir: Path | None, out_dir: Path | None,
    *, json_out: bool, stdout: bool = False, state_url: str | None = None,
) -> None:
    try:
        from ..estate.csr import make_inventory_csr
    except ImportError as exc:  # a build without the estate feature
        raise ConfigError(
            f"inventory CSRs need the estate feature, which is not available ({exc})",
            hint="make a one-off CSR with --cn NAME --out-dir DIR",
        ) from None
    import os
    import sys

    if out_dir is None:
        # Next to the inventory: where the estate's files live, wherever the shell stands.
        where = inventory or Path(os.environ.get("CERTFLEET_INVENTORY") or "certfleet.toml")
        out_dir = where.parent
    from ..inventory import load_inventory
    from .options import open_store

    inv = load_inventory(inventory or Path(os.environ.get("CERTFLEET_INVENTORY")
                                           or "certfleet.toml"))
    with open_store(state_dir, state_url, inv) as store:
        made = make_inventory_csr(name, inventory=inv, store=store, out_dir=out_dir)
    csr_text = made.csr_pem.decode("ascii")
    if stdout:
        sys.stdout.write(csr_text)
        sys.stdout.flush()
    if json_out:
        print_json({
            "certificate": name,
            "key": str(made.key_path),
            "csr": str(made.csr_path) if made.csr_path is not None else None,
            "spki_sha256": made.key.spki_sha256,
            "csr_pem": csr_text,
        })
        return
    lines = [
        f"key for {name!r} stored in the state folder: {made.key_path}",
        f"spki sha256: {made.key.spki_sha256}",
        f"wrote {made.csr_path}: give it to the CA, then 'certfleet import {name} FILE...' "
        "with what the CA sends back",
    ]
    for line in lines:
        # With --stdout the CSR alone is on stdout (to pipe); the rest goes to stderr.
        (err_console if stdout else console).print(line, soft_wrap=True, markup=False)


# ------------------------------------------------------------------------ export


@handle_errors
@quietly
def export(
    files: Annotated[list[str], typer.Argument(
        metavar="FILE", help="Certificate, chain, key, .p7b, .pfx or .jks files.",
        show_default=False,
    )],
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f",
        help="pem, chain, fullchain, der, key-pkcs1, key-pkcs8, key-pkcs8-encrypted, pfx, "
        "pfx-legacy (3DES, for older Java and appliances), jks, p7b.",
    )] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output file (with --format).")] = None,
    target: Annotated[str | None, typer.Option(
        "--target", "-t", help="Write the whole file set a device wants: ovoc or sbc.",
    )] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", help="Output folder (with --target).")] = None,
    password_env: Annotated[str | None, typer.Option(
        "--password-env", metavar="VAR", help="Password of encrypted inputs, from VAR.",
    )] = None,
    password_file: Annotated[str | None, typer.Option(
        "--password-file", metavar="FILE", help="Password of encrypted inputs, from FILE.",
    )] = None,
    out_password_env: Annotated[str | None, typer.Option(
        "--out-password-env", metavar="VAR",
        help="Password for pfx, pfx-legacy, jks and key-pkcs8-encrypted, from VAR.",
    )] = None,
    out_password_file: Annotated[str | None, typer.Option(
        "--out-password-file", metavar="FILE", help="Output password, from FILE.",
    )] = None,
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="A host name the certificate must cover (repeatable).",
    )] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write despite error findings, and overwrite existing outputs.",
    )] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Check a bundle and write it in one format, or as the file set of a device.

    Exit 0 written; 1 refused because checks found errors (see --force);
    2 unusable input or options.
    """
    if (fmt is None) == (target is None):
        raise ConfigError(
            "give exactly one of --format and --target",
            hint="--format FMT --out FILE writes one file; --target ovoc|sbc --out-dir DIR "
            "writes a device's file set",
        )
    password = _password_bytes(password_env, password_file, what="input password")
    out_password = _check_export_flags(fmt, target, out, out_dir, out_password_env,
                                       out_password_file, force=force)
    bundle, findings = _checked_bundle(files, password, fmt, target, host or (),
                                       force=force, json_out=json_out)
    written = _write_export(bundle, fmt, target, out, out_dir, out_password, force=force)
    if json_out:
        print_json({
            "format": fmt, "target": target, "leaf_sha256": bundle.leaf_sha256,
            "written": written, "findings": [f.to_dict() for f in findings],
        })
        return
    shown = [f for f in findings if f.severity != "info"]
    if shown:
        _print_findings(shown)
    from rich.table import Table
    from rich.text import Text

    table = Table("written", "mode", "bytes", box=None)
    for item in written:
        table.add_row(Text(item["path"]), "0600" if item["secret"] else "", str(item["bytes"]))
    console.print(table)


class _Written(TypedDict):
    """One file ``export`` wrote, as its JSON lists it."""

    path: str
    secret: bool
    bytes: int


def _check_export_flags(
    fmt: str | None, target: str | None, out: Path | None, out_dir: Path | None,
    out_password_env: str | None, out_password_file: str | None, *, force: bool,
) -> bytes | None:
    """Refuse a combination of export's flags that cannot be written; the output password."""
    from ..pki.export import check_export_options
    from ..pki.profiles import PROFILES

    out_password = _password_bytes(out_password_env, out_password_file, what="output password")
    if fmt is not None:
        check_export_options(fmt, out_password)
        if out is None or out_dir is not None:
            raise ConfigError("--format writes one file: give --out FILE (not --out-dir)",
                              hint="add --out FILE and drop --out-dir")
    if target is not None:
        if target not in PROFILES:
            raise ConfigError(f"target {target!r} is unknown",
                              hint=f"use one of {', '.join(PROFILES)}")
        if out_dir is None or out is not None:
            raise ConfigError("--target writes a file set: give --out-dir DIR (not --out)",
                              hint=f"e.g. --target {target} --out-dir ./{target}")
        if out_password_env or out_password_file:
            raise ConfigError(
                f"the {target} file set is written unencrypted; an output password has no use",
                hint="drop --out-password-env/--out-password-file",
            )

    if out is not None:
        if out.is_dir():
            raise InputError(
                f"{str(out)!r} is a folder; --out needs a file name",
                hint=f"e.g. --out {out / 'bundle.pem'}",
            )
        if not force:
            _refuse_existing([out])
    return out_password


def _checked_bundle(
    files: list[str], password: bytes | None, fmt: str | None, target: str | None,
    hosts: Sequence[str], *, force: bool, json_out: bool,
) -> tuple[Bundle, list[Finding]]:
    """The bundle of ``files`` and its findings; exits 1 on an error finding (not ``force``)."""
    from ..pki.bundle import assemble
    from ..pki.checks import check_bundle
    from ..pki.export import KEY_FORMATS
    from ..pki.load import load_files
    from ..pki.profiles import PROFILES

    bundle = assemble(load_files(files, password))
    mismatch = any(f.code == "KEY_MISMATCH" for f in bundle.findings)
    if bundle.private_key is None and not mismatch and (target or fmt in KEY_FORMATS):
        # No key given at all: the output cannot be made, whatever the checks say.
        # (A key that does not match is an error finding, shown with the others.)
        raise PrivateKeyError(
            f"no private key among the inputs for {_label(bundle)!r}; "
            f"{target or fmt!r} needs it",
            hint="add the key file to the input",
        )
    findings = check_bundle(bundle, hosts)
    if target is not None:
        from ..pki.profiles import profile_findings

        findings = profile_findings(bundle, PROFILES[target], findings)
    errors = [f for f in findings if f.severity == "error"]
    if errors and not force:
        message = f"{len(errors)} error finding(s) for {_label(bundle)!r}; nothing was written"
        hint = "fix the input, or pass --force to write anyway"
        if not json_out:
            _print_findings(findings)
        fail(message, hint, 1, json_out=json_out,
             json_fields={"findings": [f.to_dict() for f in findings]})
    return bundle, findings


def _write_export(
    bundle: Bundle, fmt: str | None, target: str | None, out: Path | None,
    out_dir: Path | None, out_password: bytes | None, *, force: bool,
) -> list[_Written]:
    """Write ``bundle`` as ``--format`` to ``out`` or as ``--target``'s file set."""
    from ..pki.export import SECRET_FORMATS
    from ..pki.profiles import PROFILES

    if fmt is not None:
        assert out is not None
        from ..pki.export import export_bundle

        data = export_bundle(bundle, fmt, out_password)
        secret = fmt in SECRET_FORMATS and bundle.private_key is not None
        with _writing(out):
            _write(out, data, secret=secret)
        return [{"path": str(out), "secret": secret, "bytes": len(data)}]
    assert out_dir is not None and target is not None
    from ..pki.profiles import render_target

    artifacts = render_target(bundle, PROFILES[target])
    with _writing(out_dir):
        paths = artifacts.write_to_dir(out_dir, overwrite=force)
    return [
        {"path": str(p), "secret": a.secret, "bytes": len(a.data)}
        for p, a in zip(paths, artifacts, strict=True)
    ]


def _label(bundle: Bundle) -> str:
    from ..pki.export import certificate_label

    return certificate_label(bundle.leaf)


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    from ..fsutil import write_file_atomic, write_private_file

    if secret:
        write_private_file(path, data)
    else:
        write_file_atomic(path, data)


def _print_findings(findings: list[Finding]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table("severity", "code", "finding", box=None)
    for finding in findings:
        text = Text(finding.message)
        if finding.hint:
            text.append(f"\n{finding.hint}", style="dim")
        severity = Text(finding.severity, style=_SEVERITY_STYLE.get(finding.severity, ""))
        table.add_row(severity, Text(finding.code), text)
    err_console.print(table)
