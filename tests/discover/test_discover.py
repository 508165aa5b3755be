"""``certfleet discover`` of a spread lab: pins without credentials, the inventory with them,
credentials only to proven hosts, read-only, and the discovered inventory put to use."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from certfleet.cli.app import app
from certfleet.inventory import Inventory, load_inventory
from certfleet.lab.estate import SPREAD_SBC_PASSWORD, LabEstate
from certfleet.lab.sbc import LabSbc
from certfleet.pki.model import cert_sha256


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabEstate]:
    """The lab spread over a /28 of its own (a random one: other runs may share the host)."""
    network = f"127.{random.randint(64, 250)}.{random.randint(0, 250)}.0/28"
    estate = LabEstate(tmp_path_factory.mktemp("spread-lab"), sbcs=3, spread=network)
    estate.env["CERTFLEET_LAB_PFX_PASSWORD"] = "pfx-Pa55"
    with estate:
        yield estate


def target(lab: LabEstate) -> str:
    assert lab.spread is not None
    ports = ",".join(str(lab.spread.ports[r]) for r in ("https", "sip", "teams", "ssh"))
    return f"{lab.spread.network}:{ports}"


def units(lab: LabEstate) -> list[LabSbc]:
    return [*lab.sbcs.values(), *(u for p in lab.pairs.values() for u in p.units)]


def run(lab: LabEstate, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner(env={**lab.env, "COLUMNS": "200", **(env or {})})
    return runner.invoke(app, list(args), catch_exceptions=False)


def discover(lab: LabEstate, out: Path, *extra: str) -> Result:
    for unit in units(lab):
        unit.requests.clear()
    return run(lab, "discover", target(lab), "--out", str(out), "--timeout", "5", *extra)


def with_credentials(pins: Path) -> tuple[str, ...]:
    return ("--pins-from", str(pins), "--sbc-password-env", SPREAD_SBC_PASSWORD,
            "--ssh-password-env", "CERTFLEET_LAB_OVOC_PASSWORD")


@pytest.fixture(scope="module")
def pins_file(lab: LabEstate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pins") / "discovered.toml"
    result = discover(lab, out)
    assert result.exit_code == 0, result.output
    return out


def by_address(inventory: Inventory) -> dict[str, dict[str, object]]:
    """What a device means, by address: kind, contexts, listeners and its certificate's
    fellow devices (the grouping, whatever the names)."""
    meaning: dict[str, dict[str, object]] = {}
    for device in inventory.devices.values():
        fellows = {d.address for d in inventory.devices_using(device.certificate)}
        spec = inventory.certificates[device.certificate]
        meaning[device.address] = {
            "kind": device.kind,
            "contexts": tuple(device.tls_contexts) if device.kind == "sbc" else None,
            "listeners": {(li.host, li.port) for li in device.listeners},
            "fellows": fellows,
            "names": set(spec.names),
        }
    return meaning


def test_without_credentials_the_pins_are_written_and_no_login_is_tried(
    lab: LabEstate, pins_file: Path
) -> None:
    """Without credentials the inventory holds every pin, marked first seen by discovery,
    and the SBCs answered only unauthenticated GETs (401)."""
    text = pins_file.read_text()
    assert lab.ovoc is not None and lab.ovoc.host_key_sha256 in text
    for unit in units(lab):
        if unit.unit_role != "standby":
            assert unit.management_sha256 in text
    assert text.count("SHA-256: first seen by discovery") == 4  # 3 SBCs (one HA pair), OVOC
    assert lab.env[SPREAD_SBC_PASSWORD] not in text
    assert "intranet.example.net" in text  # the listener nobody manages
    requests = [r for unit in units(lab) for r in unit.requests]
    assert requests and all(method == "GET" and status == 401 for method, _, status in requests)


def test_with_pins_and_credentials_the_inventory_means_the_labs_own(
    lab: LabEstate, pins_file: Path, tmp_path: Path
) -> None:
    """Devices, kinds, contexts, listeners and certificate grouping equal the lab's own;
    no lab device recorded a write request."""
    out = tmp_path / "certfleet.toml"
    result = discover(lab, out, *with_credentials(pins_file))
    assert result.exit_code == 0, result.output
    found = by_address(load_inventory(out))
    own = by_address(load_inventory(lab.inventory_path))
    assert found == own
    requests = [r for unit in units(lab) for r in unit.requests]
    assert {method for method, _, _ in requests} == {"GET"}
    assert any(status == 200 for _, _, status in requests)
    assert "TRUST ON FIRST USE" not in out.read_text()


def test_a_host_whose_pin_does_not_match_gets_no_password(
    lab: LabEstate, pins_file: Path, tmp_path: Path
) -> None:
    """sbc2's pin changed in the pins file: sbc2 is asked nothing with a password, the other
    SBCs are logged in to."""
    sbc2 = lab.sbcs["sbc2"]
    pins = tmp_path / "pins.toml"
    pins.write_text(pins_file.read_text().replace(sbc2.management_sha256, "00" * 32))
    out = tmp_path / "certfleet.toml"
    result = discover(lab, out, *with_credentials(pins), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    sent = {where.rsplit(":", 1)[0] for where in data["credentials_sent_to"]}
    assert sbc2.host not in sent and lab.sbcs["sbc1"].host in sent
    assert sbc2.requests and all(status == 401 for _, _, status in sbc2.requests)
    assert any(status == 200 for _, _, status in lab.sbcs["sbc1"].requests)


def test_ranges_larger_than_a_16_are_refused_and_out_is_never_overwritten(
    lab: LabEstate, pins_file: Path
) -> None:
    """A /15 needs --force; an existing --out is kept: exit 2, one line each."""
    big = run(lab, "discover", "10.0.0.0/15")
    assert big.exit_code == 2 and "--force" in big.output
    kept = run(lab, "discover", target(lab), "--out", str(pins_file))
    assert kept.exit_code == 2 and "--force" in kept.output


def test_adopt_plan_probe_and_deploy_work_on_the_discovered_inventory(
    lab: LabEstate, pins_file: Path, tmp_path: Path
) -> None:
    """The discovered inventory takes last year's pfx, rehearses, and deploys a renewal."""
    from certfleet.cli.lab import _write_last_year_pfx

    assert lab.ovoc is not None
    inventory = tmp_path / "certfleet.toml"
    assert discover(lab, inventory, *with_credentials(pins_file)).exit_code == 0
    [name] = load_inventory(inventory).certificates
    env = {"CERTFLEET_INVENTORY": str(inventory), "CERTFLEET_STATE_DIR": str(tmp_path / "st"),
           "CERTFLEET_OVOC_ROOT_PASSWORD": lab.ovoc.root_password,
           "CERTFLEET_OVOC_KEYSTORE_PASSWORD": "keystore-Pa55"}
    pfx = _write_last_year_pfx(lab)
    adopted = run(lab, "adopt", name, str(pfx), "--password-env", "CERTFLEET_LAB_PFX_PASSWORD",
                  env=env)
    assert adopted.exit_code == 0, adopted.output
    probed = run(lab, "plan", "--probe", env=env)
    assert probed.exit_code == 0, probed.output
    renewal = tmp_path / "renewal"
    made = run(lab, "csr", name, "--out-dir", str(renewal), env=env)
    assert made.exit_code == 0, made.output
    csr = next(renewal.glob("*.csr"))
    signed = run(lab, "lab", "sign", str(csr), "--dir", str(lab.directory), "--out-dir",
                 str(renewal), env=env)
    assert signed.exit_code == 0, signed.output
    imported = run(lab, "import", name, *map(str, sorted(renewal.glob("*.crt"))),
                   *map(str, sorted(renewal.glob("*.p7b"))), env=env)
    assert imported.exit_code == 0, imported.output
    deployed = run(lab, "deploy", env=env)
    assert deployed.exit_code == 0, deployed.output
    assert lab.sbcs["sbc2"].served_sha256("sip") != cert_sha256(lab.old.leaf)
    verified = run(lab, "verify", env=env)
    assert verified.exit_code == 0, verified.output
