"""certfleet serve in headless Chromium (selenium) against the lab estate, one browser session."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.inventory import load_inventory
from certfleet.lab.ca import LabCA
from certfleet.pki.model import cert_sha256
from lab_support import import_old_and_renewed, invoke, started_lab
from loopdev import LoopEstate

if os.environ.get("CI"):  # a test dependency: missing in CI is a failure, not a skip
    import selenium.webdriver as webdriver
else:
    webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail("chromium and chromedriver are needed (apt-get install chromium "
                    "chromium-driver)", pytrace=False)
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)

PASSWORD = "lab dashboard password"


class Dashboard:
    def __init__(self, url: str, lab: Any, state: Path, new_sha: str, browser: Any) -> None:
        self.url = url
        self.lab = lab
        self.state = state
        self.new_sha = new_sha
        self.browser = browser

    def go(self, path: str) -> None:
        self.browser.get(self.url.rstrip("/") + path)

    def log_in(self, user: str) -> None:
        self.browser.delete_all_cookies()
        self.go("/login")
        self.browser.find_element(By.ID, "username").send_keys(user)
        self.browser.find_element(By.ID, "password").send_keys(PASSWORD)
        self.browser.find_element(By.ID, "login").click()
        WebDriverWait(self.browser, 30).until(lambda b: "/login" not in b.current_url)


def add_users(state: Path, env: dict[str, str]) -> None:
    for user, role in (("ops", "operator"), ("auditor", "viewer")):
        subprocess.run([sys.executable, "-m", "certfleet", "serve", "adduser", user,
                        "--password-env", "DASH_PASSWORD", "--role", role,
                        "--state-dir", str(state)], check=True, env=env, capture_output=True)


def start_serve(inventory: Path, state: Path, env: dict[str, str]) -> tuple[Any, str]:
    """certfleet serve on a free port, and its URL once it listens."""
    server = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "serve", "--listen", "127.0.0.1:0",
         "--inventory", str(inventory), "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert server.stdout is not None
    url = ""
    seen = []
    for line in server.stdout:
        seen.append(line)
        if line.startswith("certfleet serve: "):
            url = line.split()[2]
            break
    if not url:
        server.terminate()
        server.wait(timeout=60)
    assert url, "certfleet serve did not start:\n" + "".join(seen)
    return server, url


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The lab (sbc1, the HA pair sbc2-ha) after 'deploy --only sbc1' of v2, and
    certfleet serve on it (users ops and auditor), and one headless Chromium."""
    tmp = tmp_path_factory.mktemp("browser")
    state = tmp / "state"
    with started_lab(tmp, sbcs=2, ovoc=False, key_type="ec-p256") as lab:
        with Store.open(state) as store:
            new_sha = import_old_and_renewed(lab, store, load_inventory(lab.inventory_path),
                                             tmp)
        deployed = invoke(lab, state, "deploy", "--only", "sbc1")
        assert deployed.exit_code == 0, deployed.output
        env = {**os.environ, "DASH_PASSWORD": PASSWORD,
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        add_users(state, env)
        server, url = start_serve(lab.inventory_path, state, env)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM or ""
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(flag)
        service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
        browser = webdriver.Chrome(options=options, service=service)
        try:
            yield Dashboard(url, lab, state, new_sha, browser)
        finally:
            browser.quit()
            server.terminate()
            server.wait(timeout=60)


def rows(board: Dashboard) -> list[tuple[str, str, str, int]]:
    """(device, listener, band, days left) of each estate row, in page order."""
    found = []
    for row in board.browser.find_elements(By.CSS_SELECTOR, "#estate tr.row"):
        cells = row.find_elements(By.TAG_NAME, "td")
        found.append((row.get_attribute("data-device"), row.get_attribute("data-listener"),
                      row.get_attribute("data-band"), int(cells[1].text)))
    return found


def test_a_page_without_login_redirects_to_the_login(dashboard: Dashboard) -> None:
    """Opening the estate without a session lands on the login form."""
    dashboard.browser.delete_all_cookies()
    dashboard.go("/devices/sbc1")
    assert "/login" in dashboard.browser.current_url
    assert dashboard.browser.find_element(By.ID, "username")


def test_estate_lists_every_lab_listener_in_order_and_band(dashboard: Dashboard) -> None:
    """Every lab listener is a row, sorted by days left: the HA pair (old) critical first."""
    dashboard.log_in("ops")
    dashboard.go("/")
    found = rows(dashboard)
    listed = {(d.name, str(item)) for d in load_inventory(dashboard.lab.inventory_path)
              .devices.values() for item in d.listeners}
    assert {(device, listener) for device, listener, _, _ in found} == listed
    assert [days for *_, days in found] == sorted(days for *_, days in found)
    bands = {device: band for device, _, band, _ in found}
    assert bands == {"sbc2-ha": "critical", "sbc1": "ok"}
    assert found[0][0] == "sbc2-ha"


def test_device_page_shows_the_deploy_with_its_steps(dashboard: Dashboard) -> None:
    """sbc1's page shows the CLI's deploy, installed, with every step and its time."""
    dashboard.log_in("auditor")
    dashboard.go("/devices/sbc1")
    section = dashboard.browser.find_element(By.CSS_SELECTOR, "section.deployment")
    assert "installed" in section.find_element(By.TAG_NAME, "h3").text
    steps = [cell.text for cell in section.find_elements(By.CSS_SELECTOR, "td.step")]
    assert "connect" in steps and "verify" in steps


def test_a_viewer_cannot_start_an_action(dashboard: Dashboard) -> None:
    """A viewer's estate page has no action button."""
    dashboard.log_in("auditor")
    dashboard.go("/")
    assert dashboard.browser.find_elements(By.ID, "action-deploy") == []


def test_a_form_without_its_csrf_token_is_refused(dashboard: Dashboard) -> None:
    """The deploy form with its CSRF field removed is refused, and no deploy starts."""
    dashboard.log_in("ops")
    dashboard.go("/")
    dashboard.browser.execute_script(
        "document.querySelector('form[action=\"/actions/deploy\"] input[name=csrf]')"
        ".remove()")
    dashboard.browser.find_element(By.ID, "action-deploy").click()
    message = dashboard.browser.find_element(By.ID, "message").text
    assert "CSRF" in message
    dashboard.go("/runs")
    assert "From this page" not in dashboard.browser.page_source


def test_deploy_from_the_page_serves_the_new_certificate(dashboard: Dashboard) -> None:
    """'Deploy' from the page ends with exit 0, and the HA pair serves v2 by handshake."""
    dashboard.log_in("ops")
    dashboard.go("/")
    dashboard.browser.find_element(By.ID, "action-deploy").click()
    WebDriverWait(dashboard.browser, 240).until(
        lambda b: b.find_elements(By.ID, "exit"))
    assert dashboard.browser.find_element(By.ID, "exit").text == "0"
    inventory = load_inventory(dashboard.lab.inventory_path)
    for item in inventory.devices["sbc2-ha"].listeners:
        served = asyncio.run(fetch_served_certificate(Listener(item.host, item.port)))
        assert cert_sha256(served) == dashboard.new_sha


HOSTILE_CN = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def hostile(dashboard: Dashboard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A second certfleet serve, on three loopback devices serving (and a store holding) a
    certificate whose CN is a script; the same browser."""
    tmp = tmp_path_factory.mktemp("hostile")
    ca = LabCA(name="hostile test CA")
    issued = ca.issue(("*.example.com", "example.com"), key_type="ec-p256", days=20,
                      common_name=HOSTILE_CN)
    estate = LoopEstate(ca, issued, 3, tmp)
    try:
        bundle = tmp / "hostile.pem"
        bundle.write_bytes(issued.fullchain_pem + issued.key_pem())
        with Store.open(tmp / "state") as store:
            import_certificate(estate.inventory(), store, "wildcard", [bundle])
        env = {**os.environ, "DASH_PASSWORD": PASSWORD,
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        add_users(tmp / "state", env)
        server, url = start_serve(estate.path, tmp / "state", env)
        try:
            yield Dashboard(url, None, tmp / "state", "", dashboard.browser)
        finally:
            server.terminate()
            server.wait(timeout=60)
    finally:
        estate.stop()


def no_alert_and_no_injected_script(board: Dashboard) -> None:
    with pytest.raises(NoAlertPresentException):
        board.browser.switch_to.alert  # noqa: B018  # the property raises when none is open
    assert board.browser.find_elements(By.TAG_NAME, "script") == []
    assert board.browser.execute_script("return document.scripts.length") == 0


def test_a_script_as_common_name_appears_as_text(hostile: Dashboard) -> None:
    """The estate page and the certificate page show the CN <script>alert(1)</script> as
    text: it is in the page's visible text, no alert opens, the DOM has no script."""
    hostile.log_in("auditor")
    hostile.go("/")
    body = hostile.browser.find_element(By.TAG_NAME, "body").text
    assert body.count(HOSTILE_CN) >= 3  # one per device's listener
    no_alert_and_no_injected_script(hostile)
    hostile.go("/certificates/wildcard")
    cells = hostile.browser.find_elements(By.CSS_SELECTOR, "#versions td.cn")
    assert [cell.text for cell in cells] == [HOSTILE_CN]
    no_alert_and_no_injected_script(hostile)

