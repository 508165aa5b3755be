"""Help is text: a bracketed word in a command's or an option's help is printed as written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from certfleet.cli.app import app


def _help(*path: str) -> str:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    # One line of words: the panels' frames and the wrapping taken out.
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", result.stdout).split())


def test_status_and_ovoc_deploy_help_keep_their_bracketed_words() -> None:
    """`status --help` says "[notify] targets"; `ovoc deploy --help` "(a [menu] table"."""
    assert "Tell [notify] targets of certificates" in _help("status")
    assert "(a [menu] table or top-level keys)" in _help("ovoc", "deploy")


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def test_every_bracketed_word_in_any_help_is_printed() -> None:
    """Every "[word]" in the help of every command and option appears in its --help."""
    root = typer.main.get_command(app)
    root.load_all()  # type: ignore[attr-defined]
    checked = 0
    for path, command in _commands(root):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {word.replace("\\[", "[") for text in texts
                 for word in re.findall(r"\\?\[[\w .-]+\]", text)}
        if not words:
            continue
        shown = _help(*path)
        for word in words:
            assert word in shown, (path, word)
            checked += 1
    assert checked >= 2
