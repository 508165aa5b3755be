"""Recognise what each host is, read-only: an AudioCodes SBC, OVOC, or an unmanaged listener.

Without credentials only what needs none is read: the served certificates,
the REST API's answer to an unauthenticated ``GET /api/v1/status``, the SSH
banner and host key. A password goes only to a host that is proven: its
management certificate (SBC) or SSH host key (OVOC) matches a pin, or trust on
first use was asked for. Every request is a GET (or an SSH read): discovery
changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CertfleetError
from ..pki.model import cert_sha256
from .find import Observation
from .ini import IniView, read_ini

__all__ = ["Credentials", "Host", "OvocFacts", "Pins", "SbcFacts", "recognise"]

#: Where OVOC's tools live, checked over SSH without running them (assumptions, as
#: the OVOC menu labels are: adjust for your appliance).
EMS_COMMAND = "which EmsServerManager"
STAGING_DIR = "/home/acems/server_certs"


@dataclass(frozen=True)
class Credentials:
    """The logins discovery may use on proven hosts (passwords never printed)."""

    sbc_user: str | None = None
    sbc_password: str | None = field(default=None, repr=False)
    sbc_password_env: str | None = None
    ssh_user: str = "acems"
    ssh_password: str | None = field(default=None, repr=False)
    ssh_password_env: str | None = None


@dataclass
class Pins:
    """Fingerprints known from a previous inventory: SBC management certificates (hex
    SHA-256) and SSH host keys (``SHA256:...``)."""

    tls: set[str] = field(default_factory=set)
    ssh: set[str] = field(default_factory=set)
    trust_on_first_use: bool = False

    def proves_tls(self, sha256: str | None) -> bool:
        return sha256 is not None and (self.trust_on_first_use or sha256 in self.tls)

    def proves_ssh(self, fingerprint: str | None) -> bool:
        return fingerprint is not None and (self.trust_on_first_use or
                                            fingerprint.rstrip("=") in self.ssh)


@dataclass
class SbcFacts:
    management_port: int
    management_sha256: str
    realm: str | None = None
    proven: bool = False
    logged_in: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    ini: IniView | None = None
    context_sha256: dict[int, str | None] = field(default_factory=dict)
    management_context: int | None = None
    error: str | None = None


@dataclass
class OvocFacts:
    ssh_port: int
    host_key: str
    https_port: int | None
    banner: str = ""
    proven: bool = False
    confirmed: bool = False
    ems_path: str | None = None
    staging: bool = False
    error: str | None = None


@dataclass
class Host:
    """One address and what it answered on."""

    address: str
    seen: list[Observation]
    sbc: SbcFacts | None = None
    ovoc: OvocFacts | None = None
    credentials_sent: list[str] = field(default_factory=list)

    @property
    def tls(self) -> list[Observation]:
        return [o for o in self.seen if o.tls]

    @property
    def ssh(self) -> list[Observation]:
        return [o for o in self.seen if o.ssh_banner is not None]


async def _rest_answer(host: str, port: int, timeout: float) -> tuple[int, dict[str, Any],
                                                                       str | None] | None:
    """An unauthenticated ``GET /api/v1/status``: (status, JSON, auth realm), or None when
    what answers is not a REST API (no credentials are sent)."""
    import httpx

    from ..drivers.pinning import no_verify_context

    try:
        async with httpx.AsyncClient(verify=no_verify_context(), timeout=timeout,
                                     follow_redirects=False) as client:
            answer = await client.get(f"https://{_url_host(host)}:{port}/api/v1/status")
    except (httpx.HTTPError, OSError, ValueError):
        return None
    challenge = answer.headers.get("WWW-Authenticate", "")
    if answer.status_code == 401 and challenge:
        realm = challenge.partition('realm="')[2].partition('"')[0] or None
        return 401, {}, realm
    if answer.status_code == 200 and "json" in answer.headers.get("Content-Type", ""):
        with contextlib.suppress(ValueError):
            data = json.loads(answer.content)
            if isinstance(data, dict) and "productType" in data:
                return 200, data, None
    return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _sbc_login(host: Host, facts: SbcFacts, creds: Credentials, timeout: float) -> None:
    """Log in to a proven SBC (the pinned certificate checked in every handshake) and read
    its status, INI and the certificates of its TLS contexts: GET requests only."""
    from ..drivers.sbc import SbcDriver

    assert creds.sbc_password is not None
    driver = SbcDriver(f"discover {host.address}",
                       f"https://{_url_host(host.address)}:{facts.management_port}",
                       password=creds.sbc_password, user=creds.sbc_user or "Admin",
                       pin_sha256=facts.management_sha256, timeout=timeout)
    host.credentials_sent.append(f"{host.address}:{facts.management_port}")
    try:
        async with driver.session():
            facts.logged_in = True
            facts.status = dict(driver.status)
            listed = await driver._get_optional("/files/tls", what="listing the TLS contexts")
            ini = read_ini((await driver.read_ini()).decode("utf-8", "replace"))
            contexts = _listed_contexts(listed) or ini.contexts
            facts.ini = IniView(contexts, ini.sip_interfaces, ini.web_context)
            for index in sorted(contexts):
                cert = await driver.read_certificate(index)
                facts.context_sha256[index] = cert_sha256(cert) if cert is not None else None
    except CertfleetError as exc:
        facts.error = exc.message
        return
    web = facts.ini.context_index(facts.ini.web_context) if facts.ini else None
    if web is None:  # the INI does not say: the context holding what management serves
        web = next((i for i, sha in facts.context_sha256.items()
                    if sha == facts.management_sha256), None)
    facts.management_context = web


def _listed_contexts(body: bytes) -> dict[int, str]:
    """``GET /files/tls`` where the firmware lists the contexts (else {})."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return {}
    items = data.get("tls", data.get("items")) if isinstance(data, dict) else data
    out: dict[int, str] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and str(item.get("id", "")).isdigit():
            out[int(item["id"])] = str(item.get("name", item["id"]))
    return out


