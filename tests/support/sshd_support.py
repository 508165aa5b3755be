"""The machine's own OpenSSH daemon for the sshd tests (``sftp`` kind, OVOC driver).

``run_sshd`` starts ``sshd -D -e -f <own config>`` on 127.0.0.1 and a free port,
with its own ed25519 host key in the test's folder, and stops it afterwards; the
caller adds the lines that say who may log in and how.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from _tools import in_ci
from certfleet.lab.tls import free_port

__all__ = ["NoContentHandler", "Sshd", "keygen", "require_root", "run_sshd"]


@dataclass(frozen=True)
class Sshd:
    port: int
    #: The host key as a known_hosts/pin line (``ssh-ed25519 AAAA... comment``).
    host_key_line: str


class NoContentHandler(BaseHTTPRequestHandler):
    """The loopback HTTPS "web server" of a device: 204 to every GET, no log lines."""

    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def require_root(skip_reason: str) -> None:
    """Skip (with ``skip_reason``) unless root; in CI, fail instead."""
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the sshd test needs root in CI")
        pytest.skip(skip_reason)


def keygen(ssh_keygen: str, path: Path) -> None:
    """A new ed25519 key pair without passphrase at ``path`` and ``path.pub``."""
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _sftp_server() -> str:
    return next((p for p in ("/usr/lib/openssh/sftp-server",
                             "/usr/libexec/openssh/sftp-server") if os.path.exists(p)),
                "internal-sftp")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sshd exited: {process.stderr.read() if process.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("sshd did not start listening")


@contextlib.contextmanager
def run_sshd(sshd: str, ssh_keygen: str, work: Path, access: list[str]) -> Iterator[Sshd]:
    """sshd on 127.0.0.1 until the block ends; ``access``: its authentication lines.

    Host key, config and pid file are written in ``work``.
    """
    host_key = work / "ssh_host_ed25519_key"
    keygen(ssh_keygen, host_key)
    port = free_port()
    config = work / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"PidFile {work}/sshd.pid", *access, f"Subsystem sftp {_sftp_server()}",
        "StrictModes no", "PrintMotd no", "LogLevel VERBOSE", "",
    ]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, process, time.monotonic() + 20)
        yield Sshd(port, host_key.with_suffix(".pub").read_text().strip())
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
