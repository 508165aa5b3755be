"""The run's secrets: resolved once, before any connection; each question asked once."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certfleet.credentials import Credentials
from certfleet.errors import ConfigError, PasswordError
from certfleet.inventory import parse_inventory

INVENTORY = """
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com"]

[defaults.sbc]
password = "prompt"

[devices.sbc1]
kind = "sbc"
address = "127.0.0.1"
port = {port}

[devices.sbc2]
kind = "sbc"
address = "127.0.0.1"
port = {port}

[devices.sbc3]
kind = "sbc"
address = "127.0.0.1"
port = {port}
password = "prompt"

[devices.sbc4]
kind = "sbc"
address = "127.0.0.1"
port = {port}
password = "env:CERTFLEET_TEST_UNSET_PASSWORD"

[devices.sbc5]
kind = "sbc"
address = "127.0.0.1"
port = {port}
password = "env:CERTFLEET_TEST_SBC_PASSWORD"

[devices.proxy]
kind = "sftp"
address = "127.0.0.1"
cert_path = "/etc/ssl/site.pem"
key_path = "/etc/ssl/site.key"
reload_command = "true"
"""


def test_plan_credentials_ask_nothing_and_keep_errors_per_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CERTFLEET_TEST_UNSET_PASSWORD", raising=False)
    monkeypatch.setenv("CERTFLEET_TEST_SBC_PASSWORD", "s3cret")
    inventory = parse_inventory(INVENTORY.format(port=9))
    credentials = Credentials.resolve(inventory.devices.values(), ask=False)
    assert credentials.for_device("sbc1").require("password") == ""  # a stand-in
    assert credentials.for_device("sbc5").require("password") == "s3cret"
    with pytest.raises(PasswordError, match="CERTFLEET_TEST_UNSET_PASSWORD"):
        credentials.for_device("sbc4").get("password")
    assert credentials.for_device("proxy").get("password") is None  # optional for sftp
    with pytest.raises(ConfigError, match="device 'proxy' has no password"):
        credentials.for_device("proxy").require("password")
    assert "s3cret" not in repr(credentials) + repr(credentials.for_device("sbc5"))
    with pytest.raises(PasswordError, match="no terminal"):
        Credentials.resolve([inventory.devices["sbc3"]], ask=True, interactive=False)


def _read_until(fd: int, wanted: bytes, seen: bytearray, deadline: float) -> None:
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {wanted!r} in the terminal: {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"the terminal closed before {wanted!r}: {bytes(seen)!r}")
            seen += chunk


def test_deploy_asks_each_prompt_once_before_any_connection(tmp_path: Path) -> None:
    """[defaults.sbc] password = "prompt" is one question for sbc1 and sbc2; sbc3's own
    line is another; all asked on the terminal before the run decides anything."""
    import pty

    path = tmp_path / "certfleet.toml"
    path.write_text(INVENTORY.format(port=9))
    env = {**os.environ, "CERTFLEET_TEST_SBC_PASSWORD": "x", "COLUMNS": "200"}
    env.pop("CERTFLEET_TEST_UNSET_PASSWORD", None)
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "-i", str(path),
         "--state-dir", str(tmp_path / "state"), "--only", "sbc1", "--only", "sbc2",
         "--only", "sbc3", "--json"],
        stdin=slave, stdout=slave, stderr=slave, env=env,
        preexec_fn=lambda: os.login_tty(slave), close_fds=True,
    )
    os.close(slave)
    seen = bytearray()
    try:
        deadline = time.monotonic() + 60
        _read_until(master, b"REST password of sbc1, sbc2: ", seen, deadline)
        os.write(master, b"shared-answer\n")
        _read_until(master, b"REST password of sbc3: ", seen, deadline)
        os.write(master, b"own-answer\n")
        _read_until(master, b'"exit_code"', seen, deadline)
        assert process.wait(60) == 2  # refused: no version imported; nothing changed
        while True:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    text = bytes(seen).decode("utf-8", "replace")
    assert text.count("password of") == 2, text
    assert "shared-answer" not in text and "own-answer" not in text
