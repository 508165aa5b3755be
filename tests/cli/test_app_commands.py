"""The root group's static table of commands matches the commands the modules register."""

from __future__ import annotations

import os
import subprocess
import sys

import typer

from certfleet.cli.app import COMMAND_MODULES, COMMANDS, load_module


def _real_commands() -> dict[str, tuple[str, str]]:
    """name -> (module, first line of help) of every command the modules register."""
    found: dict[str, tuple[str, str]] = {}
    for module in COMMAND_MODULES:
        group = typer.main.get_group(load_module(module))
        for name, command in group.commands.items():
            assert name not in found, f"{name} registered by {found[name][0]} and {module}"
            text = command.short_help or (command.help or "").strip().split("\n\n")[0]
            found[name] = (module, " ".join(text.split()))
    return found


def test_static_table_matches_the_real_commands() -> None:
    real = _real_commands()
    assert set(COMMANDS) == set(real)
    for name, entry in COMMANDS.items():
        assert (entry.module, entry.help) == real[name], name


def _help(*code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "; ".join(code)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return done.stdout


def test_root_help_lists_every_command_without_importing_them() -> None:
    """`certfleet --help` reads the table; its output equals the help of the loaded commands."""
    lazy = _help(
        "import sys",
        "from certfleet.cli.app import main",
        "sys.argv = ['certfleet', '--help']",
        "exec('try:\\n main()\\nexcept SystemExit: pass')",
        "from certfleet.cli.app import COMMAND_MODULES",
        "mods = [m for m in COMMAND_MODULES if 'certfleet.cli.' + m in sys.modules]",
        "print('loaded', sorted(mods))",
    )
    eager = _help(
        "import sys",
        "from certfleet.cli.app import main, app",
        "import typer",
        "sys.argv = ['certfleet', '--help']",
        "grp = typer.main.get_command(app)",
        "grp.load_all()",
        "exec('try:\\n grp.main(prog_name=\"certfleet\")\\nexcept SystemExit: pass')",
    )
    help_text, loaded = lazy.rsplit("loaded ", 1)
    assert loaded.strip() == "[]"
    assert help_text == eager
    for name in COMMANDS:
        assert f" {name} " in help_text


def test_unknown_command_suggests_a_real_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "certfleet", "chek"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 2
    assert "'check'" in done.stderr


def test_help_skips_the_modules_certfleet_does_not_use() -> None:
    """`certfleet --help` loads neither markdown_it, pygments, pydantic nor importlib.metadata;
    the deferred modules still work in full when something uses them."""
    out = _help(
        "import sys",
        "from certfleet.cli.app import main",
        "sys.argv = ['certfleet', '--help']",
        "exec('try:\\n main()\\nexcept SystemExit: pass')",
        "heavy = ('markdown_it', 'pygments', 'pydantic', 'importlib.metadata')",
        "print('heavy', sorted(m for m in sys.modules if m.startswith(heavy)))",
        "from rich.markdown import Markdown",
        "from rich.console import Console",
        "import io",
        "c = Console(file=io.StringIO(), width=40)",
        "c.print(Markdown('# Title'))",
        "print('markdown', c.file.getvalue().strip())",
        "import rich.traceback",
        "exec('try:\\n 1/0\\nexcept ZeroDivisionError:\\n t = rich.traceback.Traceback()')",
        "print('traceback', rich.traceback.Traceback.__module__, type(t).__name__)",
    )
    assert "heavy []" in out
    assert "markdown Title" in out
    assert "traceback rich.traceback Traceback" in out
