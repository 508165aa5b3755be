"""Secrets typed at a prompt are asked once, before the run starts (issue 9, item 5).

``certfleet deploy`` runs on a pseudo-terminal with the certificate's key
passphrase set to ``prompt``: the passphrase is asked exactly once, before
the first device step, and the deploy then installs (the passphrase opens
the key in the store and encrypts the write-ahead backup). Inside a running
event loop a prompt is refused with a clear error instead of stopping the
run.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
from certfleet.errors import PasswordError
from certfleet.lab.estate import WILDCARD, LabEstate
from certfleet.pki.model import cert_sha256
from certfleet.secrets import resolve_secret

PASSPHRASE = "correct horse battery"
PROMPT = b"key passphrase of 'wildcard': "


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabEstate]:
    with LabEstate(tmp_path / "lab", sbcs=2, ha=False, ovoc=False, key_type="ec-p256") as estate:
        yield estate


def _inventory_with(lab: LabEstate, name: str, reference: str) -> Path:
    text = lab.inventory_path.read_text(encoding="utf-8")
    marker = 'key_type = "ec-p256"\n'
    assert marker in text
    path = lab.inventory_path.with_name(name)
    path.write_text(text.replace(marker, marker + f'key_passphrase = "{reference}"\n', 1),
                    encoding="utf-8")
    return path


def _run_on_pty(args: list[str], env: dict[str, str], answer: bytes) -> tuple[int, bytes]:
    """Run ``args`` with a pseudo-terminal as its controlling terminal; type ``answer``
    at every passphrase prompt; (exit code, everything the terminal showed)."""
    master, slave = os.openpty()
    child = subprocess.Popen(args, env=env, stdin=slave, stdout=slave, stderr=slave,
                             preexec_fn=lambda: os.login_tty(slave), close_fds=True)
    os.close(slave)
    shown = b""
    answered = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                shown += data
                if shown.count(PROMPT) > answered:
                    answered += 1
                    os.write(master, answer + b"\n")
            elif child.poll() is not None:
                break
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    return code, shown


@pytest.mark.skipif(not hasattr(os, "login_tty"), reason="needs os.login_tty (POSIX)")
def test_deploy_asks_the_key_passphrase_once_before_the_run(
    lab: LabEstate, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {**os.environ, **lab.env, "CERTFLEET_PASSPHRASE": PASSPHRASE, "COLUMNS": "160"}
    by_env = _inventory_with(lab, "by-env.toml", "env:CERTFLEET_PASSPHRASE")
    by_prompt = _inventory_with(lab, "by-prompt.toml", "prompt")
    old = tmp_path / "old.pem"
    old.write_bytes(lab.old.fullchain_pem + lab.old.root_pem + lab.old.key_pem())
    renewed = lab.ca.issue(WILDCARD, key_type="ec-p256")
    new = tmp_path / "new.pem"
    new.write_bytes(renewed.fullchain_pem + renewed.root_pem + renewed.key_pem())
    for pem in (old, new):
        done = subprocess.run(
            [sys.executable, "-m", "certfleet", "import", "wildcard", str(pem),
             "--inventory", str(by_env), "--state-dir", str(state)],
            env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    code, shown = _run_on_pty(
        [sys.executable, "-m", "certfleet", "deploy", "--only", "sbc2",
         "--inventory", str(by_prompt), "--state-dir", str(state)],
        env, PASSPHRASE.encode())
    text = shown.decode(errors="replace")
    assert code == 0, text
    assert shown.count(PROMPT) == 1, text  # once, although the run uses it three times
    before, _, after = text.partition(PROMPT.decode())
    assert "sbc2:" not in before, text  # asked before the first step of the run
    assert "1 installed; exit code 0" in after, text  # the summary of the run
    assert PASSPHRASE not in text
    served = asyncio.run(fetch_served_certificate(Listener("127.0.0.1", lab.sbcs["sbc2"].sip_port)))
    assert cert_sha256(served) == cert_sha256(renewed.leaf)


def test_a_prompt_inside_a_running_event_loop_is_refused() -> None:
    async def inside() -> str:
        return resolve_secret("prompt", what="password of a device asked late", interactive=True)

    with pytest.raises(PasswordError, match="the run has started"):
        asyncio.run(inside())
