"""Any exception after the first change rolls back; an interrupted run stops cleanly.

Exceptions of every kind (a bug's ValueError, an OSError, a timeout, Ctrl-C,
a cancellation) are injected at each step of the loopback driver; the device
is then checked by handshake: old certificate back (restored, exit 1) or the
outcome says failed (exit 3), never a traceback, never 0 or 2 after a change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from certfleet.drivers.base import Driver
from certfleet.estate.deploy import DeployReport, run_deploy
from certfleet.estate.rollback import RollbackResult, rollback_device
from certfleet.estate.store import Store
from certfleet.inventory import Device, Inventory
from certfleet.pki.model import Bundle, Finding, cert_sha256
from loopdev import LoopbackDriver, LoopEstate

EXCEPTIONS: dict[str, BaseException] = {
    "ValueError": ValueError("malformed certificate served"),
    "OSError": ConnectionResetError(104, "Connection reset by peer"),
    "TimeoutError": TimeoutError(),
    "KeyboardInterrupt": KeyboardInterrupt(),
    "CancelledError": asyncio.CancelledError(),
}


@pytest.mark.parametrize("kind", sorted(EXCEPTIONS))
@pytest.mark.parametrize("point", ["install", "installed", "verifying"])
def test_any_exception_after_a_change_is_rolled_back(
    loop_estate: LoopEstate, tmp_path: Path, point: str, kind: str
) -> None:
    """At and after the install, every exception ends restored (exit 1), old cert served."""
    old = cert_sha256(loop_estate.old.leaf)
    loop_estate.devices["sbc1"].raise_at[point] = EXCEPTIONS[kind]
    with Store.open(tmp_path / "state") as store:
        version = loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory))
        result = {r.device: r for r in report.results}
        assert result["sbc1"].status == "restored", result["sbc1"].message
        assert result["sbc1"].exit_code == 1
        assert "verified by handshake" in result["sbc1"].message
        assert result["sbc2"].status == "installed"
        assert report.exit_code == 1
        assert loop_estate.served("sbc1") == old
        assert loop_estate.served("sbc2") == version.leaf_sha256
        steps = [(s.step, s.status) for s in result["sbc1"].steps]
        assert ("rollback", "ok") in steps
        rows = {row["device"]: row for row in store.deployments(run_id=report.run_id)}
        assert rows["sbc1"]["outcome"] == "restored"


@pytest.mark.parametrize("kind", ["ValueError", "OSError", "TimeoutError"])
@pytest.mark.parametrize("point", ["connect", "backup"])
def test_an_exception_before_any_change_is_a_refusal(
    loop_estate: LoopEstate, tmp_path: Path, point: str, kind: str
) -> None:
    """Before the first change an unexpected exception refuses (exit 2): nothing changed."""
    old = cert_sha256(loop_estate.old.leaf)
    loop_estate.devices["sbc1"].raise_at[point] = EXCEPTIONS[kind]
    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(
            run_deploy(loop_estate.inventory(), store, loop_estate.factory, only=["sbc1"])
        )
        (result,) = report.results
        assert (result.status, result.exit_code) == ("refused", 2), result.message
        assert "nothing was changed" in result.message
        assert type(EXCEPTIONS[kind]).__name__ in result.message
        assert loop_estate.served("sbc1") == old
        assert loop_estate.devices["sbc1"].installs == 0


@pytest.mark.parametrize("kind", ["ValueError", "KeyboardInterrupt", "CancelledError"])
def test_an_exception_in_the_restore_is_failed(
    loop_estate: LoopEstate, tmp_path: Path, kind: str
) -> None:
    """A failed install whose restore raises too ends failed (exit 3), saying so."""
    dev = loop_estate.devices["sbc1"]
    dev.raise_at["installed"] = ValueError("after the swap")
    dev.raise_at["restore"] = EXCEPTIONS[kind]
    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(
            run_deploy(loop_estate.inventory(), store, loop_estate.factory, only=["sbc1"])
        )
        (result,) = report.results
        assert (result.status, result.exit_code) == ("failed", 3), result.message
        assert "NOT in its previous state" in (result.hint or "") or "may be changed" in (
            result.message
        )


def _deploy_and_cancel(
    estate: LoopEstate, store: Store, hung: str, **options: object
) -> DeployReport:
    """Start a deploy, wait until device ``hung`` hangs, then cancel the run's task."""

    async def main() -> DeployReport:
        task = asyncio.ensure_future(
            run_deploy(estate.inventory(), store, estate.factory, **options)  # type: ignore[arg-type]
        )
        while not estate.devices[hung].hanging.is_set():
            assert not task.done(), "the deploy ended before the device hung"
            await asyncio.sleep(0.01)
        task.cancel()  # what Ctrl-C / SIGTERM do to the run
        return await task

    return asyncio.run(main())


