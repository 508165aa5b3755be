"""``certfleet scan`` of the lab: table, JSON and CSV, errors as data, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from certfleet.cli.app import app
from certfleet.lab.estate import LabEstate
from certfleet.lab.tls import free_port
from certfleet.pki.model import cert_sha256

LEAF_FIELDS = {"subject", "sans", "issuer", "serial", "sha256", "not_after", "days_left",
               "key_type", "key_size", "signature_algorithm"}
TOP_FIELDS = {"target", "ok", "error", "leaf", "chain_not_after", "tls_version", "cipher",
              "trusted", "name_match", "client_cert_requested"}


def run(*args: str, state: Path) -> Result:
    runner = CliRunner(env={"CERTFLEET_STATE_DIR": str(state), "COLUMNS": "200"})
    return runner.invoke(app, ["scan", *args], catch_exceptions=False)


def inventory_ports(lab: LabEstate) -> set[int]:
    return set(lab.tls_ports) - set(lab.unlisted_ports)


def test_json_lists_every_listener_with_the_fields(
    lab: LabEstate, lab_args: list[str], empty_state: Path
) -> None:
    result = run(*lab_args, "--json", state=empty_state)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["port"] for r in rows} == set(lab.tls_ports)
    for row in rows:
        assert set(row) >= TOP_FIELDS and set(row["leaf"]) >= LEAF_FIELDS
        assert row["ok"] and row["error"] is None and row["trusted"] is True
        assert row["leaf"]["key_type"] == "rsa" and row["leaf"]["key_size"] == 2048
        assert row["chain_not_after"] and row["tls_version"] and row["cipher"]
    [unlisted] = [r for r in rows if r["listed"] is False]
    assert unlisted["port"] in lab.unlisted_ports and unlisted["device"] is None
    listed = [r for r in rows if r["listed"]]
    assert {r["port"] for r in listed} == inventory_ports(lab)
    assert all(r["name_match"] is True for r in listed)
    assert all(r["leaf"]["sha256"] == cert_sha256(lab.old.leaf) for r in listed)
    teams = {r["label"]: r for r in listed if "teams" in r["label"]}
    assert teams["teams"]["client_cert_requested"] and teams["teams"]["tls_version"] == "TLSv1.3"
    for label in ("teams-a", "teams-b"):
        assert teams[label]["client_cert_requested"]
        assert teams[label]["tls_version"] == "TLSv1.2"
        assert teams[label]["handshake_completed"] is False
    sip = [r for r in listed if r["label"].startswith("sip")]
    assert sip and not any(r["client_cert_requested"] for r in sip)
    days = [r["leaf"]["days_left"] for r in rows]
    assert days == sorted(days)  # sorted by days left


def test_table_shows_mtls_and_the_unlisted_listener(
    lab: LabEstate, lab_args: list[str], empty_state: Path
) -> None:
    result = run(*lab_args, state=empty_state)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for port in lab.tls_ports:
        assert f"127.0.0.1:{port}" in text
    assert "mTLS" in text and "not in the inventory" in text
    assert f"{len(lab.tls_ports)} endpoints" in text and "1 serving TLS but not in" in text


def test_a_devices_management_port_is_its_listener_not_a_stray(
    lab: LabEstate, empty_state: Path
) -> None:
    """A target on an SBC's management port (the inventory's `port`) is that device's
    management listener: listed, labelled so, and the table never calls it unlisted."""
    sbc1 = lab.sbcs["sbc1"]
    args = ["--inventory", "--inventory-file", str(lab.inventory_path),
            f"127.0.0.1:{sbc1.port}", "--ca-bundle", str(lab.sbc_ca_path),
            "--ca-bundle", str(lab.ca_path)]
    result = run(*args, "--json", state=empty_state)
    assert result.exit_code == 0, result.output
    [row] = [r for r in json.loads(result.stdout) if r["port"] == sbc1.port]
    assert row["listed"] is True and row["device"] == "sbc1" and row["label"] == "management"
    assert row["ok"] and row["leaf"]["subject"] == "CN=sbc1.lab.invalid"
    table = run(*args, state=empty_state).stdout
    assert "sbc1 management" in table and "not in the inventory" not in table, table


def test_csv_has_one_row_per_endpoint(
    lab: LabEstate, lab_args: list[str], empty_state: Path
) -> None:
    result = run(*lab_args, "--csv", state=empty_state)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {int(r["port"]) for r in rows} == set(lab.tls_ports)
    for name in ("target", "ok", "error", "chain_not_after", "tls_version", "cipher", "trusted",
                 "name_match", "client_cert_requested", *(f"leaf_{f}" for f in LEAF_FIELDS)):
        assert name in rows[0]
    assert {r["ok"] for r in rows} == {"true"}
    assert {r["leaf_sha256"] for r in rows if r["listed"] == "true"} == {cert_sha256(lab.old.leaf)}


def test_untrusted_and_unreachable_are_data_and_exit_1(lab: LabEstate, empty_state: Path) -> None:
    """Without the lab CA the chain is not trusted; a closed port is an error row."""
    closed = free_port()
    port = lab.tls_ports[0]
    result = run(f"127.0.0.1:{port},{closed}", "--json", "--timeout", "5", state=empty_state)
    assert result.exit_code == 1, result.output
    rows = {r["port"]: r for r in json.loads(result.stdout)}
    assert rows[port]["leaf"] and rows[port]["trusted"] is False and not rows[port]["ok"]
    assert "not trusted" in rows[port]["problems"]
    assert rows[closed]["leaf"] is None and rows[closed]["error"] and not rows[closed]["ok"]


def test_cidr_range_and_target_file(lab: LabEstate, tmp_path: Path, empty_state: Path) -> None:
    """127.0.0.1/30 covers .1 and .2; the file's comments and blank lines are skipped."""
    port = lab.unlisted_ports[0]
    targets = tmp_path / "targets.txt"
    targets.write_text(f"# the forgotten listener\n\n127.0.0.1/30:{port}\n")
    result = run("--from-file", str(targets), "--json", "--ca-bundle", str(lab.sbc_ca_path),
                 "--timeout", "5", state=empty_state)
    rows = {r["host"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"127.0.0.1", "127.0.0.2"}
    assert rows["127.0.0.1"]["ok"] and rows["127.0.0.1"]["name_match"] is None
    assert not rows["127.0.0.2"]["ok"]  # nothing listens there
    assert result.exit_code == 1


def test_sni_is_sent_and_matched(lab: LabEstate, empty_state: Path) -> None:
    port = sorted(inventory_ports(lab))[0]
    good = run(f"127.0.0.1:{port}", "--sni", "sbc1.example.com", "--ca-bundle", str(lab.ca_path),
               "--json", state=empty_state)
    assert good.exit_code == 0 and json.loads(good.stdout)[0]["name_match"] is True
    bad = run(f"127.0.0.1:{port}", "--sni", "other.org", "--ca-bundle", str(lab.ca_path),
              "--json", state=empty_state)
    assert bad.exit_code == 1
    [row] = json.loads(bad.stdout)
    assert row["name_match"] is False and row["sni"] == "other.org"


@pytest.mark.parametrize("target", ["127.0.0.1:99999", "127.0.0.1/33:443", "host:https",
                                    "127.0.0.1:5-1"])
def test_bad_target_is_a_one_line_error(target: str, empty_state: Path) -> None:
    result = run(target, state=empty_state)
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
    assert "Tip:" in result.output


def test_nothing_to_scan(empty_state: Path) -> None:
    result = run(state=empty_state)
    assert result.exit_code == 2 and "nothing to scan" in result.output


def _scanned(result: Result) -> dict[int, dict[str, object]]:
    assert result.exit_code == 0, result.output
    return {r["port"]: r for r in json.loads(result.stdout)}


@pytest.mark.parametrize("form", ["--inventory FILE", "--inventory=FILE", "TARGET --inventory FILE",
                                  "--inventory COPY"])
def test_inventory_takes_a_file_as_plan_and_deploy_do(
    form: str, lab: LabEstate, tmp_path: Path, empty_state: Path
) -> None:
    """scan --inventory FILE (any spelling) scans that inventory's listeners, and the target."""
    copy = tmp_path / "estate.inventory"  # an existing file, whatever its name
    copy.write_bytes(lab.inventory_path.read_bytes())
    port = lab.unlisted_ports[0]
    words = {"FILE": str(lab.inventory_path), "COPY": str(copy), "TARGET": f"127.0.0.1:{port}"}
    args = [words.get(w, w) for w in form.replace("=FILE", f"={lab.inventory_path}").split()]
    rows = _scanned(run(*args, "--json", "--ca-bundle", str(lab.ca_path),
                        "--ca-bundle", str(lab.sbc_ca_path), state=empty_state))
    listed = {p for p, r in rows.items() if r["listed"]}
    assert listed == inventory_ports(lab)
    assert (port in rows) == ("TARGET" in form)


def test_bare_inventory_switch_leaves_a_target_after_it(lab: LabEstate, empty_state: Path) -> None:
    """scan --inventory HOST:PORT --inventory-file FILE: the switch, then a target, as before."""
    port = lab.unlisted_ports[0]
    rows = _scanned(run("--inventory", f"127.0.0.1:{port}", "--inventory-file",
                        str(lab.inventory_path), "--json", "--ca-bundle", str(lab.ca_path),
                        "--ca-bundle", str(lab.sbc_ca_path), state=empty_state))
    assert set(rows) == inventory_ports(lab) | {port}


def test_inventory_file_that_does_not_exist(tmp_path: Path, empty_state: Path) -> None:
    """scan --inventory missing.toml: a one-line error naming the file, exit 2."""
    missing = tmp_path / "missing.toml"
    result = run("--inventory", str(missing), state=empty_state)
    assert result.exit_code == 2, result.output
    assert "missing.toml" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
