"""Every `certfleet ...` command line quoted in a message, hint or tip of the source parses.

The strings are read from the source (every string literal and f-string but
docstrings; an f-string's fields become ``X``), the quoted command lines taken
out, and each parsed by the real CLI (click's parser, ``--help`` appended so
that nothing runs). A tip that names an option or command that does not exist
fails here.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

from certfleet.cli.app import app

SRC = Path(__file__).resolve().parents[2] / "src" / "certfleet"

# A command line is quoted 'like this', `like this`, (like this); or it follows "e.g."
# or ": " and starts with a command name (else it is prose: "certfleet speaks ...").
_QUOTED = [
    re.compile(r"'(certfleet [^']+)'"),
    re.compile(r"(?<!`)`(certfleet [^`]+)`(?!`)"),
    re.compile(r"\((certfleet [^)]+)\)"),
]
_UNQUOTED = re.compile(r"(?:e\.g\.|: )\s*(certfleet [^;\n]+)")


def _command_names() -> set[str]:
    group = typer.main.get_command(app)
    return set(getattr(group, "commands", {}))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    inner = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
             for v in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(
                str(v.value) if isinstance(v, ast.Constant) else "X" for v in node.values)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in skip and id(node) not in inner):
            yield node.lineno, node.value


def quoted_command_lines() -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    names = _command_names()
    for path in sorted(SRC.rglob("*.py")):
        for line, text in _strings(path):
            matches = [m for pattern in _QUOTED for m in pattern.finditer(text)]
            matches += [m for m in _UNQUOTED.finditer(text)
                        if m.group(1).split()[1].strip(".,") in names]
            for match in matches:
                command = match.group(1).strip().rstrip(".")
                found.setdefault(command, f"{path.relative_to(SRC.parent)}:{line}")
    return sorted(found.items())


def parses(command: str) -> str | None:
    """None when ``command`` parses with the real CLI, else click's complaint."""
    words = [w for w in shlex.split(command)[1:] if w not in ("...", "…")]
    group = typer.main.get_command(app)
    try:
        ctx = group.make_context("certfleet", [*words, "--help"])
        while hasattr(ctx.command, "resolve_command"):
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
            name, command_obj, args = ctx.command.resolve_command(ctx, rest)  # type: ignore[attr-defined]
            assert command_obj is not None and name is not None
            ctx = command_obj.make_context(name, args, parent=ctx)
    except Exception as exc:  # click's Exit (from --help) is the success case
        if type(exc).__name__ == "Exit" and getattr(exc, "exit_code", 1) == 0:
            return None
        return f"{type(exc).__name__}: {exc}"
    return None


def test_the_extractor_finds_the_tips() -> None:
    """The extractor sees the tips it must check (a broken pattern would check nothing)."""
    commands = dict(quoted_command_lines())
    assert "certfleet deploy --previous-key FILE" in commands
    assert "certfleet rollback DEVICE" in commands
    assert len(commands) >= 20


def test_the_parser_refuses_what_does_not_exist() -> None:
    assert parses("certfleet deploy --no-such-option") is not None
    assert parses("certfleet import wildcard x.crt --host a") is not None
    assert parses("certfleet nosuchcommand") is not None
    assert parses("certfleet deploy --previous-key FILE") is None


@pytest.mark.parametrize(("command", "where"), quoted_command_lines())
def test_quoted_command_line_parses(command: str, where: str) -> None:
    problem = parses(command)
    assert problem is None, f"{where}: {command!r} does not parse: {problem}"
