"""Never "verified" without a handshake; every listener against its own previous certificate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
from certfleet.errors import ConfigError
from certfleet.estate.deploy import run_deploy
from certfleet.estate.importer import import_certificate
from certfleet.estate.rollback import rollback_device
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.pki.model import cert_sha256
from loopdev import LoopEstate


def _served(port: int) -> str:
    return cert_sha256(asyncio.run(fetch_served_certificate(Listener("127.0.0.1", port))))


def _two_listener_estate(estate: LoopEstate) -> tuple[str, str]:
    """sbc1 is verified on its own port and on sbc2's, which serves another certificate."""
    other = estate.ca.issue(("*.example.com", "example.com"), key_type="ec-p256", days=9)
    estate.devices["sbc2"].slot.set(other.leaf_pem, other.key_pem(), other.chain_pem)
    p1, p2 = estate.devices["sbc1"].port, estate.devices["sbc2"].port
    text = estate.path.read_text().replace(f"listeners = [{p1}]", f"listeners = [{p1}, {p2}]")
    estate.path.write_text(text)
    return cert_sha256(estate.old.leaf), cert_sha256(other.leaf)


def test_each_listener_is_verified_against_its_own_previous_certificate(
    loop_estate: LoopEstate, tmp_path: Path
) -> None:
    """A failed deploy, then `rollback`: both verify each listener against what *it* served."""
    old1, old2 = _two_listener_estate(loop_estate)
    p1, p2 = loop_estate.devices["sbc1"].port, loop_estate.devices["sbc2"].port
    with Store.open(tmp_path / "state") as store:
        issued, path = loop_estate.write_renewed(tmp_path)
        inventory = loop_estate.inventory()
        import_certificate(inventory, store, "wildcard", [path])
        # sbc2's port never serves the new certificate: verify fails, rollback follows.
        loop_estate.devices["sbc1"].verify_timeout = 0.5  # expected to fail: no long wait
        report = asyncio.run(run_deploy(inventory, store, loop_estate.factory, only=["sbc1"]))
        (result,) = report.results
        assert (result.status, result.exit_code) == ("restored", 1), result.message
        assert result.served_after == {f"127.0.0.1:{p1}": old1, f"127.0.0.1:{p2}": old2}
        assert _served(p1) == old1 and _served(p2) == old2
        backup = store.read_backup(store.last_backup("sbc1"))  # type: ignore[arg-type]
        assert backup.meta["listeners_served"] == {
            f"127.0.0.1:{p1}": old1, f"127.0.0.1:{p2}": old2}

        # Put the new certificate on sbc1 by hand, then roll back with the command's code.
        loop_estate.devices["sbc1"].slot.set(issued.leaf_pem, issued.key_pem(),
                                             issued.chain_pem)
        back = asyncio.run(rollback_device(inventory, store, loop_estate.factory, "sbc1"))
        assert back.ok and back.exit_code == 0, back.message
        assert "verified by handshake on 2 listener(s)" in back.message
        assert back.served_after == {f"127.0.0.1:{p1}": old1, f"127.0.0.1:{p2}": old2}


def test_rollback_without_backup_or_with_the_lock_held_exits_2(
    loop_estate: LoopEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing on the device is touched: exit 2, not 3."""
    state = tmp_path / "state"
    monkeypatch.setenv("LOOP_SBC_PASSWORD", "unused")
    runner = CliRunner()
    args = ["rollback", "sbc1", "--inventory", str(loop_estate.path), "--state-dir", str(state)]
    none = runner.invoke(app, args)
    assert none.exit_code == 2, none.output
    assert "no backup of 'sbc1'" in none.output
    with Store.open(state) as store:
        loop_estate.import_renewed(store, tmp_path)
        asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory,
                               only=["sbc1"]))
        store.acquire_lock("deploy")  # held by this store (an OS lock) until it closes
        locked = runner.invoke(app, args)
    assert locked.exit_code == 2, locked.output
    assert "holds the lock" in locked.output
    assert "Traceback" not in locked.output


def test_inventory_device_without_listeners_is_an_error(tmp_path: Path) -> None:
    """An empty listener list is an inventory error; no list at all derives one."""
    base = (
        '[certificates.wildcard]\ncn = "*.example.com"\n\n'
        '[devices.sbc1]\nkind = "sbc"\naddress = "10.0.0.5"\nport = 8443\n'
        'certificate = "wildcard"\n'
    )
    derived = parse_inventory(base, tmp_path / "certfleet.toml")
    assert [str(item) for item in derived.devices["sbc1"].listeners] == ["10.0.0.5:8443"]
    with pytest.raises(ConfigError) as raised:
        parse_inventory(base + "listeners = []\n", tmp_path / "certfleet.toml")
    assert "listeners" in raised.value.message


def test_rollback_with_nothing_served_before_is_not_called_verified(
    loop_estate: LoopEstate, tmp_path: Path
) -> None:
    """A backup taken while no listener served anything: restored, NOT verified, exit 3."""
    import json

    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        inventory = loop_estate.inventory()
        asyncio.run(run_deploy(inventory, store, loop_estate.factory, only=["sbc1"]))
        record = store.last_backup("sbc1")
        assert record is not None
        manifest = json.loads((record.dir / "backup.json").read_text())
        manifest["meta"]["listeners_served"] = dict.fromkeys(
            manifest["meta"]["listeners_served"])
        (record.dir / "backup.json").write_text(json.dumps(manifest))
        back = asyncio.run(rollback_device(inventory, store, loop_estate.factory, "sbc1"))
        assert not back.ok and back.touched and back.exit_code == 3
        assert "NOT verified" in back.message
        assert "and verified" not in back.message
