"""`certfleet demo`: the README's first command, end to end in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_demo_runs_end_to_end_and_leaves_nothing(tmp_path: Path) -> None:
    """The demo exits 0, every device ends on the renewed version, its temp folder is gone."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(tmp_path), "COLUMNS": "100"}
    env.pop("CERTFLEET_STATE_DIR", None)
    env.pop("CERTFLEET_INVENTORY", None)
    done = subprocess.run(
        [sys.executable, "-m", "certfleet", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "done: 4 devices serve wildcard v2 on every listener" in done.stdout
    assert "CHAIN_REORDERED" in done.stderr + done.stdout
    for device in ("ovoc", "sbc1", "sbc2", "sbc3-ha"):
        assert f"{device}: installed" in done.stderr
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"


def test_demo_scan_calls_no_management_port_a_stray(tmp_path: Path) -> None:
    """The demo's scan shows sbc1's management port as sbc1's listener; its one stray line
    names the forgotten listener as serving sbc1's management certificate, on another port."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(tmp_path), "COLUMNS": "100"}
    env.pop("CERTFLEET_STATE_DIR", None)
    env.pop("CERTFLEET_INVENTORY", None)
    done = subprocess.run(
        [sys.executable, "-m", "certfleet", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sbc1 management" in done.stdout
    found = [line for line in done.stdout.splitlines() if line.startswith("found: ")]
    assert len(found) == 1, done.stdout[-3000:]
    match = re.fullmatch(
        r"found: 127\.0\.0\.1:(\d+) serves CN=sbc1\.lab\.invalid, the certificate of sbc1 "
        r"management \(127\.0\.0\.1:(\d+)\), and is in no inventory: add it to sbc1's "
        r"listeners, or switch it off", found[0])
    assert match is not None and match.group(1) != match.group(2), found[0]
