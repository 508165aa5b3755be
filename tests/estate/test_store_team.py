"""One PostgreSQL store for a team: two machines race for an SBC, a store moves in.

Each "machine" is a process with its own state folder and its own copy of
the inventory's folder; they share the store URL (a real PostgreSQL,
tests/support/postgres.py) and the store key.
"""

from __future__ import annotations

import json
import os
import shutil
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
from postgres import STORE_KEY

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

runner = CliRunner()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabEstate]:
    with started_lab(tmp_path, sbcs=1, ha=False, ovoc=False, key_type="ec-p256") as estate:
        yield estate


def _cli(inventory: Path, state: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--inventory", str(inventory), "--state-dir", str(state)])
    return result.exit_code, result.stdout + (result.stderr if result.stderr_bytes else "")


def _public(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _served(lab: LabEstate) -> str | None:
    import asyncio

    [result] = asyncio.run(probe([Listener("127.0.0.1", lab.sbcs["sbc1"].sip_port)], timeout=10))
    return result.sha256


def _import_old_and_new(lab: LabEstate, state: Path, tmp_path: Path) -> tuple[str, str]:
    old = tmp_path / "old.pem"
    old.write_bytes(lab.old.fullchain_pem + lab.old.key_pem())
    assert _cli(lab.inventory_path, state, "import", "wildcard", str(old))[0] == 0
    renewed = lab.ca.issue(WILDCARD, key_type="ec-p256")
    new = tmp_path / "new.pem"
    new.write_bytes(renewed.fullchain_pem + renewed.root_pem + renewed.key_pem())
    code, out = _cli(lab.inventory_path, state, "import", "wildcard", str(new))
    assert code == 0, out
    return cert_sha256(lab.old.leaf), cert_sha256(renewed.leaf)


def _second_folder(lab: LabEstate, where: Path) -> Path:
    """A copy of the lab's inventory folder (the inventory and the files it names)."""
    where.mkdir()
    for item in lab.inventory_path.parent.iterdir():
        if item.is_file():
            shutil.copy2(item, where / item.name)
    return where / lab.inventory_path.name


def _wait_fired(rule: FaultRule, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while rule.fired == 0:
        if child.poll() is not None:
            out, err = child.communicate()
            pytest.fail(f"deploy ended ({child.returncode}) before the hang: {out!r} {err!r}")
        if time.monotonic() > deadline:
            pytest.fail("the deploy never reached the certificate upload")
        time.sleep(0.05)


def test_two_machines_race_for_one_sbc_then_the_survivor_finishes(
    lab: LabEstate, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One deploys, the other exits 2 naming it; after SIGKILL of the first the other finishes."""
    monkeypatch.setenv("CERTFLEET_STATE_URL", pg_url)
    monkeypatch.setenv("CERTFLEET_STORE_KEY", STORE_KEY)
    first_state, second_state = tmp_path / "state-a", tmp_path / "state-b"
    old_sha, new_sha = _import_old_and_new(lab, first_state, tmp_path)
    second_inventory = _second_folder(lab, tmp_path / "machine-b")
    unit = lab.sbcs["sbc1"]
    rule = unit.faults.add("hang", method="PUT", path="/files/tls/*/certificate")
    first = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "--json", "--inventory",
         str(lab.inventory_path), "--state-dir", str(first_state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        _wait_fired(rule, first)  # the first holds sbc1's lock, half way through its install
        code, out = _cli(second_inventory, second_state, "deploy", "--json")
        assert code == 2, out
        error = json.loads(out)["error"]
        assert f"pid {first.pid} on " in error and "sbc1" in error and "deploy" in error
        code, out = _cli(second_inventory, second_state, "unlock")
        assert code == 2 and f"pid {first.pid}" in out
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL
    # The database ended the killed process's session: its locks are gone with it.
    code, out = _cli(second_inventory, second_state, "deploy", "--json")
    assert code == 0, out
    [device] = json.loads(out)["devices"]
    assert device["status"] == "installed"
    assert _served(lab) == new_sha != old_sha
    assert unit.context(1).key_matches
    code, out = _cli(second_inventory, second_state, "history", "--json", "--device", "sbc1")
    assert [r["outcome"] for r in json.loads(out)["deployments"]] == ["installed", "interrupted"]


def test_a_lab_store_migrated_to_postgres_rolls_an_sbc_back(
    lab: LabEstate, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deploy on SQLite, store migrate (counts and hashes match), rollback from PostgreSQL
    on another machine with the previous key that came over."""
    monkeypatch.delenv("CERTFLEET_STATE_URL", raising=False)
    monkeypatch.setenv("CERTFLEET_STORE_KEY", STORE_KEY)
    state = tmp_path / "state"
    old_sha, new_sha = _import_old_and_new(lab, state, tmp_path)
    code, out = _cli(lab.inventory_path, state, "deploy", "--json")
    assert code == 0, out
    assert _served(lab) == new_sha
    code, out = _cli(lab.inventory_path, state, "store", "check")
    assert code == 0 and "sqlite store: ok" in out, out

    code, out = _cli(lab.inventory_path, state, "store", "migrate", "--to", pg_url, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"]
    tables = {t["table"]: t for t in report["tables"]}
    assert tables["keys"]["rows"] == tables["keys"]["copied_rows"] == 2
    assert tables["backups"]["copied_rows"] == 1 and tables["blobs"]["copied_rows"] >= 5
    assert all(t["sha256"] == t["copied_sha256"] for t in report["tables"])
    code, out = _cli(lab.inventory_path, state, "store", "migrate", "--to", pg_url)
    assert code == 2 and "not empty" in out  # never over a store in use

    other = tmp_path / "another-machine"
    inventory = _second_folder(lab, tmp_path / "machine-b")
    code, out = _cli(inventory, other, "store", "check", "--state-url", pg_url)
    assert code == 0 and "postgresql store: ok" in out, out
    code, out = _cli(inventory, other, "rollback", "sbc1", "--json", "--state-url", pg_url)
    assert code == 0, out
    assert json.loads(out)["backup"]["served_sha256"] == old_sha
    assert _served(lab) == old_sha
    ctx = lab.sbcs["sbc1"].context(1)
    assert ctx.sha256 == old_sha and ctx.key_matches
    assert _public(ctx.key_pem) == _public(lab.old.key_pem())
    # Ids go on after the ones that came over: the history has all three runs.
    code, out = _cli(inventory, other, "history", "--json", "--state-url", pg_url)
    assert code == 0
    assert len(json.loads(out)["deployments"]) == 2
