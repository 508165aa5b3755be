"""Pebble and pebble-challtestsrv on loopback: a real ACME CA with real DNS-01.

Pebble (Debian package ``pebble``) is Let's Encrypt's test CA; it validates
DNS-01 by asking the DNS server it is given. ``pebble-challtestsrv`` is
that DNS server here: TXT records are added and cleared through its
management API (``POST /set-txt {"host", "value"}``, ``POST /clear-txt
{"host"}``), which is what the ``challtestsrv`` DNS provider and the lab's
hook scripts call. ``PEBBLE_VA_ALWAYS_VALID`` is never set: every
authorisation is a real DNS lookup by Pebble's validation authority.

Pebble's HTTPS listener gets a certificate from a small lab CA written to
``ca_bundle_path``; Pebble's own issuing roots are read from its management
interface (``/roots/N``). POSIX only, like the rest of the lab.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from ..fsutil import write_file_atomic, write_private_file
from .ca import LabCA
from .tls import free_port

__all__ = ["PEBBLE_INSTALL_HINT", "LabPebble", "add_acme_to_inventory", "eab_key", "pebble_missing"]

PEBBLE_INSTALL_HINT = "install Pebble: sudo apt-get install pebble (Debian/Ubuntu)"


def pebble_missing() -> list[str]:
    """The Pebble programs not found on PATH (empty when both are installed)."""
    return [p for p in ("pebble", "pebble-challtestsrv") if shutil.which(p) is None]


class LabPebble:
    """Pebble + pebble-challtestsrv on 127.0.0.1 free ports, files under ``directory``.

    ``eab_keys`` maps EAB key IDs to base64url HMAC keys and makes external
    account binding required; ``alternate_roots`` asks Pebble for that many
    extra chains (``PEBBLE_ALTERNATE_ROOTS``); ``validity`` is the lifetime in seconds
    of the certificates Pebble issues (``certificateValidityPeriod``; Pebble's default,
    about five years, when None).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        eab_keys: dict[str, str] | None = None,
        alternate_roots: int = 0,
        chain_length: int = 2,
        validity: int | None = None,
    ) -> None:
        # Absolute: the programs run in this folder and are given paths into it.
        self.directory = Path(directory).resolve()
        self.eab_keys = dict(eab_keys or {})
        self.alternate_roots = alternate_roots
        self.chain_length = chain_length
        self.validity = validity
        self.acme_port = free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        self.challtestsrv_port = free_port()
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[BinaryIO] = []

    # ---- addresses -------------------------------------------------------------------

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def ca_bundle_path(self) -> Path:
        """The CA file that verifies Pebble's HTTPS listener (``ca_bundle`` in the inventory)."""
        return self.directory / "pebble-https-ca.pem"

    @property
    def challtestsrv_url(self) -> str:
        return f"http://127.0.0.1:{self.challtestsrv_port}"

    @property
    def dns_server(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    # ---- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> LabPebble:
        """Start both programs and wait until they answer. Raises RuntimeError."""
        missing = pebble_missing()
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not found: {PEBBLE_INSTALL_HINT}")
        self.directory.mkdir(parents=True, exist_ok=True)
        cert_path = self.directory / "pebble-https.pem"
        key_path = self.directory / "pebble-https.key"
        self._write_https_certificate(cert_path, key_path)
        config: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            # Only DNS-01 is used; these ports are never reached.
            "httpPort": 5002,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
        }
        if self.eab_keys:
            config["externalAccountMACKeys"] = self.eab_keys
        if self.validity is not None:
            config["certificateValidityPeriod"] = int(self.validity)
        config_path = self.directory / "pebble-config.json"
        write_file_atomic(config_path, json.dumps({"pebble": config}, indent=2).encode())
        self._spawn(
            [
                "pebble-challtestsrv",
                "-dns01", self.dns_server,
                "-management", f"127.0.0.1:{self.challtestsrv_port}",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
            ],
            "challtestsrv.log",
            {},
        )
        env = {
            # No random sleep before validation, no deliberate nonce rejection:
            # the tests want Pebble's checks, not its chaos.
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
            "PEBBLE_CHAIN_LENGTH": str(self.chain_length),
            "PEBBLE_ALTERNATE_ROOTS": str(self.alternate_roots),
        }
        self._spawn(
            ["pebble", "-config", str(config_path), "-dnsserver", self.dns_server],
            "pebble.log",
            env,
        )
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_https_certificate(self, cert_path: Path, key_path: Path) -> None:
        """A leaf for 127.0.0.1 and localhost from a fresh lab CA, whose root verifies it.

        ``LabCA.issue`` makes RFC 5280-clean certificates (AKI, SKI, critical
        Basic Constraints, Key Usage), so Python's strict X.509 checks (the
        default from 3.13 on) accept Pebble's listener.
        """
        issued = LabCA(name="certfleet Pebble HTTPS").issue(
            ["localhost"], key_type="ec-p256", common_name="pebble", days=30,
            ip_addresses=["127.0.0.1"],
        )
        write_file_atomic(self.ca_bundle_path, issued.root_pem)
        write_file_atomic(cert_path, issued.fullchain_pem)
        write_private_file(key_path, issued.key_pem())

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str]) -> None:
        log = (self.directory / log_name).open("wb")
        self._logs.append(log)
        process = subprocess.Popen(  # a fixed program list
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=self.directory,
            start_new_session=True,
        )
        self._processes.append(process)

    def _wait(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Pebble program exited early: {self.log_tail()}")
            try:
                with httpx.Client(verify=self._tls(), timeout=2.0) as client:
                    client.get(self.directory_url).raise_for_status()
                with httpx.Client(timeout=2.0) as client:
                    client.post(f"{self.challtestsrv_url}/clear-txt",
                                json={"host": "ready.invalid."}).raise_for_status()
                return
            except httpx.HTTPError as exc:
                last = str(exc)
                time.sleep(0.1)
        raise RuntimeError(f"Pebble did not answer within {timeout:.0f}s: {last}")

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle_path))

    def log_tail(self, limit: int = 2000) -> str:
        parts = []
        for name in ("pebble.log", "challtestsrv.log"):
            path = self.directory / name
            if path.exists():
                parts.append(f"{name}: " + path.read_text(errors="replace")[-limit:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop both programs (TERM, then KILL after 5 s)."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LabPebble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what Pebble and challtestsrv know ------------------------------------------

    def roots_pem(self) -> list[bytes]:
        """Pebble's issuing root(s): ``/roots/0`` and one per alternate chain."""
        import httpx

        roots = []
        with httpx.Client(verify=self._tls(), timeout=5.0) as client:
            for index in range(self.alternate_roots + 1):
                response = client.get(
                    f"https://127.0.0.1:{self.management_port}/roots/{index}"
                )
                response.raise_for_status()
                roots.append(response.content)
        return roots

    def write_roots(self, path: Path | str) -> Path:
        """Pebble's roots in one PEM file (the ``root_file`` of the lab inventory)."""
        return write_file_atomic(Path(path), b"".join(self.roots_pem()))

    def inventory_tables(
        self,
        certificate: str = "wildcard",
        *,
        root_file: str = "pebble-roots.pem",
        dns: Mapping[str, object] | None = None,
        acme: Mapping[str, object] | None = None,
    ) -> str:
        """TOML ``acme`` and ``dns`` tables of ``certificate`` for this Pebble.

        The DNS provider is challtestsrv unless ``dns`` says otherwise;
        propagation is checked on challtestsrv itself (``resolvers``).
        """
        acme_table: dict[str, object] = {
            "directory": self.directory_url,
            "email": "pki@example.com",
            "ca_bundle": str(self.ca_bundle_path),
            "root_file": root_file,
            "timeout": 60,
            **(acme or {}),
        }
        dns_table: dict[str, object] = {
            "provider": "challtestsrv",
            "url": self.challtestsrv_url,
            "resolvers": [self.dns_server],
            "propagation_timeout": 30,
            **(dns or {}),
        }

        def render(table: Mapping[str, object]) -> list[str]:
            return [f"{key} = {json.dumps(value)}" for key, value in table.items()]

        lines = [f"[certificates.{certificate}.acme]", *render(acme_table), "",
                 f"[certificates.{certificate}.dns]", *render(dns_table), ""]
        return "\n".join(lines) + "\n"

    def txt_records(self, name: str) -> list[str]:
        """The TXT values challtestsrv serves for ``name`` now, asked over DNS."""
        import dns.message
        import dns.query
        import dns.rdatatype

        query = dns.message.make_query(name.rstrip(".") + ".", dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=3.0)
        values: list[str] = []
        for rrset in answer.answer:
            for item in rrset:
                values.append(b"".join(item.strings).decode())
        return values


def add_acme_to_inventory(
    path: Path,
    pebble: LabPebble,
    *,
    certificate: str = "wildcard",
    notify_env: str | None = None,
    renew_before_days: int = 30,
    dns: Mapping[str, object] | None = None,
) -> None:
    """Make the lab inventory at ``path`` order ``certificate`` from ``pebble``.

    Writes Pebble's roots next to it, adds ``renew_before_days`` (the lab's
    certificate has days, not months, left) and the acme and dns tables, and
    a ``[notify]`` table reading its URL from ``notify_env`` when given.
    """
    pebble.write_roots(path.parent / "pebble-roots.pem")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = f"[certificates.{certificate}]"
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    added = [f"renew_before_days = {renew_before_days}", "",
             *pebble.inventory_tables(certificate, dns=dns).splitlines()]
    lines[end:end] = added
    if notify_env:
        lines += ["", "[notify]", f'urls = ["env:{notify_env}"]',
                  'on = ["failure", "renewed", "expiring"]']
    write_file_atomic(path, ("\n".join(lines) + "\n").encode())


def eab_key() -> tuple[str, str]:
    """A fresh EAB key id and base64url HMAC key, as a commercial CA hands them out."""
    raw = os.urandom(32)
    return "kid-" + raw[:4].hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")
