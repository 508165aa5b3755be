"""The README's "Renew the lab by hand" runs exactly as written, against a real `lab up`."""

from __future__ import annotations

import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from lab_support import until_serving

README = Path(__file__).resolve().parents[2] / "README.md"
SRC = Path(__file__).resolve().parents[2] / "src"


def walkthrough() -> tuple[str, str]:
    """The two shell blocks of the section: the `lab up` line and the steps."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Renew the lab by hand\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2, blocks
    return blocks[0].strip(), blocks[1]


def test_the_walkthrough_names_the_steps_of_the_issue() -> None:
    up, steps = walkthrough()
    assert up == "certfleet lab up --by-hand --dir lab"
    commands = [line.split()[1] for line in steps.splitlines() if line.startswith("certfleet ")]
    assert commands == ["status", "adopt", "csr", "lab", "import", "plan", "deploy", "verify",
                        "rollback"]


@pytest.mark.skipif(os.name != "posix", reason="runs the README's lines in bash")
def test_renew_the_lab_by_hand_as_written(tmp_path: Path) -> None:
    """Newcomer findings (first renewal of an estate set up by hand, the lab steps that renewed
    nothing): on `lab up --by-hand`, the README's lines adopt last year's pfx, renew every
    device with rollback available, and `rollback sbc1` restores it; every line exits 0."""
    up, steps = walkthrough()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("CERTFLEET_INVENTORY", "CERTFLEET_STATE_DIR", "COLUMNS"):
        env.pop(name, None)
    words = shlex.split(up)
    # `certfleet` as the installed console script runs it, or the module when none is.
    command = ([str(bin_dir / "certfleet")] if (bin_dir / "certfleet").is_file()
               else [sys.executable, "-m", "certfleet"])
    process = subprocess.Popen([*command, *words[1:]], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        printed = "".join(until_serving(process, "lab up"))
        sip = re.search(r"^  sbc1 .*sip-tls 127\.0\.0\.1:(\d+)", printed, re.M)
        assert sip is not None, printed
        port = int(sip.group(1))

        def served() -> x509.Certificate:
            return x509.load_pem_x509_certificate(
                ssl.get_server_certificate(("127.0.0.1", port)).encode())

        last_year = served()
        prelude = "" if (bin_dir / "certfleet").is_file() else (
            f'certfleet() {{ {shlex.quote(sys.executable)} -m certfleet "$@"; }}\n')
        shell = subprocess.run(["bash", "-e", "-x", "-c", prelude + steps], capture_output=True,
                               text=True, cwd=tmp_path, env=env, timeout=300, check=False)
        out = shell.stdout + shell.stderr
        assert shell.returncode == 0, out
        assert re.search(r"adopted wildcard v1", out) and out.count("serves it") == 4, out
        assert "installed" in out and "refused" not in out, out
        assert "restored" in out, out
        assert served() == last_year  # rollback sbc1 put last year's certificate back
        state = tmp_path / "lab" / "state"
        from certfleet.estate.store import Store

        with Store.open(state) as store:
            labels = [(v.label, v.origin) for v in store.versions("wildcard")]
        assert labels == [("wildcard v1", "adopt"), ("wildcard v2", "import")]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