async def _ovoc_login(host: Host, facts: OvocFacts, creds: Credentials, timeout: float) -> None:
    """Log in as acems (host key pinned) and find EmsServerManager and the staging folder,
    without entering the menu and without su."""
    from ..drivers.ovoc.config import SshLogin, Timeouts
    from ..drivers.ovoc.ssh import open_connection

    login = SshLogin(port=facts.ssh_port, user=creds.ssh_user, password=creds.ssh_password,
                     host_key=facts.host_key)
    host.credentials_sent.append(f"{host.address}:{facts.ssh_port}")
    try:
        conn = await open_connection(host.address, login, Timeouts(connect=timeout),
                                     f"discover {host.address}")
    except CertfleetError as exc:
        facts.error = exc.message
        return
    try:
        async with asyncio.timeout(timeout * 3):
            result = await conn.run(EMS_COMMAND, check=False)
            out = str(result.stdout or "").strip().splitlines()
            facts.ems_path = next((line for line in out if line.endswith("EmsServerManager")
                                   and line.startswith("/")), None)
            async with conn.start_sftp_client() as sftp:
                facts.staging = bool(await sftp.isdir(STAGING_DIR))
        facts.confirmed = facts.ems_path is not None
    except (OSError, TimeoutError, Exception) as exc:  # a read that fails is a finding
        facts.error = f"reading {host.address} over SSH: {type(exc).__name__}: {exc}"
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()


async def recognise_host(host: Host, pins: Pins, creds: Credentials, timeout: float) -> None:
    """What ``host`` is (fills ``sbc`` or ``ovoc``); logs in only where proven."""
    for seen in host.tls:
        probe = seen.probe
        assert probe is not None and probe.certificate is not None
        if not probe.handshake_completed:
            continue
        answer = await _rest_answer(host.address, seen.port, timeout)
        if answer is None:
            continue
        sha = cert_sha256(probe.certificate)
        host.sbc = SbcFacts(seen.port, sha, realm=answer[2], status=answer[1])
        break
    if host.sbc is not None:
        facts = host.sbc
        facts.proven = pins.proves_tls(facts.management_sha256)
        if facts.proven and creds.sbc_password is not None:
            await _sbc_login(host, facts, creds, timeout)
        return
    ssh = host.ssh
    if ssh and ssh[0].ssh_host_key:
        https = next((o.port for o in host.tls if o.probe and o.probe.handshake_completed),
                     None)
        if https is None:
            return
        facts_o = OvocFacts(ssh[0].port, ssh[0].ssh_host_key, https,
                            banner=ssh[0].ssh_banner or "")
        facts_o.proven = pins.proves_ssh(facts_o.host_key)
        host.ovoc = facts_o
        if facts_o.proven and creds.ssh_password is not None:
            await _ovoc_login(host, facts_o, creds, timeout)


async def recognise(hosts: Sequence[Host], pins: Pins, creds: Credentials, *, timeout: float,
                    concurrency: int) -> None:
    """Recognise every host, at most ``concurrency`` at once."""
    gate = asyncio.Semaphore(max(1, min(concurrency, 32)))

    async def one(host: Host) -> None:
        async with gate:
            await recognise_host(host, pins, creds, timeout)

    await asyncio.gather(*(one(h) for h in hosts))
