"""certfleet serve through the framework's test client: every route, login, CSRF, roles."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from certfleet.cli.serve import _metrics
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.lab.ca import LabCA
from certfleet.web.app import WebConfig, create_app
from certfleet.web.auth import FREE_FAILURES
from certfleet.web.users import Users
from loopdev import LoopEstate

HOSTILE_CN = "<script>alert(1)</script>"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopEstate, Path]]:
    """Three loopback devices serving a certificate whose CN is a script, stored as v1."""
    tmp = tmp_path_factory.mktemp("web")
    ca = LabCA(name="web test CA")
    old = ca.issue(("*.example.com", "example.com"), key_type="ec-p256", days=5,
                   common_name=HOSTILE_CN)
    estate = LoopEstate(ca, old, 3, tmp)
    bundle = tmp / "old.pem"
    bundle.write_bytes(old.fullchain_pem + old.key_pem())
    with Store.open(tmp / "state") as store:
        import_certificate(estate.inventory(), store, "wildcard", [bundle])
    users = Users(tmp / "state" / "serve-users.json")
    users.add_user("ops", PASSWORD, "operator")
    users.add_user("auditor", PASSWORD, "viewer")
    try:
        yield estate, tmp
    finally:
        estate.stop()


def client_for(served: tuple[LoopEstate, Path], *, read_only: bool = False) -> TestClient:
    estate, tmp = served
    config = WebConfig(estate.path, tmp / "state", tmp / "state" / "serve-users.json",
                       read_only=read_only)
    app = create_app(config)
    app.state.board.view.scan()
    return TestClient(app, base_url="http://127.0.0.1")


def log_in(client: TestClient, user: str = "ops", password: str = PASSWORD) -> int:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/login", data={"csrf": token[1], "username": user,
                                          "password": password, "next": "/"},
                         follow_redirects=False)
    return answer.status_code


def csrf_of(client: TestClient, path: str = "/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found[1]


def test_every_page_needs_a_login(served: tuple[LoopEstate, Path]) -> None:
    """Pages redirect to /login without a session; the API answers 401."""
    client = client_for(served)
    for path in ("/", "/timeline", "/runs", "/devices/sbc1", "/certificates/wildcard",
                 "/jobs/1"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=")
    for path in ("/api/estate", "/api/runs", "/api/devices/sbc1", "/api/certificates/wildcard"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert "Bearer" in answer.json()["hint"]


def test_login_cookie_flags_and_wrong_password(served: tuple[LoopEstate, Path]) -> None:
    """A login sets an HttpOnly, SameSite=Strict cookie; a wrong password is refused."""
    client = client_for(served)
    assert log_in(client, password="not it") == 401
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/login", data={"csrf": token[1], "username": "ops",
                                          "password": PASSWORD}, follow_redirects=False)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert PASSWORD not in answer.text


def test_login_without_its_csrf_token_is_refused(served: tuple[LoopEstate, Path]) -> None:
    """The login form without its CSRF token is refused (403), logging nobody in."""
    client = client_for(served)
    answer = client.post("/login", data={"username": "ops", "password": PASSWORD},
                         follow_redirects=False)
    assert answer.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303


def test_failed_logins_are_slowed(served: tuple[LoopEstate, Path]) -> None:
    """After repeated failures even the right password is refused for a while (429)."""
    client = client_for(served)
    for _ in range(FREE_FAILURES):
        assert log_in(client, "auditor", "wrong password") == 401
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    answer = client.post("/login", data={"csrf": token[1], "username": "auditor",
                                          "password": PASSWORD})
    assert answer.status_code == 429
    assert "too many failed logins: try again in" in answer.text
    assert client.get("/", follow_redirects=False).status_code == 303  # not logged in


def test_estate_rows_sorted_banded_and_escaped(served: tuple[LoopEstate, Path]) -> None:
    """The estate lists every listener by days left with its band in words; a CN is text."""
    client = client_for(served)
    assert log_in(client) == 303
    page = client.get("/")
    assert page.status_code == 200
    devices = re.findall(r'data-device="([^"]+)" data-listener="[^"]+" data-band="([^"]+)"',
                         page.text)
    assert sorted(name for name, _ in devices) == ["sbc1", "sbc2", "sbc3"]
    assert {band for _, band in devices} == {"critical"}
    assert "≤ 7 days" in page.text
    assert HOSTILE_CN not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    odd = client.get("/?tag=odd").text
    assert 'data-device="sbc2"' not in odd and 'data-device="sbc1"' in odd


def test_api_estate_has_the_status_fields(served: tuple[LoopEstate, Path]) -> None:
    """/api/estate carries certfleet status --json's device fields, and when it scanned."""
    client = client_for(served)
    assert log_in(client) == 303
    data = client.get("/api/estate").json()
    assert data["scanned_at"]
    assert {d["name"] for d in data["devices"]} == {"sbc1", "sbc2", "sbc3"}
    first = data["devices"][0]
    assert set(first) >= {"name", "kind", "certificate", "listeners", "days_left",
                          "is_current", "last_deployment"}
    assert first["is_current"] is True
    assert "alert(1)" in first["listeners"][0]["subject"]