def test_cancelled_run_rolls_back_in_flight_and_starts_no_other(
    loop_estate: LoopEstate, tmp_path: Path
) -> None:
    """One device at a time: cancelled while sbc1 hangs after its swap.

    sbc1 rolls back (restored), sbc2 and sbc3 never start (interrupted,
    untouched); the report says interrupted; the store has every device.
    """
    old = cert_sha256(loop_estate.old.leaf)
    loop_estate.devices["sbc1"].hang_at.add("installed")
    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        report = _deploy_and_cancel(loop_estate, store, "sbc1", concurrency=1)
        result = {r.device: r for r in report.results}
        assert report.interrupted
        assert (result["sbc1"].status, result["sbc1"].exit_code) == ("restored", 1)
        assert "interrupted" in result["sbc1"].message
        for name in ("sbc2", "sbc3"):
            assert (result[name].status, result[name].exit_code) == ("interrupted", 2)
            assert loop_estate.devices[name].installs == 0
        assert report.exit_code == 1
        for name in loop_estate.devices:
            assert loop_estate.served(name) == old
        rows = {row["device"]: row for row in store.deployments(run_id=report.run_id)}
        assert rows["sbc1"]["outcome"] == "restored"
        assert rows["sbc2"]["exit_code"] == 2
        assert store.lock_holder() is None
        assert report.to_dict()["interrupted"] is True


def test_cancelled_before_any_change_is_untouched(
    loop_estate: LoopEstate, tmp_path: Path
) -> None:
    """Cancelled while a device hangs in its backup: interrupted, exit 2, nothing changed."""
    old = cert_sha256(loop_estate.old.leaf)
    loop_estate.devices["sbc2"].hang_at.add("backup")
    with Store.open(tmp_path / "state") as store:
        version = loop_estate.import_renewed(store, tmp_path)
        report = _deploy_and_cancel(loop_estate, store, "sbc2")
        result = {r.device: r for r in report.results}
        assert (result["sbc2"].status, result["sbc2"].exit_code) == ("interrupted", 2)
        assert "nothing was changed" in result["sbc2"].message
        assert loop_estate.served("sbc2") == old
        # the others ran in parallel: installed before the cancel reached them, rolled
        # back, or stopped untouched; never anything in between
        for name in ("sbc1", "sbc3"):
            served = loop_estate.served(name)
            assert (result[name].status, served) in {
                ("installed", version.leaf_sha256), ("interrupted", old), ("restored", old)}


def test_rollback_bounded_after_an_interrupt(loop_estate: LoopEstate, tmp_path: Path) -> None:
    """A restore that hangs after a cancellation is given up after the grace: failed, exit 3."""
    dev = loop_estate.devices["sbc1"]
    dev.hang_at.update({"installed", "restore"})

    def factory(device: Device, inventory: Inventory, on_event: object) -> Driver:
        driver = LoopbackDriver(loop_estate.devices[device.name], device, None)
        driver.interrupt_grace = 0.5
        return driver

    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)

        async def main() -> DeployReport:
            task = asyncio.ensure_future(
                run_deploy(loop_estate.inventory(), store, factory, only=["sbc1"])
            )
            while not dev.hanging.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            return await task

        report = asyncio.run(main())
        (result,) = report.results
        assert (result.status, result.exit_code) == ("failed", 3)
        assert "may be changed" in result.message


def test_a_defect_in_the_preflight_is_a_refusal(loop_estate: LoopEstate, tmp_path: Path) -> None:
    """A driver's preflight that raises refuses the device (exit 2): nothing was touched."""

    class Broken(LoopbackDriver):
        def preflight(self, bundle: Bundle) -> list[Finding]:
            raise ValueError("bad check")

    def factory(device: Device, inventory: Inventory, on_event: object) -> Driver:
        return Broken(loop_estate.devices[device.name], device, None)

    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        report = asyncio.run(run_deploy(loop_estate.inventory(), store, factory, only=["sbc1"]))
        (result,) = report.results
        assert (result.status, result.exit_code) == ("refused", 2), result.message
        assert "ValueError: bad check" in result.message
        assert loop_estate.devices["sbc1"].installs == 0


def test_interrupted_rollback_command_is_given_its_grace(
    loop_estate: LoopEstate, tmp_path: Path
) -> None:
    """`rollback` cancelled while the restore hangs: it keeps going for the grace, then exit 3."""
    dev = loop_estate.devices["sbc1"]

    def factory(device: Device, inventory: Inventory, on_event: object) -> Driver:
        driver = LoopbackDriver(loop_estate.devices[device.name], device, None)
        driver.interrupt_grace = 0.5
        return driver

    with Store.open(tmp_path / "state") as store:
        loop_estate.import_renewed(store, tmp_path)
        inventory = loop_estate.inventory()
        asyncio.run(run_deploy(inventory, store, factory, only=["sbc1"]))
        dev.hang_at.add("restore")

        async def main() -> RollbackResult:
            task = asyncio.ensure_future(rollback_device(inventory, store, factory, "sbc1"))
            while not dev.hanging.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            return await task

        result = asyncio.run(main())
        assert result.exit_code == 3 and result.touched
        assert "may be changed" in result.message
        details = [s.detail for s in result.steps]
        assert "interrupted: finishing the rollback" in details
        assert store.lock_holder() is None
