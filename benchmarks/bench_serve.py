"""certfleet serve at scale: 1,000 devices with 3 listeners each and two years of history.

Fills a state store (a deploy run a month for 24 months, every device in
each, five steps per deployment, a backup per device and run), writes an
inventory of the 1,000 devices, and gives the dashboard a scan of 3,000
listeners (made here: no device answers a benchmark). Then times, through
the framework's test client with a logged-in session, the estate page
(``/``) and ``/api/estate``: median and 95th percentile of ``--runs``
requests, and their sizes. Aims: p95 under 100 ms, the page under 300 KB.
Figures are printed, never asserted. Run from a checkout:
``python benchmarks/bench_serve.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from certfleet.estate.status import DeviceStatus, ListenerStatus
from certfleet.estate.store import Store
from certfleet.inventory import load_inventory
from certfleet.lab.ca import LabCA
from certfleet.pki.model import Bundle
from certfleet.web.app import WebConfig, create_app
from certfleet.web.users import Users
from certfleet.web.view import Snapshot

AIM_P95_MS = 100.0
AIM_PAGE_KB = 300.0
DEVICES = 1000
LISTENERS = 3
MONTHS = 24
STEPS = ("connect", "backup", "install", "verify", "done")


def write_inventory(path: Path) -> None:
    lines = ['[certificates.wildcard]', 'cn = "*.example.com"',
             'sans = ["*.example.com", "example.com"]', "",
             "[defaults.sbc]", 'user = "Admin"', 'password = "env:BENCH_SBC_PASSWORD"', ""]
    for index in range(DEVICES):
        ports = ", ".join(str(20000 + index * LISTENERS + n) for n in range(LISTENERS))
        lines += [f"[devices.sbc{index:04d}]", 'kind = "sbc"', 'address = "127.0.0.1"',
                  f'fqdn = "sbc{index:04d}.example.com"', f"port = {40000 + index}",
                  'certificate = "wildcard"', f"listeners = [{ports}]",
                  f'tags = ["{("east", "west")[index % 2]}"]', ""]
    path.write_text("\n".join(lines))


def fill_store(state: Path, ca: LabCA) -> str:
    """Two versions of the wildcard and two years of monthly deploys; the current leaf's sha."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30 * MONTHS)
    with Store.open(state) as store:
        versions = []
        for _ in range(2):
            issued = ca.issue(("*.example.com", "example.com"), key_type="ec-p256")
            key = store.add_key("wildcard", issued.key, origin="bench")
            versions.append(store.add_version(
                "wildcard", Bundle(issued.leaf, issued.chain, issued.root, issued.key), key.id))
        cert_id = store.certificate_id("wildcard")
        with store.transaction() as db:
            for month in range(MONTHS):
                at = (start + dt.timedelta(days=30 * month)).isoformat(timespec="seconds")
                run_id = db.execute(
                    "INSERT INTO runs (command, started, finished, user, host, pid, options,"
                    " exit_code) VALUES ('deploy', ?, ?, 'bench', 'bench', 1, '{}', 0)",
                    (at, at)).lastrowid
                version = versions[month % 2]
                for index in range(DEVICES):
                    device = f"sbc{index:04d}"
                    backup_id = db.execute(
                        "INSERT INTO backups (device, kind, dir, created, has_private_key,"
                        " served_sha256, run_id) VALUES (?, 'sbc', ?, ?, 1, ?, ?)",
                        (device, f"backups/{device}/{month}", at, version.leaf_sha256,
                         run_id)).lastrowid
                    deployment = db.execute(
                        "INSERT INTO deployments (run_id, device, kind, certificate_id,"
                        " version_id, target_sha256, outcome, exit_code, message,"
                        " served_before, served_after, backup_id, started, finished)"
                        " VALUES (?, ?, 'sbc', ?, ?, ?, 'installed', 0, 'installed', '{}',"
                        " '{}', ?, ?, ?)",
                        (run_id, device, cert_id, version.id, version.leaf_sha256,
                         backup_id, at, at)).lastrowid
                    db.executemany(
                        "INSERT INTO steps (deployment_id, device, step, status, detail, at)"
                        " VALUES (?, ?, ?, 'ok', '', ?)",
                        [(deployment, device, step, time.time()) for step in STEPS])
        return versions[-1].leaf_sha256