def test_device_certificate_runs_timeline_pages(served: tuple[LoopEstate, Path]) -> None:
    """The device, certificate, runs and timeline pages and APIs answer, unknown names 404."""
    client = client_for(served)
    assert log_in(client) == 303
    device = client.get("/devices/sbc1")
    assert device.status_code == 200 and "Listeners" in device.text
    assert client.get("/api/devices/sbc1").json()["status"]["name"] == "sbc1"
    certificate = client.get("/certificates/wildcard")
    assert certificate.status_code == 200 and "v1 (current)" in certificate.text
    api = client.get("/api/certificates/wildcard").json()
    assert api["versions"][0]["number"] == 1
    assert {w["device"] for w in api["versions"][0]["served_on"]} == {"sbc1", "sbc2", "sbc3"}
    assert {p["name"] for p in api["plans"]} == {"sbc1", "sbc2", "sbc3"}
    assert "key" not in str(api["versions"]).lower().replace("key_id", "")
    assert client.get("/runs").status_code == 200
    assert "runs" in client.get("/api/runs").json()
    timeline = client.get("/timeline")
    assert timeline.status_code == 200 and "<svg" in timeline.text
    assert HOSTILE_CN not in timeline.text
    assert client.get("/devices/nope").status_code == 404
    assert client.get("/api/certificates/nope").status_code == 404


def test_action_without_csrf_is_refused(served: tuple[LoopEstate, Path]) -> None:
    """A deploy posted without the session's CSRF token is refused (403), nothing started."""
    client = client_for(served)
    assert log_in(client) == 303
    answer = client.post("/actions/deploy", data={}, follow_redirects=False)
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert client.get("/api/runs").json()["jobs"] == []


