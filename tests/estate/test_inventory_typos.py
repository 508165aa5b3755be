"""Typos in the inventory: each reported once, at its line, with a fix that fits the device."""

from __future__ import annotations

import pytest

from certfleet.errors import ConfigError
from certfleet.inventory import parse_inventory

BASE = """\
[certificates.wildcard]
cn = "*.example.com"

[devices.ovoc]
kind = "ovoc"
address = "ovoc.example.com"

[devices.sbc1]
kind = "sbc"
address = "sbc1.example.com"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "certfleet.toml")
    return info.value.message.splitlines()


def test_typo_of_a_required_key_is_one_error() -> None:
    """`adress` is reported once, as a did-you-mean, not again as a missing address."""
    text = BASE.replace('address = "ovoc.example.com"', 'adress = "ovoc.example.com"')
    [line] = problems(text)
    assert line.startswith("certfleet.toml:6: devices.ovoc.adress: unknown key 'adress'")
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "certfleet.toml")
    assert info.value.hint == "did you mean 'address'?"


def test_typos_of_cn_and_certificate_are_one_error_each() -> None:
    """`cnn` for cn and `certficate` for certificate: one error each, both at their lines."""
    text = BASE.replace('cn = "*.example.com"', 'cnn = "*.example.com"')
    text = text.replace('[certificates.wildcard]', '[certificates.other]\ncn = "o"\n\n'
                        '[certificates.wildcard]')
    text = text.replace('kind = "sbc"', 'kind = "sbc"\ncertficate = "wildcard"')
    lines = problems(text)
    assert [line.split(": ")[:2] for line in lines] == [
        ["certfleet.toml:5", "certificates.wildcard.cnn"],
        ["certfleet.toml:7", "devices.ovoc"],
        ["certfleet.toml:13", "devices.sbc1.certficate"],
    ]
    assert "names no certificate" in lines[1]  # ovoc has no typo: it is missing there


def test_missing_address_example_names_the_device() -> None:
    """The fix for a missing address is written for the device at hand, not a fixed example."""
    text = BASE.replace('address = "ovoc.example.com"\n', "")
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "certfleet.toml")
    assert info.value.message == "certfleet.toml:4: devices.ovoc: has no address"
    assert 'add address = "ovoc.example.com"' in (info.value.hint or "")
    assert "sbc1" not in (info.value.hint or "")


def test_misspelt_table_header_gets_its_line() -> None:
    """`[device.sbc2]` (for `[devices.sbc2]`) is reported at the line of its header."""
    text = BASE + '\n[device.sbc2]\nkind = "sbc"\naddress = "sbc2.example.com"\n'
    [line] = problems(text)
    assert line.startswith("certfleet.toml:12: device: unknown key 'device'")
    text = BASE + '\n[devices.sbc1.profil]\nx = 1\n'
    [line] = problems(text)
    assert line.startswith("certfleet.toml:12: devices.sbc1.profil: unknown key")
