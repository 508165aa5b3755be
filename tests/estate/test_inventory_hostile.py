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


SETTINGS = "[settings]\nconcurrency = 8\nexpiry_warn_days = 30\n\n"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('address = "sbc1.example.com"', 'address = ""', ":10: devices.sbc1.address: is empty"),
        ('address = "sbc1.example.com"', 'address = "  "', ":10: devices.sbc1.address: is blank"),
        ('address = "sbc1.example.com"', 'address = "sbc1 .example.com"',
         ":10: devices.sbc1.address: 'sbc1 .example.com' holds a space"),
        ('kind = "sbc"', 'kind = "sbc"\nverify_timeout = nan',
         ":10: devices.sbc1.verify_timeout: is nan or inf, not a number"),
        ('kind = "sbc"', 'kind = "sbc"\nverify_timeout = inf',
         ":10: devices.sbc1.verify_timeout: is nan or inf, not a number"),
        ('kind = "sbc"', 'kind = "sbc"\nverify_timeout = -inf',
         ":10: devices.sbc1.verify_timeout: is nan or inf, not a number"),
        ('kind = "sbc"', 'kind = "sbc"\nverify_timeout = 1e999',
         ":10: devices.sbc1.verify_timeout: is nan or inf, not a number"),
        ('kind = "sbc"', 'kind = "sbc"\nverify_timeout = -5',
         ":10: devices.sbc1.verify_timeout: -5 is not a number of seconds > 0"),
        ('kind = "sbc"', 'kind = "sbc"\ntimeout = nan',
         ":10: devices.sbc1.timeout: is nan or inf, not a number"),
        ("expiry_warn_days = 30", "expiry_warn_days = -5",
         ":3: settings.expiry_warn_days: -5 is not 0-3650 (days)"),
        ("expiry_warn_days = 30", "expiry_warn_days = 100000",
         ":3: settings.expiry_warn_days: 100000 is not 0-3650 (days)"),
        ("concurrency = 8", "concurrency = 100000000000000000000000000",
         ":2: settings.concurrency: 100000... (27 digits) is not 1-256 (devices at once)"),
        ("concurrency = 8", "concurrency = 0", ":2: settings.concurrency: 0 is not 1-256"),
        ('address = "sbc1.example.com"', 'address = "sbc1.example.com"\n'
         'fqdn = "sbc1.\u202emoc.elpmaxe"',
         ":11: devices.sbc1.fqdn: holds U+202E (RIGHT-TO-LEFT OVERRIDE) at character 6"),
        ('address = "sbc1.example.com"', 'address = "sbc1\u2066.example.com"',
         ":10: devices.sbc1.address: holds U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        ('address = "sbc1.example.com"', 'address = "sbc1\u200b.example.com"',
         ":10: devices.sbc1.address: holds U+200B (ZERO WIDTH SPACE)"),
        ('address = "sbc1.example.com"', 'address = "sbc1\\u001b[2J.example.com"',
         ":10: devices.sbc1.address: holds U+001B"),
        ('cn = "*.example.com"', 'cn = "*.example.com\u061c"',
         ":6: certificates.wildcard.cn: holds U+061C (ARABIC LETTER MARK)"),
        ('cn = "*.example.com"', 'cn = "*.example.com"\nsans = ["a.example.com", '
         '"\u200fb.example.com"]',
         ":7: certificates.wildcard.sans: holds U+200F (RIGHT-TO-LEFT MARK)"),
        ('kind = "sbc"', 'kind = "sbc"\nlisteners = ["sbc1\u202a.example.com:5061"]',
         ":10: devices.sbc1.listeners: holds U+202A"),
        ('kind = "sbc"', 'kind = "sbc"\nlisteners = [{ port = 5061, server_name = "\u202d" }]',
         ":10: devices.sbc1.listeners: holds U+202D"),
        ('kind = "sbc"', 'kind = "sbc"\ntags = ["site\u2069"]',
         ":10: devices.sbc1.tags: holds U+2069"),
    ],
)
def test_values_that_must_not_pass(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """Each is one line naming file, line and key, exit 2; the character is shown as U+XXXX."""
    text = SETTINGS + BASE
    assert old in text
    line = refused(tmp_path, text.replace(old, new, 1))
    assert f"{tmp_path / 'certfleet.toml'}{expected}" in line
    assert not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in line)
    assert "\x1b" not in line


def test_every_value_error_is_reported_at_once() -> None:
    """The new checks join the file's other errors, one line each."""
    text = (SETTINGS + BASE).replace("concurrency = 8", "concurrency = 0").replace(
        'address = "sbc1.example.com"', 'address = ""').replace(
        "expiry_warn_days = 30", "expiry_warn_days = -1\nnothing = nan")
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "inv.toml")
    assert [line.split(": ")[:2] for line in info.value.message.splitlines()] == [
        ["inv.toml:4", "settings.nothing"],  # nan: where it is written
        ["inv.toml:4", "settings.nothing"],  # and an unknown key
        ["inv.toml:2", "settings.concurrency"],
        ["inv.toml:3", "settings.expiry_warn_days"],
        ["inv.toml:11", "devices.sbc1.address"],
    ]