def test_viewer_cannot_start_an_action(served: tuple[LoopEstate, Path]) -> None:
    """A viewer's deploy is refused (403) and the page shows no action button."""
    client = client_for(served)
    assert log_in(client, "auditor") == 303
    assert 'action="/actions/deploy"' not in client.get("/").text
    answer = client.post("/actions/deploy", data={"csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 403
    assert "viewer" in answer.text


def test_read_only_refuses_actions(served: tuple[LoopEstate, Path]) -> None:
    """With --read-only an operator sees no action and a posted one is refused."""
    client = client_for(served, read_only=True)
    assert log_in(client) == 303
    assert 'action="/actions/deploy"' not in client.get("/").text
    answer = client.post("/actions/deploy", data={"csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 403 and "read-only" in answer.text


def test_action_while_the_lock_is_held_names_the_holder(
    served: tuple[LoopEstate, Path],
) -> None:
    """A deploy while another process holds the deploy lock is refused with the holder."""
    _, tmp = served
    client = client_for(served)
    assert log_in(client) == 303
    with Store.open(tmp / "state") as holder:
        holder.acquire_lock("deploy --only sbc9")
        answer = client.post("/actions/deploy", data={"csrf": csrf_of(client)},
                             follow_redirects=False)
    assert answer.status_code == 409
    assert "deploy --only sbc9" in answer.text


def test_bearer_token_reads_the_api_only(served: tuple[LoopEstate, Path]) -> None:
    """A token reads /api/estate; it opens no page, and a wrong token is 401."""
    _, tmp = served
    token = Users(tmp / "state" / "serve-users.json").add_token("grafana")
    client = client_for(served)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/estate", headers=headers).status_code == 200
    assert client.get("/", headers=headers, follow_redirects=False).status_code == 303
    assert client.get("/api/estate",
                      headers={"Authorization": "Bearer cft_wrong"}).status_code == 401
    assert token not in (tmp / "state" / "serve-users.json").read_text()


# ---- serve --metrics: the exporter's exposition at /metrics, behind the login ----

SAME_AS_EXPORTER = {"x509_cert_not_after", "x509_cert_not_before", "x509_cert_expired",
                    "certfleet_listener_up", "certfleet_listener_current_version",
                    "certfleet_scan_duration_seconds"}


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(dict(s.labels), s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def exporter_textfile(estate: LoopEstate, tmp: Path) -> str:
    """What certfleet exporter writes for the same inventory and store (the oracle)."""
    out = tmp / "exporter.prom"
    subprocess.run([sys.executable, "-m", "certfleet", "exporter", "--textfile", str(out),
                    "--inventory", str(estate.path), "--state-dir", str(tmp / "state")],
                   check=True, capture_output=True, env=_env())
    return out.read_text()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def test_metrics_through_the_test_client(served: tuple[LoopEstate, Path]) -> None:
    """/metrics needs a login or a token and has the exporter's families and samples."""
    estate, tmp = served
    config = WebConfig(estate.path, tmp / "state", tmp / "state" / "serve-users.json",
                       metrics=True)
    app = create_app(config)
    view = app.state.board.view
    registry = _metrics(view, estate.path, tmp / "state")
    app = create_app(config, view, registry)
    view.scan()
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/metrics").status_code == 401
    token = Users(tmp / "state" / "serve-users.json").add_token("prometheus")
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    ours = families(answer.text)
    theirs = families(exporter_textfile(estate, tmp))
    assert set(ours) >= SAME_AS_EXPORTER
    assert set(ours) == set(theirs)
    for name in ("x509_cert_not_after", "certfleet_listener_up"):
        assert sorted(map(str, ours[name])) == sorted(map(str, theirs[name])), name
    cns = {labels["subject_CN"] for labels, _ in ours["x509_cert_not_after"]}
    assert cns == {HOSTILE_CN}
    assert len(ours["certfleet_listener_up"]) == 3
    assert log_in(client) == 303
    assert client.get("/metrics").status_code == 200


def test_no_metrics_route_unless_asked(served: tuple[LoopEstate, Path]) -> None:
    """Without --metrics there is no /metrics."""
    estate, tmp = served
    config = WebConfig(estate.path, tmp / "state", tmp / "state" / "serve-users.json")
    app = create_app(config)
    app.state.board.view.scan()
    client = TestClient(app, base_url="http://127.0.0.1")
    assert log_in(client) == 303
    assert client.get("/metrics").status_code == 404


def test_metrics_from_a_real_serve_process(served: tuple[LoopEstate, Path]) -> None:
    """certfleet serve --metrics answers a bearer token with a parseable exposition."""
    estate, tmp = served
    token = Users(tmp / "state" / "serve-users.json").add_token("scraper")
    server = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "serve", "--listen", "127.0.0.1:0", "--metrics",
         "--inventory", str(estate.path), "--state-dir", str(tmp / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        assert server.stdout is not None
        url, seen = "", []
        for line in server.stdout:
            seen.append(line)
            if line.startswith("certfleet serve: "):
                url = line.split()[2]
                break
        assert url, "certfleet serve did not start:\n" + "".join(seen)
        request = urllib.request.Request(url + "metrics",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as answer:  # loopback
            text = answer.read().decode()
        found = families(text)
        assert set(found) >= SAME_AS_EXPORTER
        assert len(found["x509_cert_expired"]) == 3
        assert all(value == 0.0 for _, value in found["x509_cert_expired"])
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_timeline_marks_the_due_rule_and_the_ari_window(served: tuple[LoopEstate, Path]) -> None:
    """The due rule's window is hatched; once renew recorded the CA's ARI window for the
    current version, that window is dotted instead, named in its title and in the legend."""
    import datetime as dt

    _, tmp = served
    client = client_for(served)
    assert log_in(client) == 303
    before = client.get("/timeline").text
    assert 'data-window="rule"' in before and 'data-window="ari"' not in before
    assert "hatched (diagonal stripes)" in before and "dotted: the CA" in before
    opens = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with Store.open(tmp / "state") as store:
        store.audit("renew", "not-due", detail="wildcard: the CA's renewal window (ARI) "
                    f"opens {opens:%Y-%m-%d %H:%M}Z")
        store.audit("renew", "not-due", detail="other: 3 day(s) left, more than 1 days")
    after = client.get("/timeline").text
    assert 'data-window="ari"' in after and 'data-window="rule"' not in after
    assert f"ARI window: the CA&#x27;s renewal window (ARI) opens {opens:%Y-%m-%d %H:%M}Z" in after
    assert 'fill="url(#ari)"' in after

