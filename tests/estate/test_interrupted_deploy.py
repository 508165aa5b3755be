"""A deploy killed with SIGKILL mid-install, then recovered by deploy or by rollback.

The lab SBC hangs the certificate upload after the new key went in; the
deploy process is then killed (no chance to clean up). The journal says
``interrupted`` at that step, the lock is free, and from that same start
``deploy`` finishes the job, or ``rollback`` puts the old certificate and
the old key back, each checked by handshake and by key/certificate
consistency on the device.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.drivers.tlsprobe import Listener, probe
from certfleet.lab.estate import WILDCARD, LabEstate
from certfleet.lab.sbc import FaultRule
from certfleet.pki.model import cert_sha256
from lab_support import started_lab

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

runner = CliRunner()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabEstate]:
    with started_lab(tmp_path, sbcs=1, ha=False, ovoc=False, key_type="ec-p256") as estate:
        yield estate


def _cli(lab: LabEstate, state: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app, [*args, "--inventory", str(lab.inventory_path), "--state-dir", str(state)]
    )
    return result.exit_code, result.stdout + (result.stderr if result.stderr_bytes else "")


def _public(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _wait_fired(rule: FaultRule, child: subprocess.Popen[bytes]) -> None:
    """Until the deploy hangs on the rule (or the process ended: then fail with its output)."""
    deadline = time.monotonic() + 120
    while rule.fired == 0:
        if child.poll() is not None:
            out, err = child.communicate()
            pytest.fail(f"deploy ended ({child.returncode}) before the hang: {out!r} {err!r}")
        if time.monotonic() > deadline:
            pytest.fail("the deploy never reached the certificate upload")
        time.sleep(0.05)


def _kill_mid_install(lab: LabEstate, state: Path, tmp_path: Path) -> tuple[str, str]:
    """Import old and new, start a deploy, kill it once the key is in; (old sha, new sha)."""
    old = tmp_path / "old.pem"
    old.write_bytes(lab.old.fullchain_pem + lab.old.key_pem())
    assert _cli(lab, state, "import", "wildcard", str(old))[0] == 0
    renewed = lab.ca.issue(WILDCARD, key_type="ec-p256")
    new = tmp_path / "new.pem"
    new.write_bytes(renewed.fullchain_pem + renewed.root_pem + renewed.key_pem())
    code, out = _cli(lab, state, "import", "wildcard", str(new), "--json")
    assert code == 0, out
    assert json.loads(out)["version"]["number"] == 2
    unit = lab.sbcs["sbc1"]
    rule = unit.faults.add("hang", method="PUT", path="/files/tls/*/certificate")
    child = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "--json", "--inventory",
         str(lab.inventory_path), "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        _wait_fired(rule, child)
        # The new key is on the device, the certificate upload hangs: a half state.
        ctx = unit.context(1)
        assert _public(ctx.key_pem) == _public(renewed.key_pem())
        assert not ctx.key_matches
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return cert_sha256(lab.old.leaf), cert_sha256(renewed.leaf)


def _served(lab: LabEstate) -> str | None:
    import asyncio

    unit = lab.sbcs["sbc1"]
    [result] = asyncio.run(probe([Listener("127.0.0.1", unit.sip_port)], timeout=10))
    return result.sha256


def _assert_interrupted(lab: LabEstate, state: Path) -> None:
    code, out = _cli(lab, state, "history", "--json", "--device", "sbc1")
    assert code == 0, out
    [row] = json.loads(out)["deployments"]
    assert row["outcome"] == "interrupted"
    assert row["last_step"] == "install (start)"
    assert row["backup_id"] is not None
    code, out = _cli(lab, state, "status", "--json")
    [device] = json.loads(out)["devices"]
    assert device["last_deployment"]["outcome"] == "interrupted"
    assert device["last_deployment"]["last_step"] == "install (start)"
    code, out = _cli(lab, state, "history", "--steps")
    assert code == 0 and "interrupted" in out and "install" in out and "backup" in out


def test_killed_deploy_is_finished_by_the_next_deploy(
    lab: LabEstate, tmp_path: Path, store_backend: str
) -> None:
    """After kill -9 mid-install: history says interrupted; deploy exits 0, new cert and key."""
    state = tmp_path / "state"
    old_sha, new_sha = _kill_mid_install(lab, state, tmp_path)
    _assert_interrupted(lab, state)
    code, out = _cli(lab, state, "deploy", "--json")  # never refused by the dead process
    assert code == 0, out
    [device] = json.loads(out)["devices"]
    assert device["status"] == "installed"
    assert _served(lab) == new_sha != old_sha
    ctx = lab.sbcs["sbc1"].context(1)
    assert ctx.sha256 == new_sha and ctx.key_matches
    code, out = _cli(lab, state, "history", "--json", "--device", "sbc1")
    assert [r["outcome"] for r in json.loads(out)["deployments"]] == ["installed", "interrupted"]


def test_killed_deploy_is_undone_by_rollback(
    lab: LabEstate, tmp_path: Path, store_backend: str
) -> None:
    """After kill -9 mid-install: rollback exits 0 with the old certificate and the old key."""
    state = tmp_path / "state"
    old_sha, _ = _kill_mid_install(lab, state, tmp_path)
    _assert_interrupted(lab, state)
    code, out = _cli(lab, state, "rollback", "sbc1", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["ok"] and result["backup"]["served_sha256"] == old_sha
    assert _served(lab) == old_sha
    ctx = lab.sbcs["sbc1"].context(1)
    assert ctx.sha256 == old_sha and ctx.key_matches
    assert _public(ctx.key_pem) == _public(lab.old.key_pem())


def test_rollback_without_backup_or_under_lock_exits_2(
    lab: LabEstate, tmp_path: Path, store_backend: str
) -> None:
    """Nothing touched: no backup yet, or another live process holds the lock → exit 2."""
    from certfleet.estate.store import Store

    state = tmp_path / "state"
    code, out = _cli(lab, state, "rollback", "sbc1")
    assert code == 2 and "no backup of 'sbc1'" in out
    with Store.open(state) as store:
        store.acquire_lock("deploy")
        code, out = _cli(lab, state, "rollback", "sbc1", "--json")
        assert code == 2 and "holds the lock" in json.loads(out)["error"]


def _notices(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_killed_deploy_is_told_by_the_next_run_once_a_target_takes_it(
    lab: LabEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy killed mid-install cannot tell anyone; the next deploy does: one failure
    notice naming the device, the step and the next command. A notice no target took is
    sent again by the run after; once told, never again."""
    state = tmp_path / "state"
    sink = tmp_path / "notify.jsonl"
    with lab.inventory_path.open("a") as handle:
        handle.write('\n[notify]\nurls = ["env:LAB_NOTIFY_URL"]\non = ["failure"]\n')
    _kill_mid_install(lab, state, tmp_path)
    # A target that cannot take it (a file below a file): the next run is not told.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{blocker / 'notify.jsonl'}")
    code, out = _cli(lab, state, "deploy", "--json")
    assert code == 0, out
    assert not (state / "notify-interrupted.json").exists()
    monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{sink}")
    code, out = _cli(lab, state, "deploy", "--json")
    assert code == 0, out
    [told] = _notices(sink)
    assert told["event"] == "failure" and "interrupted" in told["title"]
    assert "sbc1: failed at step install (start)" in told["body"]
    assert "Next: certfleet verify, then certfleet deploy --only sbc1" in told["body"]
    code, out = _cli(lab, state, "deploy", "--json")
    assert code == 0, out
    assert len(_notices(sink)) == 1
