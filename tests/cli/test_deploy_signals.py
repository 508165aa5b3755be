"""Ctrl-C and SIGTERM during a real `certfleet deploy` process on the lab.

The lab SBC holds the certificate upload (its key already replaced) until
the test sends the signal: the deploy then rolls the device back, prints the
summary and exits 1; the device serves the old certificate, by handshake.
A second Ctrl-C while the rollback hangs too exits at once with 130.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
from certfleet.estate.store import Store
from certfleet.inventory import load_inventory
from certfleet.lab.estate import LabEstate
from certfleet.lab.sbc import FaultRule
from certfleet.pki.model import cert_sha256
from lab_support import import_old_and_renewed


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabEstate]:
    with LabEstate(tmp_path / "lab", sbcs=1, ha=False, ovoc=False, key_type="ec-p256") as estate:
        yield estate


def _prepare(lab: LabEstate, state: Path, tmp: Path) -> str:
    """Import last year's certificate (so rollback is possible) and the renewed one."""
    inventory = load_inventory(lab.inventory_path)
    with lab.environment(), Store.open(state) as store:
        return import_old_and_renewed(lab, store, inventory, tmp)


def _start(lab: LabEstate, state: Path) -> subprocess.Popen[str]:
    env = {**os.environ, **lab.env, "CERTFLEET_STATE_DIR": str(state), "COLUMNS": "160"}
    return subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "--inventory", str(lab.inventory_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_fired(rule: FaultRule, count: int, proc: subprocess.Popen[str]) -> None:
    """Until the lab holds the ``count``-th matching request (the process still runs)."""
    deadline = time.monotonic() + 120
    while rule.fired < count:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"deploy ended ({proc.returncode}) before the upload hung:\n{out}\n{err}")
        assert time.monotonic() < deadline, "the deploy never reached the upload"
        time.sleep(0.05)


def _served(port: int) -> str:
    import asyncio

    return cert_sha256(asyncio.run(fetch_served_certificate(Listener("127.0.0.1", port))))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_deploy_rolls_back_and_prints_the_summary(
    lab: LabEstate, tmp_path: Path, signum: int
) -> None:
    state = tmp_path / "state"
    _prepare(lab, state, tmp_path)
    sbc = lab.sbcs["sbc1"]
    old = sbc.served_sha256("sip")
    # The certificate upload hangs: the key of context 1 is already replaced.
    rule = sbc.faults.add("hang", method="PUT", path="/files/tls/*/certificate")
    proc = _start(lab, state)
    try:
        _wait_fired(rule, 1, proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err
    assert "interrupted" in err
    assert "Deploy summary (interrupted)" in out
    assert "restored" in out
    assert _served(sbc.sip_port) == old
    assert sbc.saved_context(1).key_matches
    with Store.open(state) as store:
        (row,) = store.deployments(device="sbc1")
        assert row["outcome"] == "restored"
        assert store.lock_holder() is None


def test_second_ctrl_c_exits_at_once(lab: LabEstate, tmp_path: Path) -> None:
    state = tmp_path / "state"
    _prepare(lab, state, tmp_path)
    sbc = lab.sbcs["sbc1"]
    # The upload hangs, and so does the restore's upload: only a second Ctrl-C ends it.
    rule = sbc.faults.add("hang", method="PUT", path="/files/tls/*/certificate", times=2)
    proc = _start(lab, state)
    try:
        _wait_fired(rule, 1, proc)
        proc.send_signal(signal.SIGINT)
        _wait_fired(rule, 2, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "interrupted again: exiting now" in err
    assert "Traceback" not in out + err
