"""The inventory: parsing, defaults, and errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfleet.errors import ConfigError
from certfleet.inventory import SKELETON, load_inventory, parse_inventory, select_devices

GOOD = """\
[settings]
concurrency = 4

[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com", "example.com"]
key_type = "ec-p256"

[defaults]
verify_timeout = 30

[defaults.sbc]
user = "Admin"
password = "env:SBC_PASSWORD"

[devices.ovoc]
kind = "ovoc"
address = "ovoc.example.com"
ssh_port = 2222
user = "acems"
password = "keyring:certfleet/acems"
root_password = "prompt"
listeners = [443]

[devices.sbc1]
kind = "sbc"
address = "10.0.0.5"
fqdn = "sbc1.example.com"
port = 8443
tls_contexts = [0, 2]
listeners = [8443, "10.0.0.5:5061", { port = 5062, label = "teams" }]
tags = ["site-a"]
"""


def test_parses_devices_certificates_and_defaults() -> None:
    """A full inventory parses, with kind defaults merged into each device."""
    inv = parse_inventory(GOOD, "certfleet.toml")
    assert inv.concurrency == 4
    assert inv.certificates["wildcard"].names == ("*.example.com", "example.com")
    ovoc = inv.devices["ovoc"]
    assert (ovoc.kind, ovoc.port, ovoc.fqdn) == ("ovoc", 2222, "ovoc.example.com")
    assert ovoc.root_password == "prompt"
    assert ovoc.verify_timeout == 30
    sbc = inv.devices["sbc1"]
    assert sbc.user == "Admin" and sbc.password == "env:SBC_PASSWORD"
    assert sbc.tls_contexts == (0, 2)
    assert [str(x) for x in sbc.listeners] == ["10.0.0.5:8443", "10.0.0.5:5061", "10.0.0.5:5062"]
    assert sbc.listeners[2].label == "teams"
    assert sbc.listeners[0].server_name == "sbc1.example.com"
    assert inv.hosts_for("wildcard") == ["ovoc.example.com", "sbc1.example.com"]


def test_literal_password_is_refused_without_echoing_it() -> None:
    """A password that is not a reference is refused, naming line and key, not the value."""
    text = GOOD.replace('password = "env:SBC_PASSWORD"', 'password = "hunter2"')
    match = r"certfleet.toml:14: defaults.sbc.password: .*literal"
    with pytest.raises(ConfigError, match=match) as info:
        parse_inventory(text, "certfleet.toml")
    assert "hunter2" not in info.value.message
    assert "env:VAR" in (info.value.hint or "")


def test_unknown_key_names_line_and_suggests() -> None:
    """A misspelt key is reported with its line and a did-you-mean hint."""
    text = GOOD.replace("tls_contexts = [0, 2]", "tls_context = [0, 2]")
    match = r"certfleet.toml:30: devices.sbc1.tls_context: unknown key"
    with pytest.raises(ConfigError, match=match) as info:
        parse_inventory(text, "certfleet.toml")
    assert "tls_contexts" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ('kind = "sbc"', 'kind = "router"', r"devices.sbc1.kind: kind must be one of ovoc, sbc"),
        ("port = 8443", "port = 99999", r"devices.sbc1.port: port 99999"),
        ('key_type = "ec-p256"', 'key_type = "dsa"', r"wildcard.key_type: unknown key type"),
        ("tls_contexts = [0, 2]", 'tls_contexts = ["x"]', r"TLS context 'x'"),
        ('listeners = [443]', 'listeners = ["nohostport"]', r"devices.ovoc.listeners"),
    ],
)
def test_bad_values_are_named(old: str, new: str, match: str) -> None:
    """Each bad value is reported with the key it sits under."""
    with pytest.raises(ConfigError, match=match):
        parse_inventory(GOOD.replace(old, new, 1), "certfleet.toml")


def test_toml_syntax_error_names_file() -> None:
    """Broken TOML is a ConfigError naming the file, not a traceback."""
    with pytest.raises(ConfigError, match=r"inv.toml: not valid TOML"):
        parse_inventory("[devices.x\nkind=", "inv.toml")


def test_unknown_certificate_reference() -> None:
    """A device naming a certificate that does not exist is refused."""
    text = GOOD.replace(
        '[devices.sbc1]\nkind = "sbc"', '[devices.sbc1]\nkind = "sbc"\ncertificate = "other"'
    )
    with pytest.raises(ConfigError, match=r"no certificate named 'other'"):
        parse_inventory(text, "certfleet.toml")


def test_skeleton_parses(tmp_path: Path) -> None:
    """The skeleton `certfleet init` writes is a valid inventory."""
    path = tmp_path / "certfleet.toml"
    path.write_text(SKELETON)
    inv = load_inventory(path)
    assert set(inv.devices) == {"ovoc", "sbc1"}
    assert inv.devices["ovoc"].root_password == "env:OVOC_ROOT_PASSWORD"


def test_missing_file_hint(tmp_path: Path) -> None:
    """A missing inventory points at `certfleet init`."""
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_inventory(tmp_path / "nope.toml")
    assert "certfleet init" in (info.value.hint or "")


def test_unreadable_file_is_named_with_the_reason(tmp_path: Path) -> None:
    """An inventory that cannot be read (here a folder) is named with the system's reason."""
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path)
    assert str(info.value).startswith(f"cannot read inventory {str(tmp_path)!r}: ")
    assert info.value.context["path"] == str(tmp_path)
    assert info.value.hint == "check the path and its permissions"


