"""What the tests of tips share: the options of every certfleet command, the pattern of a
flag in a message, and the device settings that are both a flag and an inventory key."""

from __future__ import annotations

import re
from typing import Any

import typer.main

from certfleet.cli.app import app

__all__ = ["ALL_FLAGS", "COMMANDS", "FLAG", "SETTINGS"]

#: A ``--flag`` in a message (not the ``--`` of a word such as ``re--read``).
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

#: A device setting given as a flag of certfleet sbc/ovoc -> (kind, its inventory key).
SETTINGS: dict[str, tuple[str, str]] = {
    "--user": ("sbc", "user"),
    "--password-env": ("sbc", "password"),
    "--ca-bundle": ("sbc", "ca_file"),
    "--pin-sha256": ("sbc", "tls_pin"),
    "--relaxed-x509": ("sbc", "x509_strict"),
    "--context": ("sbc", "tls_contexts"),
    "--timeout": ("sbc", "timeout"),
    "--busy-retries": ("sbc", "busy_retries"),
    "--busy-delay": ("sbc", "busy_delay"),
    "--verify-timeout": ("sbc", "verify_timeout"),
    "--host": ("ovoc", "address"),
    "--ssh-port": ("ovoc", "ssh_port"),
    "--su-user": ("ovoc", "su_user"),
    "--su-password-env": ("ovoc", "root_password"),
    "--keystore-password-env": ("ovoc", "keystore_password"),
    "--host-key-sha256": ("ovoc", "ssh_host_key"),
    "--known-hosts": ("ovoc", "known_hosts"),
    "--staging-dir": ("ovoc", "staging_dir"),
    "--menu": ("ovoc", "menu"),
    "--prompt-timeout": ("ovoc", "prompt_timeout"),
    "--import-timeout": ("ovoc", "import_timeout"),
    "--settle-time": ("ovoc", "settle_time"),
    "--enter": ("ovoc", "enter"),
}


def _commands() -> dict[str, set[str]]:
    """``"sbc deploy"`` -> its options (and --help), for every command of certfleet."""
    root: Any = typer.main.get_command(app)
    root.load_all()
    found: dict[str, set[str]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        options = {"--help"}
        for param in command.params:
            if param.param_type_name == "option":
                options.update(param.opts, param.secondary_opts)
        found[" ".join(path)] = options
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(root, ())
    return found


COMMANDS = _commands()
ALL_FLAGS = set().union(*COMMANDS.values())
