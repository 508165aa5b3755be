"""Trust is checked inside every TLS handshake: a man in the middle who relays the
first connection and answers the next ones himself never receives a request byte."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from certfleet.drivers.sbc import SbcDriver
from certfleet.estate.deploy import run_deploy
from certfleet.estate.devices import make_factory
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.estate import LabEstate
from certfleet.lab.sbc import LabSbc
from certfleet.pki.model import cert_sha256
from lab_support import import_old_and_renewed
from mitm import MitmProxy
from sbc_support import bundle_of, deploy


@pytest.fixture(scope="module")
def impostor(lab_ca: LabCA) -> Issued:
    """Another certificate from the same CA: only a pin tells it apart."""
    return lab_ca.issue(("127.0.0.1", "sbc-mitm"), key_type="ec-p256")


@pytest.fixture()
def sbc() -> Iterator[LabSbc]:
    with LabSbc("sbc-mitm") as device:
        device.faults.close_connections = True  # every request opens a new connection
        yield device


@pytest.fixture()
def proxy(sbc: LabSbc, impostor: Issued, tmp_path: Path) -> Iterator[MitmProxy]:
    with MitmProxy(sbc.port, impostor.leaf_pem, impostor.key_pem(), tmp_path / "mitm") as mitm:
        yield mitm


def _assert_nothing_reached(proxy: MitmProxy) -> None:
    proxy.settle()  # the proxy's threads may still be finishing the impostor's handshake
    assert proxy.relayed == 1
    assert proxy.impostor_handshakes >= 1, "the impostor was never reached"
    assert proxy.bytes_received == 0, proxy.received


def test_driver_deploy_sends_nothing_to_the_impostor(
    sbc: LabSbc, proxy: MitmProxy, impostor: Issued, issued: Issued
) -> None:
    before = sbc.context(0)
    driver = SbcDriver(sbc.name, f"https://127.0.0.1:{proxy.port}", password=sbc.password,
                       contexts=(0,), pin_sha256=sbc.management_sha256, timeout=5.0,
                       verify_timeout=2.0, busy_delay=0.01)
    outcome = deploy(driver, bundle_of(issued), allow_no_rollback=True)
    assert outcome.outcome == "refused", outcome.message
    assert cert_sha256(impostor.leaf) in outcome.message
    assert "before sending anything" in outcome.message
    assert sbc.context(0) == before
    _assert_nothing_reached(proxy)


@pytest.mark.parametrize("command", ["status", "deploy"])
def test_cli_sends_nothing_to_the_impostor(
    sbc_app: typer.Typer, sbc: LabSbc, proxy: MitmProxy, impostor: Issued, issued: Issued,
    tmp_path: Path, command: str,
) -> None:
    conn = ["--url", f"https://127.0.0.1:{proxy.port}", "--password-env", "SBC_PW",
            "--pin-sha256", sbc.management_sha256, "--timeout", "5"]
    if command == "deploy":
        files = tmp_path / "new.pem"
        files.write_bytes(issued.fullchain_pem + issued.root_pem + issued.key_pem())
        args = ["deploy", str(files), *conn, "--context", "0", "--allow-no-rollback",
                "--verify", f"127.0.0.1:{sbc.sip_port}"]
    else:
        args = ["status", *conn]
    before = sbc.context(0)
    result = CliRunner(env={"SBC_PW": sbc.password}).invoke(sbc_app, ["sbc", *args])
    # deploy: refused before any change (2); status: the device error of the exit table (3)
    assert result.exit_code == (2 if command == "deploy" else 3), result.output
    assert cert_sha256(impostor.leaf) in " ".join(result.output.split())
    assert "--pin-sha256" in result.output
    assert sbc.context(0) == before
    _assert_nothing_reached(proxy)


def test_estate_deploy_sends_nothing_to_the_impostor(tmp_path: Path, impostor: Issued) -> None:
    lab = LabEstate(tmp_path / "lab", sbcs=1, ha=False, ovoc=False, key_type="ec-p256")
    lab.start()
    try:
        sbc = lab.sbcs["sbc1"]
        sbc.faults.close_connections = True
        with MitmProxy(sbc.port, impostor.leaf_pem, impostor.key_pem(),
                       tmp_path / "mitm") as proxy, lab.environment():
            text = lab.inventory_path.read_text()
            text = text.replace(f"port = {sbc.port}", f"port = {proxy.port}")
            text = text.replace('ca_file = "lab-sbc-ca.pem"',
                                f'tls_pin = "{sbc.management_sha256}"')
            inventory = parse_inventory(text, lab.inventory_path)
            before = sbc.context(1)
            with Store.open(tmp_path / "state") as store:
                import_old_and_renewed(lab, store, inventory, tmp_path)
                report = asyncio.run(run_deploy(inventory, store, make_factory(store)))
            result = report.results[0]
            assert result.status == "refused", result
            assert cert_sha256(impostor.leaf) in str(result.message)
            assert sbc.context(1) == before
            _assert_nothing_reached(proxy)
    finally:
        lab.stop()
