"""``certfleet exporter``: /metrics read with curl and parsed by prometheus_client's parser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from _tools import require_tool
from certfleet.cli.app import app
from certfleet.drivers.base import DeployOutcome
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.fsutil import write_private_file
from certfleet.inventory import load_inventory
from certfleet.lab.estate import LabEstate

CERT_LABELS = {"device", "listener", "subject_CN", "issuer_CN", "serial_number"}
NAMES = {"x509_cert_not_after", "x509_cert_not_before", "x509_cert_expired",
         "certfleet_listener_up", "certfleet_listener_current_version",
         "certfleet_chain_not_after", "certfleet_scan_duration_seconds",
         "certfleet_last_deploy_timestamp_seconds", "certfleet_last_deploy_outcome"}


@pytest.fixture()
def state(lab: LabEstate, tmp_path: Path) -> Path:
    """A state store whose current version is what the lab serves, and one deploy of sbc1."""
    where = tmp_path / "state"
    previous = tmp_path / "previous.pem"
    write_private_file(previous, lab.old.fullchain_pem + lab.old.key_pem())
    with Store.open(where) as store:
        import_certificate(load_inventory(lab.inventory_path), store, "wildcard", [previous])
        store.record_deployment(
            run_id=None, device="sbc1", kind="sbc", certificate="wildcard", version_id=None,
            outcome=DeployOutcome("sbc1", "refused", "preflight refused the files"),
            started="2026-01-01T00:00:00+00:00")
    return where


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _check(text: str, lab: LabEstate) -> None:
    samples = _samples(text)
    assert set(samples) >= NAMES
    listed = set(lab.tls_ports) - set(lab.unlisted_ports)
    for labels, value in samples["x509_cert_not_after"]:
        assert set(labels) == CERT_LABELS
        if labels["device"]:
            assert labels["subject_CN"] == "*.example.com"
            assert labels["serial_number"] == format(lab.old.leaf.serial_number, "x")
            assert value == lab.old.leaf.not_valid_after_utc.timestamp()
    seen = {labels["listener"] for labels, _ in samples["x509_cert_not_after"]}
    assert seen == {f"127.0.0.1:{p}" for p in lab.tls_ports}
    assert all(v == 0 for _, v in samples["x509_cert_expired"])
    up = {labels["listener"]: v for labels, v in samples["certfleet_listener_up"]}
    assert set(up.values()) == {1.0}  # mutual-TLS listeners count as up
    current = {labels["listener"]: v for labels, v in samples["certfleet_listener_current_version"]}
    assert current == {f"127.0.0.1:{p}": 1.0 for p in listed}
    [(labels, value)] = samples["certfleet_last_deploy_outcome"]
    assert labels == {"device": "sbc1", "outcome": "refused"} and value == 1
    [(labels, stamp)] = samples["certfleet_last_deploy_timestamp_seconds"]
    assert labels == {"device": "sbc1"} and stamp > 1.7e9
    [(_, duration)] = samples["certfleet_scan_duration_seconds"]
    assert duration > 0


@pytest.fixture()
def exporter(lab: LabEstate, state: Path) -> Iterator[str]:
    """A running exporter on a free port; yields the /metrics URL once the first scan is in."""
    env = {**os.environ, "CERTFLEET_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "exporter", "--listen", "127.0.0.1:0",
         "--interval", "3600", "--inventory-file", str(lab.inventory_path),
         "--target", f"127.0.0.1:{lab.unlisted_ports[0]}",
         "--ca-bundle", str(lab.ca_path), "--ca-bundle", str(lab.sbc_ca_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # A watchdog: the exporter never outlives the test, even if it hangs before serving.
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving metrics on " in line, line + (proc.stderr.read() if proc.stderr else "")
        yield line.split("serving metrics on ", 1)[1].split()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        watchdog.cancel()


@pytest.mark.oracle
def test_metrics_served_and_parsed(lab: LabEstate, exporter: str) -> None:
    curl = require_tool("curl")
    body = subprocess.run([curl, "-sS", "--fail", exporter], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    _check(body, lab)


def test_textfile(lab: LabEstate, state: Path, tmp_path: Path) -> None:
    out = tmp_path / "certfleet.prom"
    result = CliRunner(env={"CERTFLEET_STATE_DIR": str(state)}).invoke(app, [
        "exporter", "--textfile", str(out), "--inventory-file", str(lab.inventory_path),
        "--target", f"127.0.0.1:{lab.unlisted_ports[0]}", "--ca-bundle", str(lab.ca_path),
        "--ca-bundle", str(lab.sbc_ca_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _check(out.read_text(), lab)


def test_bad_listen_address(lab: LabEstate, state: Path) -> None:
    result = CliRunner(env={"CERTFLEET_STATE_DIR": str(state)}).invoke(app, [
        "exporter", "--listen", "localhost", "--inventory-file", str(lab.inventory_path)])
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_nothing_to_export_names_only_exporter_options(tmp_path: Path) -> None:
    """--no-inventory without --target: the tip names --target, only options of exporter."""
    from hint_support import COMMANDS, FLAG

    result = CliRunner(env={"CERTFLEET_STATE_DIR": str(tmp_path / "state"),
                            "COLUMNS": "200"}).invoke(app, ["exporter", "--no-inventory"])
    assert result.exit_code == 2, result.output
    assert "nothing to scan" in result.output and "--target" in result.output
    named = set(FLAG.findall(result.output))
    assert named and named <= COMMANDS["exporter"], named - COMMANDS["exporter"]


def test_inventory_file_as_plan_and_deploy_take_it(
    lab: LabEstate, state: Path, tmp_path: Path
) -> None:
    """exporter --inventory FILE reads that inventory, as --inventory-file FILE does."""
    out = tmp_path / "certfleet.prom"
    result = CliRunner(env={"CERTFLEET_STATE_DIR": str(state)}).invoke(app, [
        "exporter", "--textfile", str(out), "--inventory", str(lab.inventory_path),
        "--target", f"127.0.0.1:{lab.unlisted_ports[0]}", "--ca-bundle", str(lab.ca_path),
        "--ca-bundle", str(lab.sbc_ca_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _check(out.read_text(), lab)


def test_inventory_and_no_inventory_exclude_each_other(lab: LabEstate, tmp_path: Path) -> None:
    """exporter --inventory FILE --no-inventory: exit 2, the tip names exporter options only."""
    from hint_support import COMMANDS, FLAG

    result = CliRunner(env={"CERTFLEET_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
                       ).invoke(app, ["exporter", "--inventory", str(lab.inventory_path),
                                      "--no-inventory", "--target", "127.0.0.1:1"])
    assert result.exit_code == 2 and "exclude each other" in result.output, result.output
    assert set(FLAG.findall(result.output)) <= COMMANDS["exporter"]
