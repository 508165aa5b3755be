"""Hostile inventories: bad encodings, deep nesting and values that must not pass.

Each is exit 2 with one error line naming the file (and its line), never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.errors import ConfigError
from certfleet.inventory import load_inventory, parse_inventory

BASE = """\
[certificates.wildcard]
cn = "*.example.com"

[devices.sbc1]
kind = "sbc"
address = "sbc1.example.com"
"""


def refused(tmp_path: Path, content: str | bytes) -> str:
    """The error line `certfleet plan` prints for an inventory of ``content`` (exit 2)."""
    path = tmp_path / "certfleet.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    result = CliRunner().invoke(app, ["plan", "--inventory", str(path),
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert str(path) in errors[0]
    return errors[0]


def test_utf8_with_bom_is_read(tmp_path: Path) -> None:
    """Notepad's UTF-8 with a byte order mark is an inventory like any other."""
    path = tmp_path / "certfleet.toml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert list(load_inventory(path).devices) == ["sbc1"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                      "utf-32-le"])
def test_utf16_and_utf32_are_named(tmp_path: Path, encoding: str) -> None:
    """With or without a BOM: the encoding is named, and how to save the file as UTF-8."""
    line = refused(tmp_path, BASE.encode(encoding))
    assert f"saved as UTF-{encoding[4:6]}, not UTF-8" in line
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path / "certfleet.toml")
    assert "Notepad" in (info.value.hint or "") and "UTF-8" in (info.value.hint or "")


def test_a_byte_that_is_not_utf8_is_named_with_line_and_column(tmp_path: Path) -> None:
    """A Windows-1252 'é' (0xE9) on line 7 after 21 characters (one of them 2 bytes)."""
    content = BASE.encode() + 'description = "Zürich'.encode() + b'\xe9"\n'
    line = refused(tmp_path, content)
    assert f"{tmp_path / 'certfleet.toml'}:7:22: byte 0xE9 is not UTF-8" in line


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
@pytest.mark.parametrize(("open_", "close", "inner"), [("[", "]", ""), ("{a=", "}", "1")])
def test_nesting_thousands_deep_is_refused(
    tmp_path: Path, depth: int, open_: str, close: str, inner: str
) -> None:
    """Arrays or inline tables nested 1,000 to 100,000 deep: one line, with the line."""
    content = BASE + "profile = " + open_ * depth + inner + close * depth + "\n"
    line = refused(tmp_path, content)
    assert f"{tmp_path / 'certfleet.toml'}:7: arrays or tables nested too deep" in line


def test_nesting_just_past_the_limit_is_refused_and_a_real_one_passes() -> None:
    """33 levels from the top are refused (tomllib would parse them); 5 are a real inventory."""
    deep = BASE + 'profile = { x = ' + "[" * 30 + "]" * 30 + " }\n"
    with pytest.raises(ConfigError, match=r"inv.toml:7: arrays or tables nested too deep"):
        parse_inventory(deep, "inv.toml")
    real = BASE + 'listeners = [{ port = 5061, label = "sip" }]\nprofile = { a = [1] }\n'
    assert parse_inventory(real, "inv.toml").devices["sbc1"].listeners[0].port == 5061


def test_brackets_in_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    """The line of a too-deep value is found past strings and comments full of brackets."""
    content = BASE.replace('kind = "sbc"', 'kind = "sbc" # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[') + (
        'description = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"[[["\n'
        "tags = ['[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[']\n"
        "profile = " + "[" * 500 + "]" * 500 + "\n")
    line = refused(tmp_path, content)
    assert ":9: arrays or tables nested too deep" in line
