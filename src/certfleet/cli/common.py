"""What every command shares: the console, error handling, secrets, JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from typer.core import TyperCommand

from ..errors import CertfleetError
from ..secrets import resolve_secret

if TYPE_CHECKING:
    from types import FrameType

    from _typeshed import DataclassInstance
    from rich.text import Text
    from typer._click.core import Context  # the click typer vendors (and types)

    from ..drivers.base import Driver, EventCallback
    from ..inventory import Device
    from ..pki.model import PrivateKey

    #: What ``signal.signal`` takes and gives back.
    SignalHandler = Callable[[int, FrameType | None], object] | int | None

__all__ = [
    "JsonUsageCommand",
    "OvocLogin",
    "SafeConsole",
    "SbcConnection",
    "build_driver",
    "console",
    "err_console",
    "exit_code_for",
    "fail",
    "handle_errors",
    "load_private_keys",
    "option_group",
    "plain",
    "print_error",
    "print_json",
    "read_password",
    "run_interruptible",
    "text",
]

class SafeConsole(Console):
    """A rich ``Console`` that never sends a control character of the text it prints.

    Text from a device, a certificate or a target is data: whatever path it
    takes to the screen (markup escaped or not, ``markup=False``, a table, a
    progress line), an escape sequence in it is shown as ``\\x1b``
    (``safetext.visible``), never obeyed by the terminal. Rich's own control
    codes (colours, cursor moves of a live display) pass as they are.
    """

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None,
    ) -> Iterator[Segment]:
        from ..safetext import visible

        for segment in super().render(renderable, options):
            if segment.control or segment.text.isprintable():
                yield segment
                continue
            shown = visible(segment.text)
            yield segment if shown == segment.text else Segment(shown, segment.style)


console = SafeConsole(highlight=False)
err_console = SafeConsole(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


def text(value: object) -> str:
    """``value`` as rich prints it literally: markup escaped, control characters shown.

    For text that comes from a device, a file or an error message: "[/]" or
    "[red]" in it is text, not markup, and an escape sequence or a carriage
    return is shown as ``\\x1b``, never obeyed by the terminal.
    """
    from rich.markup import escape

    from ..safetext import visible

    return escape(visible(value))


def plain(value: object, style: str = "") -> Text:
    """``value`` as a rich ``Text`` (never markup), control characters shown (see ``text``)."""
    from rich.text import Text

    from ..safetext import visible

    return Text(visible(value), style=style)


def print_error(
    message: str, hint: str | None = None, *, json_out: bool = False,
    json_fields: Mapping[str, object] | None = None, label: str = "error:",
) -> None:
    """The one way an error reaches the user.

    Without ``json_out``: ``error: message`` (or another ``label``) and
    ``Tip: hint`` on stderr, both printed as text (``text``). With it:
    ``{**json_fields, "error": message, "hint": hint}`` on stdout, the shape a
    script reads from every command.
    """
    if json_out:
        print_json({**(json_fields or {}), "error": message, "hint": hint})
        return
    err_console.print(f"[bold red]{text(label)}[/] {text(message)}", soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]Tip:[/] {text(hint)}", soft_wrap=True)


def fail(
    message: str, hint: str | None = None, code: int = 2, *, json_out: bool = False,
    json_fields: Mapping[str, object] | None = None,
) -> NoReturn:
    """Print one error line (and a Tip) and exit with ``code`` (see ``print_error``)."""
    print_error(message, hint, json_out=json_out, json_fields=json_fields)
    raise typer.Exit(code)


def exit_code_for(exc: CertfleetError) -> int:
    """2 when nothing on a device was touched, 3 when a device may be changed.

    Input errors, a lock held by another run (``lock``) and errors raised
    before any device work (``untouched``) are 2.
    """
    return 2 if exc.nothing_changed else 3


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM (Ctrl-Break on Windows) acts as Ctrl-C.

    For commands run with ``asyncio.run``, whose runner turns the first Ctrl-C
    into a cancellation of the main task (the deploy template then rolls back)
    and a second one into KeyboardInterrupt.
    """
    import signal

    def as_ctrl_c(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    names = [name for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    previous: dict[int, SignalHandler] = {}
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


def run_interruptible(coro: Coroutine[object, None, R], *, what: str = "run") -> R:
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
    previous: dict[int, SignalHandler] = {}
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
    """The error path of every command: a CertfleetError becomes ``print_error`` and
    the exit code of the table (``exit_code_for``); Ctrl-C exits 130.

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
        self, info_name: str | None, args: list[str], parent: Context | None = None,
        **extra: object,
    ) -> Context:
        wants_json = "--json" in args
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:  # the parser's UsageError family (exit code 2)
            message = getattr(exc, "format_message", None)
            if not wants_json or getattr(exc, "exit_code", None) != 2 or message is None:
                raise
            print_json({"error": message(), "hint": f"see certfleet {info_name} --help"})
            raise typer.Exit(2) from None


def print_json(data: object) -> None:
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


# ---- connection settings: defined once, used by every command that reaches a device ----
# Names, defaults given at the parameter, help and metavars are part of the CLI contract.

#: An SBC's REST API (``certfleet sbc deploy|backup|status|trust``).
SbcUrl = Annotated[str, typer.Option("--url", metavar="https://HOST:PORT",
                                     help="Management URL of the SBC.")]
SbcUser = Annotated[str, typer.Option("--user", help="REST API user (an Administrator).")]
SbcPasswordEnv = Annotated[str, typer.Option(
    "--password-env", metavar="VAR", help="Environment variable holding the REST password.")]
SbcCaBundle = Annotated[Path | None, typer.Option(
    "--ca-bundle", metavar="FILE", help="PEM CA bundle that issued the management certificate.")]
SbcPinSha256 = Annotated[str | None, typer.Option(
    "--pin-sha256", metavar="HEX", help="SHA-256 of the SBC's management certificate.")]
SbcInsecure = Annotated[bool, typer.Option(
    "--insecure", help="Do not check the SBC's certificate at all (labs only; loud).")]
SbcRelaxedX509 = Annotated[bool, typer.Option(
    "--relaxed-x509",
    help="With --ca-bundle: accept a management certificate that breaks RFC 5280's strict "
    "rules (no Authority Key Identifier...), which Python 3.13 rejects by default.")]
SbcTimeout = Annotated[float, typer.Option("--timeout", help="Seconds per REST request.")]
#: The default of ``--user`` and ``--password-env`` for an SBC.
SBC_DEFAULT_USER = "Admin"
SBC_DEFAULT_PASSWORD_ENV = "CERTFLEET_SBC_PASSWORD"


@dataclasses.dataclass(frozen=True)
class SbcConnection:
    """The connection options of every ``certfleet sbc`` command (see :func:`option_group`)."""

    url: SbcUrl
    user: SbcUser = SBC_DEFAULT_USER
    password_env: SbcPasswordEnv = SBC_DEFAULT_PASSWORD_ENV
    ca_bundle: SbcCaBundle = None
    pin_sha256: SbcPinSha256 = None
    insecure: SbcInsecure = False
    relaxed_x509: SbcRelaxedX509 = False
    timeout: SbcTimeout = 30.0

#: An OVOC appliance over SSH/SFTP (``certfleet ovoc deploy|doctor``).
OVOC_HOST_OPT = typer.Option(..., "--host", help="OVOC address (name or IP).",
                             show_default=False)
OVOC_SSH_PORT_OPT = typer.Option(22, "--ssh-port", help="SSH port.")
OVOC_USER_OPT = typer.Option("acems", "--user", help="SSH/SFTP login user.")
OVOC_PASSWORD_ENV_OPT = typer.Option(None, "--password-env", metavar="VAR",
                                     help="Environment variable holding the SSH password.")
OVOC_SU_USER_OPT = typer.Option("root", "--su-user", help="User that su becomes to run the menu.")
OVOC_SU_PASSWORD_ENV_OPT = typer.Option(None, "--su-password-env", metavar="VAR",
                                        help="Environment variable holding the su password.")
OVOC_KNOWN_HOSTS_OPT = typer.Option(None, "--known-hosts", metavar="FILE",
                                    help="OpenSSH known_hosts file holding the host key "
                                    "(default: ~/.ssh/known_hosts when it exists).")
OVOC_HOST_KEY_OPT = typer.Option(None, "--host-key-sha256", metavar="SHA256:...",
                                 help="Pinned host key fingerprint, as ssh-keygen -l prints it.")


# ---- option groups, drivers and keys: what the device commands share -------------------


def option_group(
    name: str, group: type[DataclassInstance],
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the options of ``group`` (a dataclass) in place of its parameter ``name``.

    Each field of ``group`` becomes an option of the command (its type, typer
    annotation and default as the field declares them); the command receives
    them as one ``group`` object. One definition serves every command that
    reaches the same kind of device, so their flags cannot drift apart. Put it
    below ``@handle_errors``, which then sees a ``json_out`` field as a keyword.
    """
    import inspect
    import typing

    hints = typing.get_type_hints(group, include_extras=True)
    fields = [f.name for f in dataclasses.fields(group)]
    grouped = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                          default=inspect.Parameter.empty
                          if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(group)
    ]

    def decorate(func: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(func, eval_str=True)
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name == name:
                params.extend(grouped)
            else:
                params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        if name not in signature.parameters:
            raise TypeError(f"{func.__name__} has no parameter {name!r}")

        @functools.wraps(func)
        def wrapper(*args: object, **kwargs: object) -> R:
            values = {key: kwargs.pop(key) for key in fields if key in kwargs}
            return func(*args, **kwargs, **{name: group(**values)})

        wrapper.__signature__ = (  # type: ignore[attr-defined]  # typer reads it
            signature.replace(parameters=params))
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        wrapper.__annotations__["return"] = signature.return_annotation
        return wrapper

    return decorate


def build_driver(
    device: Device, secrets: Mapping[str, str | None], *,
    on_event: EventCallback | None = None, stored_keys: Sequence[PrivateKey] = (),
) -> Driver:
    """The driver for ``device`` (an inventory :class:`~certfleet.inventory.Device`
    described by a command's flags), built by its kind as the estate builds it.

    ``secrets``: what the flags resolved (before any connection), by inventory
    key; ``stored_keys``: the private keys that may be installed now (for a
    rollback). Raises ConfigError / PasswordError.
    """
    from ..credentials import DeviceCredentials
    from ..drivers.registry import BuildContext, get_kind

    credentials = DeviceCredentials(
        device.name, {key: value for key, value in secrets.items() if value is not None})
    keys = list(stored_keys)
    context = BuildContext(on_event=on_event, stored_keys=lambda: keys)
    return get_kind(device.kind).from_device(device, credentials, context)


@contextlib.contextmanager
def password_from(flag: str) -> Iterator[None]:
    """Within: the password of an input file is given with ``flag``. A Tip naming the password
    options of inspect, check, export and import (``--password-env``/``--password-file``)
    names ``flag`` instead: on ``certfleet sbc`` ``--password-env`` is the device's password."""
    try:
        yield
    except CertfleetError as exc:
        from ..pki.load import PASSWORD_HINT

        if exc.hint and PASSWORD_HINT in exc.hint:
            exc.hint = exc.hint.replace(PASSWORD_HINT, f"give the password with {flag} VAR")
        raise


def load_private_keys(path: Path, password: str | None, *, hint: str) -> list[PrivateKey]:
    """The private keys in ``path`` (any format the toolkit reads). Raises
    PrivateKeyError (with ``hint``) when it holds none."""
    from cryptography import x509

    from ..errors import PrivateKeyError
    from ..pki.load import load_files

    objects = load_files([str(path)], password.encode("utf-8") if password else None)
    keys = [o.value for o in objects if o.type == "private_key"
            and not isinstance(o.value, (x509.Certificate, x509.CertificateSigningRequest))]
    if not keys:
        raise PrivateKeyError(f"{str(path)!r} holds no private key", hint=hint, path=str(path))
    return keys


@dataclasses.dataclass(frozen=True)
class OvocLogin:
    """The SSH login options of every ``certfleet ovoc`` command (see :func:`option_group`)."""

    host: str = OVOC_HOST_OPT
    ssh_port: int = OVOC_SSH_PORT_OPT
    user: str = OVOC_USER_OPT
    password_env: str | None = OVOC_PASSWORD_ENV_OPT
    known_hosts: Path | None = OVOC_KNOWN_HOSTS_OPT
    host_key_sha256: str | None = OVOC_HOST_KEY_OPT
