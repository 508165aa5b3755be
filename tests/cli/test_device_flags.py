"""`certfleet sbc` and `certfleet ovoc` build their drivers as the estate does.

The flags describe a device, as an inventory's ``[devices.NAME]`` would, and
the device's kind builds the driver (``from_device``): the same settings given
by flags or by an inventory give the same driver, and the settings the flags
take beyond the common keys are inventory keys of the kind too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certfleet.cli import ovoc as ovoc_cli
from certfleet.cli import sbc as sbc_cli
from certfleet.cli.common import OvocLogin, SbcConnection
from certfleet.errors import ConfigError
from certfleet.estate.devices import build_driver
from certfleet.inventory import parse_inventory

PIN = "ab" * 32

INVENTORY = f"""
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com"]

[devices.sbc1]
kind = "sbc"
address = "127.0.0.1"
port = 8443
user = "certadmin"
password = "env:CERTFLEET_TEST_SBC_PW"
tls_pin = "{PIN}"
tls_contexts = [0, 2]
timeout = 5
busy_retries = 2
busy_delay = 0.1

[devices.ovoc1]
kind = "ovoc"
address = "127.0.0.1"
ssh_port = 2222
password = "env:CERTFLEET_TEST_OVOC_PW"
root_password = "env:CERTFLEET_TEST_OVOC_ROOT_PW"
keystore_password = "env:CERTFLEET_TEST_OVOC_KS_PW"
ssh_host_key = "SHA256:abc"
known_hosts = "known_hosts"
staging_dir = "/srv/certs"
prompt_timeout = 7
import_timeout = 70
settle_time = 0.5
enter = "cr"
"""


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in (("CERTFLEET_TEST_SBC_PW", "s3cret"), ("CERTFLEET_TEST_OVOC_PW", "ssh"),
                       ("CERTFLEET_TEST_OVOC_ROOT_PW", "root"),
                       ("CERTFLEET_TEST_OVOC_KS_PW", "keystore1")):
        monkeypatch.setenv(var, value)


def test_sbc_flags_build_the_driver_the_inventory_builds(tmp_path: Path, secrets: None) -> None:
    inventory = parse_inventory(INVENTORY, tmp_path / "certfleet.toml")
    from_inventory = build_driver(inventory.devices["sbc1"], inventory, None)
    from_flags = sbc_cli._driver(
        SbcConnection(url="https://127.0.0.1:8443", user="certadmin",
                      password_env="CERTFLEET_TEST_SBC_PW", pin_sha256=PIN, timeout=5),
        contexts=[0, 2], busy_retries=2, busy_delay=0.1)
    assert type(from_flags) is type(from_inventory)
    for attr in ("url", "user", "contexts", "timeout", "busy_retries", "busy_delay", "pinned",
                 "insecure", "x509_strict", "management", "profile"):
        assert getattr(from_flags, attr) == getattr(from_inventory, attr), attr
    assert from_flags.timeout == 5 and from_flags.busy_retries == 2
    assert from_flags.contexts == [0, 2]


def test_ovoc_flags_build_the_driver_the_inventory_builds(tmp_path: Path, secrets: None) -> None:
    inventory = parse_inventory(INVENTORY, tmp_path / "certfleet.toml")
    from_inventory = build_driver(inventory.devices["ovoc1"], inventory, None)
    login = OvocLogin(host="127.0.0.1", ssh_port=2222, user="acems",
                      password_env="CERTFLEET_TEST_OVOC_PW", known_hosts=tmp_path / "known_hosts",
                      host_key_sha256="SHA256:abc")
    from_flags = ovoc_cli._driver(
        login, password="ssh", su_password="root", keystore_password="keystore1",
        staging_dir="/srv/certs", verify_timeout=120, prompt_timeout=7, import_timeout=70,
        settle_time=0.5, enter="cr")
    assert type(from_flags) is type(from_inventory)
    for attr in ("host", "login", "su", "staging", "timeouts", "terminal", "keystore_password",
                 "menu", "profile"):
        assert getattr(from_flags, attr) == getattr(from_inventory, attr), attr
    assert from_flags.login.known_hosts == tmp_path / "known_hosts"
    assert from_flags.login.host_key == "SHA256:abc"
    assert from_flags.terminal.newline == "\r"
    assert (from_flags.timeouts.prompt, from_flags.timeouts.import_) == (7, 70)


def test_inventory_enter_other_than_lf_or_cr_refuses_the_device(
    tmp_path: Path, secrets: None,
) -> None:
    inventory = parse_inventory(INVENTORY.replace('enter = "cr"', 'enter = "tab"'),
                                tmp_path / "certfleet.toml")
    with pytest.raises(ConfigError) as caught:
        build_driver(inventory.devices["ovoc1"], inventory, None)
    assert caught.value.message == "device 'ovoc1': enter 'tab' is neither lf nor cr"


def test_inventory_key_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_inventory(INVENTORY.replace("busy_retries = 2", 'busy_retries = "two"'),
                        tmp_path / "certfleet.toml")
    assert "busy_retries" in caught.value.message
