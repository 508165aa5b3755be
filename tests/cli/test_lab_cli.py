"""The lab a person drives by hand: `lab up` (also --by-hand), `lab sign`, signals, redeploy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from typer.testing import CliRunner

from _tools import require_tool
from certfleet.cli.app import app
from certfleet.cli.lab import _seed_previous
from certfleet.estate.store import Store
from certfleet.lab.ca import LabCA
from certfleet.lab.estate import LabEstate
from lab_support import ASYNCIO_NOISE, STRICT_CERTFLEET

SRC = Path(__file__).resolve().parents[2] / "src"
runner = CliRunner()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1", **extra}


class LabProcess:
    """`certfleet lab up` in a real process; ``lines`` is its output up to 'Press Ctrl-C'."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(command or [sys.executable, "-m", "certfleet"]), "lab", "up", "--sbcs", "1",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env or _env(),
        )
        assert self.process.stdout is not None
        self.lines: list[str] = []
        for line in self.process.stdout:
            self.lines.append(line)
            if "Press Ctrl-C" in line:
                break
        else:
            self.process.wait(30)
            pytest.fail("lab up ended early:\n" + self.text)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def steps(self) -> list[str]:
        """The printed next steps: the indented lines after 'Renew it by hand'."""
        start = next(i for i, line in enumerate(self.lines) if line.startswith("Renew it"))
        steps = []
        for line in self.lines[start + 1:]:
            if not line.startswith("  "):
                break
            steps.append(line.strip())
        return steps

    def stop(self, signum: int) -> tuple[int, str]:
        """Send ``signum``; the exit code and the rest of the output (bounded wait)."""
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"lab up did not stop within 90 s of signal {signum}:\n{self.text}")
        rest = self.process.stdout.read() if self.process.stdout else ""
        return code, rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def lab_process() -> Iterator[list[LabProcess]]:
    started: list[LabProcess] = []
    yield started
    for process in started:
        process.kill()


def _lab_env(lab_dir: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in (lab_dir / "lab.env").read_text().splitlines()
        if line and not line.startswith("#")
    )


# ---- lab up -------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="sends SIGHUP and runs the steps in a shell")
def test_lab_up_by_hand_prints_ports_and_steps_that_renew_when_pasted(
    tmp_path: Path, lab_process: list[LabProcess]
) -> None:
    """--by-hand: empty state, last year's pfx (password in lab.env) is what the devices serve;
    the devices' ports printed are the inventory's; the printed steps, run as printed in a
    shell, renew every device (deploy exit 0); SIGHUP then stops the lab cleanly."""
    lab_dir = tmp_path / "lab"
    lab = LabProcess("--by-hand", "--dir", str(lab_dir))
    lab_process.append(lab)
    assert not (lab_dir / "state").exists() or not any((lab_dir / "state").iterdir())

    inventory = (lab_dir / "certfleet.toml").read_text()
    printed_ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", lab.text)}
    inventory_ports = {int(p) for p in re.findall(r"(?:port|ssh_port|https_port) = (\d+)",
                                                   inventory)}
    assert inventory_ports and inventory_ports <= printed_ports, lab.text
    for name in ("ovoc", "sbc1-ha"):
        assert re.search(rf"^  {name} ", lab.text, re.M), lab.text

    secrets = _lab_env(lab_dir)
    pfx = lab_dir / "wildcard-last-year.pfx"
    assert pfx.stat().st_mode & 0o777 == 0o600
    key, leaf, extra = pkcs12.load_key_and_certificates(
        pfx.read_bytes(), secrets["CERTFLEET_LAB_PFX_PASSWORD"].encode())
    assert key is not None and leaf is not None and len(extra) == 2
    sip_port = int(re.search(r"sip-tls 127\.0\.0\.1:(\d+)", lab.text).group(1))  # type: ignore[union-attr]
    import ssl

    served = x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", sip_port)).encode())
    assert served == leaf

    steps = lab.steps()
    assert any(" lab sign " in step for step in steps) and steps[-1].endswith(" deploy")
    assert not any(step.startswith("certfleet ") for step in steps), "a bare certfleet"
    shell = subprocess.run(["bash", "-e", "-x", "-c", "\n".join(steps)], capture_output=True,
                           text=True, cwd=tmp_path, env=_env(), timeout=240, check=False)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    # every device of the inventory installed, none refused or failed
    devices = len(re.findall(r"^\[devices\.[^.\]]+\]$", inventory, re.M))
    assert re.search(rf"^{devices} installed; exit code 0\b", shell.stdout, re.M), shell.stdout
    renewed = x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", sip_port)).encode())
    assert renewed != leaf and renewed.public_key() != leaf.public_key()

    code, rest = lab.stop(signal.SIGHUP)
    assert code == 0 and "stopping the lab (SIGHUP)" in rest, rest
    assert (lab_dir / "certfleet.toml").is_file(), "--dir is kept"


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT and runs the steps in a shell")
def test_lab_up_by_hand_serves_a_renewal_without_asyncio_noise(
    tmp_path: Path, lab_process: list[LabProcess]
) -> None:
    """lab up --by-hand, renewed by its pasted steps (adopt, deploy to OVOC and SBC): the lab's
    output has no asyncio report of a write to a lost connection (made to report the first)."""
    lab_dir = tmp_path / "lab"
    lab = LabProcess("--by-hand", "--dir", str(lab_dir), command=STRICT_CERTFLEET)
    lab_process.append(lab)
    shell = subprocess.run(["bash", "-e", "-c", "\n".join(lab.steps())], capture_output=True,
                           text=True, cwd=tmp_path, env=_env(), timeout=240, check=False)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert "installed" in shell.stdout and ASYNCIO_NOISE not in shell.stderr, shell.stdout
    code, rest = lab.stop(signal.SIGINT)
    assert code == 0, rest
    assert ASYNCIO_NOISE not in lab.text + rest, lab.text + rest


