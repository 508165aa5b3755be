"""The ``certfleet`` command. Each command lives in a module of its own."""

from __future__ import annotations

import importlib

import typer

from .. import __version__

app = typer.Typer(
    name="certfleet",
    help="Renew and roll out TLS certificates across an AudioCodes estate (OVOC, Mediant SBCs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module exposes register(app). Kept as names so that `certfleet --help`
# imports only typer until a command runs (cold start matters: see benchmarks/).
COMMAND_MODULES = [
    "inspect",  # inspect, check
    "make",  # csr, export
    "ovoc",  # ovoc deploy, ovoc doctor
    "sbc",  # sbc deploy, backup, status, trust
    "estate",  # init, import, plan, deploy, verify, rollback, history, status
    "probe",  # probe (rehearse on every device, changing nothing)
    "lab",  # lab up, demo
    "scan",  # scan, exporter
    "renew",  # issue, renew (ACME)
    "schedule",  # schedule systemd|cron|windows
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"certfleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """certfleet: one command for the yearly (soon monthly) certificate chore."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"certfleet.cli.{_name}")
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != f"certfleet.cli.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    import os
    import sys

    from .common import console, err_console

    # In a pipe or a log rich would fall back to 80 columns and fold every
    # fingerprint and subject; 120 keeps the tables readable. A terminal, or
    # COLUMNS, decides otherwise.
    if "COLUMNS" not in os.environ:
        for target, stream in ((console, sys.stdout), (err_console, sys.stderr)):
            if not (hasattr(stream, "isatty") and stream.isatty()):
                target.width = 120
    app()
