"""The estate deploy: decided by handshake, canary first, parallel, faults contained."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from certfleet.drivers.base import StepEvent
from certfleet.errors import StateError
from certfleet.estate.deploy import run_deploy, worst_exit_code
from certfleet.estate.store import Store
from certfleet.pki.model import cert_sha256
from loopdev import STEPS, LoopEstate


def test_worst_exit_code_ranking() -> None:
    """The run's exit code ranks 3 > 1 > 2 > 0."""
    assert worst_exit_code([0, 2, 1]) == 1
    assert worst_exit_code([2, 3, 1]) == 3
    assert worst_exit_code([0, 2]) == 2
    assert worst_exit_code([]) == 0


def test_deploy_all_then_skip_by_handshake(
    loop_estate: LoopEstate, tmp_path: Path, store_backend: str
) -> None:
    """Every device gets the new version; a second run skips them all by handshake.

    On each backend of the store (SQLite, PostgreSQL).
    """
    events: list[StepEvent] = []
    with Store.open(tmp_path / "state") as store:
        version = loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(
            run_deploy(loop_estate.inventory(), store, loop_estate.factory, on_event=events.append)
        )
        assert report.exit_code == 0
        assert [r.status for r in report.results] == ["installed"] * 3
        for name in loop_estate.devices:
            assert loop_estate.served(name) == version.leaf_sha256
        first = report.results[0]
        assert set(first.served_before.values()) == {cert_sha256(loop_estate.old.leaf)}
        assert set(first.served_after.values()) == {version.leaf_sha256}
        assert {e.step for e in events} >= {"observe", "connect", "backup", "install", "verify"}
        run = store.run(report.run_id or 0)
        assert run is not None and run["inventory_text"] == loop_estate.path.read_text()
        assert len(store.backups()) == 3

        again = asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory))
        assert [r.status for r in again.results] == ["skipped"] * 3
        assert sum(d.installs for d in loop_estate.devices.values()) == 3
        forced = asyncio.run(
            run_deploy(
                loop_estate.inventory(), store, loop_estate.factory, only=["sbc2"], force=True
            )
        )
        assert [(r.device, r.status) for r in forced.results] == [("sbc2", "installed")]


def test_dry_run_changes_nothing(loop_estate: LoopEstate, tmp_path: Path) -> None:
    """--dry-run reports what would be deployed and touches no device."""
    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(
            run_deploy(loop_estate.inventory(), store, loop_estate.factory, dry_run=True)
        )
        assert [r.status for r in report.results] == ["would-deploy"] * 3
        assert sum(d.installs for d in loop_estate.devices.values()) == 0
        assert store.deployments() == []


def test_failed_canary_stops_the_run(loop_estate: LoopEstate, tmp_path: Path) -> None:
    """When the canary fails, no other device is attempted."""
    loop_estate.devices["sbc2"].fail_at.add("install")
    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(
            run_deploy(loop_estate.inventory(), store, loop_estate.factory, canary="sbc2")
        )
        recorded = {row["device"]: row["outcome"] for row in store.deployments()}
    assert recorded == {"sbc1": "not-attempted", "sbc2": "restored", "sbc3": "not-attempted"}
    status = {r.device: r.status for r in report.results}
    assert status == {"sbc1": "not-attempted", "sbc2": "restored", "sbc3": "not-attempted"}
    assert report.exit_code == 1
    assert loop_estate.devices["sbc1"].installs == 0


def test_second_deploy_is_refused_while_locked(loop_estate: LoopEstate, tmp_path: Path) -> None:
    """A deploy while a live process holds the lock is refused (even with --break-lock)."""
    with Store.open(tmp_path / "state") as store, Store.open(tmp_path / "state") as other:
        loop_estate.import_renewed(store, tmp_path)
        other.acquire_lock("deploy")
        for break_lock in (False, True):
            with pytest.raises(StateError, match="holds the lock"):
                asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory,
                                       break_lock=break_lock))
        other.release_lock()
        report = asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory))
        assert report.exit_code == 0
        assert store.lock_holder() is None


