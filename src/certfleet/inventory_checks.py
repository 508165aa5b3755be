"""The value checks of the inventory reader: every error names the file, the line and the key.

:mod:`tomllib` gives no line numbers for keys, so the line is found by scanning
the text for the table header and then the key; that is good enough for a
hand-written file. Used by :mod:`certfleet.inventory` and the renewal tables
(:mod:`certfleet.acme.config`).
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from .errors import ConfigError
from .safetext import visible

T = TypeVar("T")
U = TypeVar("U")

SECRET_SCHEMES = ("env:", "keyring:", "file:")

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _header_path(raw: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"').strip("'") for part in raw.split("."))


class _LineIndex:
    """Where each table header of an inventory text is: built once per file, so that an
    error's line costs the lines of its own table, not a scan of the whole file (an
    inventory of 90,000 devices with an error in each stays linear)."""

    built = 0  # how many indexes were made (a test counts them)

    def __init__(self, text: str) -> None:
        type(self).built += 1
        self.lines = text.splitlines()
        self.header_lines: list[int] = []  # 0-based, in order
        self.headers: dict[tuple[str, ...], int] = {}  # first line of each header path
        self.prefixes: dict[tuple[str, ...], int] = {}  # first header under each prefix
        for number, line in enumerate(self.lines):
            if "[" not in line:
                continue
            match = _HEADER_RE.match(line)
            if not match:
                continue
            self.header_lines.append(number)
            path = _header_path(match.group(1))
            self.headers.setdefault(path, number)
            for size in range(1, len(path) + 1):
                self.prefixes.setdefault(path[:size], number)

    def next_header(self, after: int) -> int:
        """The 0-based line of the first header after line ``after`` (or the end)."""
        at = bisect.bisect_right(self.header_lines, after)
        return self.header_lines[at] if at < len(self.header_lines) else len(self.lines)

    def line_of(self, table: Sequence[str], key: str | None = None) -> int | None:
        """The 1-based line of ``key`` in table ``table`` (or of the header)."""
        want = tuple(table)
        start = self.headers.get(want) if want else 0
        if start is None:
            # dotted keys or inline tables: find "key =" anywhere as a fallback
            start = 0
            if key is None:
                return None
        if key is None:
            return start + 1
        # "key =" or a dotted "key.sub =" in the table's own lines
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]")
        first = start + (1 if want else 0)
        stop = self.next_header(start if want else -1)
        for number in range(first, stop):
            if key_re.match(self.lines[number]):
                return number + 1
        # the key written as a table of its own: [device.sbc2] for the top-level key "device"
        below = self.prefixes.get((*want, key))
        if below is not None:
            return below + 1
        return start + 1 if want else None


class _Ctx:
    """Builds errors that name the file, the line and the key; collects them."""

    def __init__(self, path: Path, text: str, *, collect: bool = False) -> None:
        self.path = path
        self.text = text
        self.collect = collect
        self.errors: list[ConfigError] = []
        self._messages: set[str] = set()
        self._index: _LineIndex | None = None

    def line_of(self, table: Sequence[str], key: str | None = None) -> int | None:
        """The 1-based line of ``key`` in ``table``, from an index of the text built once."""
        if self._index is None:
            self._index = _LineIndex(self.text)
        return self._index.line_of(table, key)

    def report(self, error: ConfigError) -> None:
        """An error after which checking can go on: kept when collecting, else raised."""
        if not self.collect:
            raise error
        self.record(error)

    def record(self, error: ConfigError) -> None:
        """Keep ``error`` for the final report (once: defaults reach many devices)."""
        if isinstance(error, AlreadyReported):
            return
        if error.message not in self._messages:
            self._messages.add(error.message)
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
        line = self.line_of(table, key)
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
    return _closest(key, frozenset(allowed))


@functools.lru_cache(maxsize=1024)
def _closest(key: str, allowed: frozenset[str]) -> str | None:
    """Cached: the same typo in 90,000 devices is matched once (difflib is slow)."""
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




def _names(ctx: _Ctx, table: Sequence[str], key: str, value: Any) -> tuple[str, ...]:
    _expect(ctx, table, key, value, list, "a list of strings")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            shown = visible(repr(item)) if isinstance(item, str) else repr(item)
            raise ctx.error(table, key, f"item {shown} is not a non-empty string", "quote it")
        if not (item.isascii() and item.isprintable()):
            _no_hidden(ctx, table, key, item)
    return tuple(value)


# Characters that change how text around them is shown (bidirectional controls: a
# right-to-left override makes "moc.elpmaxe" read as "example.com") or that show
# nothing at all (zero-width ones): never part of a name.
_HIDDEN_RE = re.compile(
    "[\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"
    "\x00-\x1f\x7f-\x9f]"
)


_SPACE_RE = re.compile(r"\s")


def _no_hidden(ctx: _Ctx, table: Sequence[str], key: str, value: str) -> None:
    """Refuse a control, bidirectional or zero-width character in name ``value``."""
    match = _HIDDEN_RE.search(value)
    if match is None:
        return
    char = match.group()
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "a control character")
    raise ctx.error(
        table, key,
        f"holds {code} ({name}) at character {match.start() + 1}, which changes or hides "
        "how the name is shown",
        f"retype {key} without it (an editor that shows invisible characters finds it)",
    )


def _host(
    ctx: _Ctx, table: Sequence[str], key: str, value: Any, what: str, *, spaces: bool = False
) -> str:
    """A host name, IP address or certificate name: a string, not blank, with no hidden
    character and (unless ``spaces``: a common name may be words) no space."""
    _expect(ctx, table, key, value, str, what)
    if value.isascii() and value.isprintable() and " " not in value and value:
        return str(value)  # the usual name: no control, hidden character or space
    if not value.strip():
        raise ctx.error(table, key, f"is {'empty' if not value else 'blank'}",
                        f"write {key} = <{what}>")
    _no_hidden(ctx, table, key, value)
    if not spaces and _SPACE_RE.search(value):
        raise ctx.error(table, key, f"{visible(repr(value))} holds a space",
                        f"remove the spaces: {key} is {what}")
    return str(value)


def _bounded(
    ctx: _Ctx, table: Sequence[str], key: str, value: Any, low: int, high: int, what: str,
    example: int,
) -> int:
    """Whole number ``value`` between ``low`` and ``high``."""
    _expect(ctx, table, key, value, int, what)
    if not low <= value <= high:
        digits = str(value)
        shown = digits if len(digits) <= 12 else f"{digits[:6]}... ({len(digits)} digits)"
        raise ctx.error(table, key, f"{shown} is not {low}-{high} ({what})",
                        f"write {key} = {example}")
    return int(value)