@pytest.mark.parametrize("command", ["plan", "status", "deploy"])
def test_no_devices_table_says_how_to_write_one(tmp_path: Path, command: str) -> None:
    """A file of certificates only is read (csr and renew need no device); a command that
    works on devices says there is none and how to write one, exit 2."""
    path = tmp_path / "certfleet.toml"
    path.write_text('[certificates.wildcard]\ncn = "*.example.com"\n')
    assert list(load_inventory(path).certificates) == ["wildcard"]
    result = CliRunner().invoke(app, [command, "--inventory", str(path),
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2, result.output
    assert f"error: {path}: has no [devices] table" in result.output
    assert "[devices.sbc1]" in result.output and "Traceback" not in result.output


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    """Neither devices nor certificates: refused when read, with the table to write."""
    line = refused(tmp_path, "")
    assert "has no [devices] table" in line
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path / "certfleet.toml")
    assert "certfleet init" in (info.value.hint or "")


def test_a_common_name_may_hold_spaces_a_san_may_not() -> None:
    """A CN is a name, maybe words; a SAN is a DNS name or an IP address."""
    text = BASE.replace('cn = "*.example.com"',
                        'cn = "Example Voice Gateway"\nsans = ["a.example.com"]')
    assert parse_inventory(text).certificates["wildcard"].cn == "Example Voice Gateway"
    with pytest.raises(ConfigError, match=r"certificates.wildcard.sans: 'a b' holds a space"):
        parse_inventory(text.replace('"a.example.com"', '"a b"'))


def test_the_limits_themselves_pass() -> None:
    """concurrency 1 and 256, expiry_warn_days 0 and 3650: accepted."""
    for concurrency, days in ((1, 0), (256, 3650)):
        text = (SETTINGS + BASE).replace("concurrency = 8", f"concurrency = {concurrency}")
        inv = parse_inventory(text.replace("expiry_warn_days = 30", f"expiry_warn_days = {days}"))
        assert (inv.concurrency, inv.expiry_warn_days) == (concurrency, days)


def test_an_error_in_every_device_reads_the_text_once() -> None:
    """3,000 devices each with a typo: 3,000 lines, each at its line, from one index of the
    text (a scan of the whole file per error made 90,000 of them take hours)."""
    from certfleet.inventory_checks import _LineIndex

    devices = "".join(f'[devices.d{i}]\nkind = "sbc"\nadress = "d{i}.example.com"\n'
                      f'address = "d{i}.example.com"\n\n' for i in range(3000))
    text = '[certificates.w]\ncn = "*.example.com"\n\n' + devices
    before = _LineIndex.built
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "inv.toml")
    assert _LineIndex.built - before == 1
    lines = info.value.message.splitlines()
    assert len(lines) == 3000 and len(info.value.errors) == 3000
    assert lines[0].startswith("inv.toml:6: devices.d0.adress: unknown key 'adress'")
    assert lines[-1].startswith(f"inv.toml:{6 + 5 * 2999}: devices.d2999.adress: unknown key")


def test_renew_before_days_over_ten_years_is_refused() -> None:
    """Like expiry_warn_days: a day count past any certificate's life is a mistake."""
    text = BASE.replace('cn = "*.example.com"', 'cn = "*.example.com"\nrenew_before_days = 99999')
    with pytest.raises(ConfigError, match=r"inv.toml:3: certificates.wildcard.renew_before_days"):
        parse_inventory(text, "inv.toml")


RENEWAL = """
[certificates.wildcard.acme]
directory = "https://acme.example.com/directory"
email = "pki@example.com"
timeout = 300

[certificates.wildcard.dns]
provider = "rfc2136"
server = "10.0.0.53"
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("timeout = 300", "timeout = nan",
         "inv.toml:11: certificates.wildcard.acme.timeout: is nan or inf"),
        ('server = "10.0.0.53"', 'server = "ns1.\u202eexample.com"',
         "inv.toml:15: certificates.wildcard.dns.server: holds U+202E"),
        ('server = "10.0.0.53"', 'server = "10.0.0.53"\nresolvers = ["10.0.0.53 :53"]',
         "inv.toml:16: certificates.wildcard.dns.resolvers: '10.0.0.53 :53' holds a space"),
    ],
)
def test_renewal_tables_are_checked_too(old: str, new: str, expected: str) -> None:
    """nan in an ACME timeout, a hidden character or a space in the DNS server or resolvers."""
    text = BASE + RENEWAL
    with pytest.raises(ConfigError) as info:
        parse_inventory(text.replace(old, new, 1), "inv.toml")
    assert expected in info.value.message


def test_other_toml_files_nested_too_deep_are_one_error(tmp_path: Path) -> None:
    """--pins-from (an inventory discover wrote) and an OVOC --menu file: no RecursionError."""
    from certfleet.cli.ovoc import _load_menu
    from certfleet.discover import read_pins

    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deep"):
        read_pins(deep)
    with pytest.raises(ConfigError, match="nested too deep"):
        _load_menu(deep)
    deep_json = tmp_path / "menu.json"
    deep_json.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="not valid JSON: nested too deep"):
        _load_menu(deep_json)
