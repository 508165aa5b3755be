"""An unattended run is never silent: what an unexpected exception ends in.

``renew``, ``deploy``, ``rollback``, ``issue`` and ``status --notify`` run
under :func:`crash_guard`. An exception that is not a certfleet error (a
bug, a library surprise) ends the same way each time:

- a crash report ``STATE/crash-TIME-PID.txt`` (0600): the command line,
  the certfleet, Python and platform versions, the traceback and the last
  step reached; the values of the environment variables the inventory
  references and of secret-looking variables are blanked, and private keys
  in PEM never appear;
- a failure notification to the ``[notify]`` targets naming the command,
  the device and step reached, the report and the command to run next;
- one line on stderr naming the report (``--json``: ``{"error": ...}`` on
  stdout too), never a Python traceback;
- exit 3 when a device may have been changed (a deployment of this
  process was in progress in the store's journal), 1 otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer

from ..errors import CertfleetError

__all__ = ["CrashOutcome", "breadcrumb", "crash_guard"]

P = ParamSpec("P")
R = TypeVar("R")

# The last thing the run said it was doing (renew's log lines): the "last step" of a
# crash that happened outside a deployment.
_last: list[str] = []
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|PIN|CRED|URL|WEBHOOK", re.IGNORECASE)
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                      re.DOTALL)


def breadcrumb(text: str) -> None:
    """Remember ``text`` as the step the run reached (kept short, never a secret)."""
    _last[:] = [text[:300]]


@dataclass(frozen=True)
class CrashOutcome:
    """What a crash ended in: the report, the exit code and what the journal knew."""

    report: Path | None
    exit_code: int
    step: str
    devices: dict[str, str]  # devices whose deployment was in progress: their last step


def _state_dir(kwargs: Mapping[str, object]) -> Path:
    from ..estate.store.schema import default_state_dir

    given = kwargs.get("state_dir")
    return Path(str(given)).expanduser() if given is not None else default_state_dir()


def _inventory_text(kwargs: Mapping[str, object]) -> str:
    path = kwargs.get("inventory")
    if path is None:
        return ""
    try:
        return Path(str(path)).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _scrub(text: str, inventory_text: str) -> str:
    """``text`` without private keys and without the values of secret variables."""
    from ..secrets import env_references

    names = set(env_references(inventory_text))
    names |= {name for name in os.environ if _SECRET_NAME.search(name)}
    values = sorted({os.environ[n] for n in names if len(os.environ.get(n, "")) >= 4},
                    key=len, reverse=True)
    for value in values:
        text = text.replace(value, "***")
    return _PEM_KEY.sub("[private key removed]", text)


def _journal(state: Path, since: str) -> tuple[dict[str, str], str | None]:
    """The devices whose deployment by this process was in progress, each with its last
    step ("install (ok)"), and the last step recorded by this process at all."""
    from ..estate.store import Store

    if not (state / "state.db").exists():
        return {}, None
    mine = (" FROM steps s JOIN deployments d ON d.id = s.deployment_id"
            " JOIN runs r ON r.id = d.run_id WHERE r.pid = ? AND r.started >= ?")
    with Store.open(state) as store:
        open_: dict[str, str] = {}
        for row in store.db.execute(
            "SELECT d.id, d.device FROM deployments d JOIN runs r ON r.id = d.run_id"
            " WHERE r.pid = ? AND r.started >= ? AND d.outcome IN ('in-progress', 'interrupted')"
            " ORDER BY d.id", (os.getpid(), since),
        ).fetchall():
            last = store.db.execute(
                "SELECT step, status FROM steps WHERE deployment_id = ? ORDER BY id DESC LIMIT 1",
                (row["id"],),
            ).fetchone()
            open_[row["device"]] = f"{last['step']} ({last['status']})" if last else "its start"
        last = store.db.execute(
            "SELECT s.device, s.step, s.status" + mine + " ORDER BY s.id DESC LIMIT 1",
            (os.getpid(), since),
        ).fetchone()
    step = f"{last['device']}: {last['step']} ({last['status']})" if last else None
    if open_:
        step = "; ".join(f"{device}: {where}" for device, where in open_.items())
    return open_, step


def _report_text(command: str, exc: BaseException, step: str, devices: dict[str, str],
                 inventory_text: str) -> str:
    import platform
    import traceback

    from .. import __version__

    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    changed = (f"yes: deployment in progress on {', '.join(devices)}" if devices
               else "no deployment was in progress")
    text = (
        f"certfleet crash report\n"
        f"time: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\n"
        f"command: certfleet {command}\n"
        f"command line: {' '.join(sys.argv)}\n"
        f"certfleet: {__version__}\n"
        f"python: {sys.version.split()[0]} ({platform.python_implementation()})\n"
        f"platform: {platform.platform()}\n"
        f"last step: {step}\n"
        f"device may have been changed: {changed}\n\n"
        f"{trace}"
    )
    return _scrub(text, inventory_text)


def _write_report(state: Path, text: str) -> Path:
    from ..fsutil import write_private_file

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"crash-{stamp}-{os.getpid()}.txt"
    try:
        state.mkdir(parents=True, exist_ok=True)
        return write_private_file(state / name, text.encode("utf-8"))
    except OSError:  # the state folder is not writable: the temporary folder still is
        import tempfile

        return write_private_file(Path(tempfile.gettempdir()) / name, text.encode("utf-8"))


def _notify(kwargs: Mapping[str, object], command: str, exc: BaseException, outcome: CrashOutcome,
            log: Callable[[str], None]) -> None:
    from ..acme.config import notify_config
    from ..inventory import load_inventory
    from ..notify import crash_notification, send

    path = kwargs.get("inventory")
    if path is None:
        return
    inventory = load_inventory(Path(str(path)))
    send(notify_config(inventory), crash_notification(
        command, type(exc).__name__, outcome.step, outcome.devices, outcome.report), log)


def handle_crash(command: str, exc: BaseException, kwargs: Mapping[str, object],
                 since: str) -> CrashOutcome:
    """Write the report, notify, print the one line; the outcome. Never raises."""
    from .common import err_console, print_json

    def log(text: str) -> None:
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)

    inventory_text = _inventory_text(kwargs)
    state = _state_dir(kwargs)
    devices: dict[str, str] = {}
    step: str | None = None
    with contextlib.suppress(Exception):  # the store itself may be what failed
        devices, step = _journal(state, since)
    step = step or (_last[0] if _last else "before any step")
    report: Path | None = None
    try:
        report = _write_report(state, _report_text(command, exc, step, devices, inventory_text))
    except Exception:  # nothing left to write to: the line below still says what happened
        report = None
    outcome = CrashOutcome(report, 3 if devices else 1, step, devices)
    try:
        _notify(kwargs, command, exc, outcome, log)
    except Exception as notify_exc:  # a bad inventory: the report is written already
        log(f"the failure notification could not be sent: {type(notify_exc).__name__}")
    where = f"crash report: {report}" if report is not None else "no crash report could be written"
    first = next(iter(devices), "")
    changed = (f"; a device may have been changed ({', '.join(devices)}): run 'certfleet verify'"
               f" and 'certfleet rollback {first}' if it is wrong" if devices else
               "; no device was being changed")
    message = (f"certfleet {command} stopped on an unexpected {type(exc).__name__} "
               f"(last step: {step}); {where}{changed}")
    message = _scrub(message, inventory_text)
    hint = "send the crash report with a bug report; it holds no secret"
    if kwargs.get("json_out"):
        print_json({"error": message, "hint": hint, "crash_report": str(report or ""),
                    "exit_code": outcome.exit_code})
    err_console.print(f"error: {message} (exit {outcome.exit_code}; {hint})", markup=False,
                      highlight=False, soft_wrap=True)
    return outcome


def crash_guard(
    command: str, *, when: Callable[[Mapping[str, object]], bool] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the command so that an unexpected exception ends as the module docstring says.

    ``when`` limits the guard to some invocations (``status`` only with ``--notify``).
    certfleet errors, typer/click exits and Ctrl-C pass through to ``handle_errors``.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            import click

            from ..estate.store.schema import now

            if when is not None and not when(kwargs):
                return func(*args, **kwargs)
            since = now()
            _last.clear()
            try:
                return func(*args, **kwargs)
            except (CertfleetError, typer.Exit, typer.Abort, click.exceptions.Exit,
                    click.exceptions.ClickException, click.exceptions.Abort):
                raise
            except Exception as exc:
                outcome = handle_crash(command, exc, kwargs, since)
                raise typer.Exit(outcome.exit_code) from None

        return wrapper

    return decorate