@pytest.mark.skipif(os.name != "posix", reason="sends SIGTERM")
def test_lab_up_sigterm_removes_every_temporary_folder(
    tmp_path: Path, lab_process: list[LabProcess]
) -> None:
    """Without --dir, SIGTERM stops the lab like Ctrl-C: exit 0 and no temporary folder left
    (the lab folder holds the CA's and the OVOC's keys)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = Path(sys.executable).parent / "certfleet"  # the console script pip installed
    command = [str(script)] if script.is_file() else None
    lab = LabProcess(env=_env(TMPDIR=str(temp)), command=command)
    lab_process.append(lab)
    # The steps name the executable that runs, by its full path.
    first = command[0] if command else f"{sys.executable} -m certfleet"
    assert all(s.startswith(first) for s in lab.steps()[2:]), lab.text
    made = sorted(p.name for p in temp.iterdir())
    assert any(name.startswith("certfleet-lab-") for name in made), made
    assert list(temp.rglob("*.key")), "the lab CA's keys are in the temporary folder"
    code, rest = lab.stop(signal.SIGTERM)
    assert code == 0 and "stopping the lab (SIGTERM)" in rest, lab.text + rest
    assert sorted(p.name for p in temp.iterdir()) == []


# ---- lab sign -----------------------------------------------------------------------


@pytest.mark.oracle
def test_lab_sign_hands_over_a_crt_and_a_p7b(tmp_path: Path) -> None:
    """A CSR from `certfleet csr` is issued by the lab CA saved in the lab folder: the .crt
    holds the CSR's key and names, the .p7b the intermediate and root; openssl verifies the
    leaf in strict mode against that chain."""
    openssl = require_tool("openssl")
    lab_dir = tmp_path / "lab"
    ca = LabCA(name="Sign Lab")
    ca.save(LabEstate.ca_dir_of(lab_dir))
    made = runner.invoke(app, ["csr", "--cn", "*.example.com", "--san", "example.com",
                               "--key-type", "ec-p256", "--out-dir", str(tmp_path / "o")])
    assert made.exit_code == 0, made.output
    csr_path = next((tmp_path / "o").glob("*.csr"))
    result = runner.invoke(app, ["lab", "sign", str(csr_path), "--dir", str(lab_dir),
                                 "--out-dir", str(tmp_path / "ca")])
    assert result.exit_code == 0, result.output
    crt, p7b = tmp_path / "ca" / "star_example_com.crt", tmp_path / "ca" / "star_example_com.p7b"
    assert str(crt) in result.output.replace("\n", "") and p7b.is_file()

    leaf = x509.load_pem_x509_certificate(crt.read_bytes())
    request = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert leaf.public_key() == request.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"*.example.com", "example.com"}
    chain = pkcs7.load_pem_pkcs7_certificates(p7b.read_bytes())
    assert set(chain) == {ca.root, *ca.intermediate_certs}
    (tmp_path / "root.pem").write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ca.intermediate_certs))
    verify = subprocess.run(
        [openssl, "verify", "-x509_strict", "-CAfile", str(tmp_path / "root.pem"),
         "-untrusted", str(tmp_path / "chain.pem"), str(crt)],
        capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_lab_sign_refusals_are_one_line_with_a_tip(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No lab folder, a folder without a lab CA, a file that is not a CSR: exit 2, no trace."""
    monkeypatch.delenv("CERTFLEET_INVENTORY", raising=False)
    lab_dir = tmp_path / "lab"
    LabCA(name="Refusal Lab").save(LabEstate.ca_dir_of(lab_dir))
    cert = tmp_path / "leaf.crt"
    cert.write_bytes(LabCA(name="Other").issue(["x.example.com"]).leaf_pem)
    cases = [
        (["lab", "sign", str(cert)], "no lab folder given"),
        (["lab", "sign", str(cert), "--dir", str(tmp_path / "nowhere")], "holds no lab CA"),
        (["lab", "sign", str(cert), "--dir", str(lab_dir)], "not one"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Tip:" in result.output
        assert "Traceback" not in result.output
    assert not list(tmp_path.glob("*.p7b"))


def test_lab_sign_finds_the_lab_from_the_inventory_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --dir the lab folder is the one of $CERTFLEET_INVENTORY (set by the steps)."""
    lab_dir = tmp_path / "lab"
    ca = LabCA(name="Env Lab")
    ca.save(LabEstate.ca_dir_of(lab_dir))
    monkeypatch.setenv("CERTFLEET_INVENTORY", str(lab_dir / "certfleet.toml"))
    made = runner.invoke(app, ["csr", "--cn", "host.example.com", "--key-type", "ec-p256",
                               "--out-dir", str(tmp_path / "o")])
    assert made.exit_code == 0, made.output
    csr_path = next((tmp_path / "o").glob("*.csr"))
    result = runner.invoke(app, ["lab", "sign", str(csr_path)])
    assert result.exit_code == 0, result.output
    leaf = x509.load_pem_x509_certificate((tmp_path / "o" / "host_example_com.crt").read_bytes())
    assert leaf.issuer == ca.issuer[0].subject


# ---- the lab's v1 -------------------------------------------------------------------


def test_lab_v1_redeploys_on_every_device_without_forcing_past_errors(tmp_path: Path) -> None:
    """v1 as `lab up` imports it holds the chain with its root: redeploying it passes every
    preflight (nothing forced past) and installs on OVOC and each SBC, exit 0."""
    lab = LabEstate(tmp_path / "lab", sbcs=2)
    lab.start()
    try:
        with Store.open(tmp_path / "lab" / "state") as store:
            _seed_previous(lab, store)
        with lab.environment():
            result = runner.invoke(app, [
                "deploy", "--force", "--inventory", str(lab.inventory_path),
                "--state-dir", str(tmp_path / "lab" / "state")])
    finally:
        lab.stop()
    assert result.exit_code == 0, result.output
    assert "forced past" not in result.output, result.output
    for device in ("ovoc", "sbc1", "sbc2-ha"):
        assert f"{device}: installed" in result.output, result.output
    assert "root.crt" in result.output  # OVOC was given the root it wants