@pytest.mark.parametrize("step", STEPS)
def test_fault_at_each_step_is_contained(
    loop_estate: LoopEstate, tmp_path: Path, step: str, store_backend: str
) -> None:
    """A failure injected at any step on one device leaves the others installed, all recorded.

    On each backend of the store (SQLite, PostgreSQL).
    """
    bad = loop_estate.devices["sbc1"]
    bad.fail_at.add(step)
    if step == "restore":
        bad.fail_at.add("install")  # restore runs only after a failed install
    old_sha = cert_sha256(loop_estate.old.leaf)
    with Store.open(tmp_path / "state") as store:
        version = loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory))
        result = {r.device: r for r in report.results}
        assert result["sbc2"].status == result["sbc3"].status == "installed"
        expected = {
            "connect": ("refused", 2),
            "backup": ("refused", 2),
            "install": ("restored", 1),
            "verify": ("restored", 1),
            "restore": ("failed", 3),
        }[step]
        assert (result["sbc1"].status, result["sbc1"].exit_code) == expected
        # sbc2 and sbc3 were changed: the run never exits 2 (nothing touched) then, but 1
        assert report.exit_code == {2: 1, 1: 1, 3: 3}[expected[1]]
        if step != "restore":
            assert loop_estate.served("sbc1") == old_sha
        assert loop_estate.served("sbc2") == version.leaf_sha256
        rows = {row["device"]: row for row in store.deployments(run_id=report.run_id)}
        assert set(rows) == {"sbc1", "sbc2", "sbc3"}
        steps = store.steps(rows["sbc1"]["id"])
        failed = [s for s in steps if s["status"] == "failed"]
        assert failed, steps
        assert rows["sbc1"]["outcome"] == expected[0]
        assert rows["sbc1"]["served_before"] == {f"127.0.0.1:{bad.port}": old_sha}


def test_backup_is_on_disk_encrypted_before_the_first_change(
    loop_estate: LoopEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write-ahead: when install starts, the backup is recorded, on disk and encrypted."""
    from certfleet.drivers.base import Driver, EventCallback
    from certfleet.inventory import Device, Inventory
    from certfleet.pki.model import Bundle

    monkeypatch.setenv("LOOP_KEY_PASS", "loop-s3cret")
    text = loop_estate.path.read_text().replace(
        'key_type = "ec-p256"\n', 'key_type = "ec-p256"\nkey_passphrase = "env:LOOP_KEY_PASS"\n', 1)
    loop_estate.path.write_text(text)
    seen: dict[str, list[tuple[bool, bytes]]] = {}
    with Store.open(tmp_path / "state") as store:

        def factory(
            device: Device, inventory: Inventory, on_event: EventCallback | None
        ) -> Driver:
            driver: Driver = loop_estate.factory(device, inventory, on_event)
            original = driver.install

            async def install(bundle: Bundle) -> None:
                # the journal already holds the deployment, in progress, with its backup
                [row] = [r for r in store.history() if r["device"] == device.name]
                assert row["outcome"] == "in-progress" and row["backup_id"] is not None
                record = store.backup(row["backup_id"])
                assert record is not None and record.encrypted
                seen[device.name] = [(record.dir.joinpath("backup.json").exists(),
                                      record.dir.joinpath("key.pem").read_bytes())]
                await original(bundle)

            driver.install = install  # type: ignore[method-assign]
            return driver

        loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(run_deploy(loop_estate.inventory(), store, factory))
        assert report.exit_code == 0, report.to_dict()
        assert set(seen) == set(loop_estate.devices)
        for [(manifest, key_file)] in seen.values():
            assert manifest and b"PRIVATE KEY" not in key_file
        record = store.last_backup("sbc1")
        assert record is not None
        assert b"PRIVATE KEY" in store.read_backup(record, "loop-s3cret").files["key.pem"]
        assert [r["outcome"] for r in store.history()] == ["installed"] * 3
