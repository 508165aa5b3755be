"""The newest deployment of each of many devices, on an SQLite that binds few variables.

SQLite refuses an ``IN (...)`` of more values than its variable limit (999 before 3.32,
32,766 by default since, and builds differ); ``status`` asks for every device of the
inventory at once, 90,000 of them in a large estate.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from certfleet.drivers.base import DeployOutcome, StepEvent
from certfleet.estate.store import Store


def test_latest_deployments_of_more_devices_than_sqlite_binds(tmp_path: Path) -> None:
    names = [f"sbc{i:05d}" for i in range(2_500)]
    with Store.open(tmp_path) as store:
        store.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        run_id = store.start_run("deploy", options={})
        for device in (names[0], names[1_200], names[-1]):
            dep = store.begin_deployment(target_sha256="ab" * 32, run_id=run_id, device=device,
                                         kind="sbc", certificate="wildcard", version_id=None,
                                         started="2025-01-01T00:00:00+00:00")
            store.record_step(dep, StepEvent(device, "upload", "ok", device))
            store.finish_deployment(dep, DeployOutcome(device, "installed", "ok"))
        store.finish_run(run_id, 0)
        latest = store.latest_deployments(names)
    assert sorted(latest) == [names[0], names[1_200], names[-1]]
    assert {row["outcome"] for row in latest.values()} == {"installed"}
    assert all(row["last_step"] and "upload" in row["last_step"] for row in latest.values())