def test_select_by_name_and_tag() -> None:
    """--only takes device names and tags; an unknown one is an error."""
    inv = parse_inventory(GOOD, "certfleet.toml")
    assert [d.name for d in select_devices(inv, ["site-a"])] == ["sbc1"]
    assert [d.name for d in select_devices(inv, ["ovoc", "sbc1"])] == ["ovoc", "sbc1"]
    with pytest.raises(ConfigError, match="'nothing'"):
        select_devices(inv, ["nothing"])



OVOC_FIRMWARE = """\
[certificates.wildcard]
cn = "*.example.com"

[devices.ovoc]
kind = "ovoc"
address = "ovoc.example.com"
password = "env:CF_TEST_ACEMS"
root_password = "env:CF_TEST_ROOT"
keystore_password = "env:CF_TEST_KEYSTORE"
su_user = "emsroot"
staging_dir = "/home/acems/certs"

[devices.ovoc.menu]
labels = ["Security Settings", "Certificates", "Import from CA"]
numbers = [7, 4, 2]
"""


@pytest.fixture()
def ovoc_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CF_TEST_ACEMS", "CF_TEST_ROOT", "CF_TEST_KEYSTORE"):
        monkeypatch.setenv(var, "lab-" + var.lower())


@pytest.mark.usefixtures("ovoc_secrets")
def test_ovoc_firmware_settings_reach_the_driver() -> None:
    """su target, staging folder and menu wording from the inventory configure the driver."""
    from certfleet.drivers.ovoc import OvocDriver
    from certfleet.estate.devices import build_driver

    inventory = parse_inventory(OVOC_FIRMWARE)
    device = inventory.devices["ovoc"]
    assert device.su_user == "emsroot" and device.staging_dir == "/home/acems/certs"
    driver = build_driver(device, inventory, None)
    assert isinstance(driver, OvocDriver)
    assert driver.su_user == "emsroot"
    assert driver.staging_dir == "/home/acems/certs"
    assert [step.label for step in driver.menu.path] == [
        "Security Settings", "Certificates", "Import from CA"
    ]
    assert [step.number for step in driver.menu.path] == ["7", "4", "2"]


@pytest.mark.usefixtures("ovoc_secrets")
def test_unknown_ovoc_menu_setting_is_refused() -> None:
    """A misspelt menu setting names the device and the known settings."""
    from certfleet.estate.devices import build_driver

    inventory = parse_inventory(OVOC_FIRMWARE.replace("numbers =", "numbres ="))
    with pytest.raises(ConfigError, match=r"'ovoc'.*numbres"):
        build_driver(inventory.devices["ovoc"], inventory, None)


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    """Newcomer finding: only the first inventory error was reported. Now every one is,
    file:line: key: problem, a second identical typo in another device too; exit 2."""
    text = GOOD.replace('kind = "ovoc"', 'kind = "ovoc"\npasword = "env:X"', 1)
    text = text.replace('kind = "sbc"', 'kind = "sbc"\npasword = "env:X"', 1)
    text = text.replace("port = 8443", "port = 99999", 1)
    text = text.replace('key_type = "ec-p256"', 'key_type = "dsa"', 1)
    text = text.replace("concurrency = 4", "concurency = 4", 1)
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "certfleet.toml")
    lines = info.value.message.splitlines()
    assert [line.split(": ")[:2] for line in lines] == [
        ["certfleet.toml:2", "settings.concurency"],
        ["certfleet.toml:7", "certificates.wildcard.key_type"],
        ["certfleet.toml:18", "devices.ovoc.pasword"],
        ["certfleet.toml:28", "devices.sbc1.pasword"],
        ["certfleet.toml:31", "devices.sbc1.port"],
    ]
    assert "did you mean 'password'?" in lines[2] and "did you mean 'password'?" in lines[3]
    assert len(info.value.errors) == 5 and "5 problems" in (info.value.hint or "")

    from typer.testing import CliRunner

    from certfleet.cli.app import app

    path = tmp_path / "certfleet.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["plan", "--inventory", str(path),
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2
    assert result.output.count("pasword") >= 2 and "Traceback" not in result.output