def snapshot_of(inventory_path: Path, sha: str, store: Store) -> Snapshot:
    inventory = load_inventory(inventory_path)
    latest = store.latest_deployments(list(inventory.devices))
    now = dt.datetime.now(dt.UTC)
    statuses = []
    for index, device in enumerate(inventory.devices.values()):
        status = DeviceStatus(device.name, device.kind, device.certificate, sha, 2)
        days = index % 400 - 10
        for listener in device.listeners:
            status.listeners.append(ListenerStatus(
                str(listener), listener.label, True, sha256=sha,
                subject="CN=*.example.com", issuer="CN=certfleet Bench CA",
                not_after=(now + dt.timedelta(days=days)).isoformat(), days_left=days,
                hostname_ok=True, is_current=True))
        row = latest.get(device.name)
        if row is not None:
            status.last_deployment = {k: row[k] for k in ("run_id", "outcome", "last_step",
                                                          "started", "finished", "message")}
        statuses.append(status)
    statuses.sort(key=lambda s: (s.days_left or 0, s.name))
    return Snapshot(inventory, statuses, now)


def timed(client: Any, path: str, runs: int) -> tuple[float, float, int]:
    get = client.get
    samples, size = [], 0
    get(path)  # warm
    for _ in range(runs):
        began = time.perf_counter()
        answer = get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.status_code
        size = len(answer.content)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from starlette.testclient import TestClient

    with tempfile.TemporaryDirectory(prefix="certfleet-bench-serve-") as tmp:
        root = Path(tmp)
        state = root / "state"
        inventory = root / "certfleet.toml"
        write_inventory(inventory)
        began = time.perf_counter()
        sha = fill_store(state, LabCA(name="certfleet Bench CA"))
        filled = time.perf_counter() - began
        Users(state / "users.json").add_user("bench", "bench password", "viewer")
        app = create_app(WebConfig(inventory, state, state / "users.json"))
        view = app.state.board.view
        view.snapshot = snapshot_of(inventory, sha, view.store)
        client = TestClient(app, base_url="http://127.0.0.1")
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        client.post("/login", data={"csrf": token[1], "username": "bench",
                                     "password": "bench password"})
        figures = {}
        for name, path in (("estate page", "/"), ("/api/estate", "/api/estate"),
                           ("device page", "/devices/sbc0005"), ("runs page", "/runs")):
            median, p95, size = timed(client, path, args.runs)
            figures[name] = {"median_ms": round(median, 1), "p95_ms": round(p95, 1),
                             "bytes": size}
        view.store.close()
    if args.json:
        print(json.dumps({"fill_seconds": round(filled, 1), "figures": figures}, indent=2))
        return 0
    print(f"store: {DEVICES} devices x {LISTENERS} listeners, {MONTHS} monthly runs "
          f"({DEVICES * MONTHS} deployments, {DEVICES * MONTHS * len(STEPS)} steps), "
          f"filled in {filled:.1f} s")
    for name, item in figures.items():
        over = " OVER" if item["p95_ms"] > AIM_P95_MS else ""
        size = item["bytes"] / 1024
        too_big = " OVER" if name == "estate page" and size > AIM_PAGE_KB else ""
        print(f"{name:<12} median {item['median_ms']:7.1f} ms  p95 {item['p95_ms']:7.1f} ms"
              f" (aim < {AIM_P95_MS:.0f}){over}  {size:8.1f} KB"
              + (f" (aim < {AIM_PAGE_KB:.0f}){too_big}" if name == "estate page" else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
