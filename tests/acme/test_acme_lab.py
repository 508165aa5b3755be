"""demo --acme and lab up --acme: the unattended story on the lab, and a missing Pebble."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _tools import require_tool
from certfleet.cli.app import app
from lab_support import ASYNCIO_NOISE, STRICT_CERTFLEET, read_lab_env, until_serving

SRC = Path(__file__).resolve().parents[2] / "src"


def test_demo_acme_tells_the_unattended_story() -> None:
    """Nothing due → due → ordered from Pebble, deployed, verified → nothing; the notice shown."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    result = CliRunner().invoke(app, ["demo", "--acme"])
    assert result.exit_code == 0, result.output[-3000:]
    output = result.output
    assert output.count("renew: 0 ordered; exit code 0") == 2
    assert output.count("renew: 1 ordered; exit code 0") == 1
    assert "renewed: certfleet: wildcard renewed" in output
    assert "is served by: ovoc, sbc1, sbc2, sbc3-ha." in output


@pytest.mark.parametrize("command", [["demo", "--acme"], ["lab", "up", "--acme"]])
def test_acme_without_pebble_says_how_to_install(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Pebble on PATH, --acme exits 2 naming the package to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "pebble" in result.output and "apt-get install pebble" in result.output


@pytest.mark.skipif(os.name != "posix", reason="runs shell scripts as Pebble")
@pytest.mark.parametrize("command", [["demo", "--acme"], ["lab", "up", "--acme", "--sbcs", "1"]])
def test_acme_when_pebble_cannot_start_is_one_error_line(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pebble that exits at once (several lines in its log): one error line, exit 2, the
    lab stopped and nothing left behind, never a traceback."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pebble", "pebble-challtestsrv"):
        script = bin_dir / name
        script.write_text("#!/bin/sh\necho 'cannot listen'\necho 'giving up'\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    if command[0] == "lab":
        command = [*command, "--dir", str(tmp_path / "lab")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output[-3000:]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "Pebble did not start: a Pebble program exited early" in errors[0]
    assert "cannot listen giving up" in errors[0]
    assert "Traceback" not in result.output
    assert "Tip: check that 'pebble -h'" in result.output


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_lab_up_acme_serves_renew_until_interrupted(tmp_path: Path) -> None:
    """lab up --acme: its inventory and lab.env let 'certfleet renew' order from Pebble;
    Ctrl-C stops the lab and Pebble."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    lab_dir = tmp_path / "lab"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "lab", "up", "--acme", "--sbcs", "1", "--dir",
         str(lab_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        lines = until_serving(process, "lab up --acme")
        assert "Pebble: https://127.0.0.1:" in "".join(lines)
        values = read_lab_env(lab_dir / "lab.env")
        result = subprocess.run(
            [sys.executable, "-m", "certfleet", "renew", "--json", "--inventory",
             str(lab_dir / "certfleet.toml"), "--state-dir", str(lab_dir / "state")],
            capture_output=True, text=True, env={**env, **values}, timeout=240, check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout)
        assert report["certificates"][0]["action"] == "issued"
        told = (lab_dir / "notifications.jsonl").read_text()
        assert '"event": "renewed"' in told
        pebbles = [pid for pid, name in _children(process.pid) if name.startswith("pebble")]
        assert len(pebbles) == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in pebbles)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _children(pid: int) -> list[tuple[str, str]]:
    """(pid, program name) of the live children of ``pid``, from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            comm = Path(f"/proc/{child}/comm")
            if comm.exists():
                found.append((child, comm.read_text().strip()))
    return found


def _lab_up(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "certfleet", "lab", "up", *args], cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def _steps(lines: list[str]) -> list[str]:
    """The indented step lines lab up printed after 'Renew it'."""
    start = next(i for i, line in enumerate(lines) if line.startswith("Renew it"))
    steps = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        steps.append(line.strip())
    return steps


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=90)


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_lab_up_acme_with_a_relative_dir_starts_pebble(tmp_path: Path) -> None:
    """lab up --acme --dir lab (relative, from another working folder) starts Pebble, and
    prints the lab's files as absolute paths that exist."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    process = _lab_up(["--acme", "--sbcs", "1", "--dir", "lab"], tmp_path)
    try:
        lines = until_serving(process, "lab up --acme --dir lab")
        text = "".join(lines)
        assert "Pebble: https://127.0.0.1:" in text
        assert (tmp_path / "lab" / "pebble" / "pebble-config.json").is_file()
        inventory = re.search(r"^  inventory: (\S+)$", text, re.M)
        assert inventory is not None, text
        assert Path(inventory.group(1)) == (tmp_path / "lab" / "certfleet.toml").resolve()
        assert _stop(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT and runs the steps in a shell")
def test_lab_up_acme_prints_acme_steps_that_renew_when_pasted(tmp_path: Path) -> None:
    """lab up --acme lists every inventory listener (sbc1's Teams one too) and prints the ACME
    steps (renew, no CSR by hand), which, run as printed from another folder, order and deploy."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    lab_dir = tmp_path / "lab"
    process = _lab_up(["--acme", "--sbcs", "2", "--dir", str(lab_dir)], tmp_path)
    try:
        lines = until_serving(process, "lab up --acme")
        text = "".join(lines)
        inventory = tomllib.loads((lab_dir / "certfleet.toml").read_text())
        [teams] = [item["port"] for item in inventory["devices"]["sbc1"]["listeners"]
                   if item["label"] == "teams"]
        sbc1 = next(line for line in lines if line.startswith("  sbc1 "))
        assert f"teams 127.0.0.1:{teams}" in sbc1, text
        steps = _steps(lines)
        assert any(step.endswith(" renew") for step in steps), steps
        assert not any(" csr " in step or " lab sign " in step for step in steps), steps
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        shell = subprocess.run(
            ["bash", "-e", "-c", "\n".join(steps)], capture_output=True, text=True,
            cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=300,
            check=False)
        assert shell.returncode == 0, shell.stdout[-3000:] + shell.stderr[-3000:]
        assert "renew: 1 ordered; exit code 0" in shell.stdout, shell.stdout[-3000:]
        assert _stop(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.skipif(os.name != "posix", reason="runs shell scripts as Pebble")
def test_pebble_that_cannot_open_a_file_gets_a_tip_naming_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pebble that exits on a missing file: the Tip names the file problem, not a reinstall."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pebble").write_text(
        "#!/bin/sh\necho 'open x/pebble-config.json: no such file or directory'\nexit 1\n")
    (bin_dir / "pebble-challtestsrv").write_text("#!/bin/sh\nsleep 30\n")
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(
        app, ["lab", "up", "--acme", "--sbcs", "1", "--dir", str(tmp_path / "lab")])
    assert result.exit_code == 2, result.output[-3000:]
    tips = [line for line in result.output.splitlines() if line.startswith("Tip:")]
    assert len(tips) == 1, result.output
    assert "could not open a file" in tips[0] and "apt-get" not in tips[0]


def test_demo_acme_has_no_asyncio_noise_on_stderr() -> None:
    """demo --acme closes every SSH session before its connection: asyncio reports no write
    to a lost connection on stderr (it is made to report the first one)."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    result = subprocess.run(
        [*STRICT_CERTFLEET, "demo", "--acme"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "renew: 1 ordered; exit code 0" in result.stdout
    assert ASYNCIO_NOISE not in result.stderr, result.stderr[-3000:]
