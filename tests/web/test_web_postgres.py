"""certfleet serve on a shared PostgreSQL store: the pages read it, an action writes it.

The dashboard's own state folder is empty (another machine's): what the
pages show can only come from the database. The reader's connections are
read-only inside the server; an action opens the store to write as the CLI
does, and the deploy lock held from another machine is named on the page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.lab.ca import LabCA
from certfleet.web.app import WebConfig, create_app
from certfleet.web.users import Users
from loopdev import LoopEstate

PASSWORD = "correct horse battery"
STORE_KEY = "web test store key, long enough"


@pytest.fixture
def shared(pg_url: str, tmp_path: Path) -> Iterator[tuple[LoopEstate, Path, str]]:
    """Three loopback devices; v1 of their certificate imported into a PostgreSQL store from
    one machine's folder; the dashboard's users in another, empty, folder."""
    ca = LabCA(name="web postgres CA")
    old = ca.issue(("*.example.com", "example.com"), key_type="ec-p256", days=20)
    estate = LoopEstate(ca, old, 3, tmp_path)
    bundle = tmp_path / "old.pem"
    bundle.write_bytes(old.fullchain_pem + old.key_pem())
    with Store.open(tmp_path / "laptop", url=pg_url, key=STORE_KEY) as store:
        import_certificate(estate.inventory(), store, "wildcard", [bundle])
    Users(tmp_path / "dashboard" / "serve-users.json").add_user("ops", PASSWORD, "operator")
    try:
        yield estate, tmp_path, pg_url
    finally:
        estate.stop()


def client_of(estate: LoopEstate, tmp: Path, url: str) -> TestClient:
    state = tmp / "dashboard"
    config = WebConfig(estate.path, state, state / "serve-users.json", state_url=url,
                       state_key=STORE_KEY)
    app = create_app(config)
    app.state.board.view.scan()
    client = TestClient(app, base_url="http://127.0.0.1")
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/login", data={"csrf": token[1], "username": "ops",
                                          "password": PASSWORD, "next": "/"},
                         follow_redirects=False)
    assert answer.status_code == 303
    return client


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text)
    assert found is not None
    return found[1]


def test_pages_read_the_shared_store(shared: tuple[LoopEstate, Path, str]) -> None:
    """The estate and certificate pages show the version stored from another machine."""
    estate, tmp, url = shared
    client = client_of(estate, tmp, url)
    assert not (tmp / "dashboard" / "state.db").exists()  # no SQLite store made beside it
    devices = client.get("/api/estate").json()["devices"]
    assert {d["name"] for d in devices} == {"sbc1", "sbc2", "sbc3"}
    assert all(d["is_current"] is True for d in devices)
    versions = client.get("/api/certificates/wildcard").json()["versions"]
    assert [v["number"] for v in versions] == [1]
    assert "v1 (current)" in client.get("/certificates/wildcard").text


def test_the_reader_cannot_write_the_shared_store(shared: tuple[LoopEstate, Path, str]) -> None:
    """The pages' connections are read-only inside PostgreSQL: a write fails there."""
    import psycopg  # the server fixture has made sure it is installed

    _, tmp, url = shared
    reader = Store.open_readonly(tmp / "dashboard", url=url, key=STORE_KEY)
    try:
        assert reader.current_version("wildcard") is not None
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.db.execute("DELETE FROM audit")
    finally:
        reader.close()
    with Store.open(tmp / "laptop", url=url, key=STORE_KEY) as store:
        assert store.current_version("wildcard") is not None


def test_an_action_writes_the_shared_store_and_sees_its_lock(
    shared: tuple[LoopEstate, Path, str],
) -> None:
    """A deploy started from the page is recorded in the database; while another machine
    holds the deploy lock there, the page refuses with that holder named."""
    estate, tmp, url = shared
    client = client_of(estate, tmp, url)
    with Store.open(tmp / "laptop", url=url, key=STORE_KEY) as holder:
        holder.acquire_lock("deploy --only sbc3")
        busy = client.post("/actions/deploy", data={"csrf": csrf_of(client)},
                           follow_redirects=False)
        assert busy.status_code == 409
        assert "deploy --only sbc3" in busy.text
    started = client.post("/actions/deploy", data={"csrf": csrf_of(client), "target": "sbc1"},
                          follow_redirects=False)
    assert started.status_code == 303
    client.app.state.board.jobs.wait()  # type: ignore[attr-defined]  # Starlette's state
    with Store.open(tmp / "laptop", url=url, key=STORE_KEY) as store:
        entries = store.audit_log(command="serve deploy")
    assert entries, "the page's deploy left no audit entry in the shared store"
    assert entries[0]["device"] == "sbc1"
    assert "started from the page by ops" in entries[0]["detail"]


def _api_estate(argv: list[str], token: str, env: dict[str, str]) -> dict[str, object]:
    server = subprocess.Popen([sys.executable, "-m", "certfleet", "serve", "--listen",
                               "127.0.0.1:0", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert server.stdout is not None
        url, seen = "", []
        for line in server.stdout:
            seen.append(line)
            if line.startswith("certfleet serve: "):
                url = line.split()[2]
                break
        assert url, "certfleet serve did not start:\n" + "".join(seen)
        request = urllib.request.Request(url + "api/estate",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as answer:  # loopback
            data: dict[str, object] = json.loads(answer.read())
        return data
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.parametrize("named_by", ["--state-url", "[state] url"])
def test_serve_process_reads_the_store_the_inventory_or_flag_names(
    shared: tuple[LoopEstate, Path, str], named_by: str,
) -> None:
    """certfleet serve given --state-url, or an inventory with [state] url, serves the
    PostgreSQL store's versions (its own state folder holds only the users)."""
    estate, tmp, url = shared
    state = tmp / "dashboard"
    token = Users(state / "serve-users.json").add_token("reader")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "TEST_STORE_KEY": STORE_KEY}
    env.pop("CERTFLEET_STATE_URL", None)
    argv = ["--inventory", str(estate.path), "--state-dir", str(state)]
    if named_by == "--state-url":
        argv += ["--state-url", url]
        env["CERTFLEET_STORE_KEY"] = STORE_KEY
    else:
        estate.path.write_text(f'[state]\nurl = "{url}"\nkey = "env:TEST_STORE_KEY"\n\n'
                               + estate.inventory_text())
    data = _api_estate(argv, token, env)
    devices = data["devices"]
    assert isinstance(devices, list)
    assert {d["name"] for d in devices} == {"sbc1", "sbc2", "sbc3"}
    assert all(d["is_current"] is True for d in devices)
    assert not (state / "state.db").exists()
