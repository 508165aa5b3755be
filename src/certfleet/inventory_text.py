"""The inventory file as text and as TOML: decoding and nesting, refused in one line.

An inventory is UTF-8 (a UTF-8 byte order mark is fine). A file saved as
UTF-16 or UTF-32 (Windows Notepad's "Unicode") or holding a byte that is not
UTF-8 is refused naming the file, and for a bad byte its line and column.
Tables and arrays nested deeper than :data:`MAX_DEPTH` are refused naming
the file and the line where the brackets pass the limit: no inventory needs
more than a few levels, and the TOML parser is recursive (a RecursionError
is never shown).
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["MAX_DEPTH", "decode", "loads"]

# Tables and arrays inside one another, from the top level: [devices.sbc1] is 2,
# its listeners = [{ port = 5061 }] 4. Real inventories use 5 at most.
MAX_DEPTH = 32

_UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),  # before UTF-16 LE: it starts with the same 2 bytes
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_SAVE_AS_UTF8 = (
    "save it as UTF-8 (Notepad: File > Save as..., Encoding: UTF-8; "
    "PowerShell: Get-Content FILE | Set-Content -Encoding utf8 NEW)"
)


def _wide_encoding(data: bytes) -> str | None:
    """``UTF-16`` or ``UTF-32`` when ``data`` is in one of them (a BOM or NULs between
    ASCII characters), else None."""
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            return name
    head = data[:512]
    if len(head) < 4 or b"\x00" not in head:
        return None
    if head[1::4].count(0) == head[2::4].count(0) == head[3::4].count(0) == len(head[1::4]):
        return "UTF-32"  # LE: 1 byte then 3 NULs per ASCII character
    if head[0::4].count(0) == head[1::4].count(0) == head[2::4].count(0) == len(head[0::4]):
        return "UTF-32"  # BE
    zeros_odd, zeros_even = head[1::2].count(0), head[0::2].count(0)
    if zeros_odd >= len(head[1::2]) * 3 // 4 or zeros_even >= len(head[0::2]) * 3 // 4:
        return "UTF-16"
    return None


def decode(data: bytes, path: Path | str) -> str:
    """The text of inventory bytes ``data`` (UTF-8, with or without a BOM). Raises ConfigError
    naming ``path``: UTF-16/32 (say so and how to save it as UTF-8), or the line and column
    of the first byte that is not UTF-8."""
    wide = _wide_encoding(data)
    if wide:
        raise ConfigError(
            f"{path}: the inventory is saved as {wide}, not UTF-8",
            hint=_SAVE_AS_UTF8, path=str(path),
        )
    start = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = start + exc.start
        line_start = data.rfind(b"\n", 0, bad) + 1
        line = data.count(b"\n", 0, bad) + 1
        column = len(data[max(line_start, start):bad].decode("utf-8")) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: byte 0x{data[bad]:02X} is not UTF-8 "
            "(the file may be saved as Windows-1252 or Latin-1)",
            hint=_SAVE_AS_UTF8, path=str(path), line=line,
        ) from None


_TOKEN_RE = re.compile(r"\"\"\"|'''|[\"'#\[\]{}\n]")


def _too_deep_line(text: str, limit: int) -> int | None:
    """The 1-based line where brackets first pass ``limit`` levels, else where they are
    deepest (strings and comments skipped), or None. Only run on a file known to be too deep."""
    depth = deepest = 0
    deepest_line: int | None = None
    line = 1
    pos = 0
    length = len(text)
    while pos < length:
        match = _TOKEN_RE.search(text, pos)
        if match is None:
            break
        token = match.group()
        pos = match.end()
        if token == "\n":
            line += 1
        elif token in ("[", "{"):
            depth += 1
            if depth > limit:
                return line
            if depth > deepest:
                deepest, deepest_line = depth, line
        elif token in ("]", "}"):
            depth = max(0, depth - 1)
        elif token == "#":
            end = text.find("\n", pos)
            pos = length if end < 0 else end
        else:  # a string: skip to its closing quote (escapes in basic strings)
            pos = _string_end(text, pos, token)
            line += text.count("\n", match.end(), pos)
    return deepest_line


def _string_end(text: str, pos: int, quote: str) -> int:
    """The position after the string opened by ``quote`` just before ``pos``."""
    escapes = quote.startswith('"')
    while True:
        end = text.find(quote, pos)
        if end < 0:
            return len(text)
        if len(quote) == 1 and "\n" in text[pos:end]:
            return text.index("\n", pos)  # an unclosed one-line string ends at its line
        if escapes:
            backslashes = len(text[pos:end]) - len(text[pos:end].rstrip("\\"))
            if backslashes % 2:
                pos = end + 1
                continue
        return end + len(quote)


def _nesting_error(path: Path, text: str) -> ConfigError:
    line = _too_deep_line(text, MAX_DEPTH)
    where = f"{path}:{line}" if line else str(path)
    return ConfigError(
        f"{where}: arrays or tables nested too deep (more than {MAX_DEPTH} levels)",
        hint="an inventory needs a few levels at most: write nested tables as [a.b] headers",
        path=str(path), line=line,
    )


def _walk(data: dict[str, Any]) -> tuple[int, list[tuple[tuple[str, ...], str]]]:
    """The deepest nesting of tables and arrays in ``data`` and the (table, key) of every
    float that is not finite, without recursion."""
    deepest = 0
    bad: list[tuple[tuple[str, ...], str]] = []
    # (value, table path, key holding it, depth)
    stack: list[tuple[Any, tuple[str, ...], str, int]] = [(data, (), "", 0)]
    while stack:
        value, table, key, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if isinstance(value, dict):
            inner = (*table, key) if key else table
            for name, item in value.items():
                if isinstance(item, dict | list):
                    stack.append((item, inner, name, depth + 1))
                elif isinstance(item, float) and not math.isfinite(item):
                    bad.append((inner, name))
        else:
            for item in value:
                if isinstance(item, dict | list):
                    stack.append((item, table, key, depth + 1))
                elif isinstance(item, float) and not math.isfinite(item):
                    bad.append((table, key))
    return deepest, list(dict.fromkeys(bad))


def loads(text: str, path: Path) -> tuple[dict[str, Any], list[tuple[tuple[str, ...], str]]]:
    """The TOML document ``text`` and the (table, key) of each nan or inf float it holds.

    Raises ConfigError naming ``path``: not valid TOML, or nested too deep (never a
    RecursionError)."""
    non_finite = False

    def parse_float(literal: str) -> float:
        nonlocal non_finite
        value = float(literal)
        if not math.isfinite(value):  # nan, inf, -inf, or 1e999 that overflows
            non_finite = True
        return value

    try:
        data = tomllib.loads(text, parse_float=parse_float)
    except RecursionError:
        raise _nesting_error(path, text) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}",
            hint="fix the syntax at the line named (quotes, brackets, '=')",
            path=str(path),
        ) from None
    deepest, bad = _walk(data)
    if deepest > MAX_DEPTH:
        raise _nesting_error(path, text)
    return data, bad if non_finite else []
