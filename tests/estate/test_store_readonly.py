"""The store opened read-only: never creates, migrates or writes; reads from many threads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from certfleet.errors import StateError
from certfleet.estate.store import SCHEMA_VERSION, Store
from certfleet.estate.store.schema import MIGRATIONS

# A deploy's journal, written by another process: a run, then per device a deployment
# begun in progress, its steps one by one, its outcome, the run finished.
WRITER = r"""
import sys
from certfleet.drivers.base import DeployOutcome, StepEvent
from certfleet.estate.store import Store

store = Store.open(sys.argv[1])
runs = int(sys.argv[2])
print("writing", flush=True)
for number in range(runs):
    run_id = store.start_run("deploy", options={"n": number})
    for device in ("sbc1", "sbc2"):
        dep = store.begin_deployment(target_sha256="ab" * 32, run_id=run_id, device=device,
                                     kind="sbc", certificate="wildcard", version_id=None,
                                     started="2025-01-01T00:00:00+00:00")
        for step in ("connect", "upload", "activate"):
            store.record_step(dep, StepEvent(device, step, "ok", f"run {number}"))
        store.finish_deployment(dep, DeployOutcome(device, "installed", "ok"))
    store.finish_run(run_id, 0)
store.close()
print("done", flush=True)
"""


def test_missing_store_is_refused_and_not_created(tmp_path: Path) -> None:
    """Opening a folder with no store read-only is a StateError and creates nothing."""
    with pytest.raises(StateError, match="no state store") as caught:
        Store.open_readonly(tmp_path / "none")
    assert "--state-dir" in (caught.value.hint or "")
    assert not (tmp_path / "none").exists()


def test_old_schema_is_refused_not_migrated(tmp_path: Path) -> None:
    """A store of an older schema is refused read-only and left at its schema."""
    tmp_path.joinpath("state").mkdir()
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="older than"):
        Store.open_readonly(tmp_path / "state")
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()


def test_readonly_store_refuses_writes(tmp_path: Path) -> None:
    """A write through the read-only store fails inside SQLite; nothing is written."""
    with Store.open(tmp_path) as store:
        store.audit("deploy", "ok")
    with Store.open_readonly(tmp_path) as reader:
        assert reader.schema_version == SCHEMA_VERSION
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
            reader.audit("serve", "ok")
        assert reader.settle_interrupted() == []
        assert [row["command"] for row in reader.audit_log()] == ["deploy"]


def test_threads_read_while_another_process_writes(tmp_path: Path) -> None:
    """Four reader threads see a consistent, growing history while a second process writes."""
    Store.open(tmp_path).close()
    runs = 60
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), str(runs)],
        stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "writing"
    reader = Store.open_readonly(tmp_path)
    errors: list[BaseException] = []
    seen: dict[int, list[int]] = {}
    stop = threading.Event()

    def read(index: int) -> None:
        counts = seen.setdefault(index, [])
        try:
            while True:
                finished = stop.is_set()
                rows = reader.history(limit=1000)
                for row in rows:  # a finished deployment is whole: its three steps
                    if row["outcome"] == "installed":
                        assert [s["step"] for s in row["steps"]] == [
                            "connect", "upload", "activate"]
                latest = reader.latest_deployments(["sbc1", "sbc2"])
                assert set(latest) <= {"sbc1", "sbc2"}
                counts.append(len(rows))
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    assert writer.stdout.readline().strip() == "done"
    assert writer.wait(timeout=60) == 0
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    reader.close()
    assert not errors, errors
    for counts in seen.values():
        assert counts == sorted(counts)  # never a row lost once seen
        assert counts[-1] == 2 * runs
