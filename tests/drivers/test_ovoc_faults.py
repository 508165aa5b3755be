"""Any exception or cancellation after the first change on a lab OVOC ends in the rollback.

Faults are injected at each step that changes the device: before the upload, after the
rename, at the import's menu (in the lab) and after the import before verification. Kinds:
ValueError (a bug), OSError (a dropped channel), KeyboardInterrupt (Ctrl-C) raised from
the progress callback, and a real cancellation of the deploy task. Every case must end
``restored`` (exit 1) with the previous certificate served, the previous files staged and
no temporary file left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from certfleet.drivers.base import DeployOutcome, StepEvent
from certfleet.drivers.ovoc import OvocDriver
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.ovoc import LabOvoc
from certfleet.pki.checks import check_bundle
from ovoc_support import KEYSTORE, lab_ovoc_driver, ovoc_bundle

POINTS = {"before-upload": ("stage", "start"), "after-rename": ("stage", "ok"),
          "after-import": ("import", "ok")}
KINDS: dict[str, Callable[[], BaseException]] = {
    "ValueError": lambda: ValueError("malformed answer"),
    "OSError": lambda: ConnectionResetError(104, "Connection reset by peer"),
    "KeyboardInterrupt": KeyboardInterrupt,
}


@pytest.fixture(scope="module")
def new_cert() -> Issued:
    return LabCA("OVOC Fault Test").issue(["ovoc.example.com"], key_type="rsa2048")


@pytest.fixture
def lab() -> Iterator[LabOvoc]:
    with LabOvoc(restart_delay=0.05) as running:
        yield running


def _driver(lab: LabOvoc, on_event: Callable[[StepEvent], None]) -> OvocDriver:
    return lab_ovoc_driver(lab, on_event=on_event)


def _run(lab: LabOvoc, new_cert: Issued, point: tuple[str, str] | None,
         fault: Callable[[asyncio.Task[DeployOutcome]], None]) -> DeployOutcome:
    bundle = ovoc_bundle(new_cert)

    async def main() -> DeployOutcome:
        fired: list[bool] = []

        def on_event(event: StepEvent) -> None:
            if point is not None and (event.step, event.status) == point and not fired:
                fired.append(True)
                fault(task)

        driver = _driver(lab, on_event)
        loop = asyncio.get_running_loop()
        if point is None:  # at the menu, seen by the lab
            def at_menu(title: str) -> None:
                if title == "Server Certificates Update" and not fired:
                    fired.append(True)
                    loop.call_soon_threadsafe(fault, task)
            lab.faults.on_menu = at_menu
        task = asyncio.create_task(driver.deploy(bundle, check_bundle(bundle)))
        outcome = await task
        assert fired, "the fault never fired"
        return outcome

    return asyncio.run(main())


def _assert_restored(outcome: DeployOutcome, lab: LabOvoc, before: dict[str, bytes]) -> None:
    assert outcome.outcome == "restored" and outcome.exit_code == 1, outcome.message
    assert lab.served_certificate() == lab.initial.leaf
    assert lab.staged_files() == before
    assert [s.status for s in outcome.steps if s.step == "rollback"][-1] == "ok"


def _raise(kind: str) -> Callable[[asyncio.Task[DeployOutcome]], None]:
    def fault(task: asyncio.Task[DeployOutcome]) -> None:
        raise KINDS[kind]()
    return fault


def _cancel(task: asyncio.Task[DeployOutcome]) -> None:
    task.cancel()


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("kind", [*KINDS, "cancel"])
def test_fault_after_the_first_change_is_rolled_back(lab: LabOvoc, new_cert: Issued,
                                                     point: str, kind: str) -> None:
    before = lab.staged_files()
    fault = _cancel if kind == "cancel" else _raise(kind)
    outcome = _run(lab, new_cert, POINTS[point], fault)
    _assert_restored(outcome, lab, before)
    words = {"ValueError": "unexpected ValueError", "OSError": "connection failed",
             "KeyboardInterrupt": "interrupted", "cancel": "interrupted"}[kind]
    assert words in outcome.message
    # the rollback imports the previous files again once they were replaced
    assert lab.import_count == {"before-upload": 0, "after-rename": 1, "after-import": 2}[point]


def test_cancelled_at_the_menu_is_rolled_back(lab: LabOvoc, new_cert: Issued) -> None:
    """Cancelled while EmsServerManager shows the certificates menu: the session is
    reopened, the previous files staged back and imported (the new ones never were)."""
    before = lab.staged_files()
    outcome = _run(lab, new_cert, None, _cancel)
    _assert_restored(outcome, lab, before)
    assert "interrupted during the install" in outcome.message
    assert lab.import_count == 1 and lab.keystore_password == KEYSTORE


def test_fault_during_the_rollback_is_a_failure_not_a_traceback(lab: LabOvoc,
                                                                 new_cert: Issued) -> None:
    """Cancelled again while rolling back (after a ValueError): 'failed' (exit 3), saying so."""
    bundle = ovoc_bundle(new_cert)

    async def main() -> DeployOutcome:
        def on_event(event: StepEvent) -> None:
            if (event.step, event.status) == ("stage", "ok"):
                raise ValueError("first")
            if (event.step, event.status) == ("rollback", "start"):
                task.cancel()

        task = asyncio.create_task(_driver(lab, on_event).deploy(bundle, check_bundle(bundle)))
        return await task

    outcome = asyncio.run(main())
    assert outcome.outcome == "failed" and outcome.exit_code == 3, outcome.message
    assert "unexpected ValueError during the install" in outcome.message
    # Cancelled again: the rollback stops (how the cancellation reaches it differs by Python).
    assert ("the rollback was interrupted again" in outcome.message
            or "rollback failed too: interrupted during the rollback" in outcome.message)
    assert outcome.hint is not None and ("certfleet rollback DEVICE" in outcome.hint
                                         or "NOT in its previous state" in outcome.hint)
