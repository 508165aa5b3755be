"""The value checks of the inventory reader: every error names the file, the line and the key.

:mod:`tomllib` gives no line numbers for keys, so the line is found by scanning
the text for the table header and then the key; that is good enough for a
hand-written file. Used by :mod:`certfleet.inventory` and the renewal tables
(:mod:`certfleet.acme.config`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar, overload

from .errors import ConfigError

T = TypeVar("T")
U = TypeVar("U")

SECRET_SCHEMES = ("env:", "keyring:", "file:")

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _header_path(raw: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"').strip("'") for part in raw.split("."))


def _line_of(text: str, table: Sequence[str], key: str | None = None) -> int | None:
    """The 1-based line of ``key`` in table ``table`` (or of the header), by scanning."""
    lines = text.splitlines()
    want = tuple(table)
    start: int | None = 0 if not want else None
    for number, line in enumerate(lines):
        match = _HEADER_RE.match(line)
        if match and _header_path(match.group(1)) == want:
            start = number
            break
    if start is None:
        # dotted keys or inline tables: find "key =" anywhere as a fallback
        start = 0
        if key is None:
            return None
    if key is None:
        return start + 1
    # "key =" or a dotted "key.sub =" in the table's own lines
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]")
    for number in range(start + (1 if want else 0), len(lines)):
        if _HEADER_RE.match(lines[number]):
            break
        if key_re.match(lines[number]):
            return number + 1
    # the key written as a table of its own: [device.sbc2] for the top-level key "device"
    below = (*want, key)
    for number, line in enumerate(lines):
        match = _HEADER_RE.match(line)
        if match and _header_path(match.group(1))[: len(below)] == below:
            return number + 1
    return start + 1 if want else None


class _Ctx:
    """Builds errors that name the file, the line and the key; collects them."""

    def __init__(self, path: Path, text: str, *, collect: bool = False) -> None:
        self.path = path
        self.text = text
        self.collect = collect
        self.errors: list[ConfigError] = []

    def report(self, error: ConfigError) -> None:
        """An error after which checking can go on: kept when collecting, else raised."""
        if not self.collect:
            raise error
        self.record(error)

    def record(self, error: ConfigError) -> None:
        """Keep ``error`` for the final report (once: defaults reach many devices)."""
        if isinstance(error, AlreadyReported):
            return
        if all(e.message != error.message for e in self.errors):
            self.errors.append(error)

    def raise_collected(self) -> None:
        """Raise one ConfigError listing every collected error (none: return)."""
        if not self.errors:
            return
        if len(self.errors) == 1:
            raise self.errors[0]
        lines = [e.message + (f" ({e.hint})" if e.hint else "") for e in self.errors]
        raise ConfigError(
            "\n".join(lines),
            hint=f"fix the {len(lines)} problems above (each names its line), then run again",
            path=str(self.path),
            errors=[{"line": e.context.get("line"), "key": e.context.get("key"),
                     "message": e.message, "hint": e.hint} for e in self.errors],
        )

    def error(
        self, table: Sequence[str], key: str | None, problem: str, hint: str
    ) -> ConfigError:
        line = _line_of(self.text, table, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        dotted = ".".join([*table, key] if key else table) or "(top level)"
        return ConfigError(
            f"{where}: {dotted}: {problem}", hint=hint, path=str(self.path), line=line, key=dotted
        )


@overload
def _expect(
    ctx: _Ctx, table: Sequence[str], key: str, value: object, kind: type[T], what: str
) -> T: ...
@overload
def _expect(
    ctx: _Ctx, table: Sequence[str], key: str, value: object,
    kind: tuple[type[T], type[U]], what: str,
) -> T | U: ...
def _expect(
    ctx: _Ctx, table: Sequence[str], key: str, value: object,
    kind: type[object] | tuple[type[object], ...], what: str,
) -> object:
    """``value``, refused (ConfigError) unless it is a ``kind`` (a bool is no number)."""
    if isinstance(value, bool) and kind is not bool and bool not in (
        kind if isinstance(kind, tuple) else (kind,)
    ):
        raise ctx.error(table, key, f"must be {what}, not {value!r}", f"write {key} = <{what}>")
    if not isinstance(value, kind):
        raise ctx.error(table, key, f"must be {what}, not {value!r}", f"write {key} = <{what}>")
    return value


def _close_match(key: str, allowed: set[str]) -> str | None:
    """The allowed key that ``key`` is most likely a typo of, or None."""
    import difflib

    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return close[0] if close else None


def _missing(
    ctx: _Ctx, table: Sequence[str], data: Mapping[str, object], allowed: set[str], key: str,
    problem: str, hint: str,
) -> ConfigError:
    """The error for required ``key`` missing from ``data``; when an unknown key of ``data``
    is a typo of it (already reported as "did you mean"), an error that is not reported again.
    """
    if any(k not in allowed and _close_match(k, allowed) == key for k in data):
        return AlreadyReported(problem, hint=hint)
    return ctx.error(table, None, problem, hint)


class AlreadyReported(ConfigError):
    """Ends the parsing of a table whose problem is already reported (a typo of a key)."""


def _check_keys(
    ctx: _Ctx, table: Sequence[str], data: Mapping[str, object], allowed: set[str]
) -> None:
    for key in data:
        if key not in allowed:
            match = _close_match(key, allowed)
            close = [match] if match else []
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "allowed: " + ", ".join(sorted(allowed))
            )
            ctx.report(ctx.error(table, key, f"unknown key {key!r}", hint))


def _check_secret(ctx: _Ctx, table: Sequence[str], key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ctx.error(table, key, "must be a secret reference string", 'write e.g. "env:VAR"')
    if value == "prompt" or (
        value.startswith(SECRET_SCHEMES) and len(value.partition(":")[2]) > 0
    ):
        if value.startswith("keyring:") and "/" not in value:
            raise ctx.error(
                table, key, f"keyring reference {value!r} must be keyring:SERVICE/USER",
                "write e.g. keyring:certfleet/sbc-admin",
            )
        return value
    # Never echo the value: it may be a real password. Recorded, not raised: the
    # other errors of the file are reported too (and no inventory is returned).
    ctx.report(ctx.error(
        table,
        key,
        "holds a literal secret; the inventory only takes references",
        f'write {key} = "env:VAR", "keyring:SERVICE/USER", "file:PATH" or "prompt" '
        "and remove the password from the file",
    ))
    return value


def _port(ctx: _Ctx, table: Sequence[str], key: str, value: object) -> int:
    number = _expect(ctx, table, key, value, int, "a port number")
    if not 0 < number < 65536:
        raise ctx.error(table, key, f"port {number!r} is not 1-65535", "use a real port number")
    return int(number)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _names(ctx: _Ctx, table: Sequence[str], key: str, value: object) -> tuple[str, ...]:
    items: list[object] = _expect(ctx, table, key, value, list, "a list of strings")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ctx.error(table, key, f"item {item!r} is not a non-empty string", "quote it")
        names.append(item)
    return tuple(names)
