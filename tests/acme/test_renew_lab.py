"""certfleet renew on the lab estate with Pebble: order by real DNS-01, deploy, verify, notify."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.cli.lab import _seed_previous
from certfleet.estate.store import Store
from certfleet.lab.estate import LabEstate
from certfleet.lab.pebble import LabPebble, add_acme_to_inventory
from certfleet.lab.tls import free_port
from handshake import lab_served
from pebble_support import start_pebble


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabEstate, LabPebble]]:
    pebble = start_pebble(tmp_path / "pebble")
    estate = LabEstate(tmp_path / "lab", sbcs=2)
    try:
        estate.start()
        with Store.open(tmp_path / "state") as store:
            _seed_previous(estate, store)
        with estate.environment():
            yield estate, pebble
    finally:
        estate.stop()
        pebble.stop()


def run(lab: LabEstate, tmp_path: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, [*args, "--json", "--inventory", str(lab.inventory_path),
                                      "--state-dir", str(tmp_path / "state")])
    return result.exit_code, json.loads(result.stdout)


def served(lab: LabEstate, tmp_path: Path) -> set[str]:
    """What the lab's listeners serve, by certfleet status, confirmed by the standard
    library's own handshake on every OVOC and SBC listener."""
    code, data = run(lab, tmp_path, "status")
    assert code == 0
    by_status = {item["sha256"] for device in data["devices"]  # type: ignore[attr-defined]
                 for item in device["listeners"]}
    assert set(lab_served(lab).values()) == by_status
    return by_status


