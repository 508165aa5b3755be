"""`certfleet lab up`: a lab estate that runs until Ctrl-C, usable with the estate commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from lab_support import read_lab_env, until_serving

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_lab_up_serves_until_interrupted(tmp_path: Path) -> None:
    """lab up writes inventory, 0600 secrets and state; status works; Ctrl-C stops it cleanly."""
    lab_dir = tmp_path / "lab"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "lab", "up", "--sbcs", "2", "--dir", str(lab_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        lines = until_serving(process, "lab up")
        secrets = lab_dir / "lab.env"
        assert secrets.stat().st_mode & 0o777 == 0o600
        assert "certfleet.toml" in "".join(lines)
        values = read_lab_env(secrets)
        old_env = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            result = CliRunner().invoke(app, [
                "status", "--json", "--inventory", str(lab_dir / "certfleet.toml"),
                "--state-dir", str(lab_dir / "state"),
            ])
        finally:
            for name, value in old_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        assert result.exit_code == 0, result.output
        devices = json.loads(result.stdout)["devices"]
        assert {d["name"] for d in devices} == {"ovoc", "sbc1", "sbc2-ha"}
        assert all(d["agree"] and d["listeners"][0]["is_current"] for d in devices)
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            rest = process.stdout.read() if process.stdout else ""
            pytest.fail("lab up did not stop within 90 s of Ctrl-C:\n" + "".join(lines) + rest)
        assert code == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
