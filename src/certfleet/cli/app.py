"""The ``certfleet`` command. Each command lives in a module of its own.

Every module in ``COMMAND_MODULES`` exposes ``register(app)``, which adds its
commands to the Typer ``app`` it is given. The root group imports a module
only when one of its commands runs or shows its help: ``certfleet --help``
lists the commands from ``COMMANDS``, a table of names and one-line help kept
equal to the real commands by a test (cold start matters: see benchmarks/).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from .startup import defer_unused_imports

defer_unused_imports()  # before typer is imported

import typer  # noqa: E402 - after defer_unused_imports()
from typer.core import (  # noqa: E402 - after defer_unused_imports()
    MarkupMode,
    TyperArgument,
    TyperGroup,
    TyperOption,
)

if TYPE_CHECKING:
    # The click typer vendors (and types).
    from typer._click import Command, Context, HelpFormatter

    CommandT = TypeVar("CommandT", bound=Command)

from .. import __version__  # noqa: E402 - after defer_unused_imports()


class Entry(NamedTuple):
    """One command of the root group: the module that registers it, its one-line help."""

    module: str
    help: str


#: name -> (module, one-line help), in the order ``certfleet --help`` lists them.
COMMANDS: dict[str, Entry] = {
    "inspect": Entry("inspect", "List every certificate, key and CSR in FILE... (any format)."),
    "check": Entry("inspect", "Check a certificate bundle before deploying it: exit 0 ok, "
                   "1 errors, 2 unusable."),
    "csr": Entry("make", "Make a private key and a CSR off the devices (what a shared "
                 "wildcard needs)."),
    "export": Entry("make", "Check a bundle and write it in one format, or as the file set "
                    "of a device."),
    "init": Entry("intake", "Write a commented inventory skeleton (never overwrites)."),
    "adopt": Entry("intake", "Store the certificate the devices serve today (with its key) "
                   "as a known version."),
    "import": Entry("intake", "Check the issued files and store them as the new version "
                    "of NAME."),
    "plan": Entry("estate", "Show, per device, what it serves now, what it will serve, the "
                  "steps, rollback."),
    "probe": Entry("probe", "Log in to every device and do all a deploy does up to the first "
                   "change; change nothing."),
    "deploy": Entry("estate", "Deploy the current version to every device that does not "
                    "serve it yet."),
    "verify": Entry("estate", "Handshake every listener; exit 1 when any device does not "
                    "serve the current version."),
    "rollback": Entry("estate", "Restore DEVICE's last backup through its driver, then verify "
                      "by handshake."),
    "history": Entry("estate", "Past deployments and rollbacks, newest first: time, user, "
                     "outcome, last step."),
    "status": Entry("estate", "What every listener serves now: certificate, days left, name "
                    "match, current."),
    "unlock": Entry("estate", "Check the deploy lock; runs whose process died are recorded "
                    "as interrupted."),
    "demo": Entry("lab", "Renew and deploy a wildcard across a lab estate, end to end (starts "
                  "nothing lasting)."),
    "discover": Entry("discover", "Find an estate's SBCs, OVOC and TLS listeners, read-only; "
                      "write its inventory."),
    "scan": Entry("scan", "One TLS handshake per endpoint: what it serves, checked, sorted by "
                  "days left."),
    "exporter": Entry("scan", "Scan the inventory's listeners (and --target) every --interval; "
                      "serve /metrics."),
    "issue": Entry("renew", "Order NAME from its ACME CA now (DNS-01) and store the new "
                   "version."),
    "renew": Entry("renew", "Renew every certificate with an ACME issuer that is due, deploy "
                   "it, verify."),
    "schedule": Entry("schedule", "Print (or --install) a schedule that runs 'certfleet renew' "
                      "twice a day."),
    "ovoc": Entry("ovoc", "OVOC appliance: deploy a certificate, diagnose staged files."),
    "sbc": Entry("sbc", "Mediant SBCs over the REST API: deploy, backup, status, trusted roots."),
    "lab": Entry("lab", "The lab estate: simulated OVOC and SBCs on 127.0.0.1."),
    "store": Entry("store", "The state store: migrate SQLite into PostgreSQL, check it, change "
                   "its key."),
    "serve": Entry("serve", "The estate on web pages: estate, timeline, devices, "
                   "certificates, runs, actions."),
}

#: The modules that register commands, each exposing ``register(app)``.
COMMAND_MODULES = list(dict.fromkeys(entry.module for entry in COMMANDS.values()))


#: typer's help style for every command ("rich": boxed panels; no markdown).
RICH_MARKUP_MODE: MarkupMode = "rich"


def load_module(name: str) -> typer.Typer:
    """A Typer app holding the commands that ``certfleet.cli.<name>`` registers."""
    holder = typer.Typer(rich_markup_mode=RICH_MARKUP_MODE)
    importlib.import_module(f"certfleet.cli.{name}").register(holder)
    return holder


def help_as_text(command: CommandT) -> CommandT:
    """``command`` (a click command or group, with its subcommands) with its help texts
    markup-escaped: typer reads help as rich markup, where "[notify]" would vanish.

    Help is text, like every other text certfleet prints. Returns ``command``.
    """
    from rich.markup import escape

    if getattr(command, "_help_is_text", False):
        return command
    command._help_is_text = True  # type: ignore[attr-defined]  # our mark
    for attribute in ("help", "short_help", "epilog"):
        value = getattr(command, attribute, None)
        if value:
            setattr(command, attribute, escape(value))
    for param in command.params:
        if isinstance(param, TyperArgument | TyperOption) and param.help:
            param.help = escape(param.help)
    for sub in getattr(command, "commands", {}).values():
        help_as_text(sub)
    return command


class LazyGroup(TyperGroup):
    """The root group: imports a command's module when the command is looked up to run.

    While the root's own help is rendered, commands not loaded yet are listed
    from ``COMMANDS`` without importing anything.
    """

    _listing = False

    def _load(self, module: str) -> None:
        group = typer.main.get_group(load_module(module))
        for name, command in group.commands.items():
            self.commands.setdefault(name, help_as_text(command))

    def load_all(self) -> None:
        for module in COMMAND_MODULES:
            self._load(module)

    def list_commands(self, ctx: Context) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        entry = COMMANDS.get(cmd_name)
        if cmd_name not in self.commands and entry is not None:
            if self._listing:
                return help_as_text(typer.core.TyperCommand(name=cmd_name, help=entry.help))
            self._load(entry.module)
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: Context, args: list[str],
    ) -> tuple[str | None, Command | None, list[str]]:
        if args and args[0] not in COMMANDS:
            self.load_all()  # an unknown name: suggest among every real command
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="certfleet",
    help="Renew and roll out TLS certificates across an AudioCodes estate (OVOC, Mediant SBCs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=LazyGroup,
    rich_markup_mode=RICH_MARKUP_MODE,
)


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
    from ..pki.quiet import silence_crypto_warnings

    silence_crypto_warnings()  # odd certificates are reported in words, not as warnings


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


def invoke(args: list[str]) -> tuple[int, str]:
    """Run certfleet with ``args`` in this process: its exit code and output (stdout, then
    stderr). What the lab's fault matrix and the benchmarks run commands with."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout + (result.stderr if result.stderr_bytes else "")