def notifications(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_renew_orders_deploys_verifies_then_nothing(
    store_backend: str,  # first: the lab seeds the store it chooses
    lab: tuple[LabEstate, LabPebble], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """renew orders the wildcard from Pebble, deploys everywhere, exits 0; a second renew orders
    nothing and exits 0; the renewal notification names every device. On each store backend
    (SQLite, PostgreSQL: the ACME account then goes into the database, encrypted)."""
    estate, pebble = lab
    sink = tmp_path / "notify.jsonl"
    monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{sink}")
    add_acme_to_inventory(estate.inventory_path, pebble, notify_env="LAB_NOTIFY_URL")
    code, data = run(estate, tmp_path, "renew")
    assert code == 0, data
    item = data["certificates"][0]  # type: ignore[index]
    assert item["action"] == "issued" and "renew_before_days = 30" in item["reason"]
    new_sha = item["version"]["leaf_sha256"]
    assert {d["status"] for d in item["devices"]} == {"installed"}
    assert {d["device"] for d in item["devices"]} == {"ovoc", "sbc1", "sbc2-ha"}
    assert served(estate, tmp_path) == {new_sha}
    assert item["version"]["issuer"].startswith("CN=Pebble Intermediate CA")

    code, data = run(estate, tmp_path, "renew")
    assert code == 0, data
    again = data["certificates"][0]  # type: ignore[index]
    assert again["action"] == "none" and again["due"] is False
    assert {d["status"] for d in again["devices"]} == {"skipped"}
    text = CliRunner().invoke(app, ["renew", "--inventory", str(estate.inventory_path),
                                    "--state-dir", str(tmp_path / "state")])
    assert text.exit_code == 0
    assert re.search(r"wildcard: not due \(\d+ day\(s\) left, more than renew_before_days = 30\)",
                     text.output)
    assert "renew: 0 ordered; exit code 0" in text.output
    told = notifications(sink)
    assert [n["event"] for n in told] == ["renewed"]
    assert "ovoc, sbc1, sbc2-ha" in told[0]["body"] and new_sha[:16] in told[0]["body"]
    if store_backend == "postgresql":  # the team's ACME account is in the database, encrypted
        import psycopg

        with psycopg.connect(os.environ["CERTFLEET_STATE_URL"]) as conn:
            rows = conn.execute(
                "SELECT data FROM blobs WHERE path LIKE 'acme/accounts/%' AND secret = 1"
            ).fetchall()
        assert rows and all(b"PRIVATE KEY" not in bytes(row[0]) for row in rows)


def test_failed_validation_leaves_devices_untouched(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records published where Pebble does not look (split DNS): the CA's reason, exit 1, the
    devices untouched, and a failure notification."""
    estate, pebble = lab
    before = served(estate, tmp_path)
    # A second challtestsrv: certfleet publishes and checks there; Pebble asks the first.
    dns_port, management = free_port(), free_port()
    other = subprocess.Popen(
        ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns_port}",
         "-management", f"127.0.0.1:{management}", "-http01", "", "-https01", "",
         "-tlsalpn01", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        sink = tmp_path / "notify.jsonl"
        monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{sink}")
        add_acme_to_inventory(estate.inventory_path, pebble, notify_env="LAB_NOTIFY_URL", dns={
            "url": f"http://127.0.0.1:{management}", "resolvers": [f"127.0.0.1:{dns_port}"]})
        _wait_for(f"http://127.0.0.1:{management}")
        code, data = run(estate, tmp_path, "renew")
    finally:
        other.terminate()
        other.wait(timeout=10)
    assert code == 1, data
    item = data["certificates"][0]  # type: ignore[index]
    assert item["action"] == "failed"
    assert item["error"].startswith("the CA could not validate ")
    assert "unauthorized" in item["error"] and "TXT" in item["error"]
    assert data["deploy"] is None
    assert served(estate, tmp_path) == before
    told = notifications(sink)
    assert [n["event"] for n in told] == ["failure"]
    assert "unauthorized" in told[0]["body"] and "No device was touched" in told[0]["body"]


def _wait_for(url: str) -> None:
    import time

    import httpx

    for _ in range(100):
        try:
            httpx.post(url + "/clear-txt", json={"host": "ready.invalid."}, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def test_renew_dry_run_changes_nothing(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path
) -> None:
    """--dry-run validates an order (stops before finalising), stores and deploys nothing."""
    estate, pebble = lab
    add_acme_to_inventory(estate.inventory_path, pebble)
    before = served(estate, tmp_path)
    code, data = run(estate, tmp_path, "renew", "--dry-run")
    assert code == 0, data
    item = data["certificates"][0]  # type: ignore[index]
    assert item["action"] == "would-issue" and item["version"] is None
    # What the real run would do once the order succeeds: deploy the new version everywhere.
    assert {d["status"] for d in item["devices"]} == {"would-deploy"}
    assert {d["device"] for d in item["devices"]} == set(estate.device_names)
    assert served(estate, tmp_path) == before
    with Store.open(tmp_path / "state") as store:
        assert len(store.versions("wildcard")) == 1
        assert len(store.keys_for("wildcard")) == 1


def test_renew_dry_run_summary_says_what_the_real_run_would_deploy(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path
) -> None:
    """--dry-run's deploy summary lists every device as would-deploy of the renewed
    certificate, never as skipped for serving the version the run would replace."""
    estate, pebble = lab
    add_acme_to_inventory(estate.inventory_path, pebble)
    result = CliRunner().invoke(app, ["renew", "--dry-run", "--inventory",
                                      str(estate.inventory_path), "--state-dir",
                                      str(tmp_path / "state")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "would-issue" in result.output
    assert "already serves" not in result.output and "skipped" not in result.output
    assert f"{len(estate.device_names)} would-deploy; exit code 0" in result.output
    for name in estate.device_names:
        assert re.search(rf"{re.escape(name)} +│ would-deploy .*would install the renewed "
                         "wildcard", result.output), result.output


def test_device_failure_is_told_with_step_outcome_and_next_command(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SBC that refuses the certificate: the others are installed, renew exits 1, and the
    failure notice names the device, the step, 'restored' and the command to run next."""
    estate, pebble = lab
    estate.sbcs["sbc1"].faults.add("500", method="PUT", path="/files/tls/*/certificate")
    sink = tmp_path / "notify.jsonl"
    monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{sink}")
    add_acme_to_inventory(estate.inventory_path, pebble, notify_env="LAB_NOTIFY_URL")
    code, data = run(estate, tmp_path, "renew")
    assert code == 1, data
    item = data["certificates"][0]  # type: ignore[index]
    assert item["action"] == "issued"
    status = {d["device"]: (d["status"], d["exit_code"]) for d in item["devices"]}
    assert status == {"ovoc": ("installed", 0), "sbc1": ("restored", 1),
                      "sbc2-ha": ("installed", 0)}
    (told,) = notifications(sink)
    assert told["event"] == "failure"
    (line,) = told["body"].splitlines()
    assert line.startswith("sbc1: failed at step install, restored: ")
    assert "answered 500" in line
    assert line.endswith("Next: certfleet deploy --only sbc1")


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_one_ordering_run_at_a_time(lab: tuple[LabEstate, LabPebble], tmp_path: Path) -> None:
    """While another process holds the renew lock, renew and issue order nothing and exit 2
    naming the holder; once that process is killed, renew orders and deploys."""
    estate, pebble = lab
    add_acme_to_inventory(estate.inventory_path, pebble)
    before = served(estate, tmp_path)
    code = (
        "import sys, time\n"
        "from certfleet.estate.store import Store\n"
        "s = Store.open(sys.argv[1]); s.acquire_lock('renew (scheduled)', name='renew')\n"
        "print('held', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "state")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for args in (("renew",), ("issue", "wildcard")):
            code_, data = run(estate, tmp_path, *args)
            assert code_ == 2, data
            assert str(data["error"]).startswith("another renew holds the lock: ")
            assert f"pid {holder.pid}" in str(data["error"])
            assert "renew (scheduled)" in str(data["error"])
        with Store.open(tmp_path / "state") as store:
            assert len(store.versions("wildcard")) == 1
        assert served(estate, tmp_path) == before
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    code_, data = run(estate, tmp_path, "renew")
    assert code_ == 0, data
    item = data["certificates"][0]  # type: ignore[index]
    assert item["action"] == "issued"
    assert served(estate, tmp_path) == {item["version"]["leaf_sha256"]}


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_renew_killed_mid_deploy_is_told_by_the_next_renew(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renew SIGKILLed while sbc1 holds the new key but not yet its certificate says
    nothing; the next renew finishes the job, exits 0 and tells the interruption: sbc1, the
    step and the next command, once."""
    estate, pebble = lab
    sink = tmp_path / "notify.jsonl"
    monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{sink}")
    add_acme_to_inventory(estate.inventory_path, pebble, notify_env="LAB_NOTIFY_URL")
    rule = estate.sbcs["sbc1"].faults.add("hang-after", method="PUT",
                                          path="/files/tls/*/privateKey")
    child = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "renew", "--json", "--inventory",
         str(estate.inventory_path), "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while rule.held == 0:
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not [n for n in notifications(sink) if n["event"] == "failure"]
    code, data = run(estate, tmp_path, "renew")
    assert code == 0, data
    item = data["certificates"][0]  # type: ignore[index]
    assert item["action"] == "none"  # ordered by the killed run; deployed by this one
    assert served(estate, tmp_path) == {item["devices"][0]["target_sha256"]}
    [told] = [n for n in notifications(sink) if n["event"] == "failure"]
    assert "interrupted" in told["title"]
    assert "sbc1: failed at step install (start)" in told["body"]
    assert "Next: certfleet verify, then certfleet deploy --only sbc1" in told["body"]
    assert run(estate, tmp_path, "renew")[0] == 0
    assert len([n for n in notifications(sink) if n["event"] == "failure"]) == 1


@pytest.mark.parametrize("kind", ["no-aki", "other-ca"])
def test_renew_replaces_a_certificate_without_aki_or_of_another_ca(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path, kind: str
) -> None:
    """The stored certificate has no Authority Key Identifier, or comes from another CA:
    renew orders from Pebble, deploys, verifies, exit 0, no traceback."""
    from certfleet.estate.importer import import_certificate
    from certfleet.inventory import load_inventory
    from certfleet.lab.ca import LabCA

    estate, pebble = lab
    add_acme_to_inventory(estate.inventory_path, pebble)
    issued = LabCA(name="factory ca").issue(days=5, authority_key_id=kind != "no-aki")
    bundle = tmp_path / "factory.pem"
    bundle.write_bytes(issued.fullchain_pem + issued.root_pem + issued.key_pem())
    with Store.open(tmp_path / "state") as store:
        import_certificate(load_inventory(estate.inventory_path), store, "wildcard", [bundle])
    result = CliRunner().invoke(app, ["renew", "--json", "--inventory",
                                      str(estate.inventory_path),
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    data = json.loads(result.stdout)
    item = data["certificates"][0]
    assert item["action"] == "issued" and item["due"] is True
    assert {d["status"] for d in item["devices"]} == {"installed"}
    assert served(estate, tmp_path) == {item["version"]["leaf_sha256"]}


@pytest.mark.parametrize("command", ["renew", "issue"])
def test_renew_and_issue_crash_is_never_silent(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """An unexpected exception while ordering: one line naming the crash report, the failure
    notification, exit 1 (no device was being changed), no traceback."""
    import certfleet.estate.issue

    estate, pebble = lab
    sink = tmp_path / "notify.jsonl"
    monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{sink}")
    add_acme_to_inventory(estate.inventory_path, pebble, notify_env="LAB_NOTIFY_URL")

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(certfleet.estate.issue, "issue_certificate", boom)
    args = ["renew", "--force"] if command == "renew" else ["issue", "wildcard"]
    result = CliRunner().invoke(app, [*args, "--inventory", str(estate.inventory_path),
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (report,) = (tmp_path / "state").glob("crash-*.txt")
    (line,) = [x for x in result.stderr.splitlines() if "crash report" in x]
    assert str(report) in line and "KeyError" in line
    assert "KeyError: 'boom'" in report.read_text()
    (told,) = [n for n in notifications(sink) if n["event"] == "failure"]
    assert f"certfleet {command} stopped on an unexpected KeyError" in told["body"]
    assert f"Next: certfleet {command} again" in told["body"]
