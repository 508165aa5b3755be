"""What every command shares: the console, error handling, secrets, JSON."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from typer.core import TyperCommand

from ..errors import CertfleetError, InputError
from ..secrets import resolve_secret

__all__ = [
    "JsonUsageCommand",
    "console",
    "err_console",
    "fail",
    "handle_errors",
    "print_json",
    "read_password",
    "run_interruptible",
]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


def fail(
    message: str, hint: str | None = None, code: int = 2, *, json_out: bool = False
) -> NoReturn:
    """Print one error line (and a Tip) and exit with ``code``."""
    if json_out:
        print_json({"error": message, "hint": hint})
    else:
        from rich.markup import escape

        # Messages quote file names and subjects: "[1]" or "[/]" in one is text, not markup.
        err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        if hint:
            err_console.print(f"[yellow]Tip:[/] {escape(hint)}", soft_wrap=True)
    raise typer.Exit(code)


def exit_code_for(exc: CertfleetError) -> int:
    """2 when nothing on a device was touched, 3 when a device may be changed.

    Input errors, a lock held by another run (``lock``) and errors raised
    before any device work (``untouched``) are 2.
    """
    if isinstance(exc, InputError):
        return 2
    if getattr(exc, "lock", None) is not None or getattr(exc, "untouched", False):
        return 2
    return 3


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM (Ctrl-Break on Windows) acts as Ctrl-C.

    For commands run with ``asyncio.run``, whose runner turns the first Ctrl-C
    into a cancellation of the main task (the deploy template then rolls back)
    and a second one into KeyboardInterrupt.
    """
    import signal

    def as_ctrl_c(signum: int, frame: Any) -> None:
        signal.raise_signal(signal.SIGINT)

    names = [name for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    previous: dict[int, Any] = {}
    for name in names:
        signum = getattr(signal, name)
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[signum] = signal.signal(signum, as_ctrl_c)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, handler)


def run_interruptible(coro: Coroutine[Any, Any, R], *, what: str = "run") -> R:
    """Run ``coro`` on a new event loop; Ctrl-C and SIGTERM cancel it, twice exits at once.

    The first signal cancels the task running ``coro`` (a deploy then stops
    starting devices and rolls back those in flight, and returns its report);
    a second one exits at once with 130. Where the loop cannot take signal
    handlers (Windows), ``signal.signal`` hands them to the loop instead; on
    Windows Ctrl-Break counts as SIGTERM.
    """
    import asyncio
    import signal

    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    count = 0

    def interrupt() -> None:
        nonlocal count
        count += 1
        if count == 1:
            err_console.print(
                f"interrupted: stopping the {what}; devices in flight roll back "
                "(interrupt again to exit at once)", markup=False, highlight=False)
            task.cancel()
            return
        err_console.print(
            "interrupted again: exiting now; a device in flight may be left changed: run "
            "'certfleet status', then 'certfleet deploy' or 'certfleet rollback DEVICE'",
            markup=False, highlight=False)
        with contextlib.suppress(Exception):
            err_console.show_cursor(True)
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(130)

    signals: list[int] = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):
        signals.append(signal.SIGBREAK)
    in_loop: list[int] = []
    previous: dict[int, Any] = {}
    for signum in signals:
        try:
            saved = signal.getsignal(signum)
            loop.add_signal_handler(signum, interrupt)
            in_loop.append(signum)
            previous[signum] = saved
        except (NotImplementedError, RuntimeError, ValueError):
            try:
                previous[signum] = signal.signal(
                    signum, lambda _s, _f: loop.call_soon_threadsafe(interrupt))
            except (OSError, RuntimeError, ValueError):  # not the main thread
                continue
    try:
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
    finally:
        for signum in in_loop:
            loop.remove_signal_handler(signum)
        for signum, handler in previous.items():
            with contextlib.suppress(OSError, RuntimeError, ValueError, TypeError):
                signal.signal(signum, handler)
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for item in pending:
                item.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn CertfleetError into a one-line message and an exit code.

    Input errors exit 2. A command that has a ``json_out`` keyword prints
    ``{"error": ...}`` when it is set.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CertfleetError as exc:
            fail(exc.message, exc.hint, exit_code_for(exc), json_out=bool(kwargs.get("json_out")))
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


class JsonUsageCommand(TyperCommand):
    """A command whose usage errors (a missing FILE, a bad option value) honour ``--json``.

    Without it, a script running ``certfleet check --json`` with a wrong argument
    would read an empty stdout: the parser prints its usage text to stderr before
    the command runs. Pass as ``app.command(..., cls=JsonUsageCommand)``.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        wants_json = "--json" in args
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:  # the parser's UsageError family (exit code 2)
            message = getattr(exc, "format_message", None)
            if not wants_json or getattr(exc, "exit_code", None) != 2 or message is None:
                raise
            print_json({"error": message(), "hint": f"see certfleet {info_name} --help"})
            raise typer.Exit(2) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def read_password(env_var: str | None, *, what: str, file: str | None = None) -> str | None:
    """A password from ``--...-env VAR`` or ``--...-file PATH``; None when neither given."""
    if env_var:
        return resolve_secret(f"env:{env_var}", what=what)
    if file:
        text = resolve_secret(f"file:{file}", what=what)
        # The first line, without the byte-order mark Windows Notepad puts in front.
        lines = text.removeprefix("\ufeff").splitlines()
        return lines[0] if lines else ""
    return None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
