"""Make the dashboard screenshots of the README from the lab: ``certfleet demo --serve``,
then headless Chromium (selenium) logs in and saves each main page as a PNG here.

    python docs/screenshots/make_screenshots.py [--out docs/screenshots]

Needs chromium and chromedriver (Debian: chromium, chromium-driver) and the test
dependencies (selenium). Stops the demo (Ctrl-C, as a user would) when done.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PAGES = {
    "estate.png": "/",
    "timeline.png": "/timeline",
    "device.png": "/devices/sbc1",
    "runs.png": "/runs",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        print("chromium and chromedriver are needed (apt-get install chromium chromium-driver)",
              file=sys.stderr)
        return 2
    demo = subprocess.Popen([sys.executable, "-m", "certfleet", "demo", "--serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, "COLUMNS": "160"})
    assert demo.stdout is not None
    found = None
    for line in demo.stdout:
        found = re.search(r"dashboard: (\S+)\s+user: (\S+)\s+password: (\S+)", line)
        if found:
            break
    if found is None:
        demo.wait()
        print("certfleet demo --serve did not start its dashboard", file=sys.stderr)
        return 1
    url, user, password = found.groups()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--hide-scrollbars"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options,
                               service=webdriver.ChromeService(executable_path=chromedriver))
    try:
        browser.get(url.rstrip("/") + "/login")
        browser.find_element(By.ID, "username").send_keys(user)
        browser.find_element(By.ID, "password").send_keys(password)
        browser.find_element(By.ID, "login").click()
        WebDriverWait(browser, 30).until(lambda b: "/login" not in b.current_url)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, path in PAGES.items():
            browser.get(url.rstrip("/") + path)
            browser.save_screenshot(str(args.out / name))
            print(f"wrote {args.out / name}")
    finally:
        browser.quit()
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
