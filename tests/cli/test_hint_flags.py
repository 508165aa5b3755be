"""Every ``--flag`` a message or hint of the source names exists, and a driver's hint names a
setting in both of the forms its users have.

The drivers serve two kinds of command: ``certfleet sbc ...`` / ``certfleet ovoc ...``, which
take a device's settings as flags, and the estate commands (``deploy``, ``probe``, ``plan``,
``rollback``, ``renew``...), which have no such flags and read the same settings from the
inventory. A driver's hint that names a setting must therefore name the flag *and* the
inventory key (``--pin-sha256 HEX (inventory: tls_pin = "HEX")``); a flag that is a choice of
one run, not a setting, must say which command takes it.

The strings are read from the source with ``ast`` (string literals and f-strings, the fields of
an f-string read as ``X``; docstrings and the arguments of logging calls are not messages).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.drivers.registry import get_kind
from certfleet.inventory import _allowed_keys
from hint_support import ALL_FLAGS, COMMANDS, FLAG, SETTINGS

SRC = Path(__file__).resolve().parents[2] / "src" / "certfleet"
_LOG_CALLS = {"debug", "info", "warning", "error", "exception", "critical"}

#: Flags of other programs, named in text about them (path under src/certfleet, flag).
NOT_OURS = {
    ("cli/schedule.py", "--now"),  # systemctl enable --now
    ("cli/schedule.py", "--wait"),  # systemd-run --wait --pipe --collect: the job's trial
    ("cli/schedule.py", "--pipe"),
    ("cli/schedule.py", "--collect"),
    ("lab/ems_emulator.py", "--relay"),  # the lab EMS emulator's own argument
}

#: Flags that are a choice of one run (no inventory key): a driver's hint naming one says
#: which certfleet command takes it.
RUN_FLAGS = {"--previous-key", "--allow-no-rollback", "--input-password-env", "--insecure",
             "--force", "--no-verify", "--url"}

#: Flags named by the estate's deploy path (run by `certfleet deploy` and `certfleet renew`)
#: that only `deploy` has, and that only a flag of `deploy` can make it print.
DEPLOY_ONLY = {
    "--canary",  # renew picks its canary among the devices it deploys
    "--concurrency",  # renew takes it from the inventory, which refuses less than 1
}


def _skipped(tree: ast.AST) -> set[int]:
    """The ids of docstrings and of every string inside a logging call's arguments."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in _LOG_CALLS and isinstance(node.func.value, ast.Name)
              and node.func.value.id in ("log", "logger", "logging")):
            ids.update(id(inner) for arg in node.args for inner in ast.walk(arg))
    return ids


def strings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every message-like string of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _skipped(tree)
    inner = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
             for v in node.values}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(
                str(v.value) if isinstance(v, ast.Constant) else "X" for v in node.values)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in inner):
            yield node.lineno, node.value


def flagged(under: str = "") -> list[tuple[str, str, str]]:
    """(where, flag, text) for every flag named in a string of the source under ``under``."""
    found = []
    for path in sorted((SRC / under).rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, text in strings(path):
            found += [(f"{rel}:{line}", flag, text) for flag in FLAG.findall(text)]
    return found


def test_the_scan_sees_the_hints() -> None:
    """A broken scan would check nothing: it sees hints known to name flags."""
    drivers = flagged("drivers")
    seen = {flag for _, flag, _ in drivers}
    assert {"--pin-sha256", "--ca-bundle", "--password-env", "--context",
            "--su-password-env", "--previous-key"} <= seen, seen
    assert len(drivers) >= 20
    assert any(flag == "--skip-refused" for _, flag, _ in flagged("estate"))
    # A logging call is not a message; a docstring is not either.
    assert not [w for w, flag, _ in drivers if flag == "--insecure" and "sbc.py" in w]


def test_the_command_tree_is_complete() -> None:
    assert {"deploy", "renew", "probe", "sbc deploy", "ovoc deploy", "ovoc doctor"} <= set(
        COMMANDS)
    assert {"--pin-sha256", "--su-password-env", "--previous-key"} <= COMMANDS["sbc deploy"] | \
        COMMANDS["ovoc deploy"]
    assert "--pin-sha256" not in COMMANDS["deploy"]


@pytest.mark.parametrize(("where", "flag", "text"), flagged(), ids=lambda v: str(v)[:60])
def test_every_flag_named_exists(where: str, flag: str, text: str) -> None:
    if (where.rsplit(":", 1)[0], flag) in NOT_OURS:
        return
    assert flag in ALL_FLAGS, f"{where}: {flag} is no option of any certfleet command: {text!r}"


def test_the_settings_are_flags_and_inventory_keys() -> None:
    """Each setting is a flag of the device commands of its kind and a key its inventory
    devices take, so a hint that names both names two things that exist."""
    for flag, (kind, key) in SETTINGS.items():
        device_flags = set().union(*(o for name, o in COMMANDS.items()
                                     if name.startswith(f"{kind} ")))
        assert flag in device_flags, f"{flag} is no option of certfleet {kind}"
        assert key in _allowed_keys(get_kind(kind)), f"{key} is no inventory key of {kind}"
    for flag in RUN_FLAGS:
        assert flag in ALL_FLAGS, flag


@pytest.mark.parametrize(("where", "flag", "text"), flagged("drivers"),
                         ids=lambda v: str(v)[:60])
def test_a_driver_hint_names_both_forms(where: str, flag: str, text: str) -> None:
    if flag in SETTINGS:
        key = SETTINGS[flag][1]
        assert "inventory" in text and re.search(rf"\b{key}\b", text), (
            f"{where}: names {flag} but not the inventory key {key}: {text!r}")
    else:
        assert flag in RUN_FLAGS, f"{where}: {flag} is neither a setting nor a run flag"
        assert "certfleet " in text, (
            f"{where}: names {flag}, a choice of one run, without the command that takes "
            f"it: {text!r}")


@pytest.mark.parametrize(("where", "flag", "text"),
                         [f for f in flagged("estate")
                          if f[0].startswith(("estate/deploy.py", "estate/decide.py"))],
                         ids=lambda v: str(v)[:60])
def test_the_deploy_path_names_flags_renew_has(where: str, flag: str, text: str) -> None:
    """run_deploy serves `certfleet deploy` and `certfleet renew`: a flag its messages name
    is on both, or the message names the command that has it."""
    on_both = flag in COMMANDS["deploy"] and flag in COMMANDS["renew"]
    assert on_both or flag in DEPLOY_ONLY or "certfleet " in text, (
        f"{where}: {flag} is not an option of certfleet renew: {text!r}")
