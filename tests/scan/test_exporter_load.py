"""``certfleet exporter`` under load: a burst of scrapes, and thousands of connections that
never send their request (a real exporter process, real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from _tools import require_tool
from certfleet.lab.estate import LabEstate
from certfleet.scan.serve import BACKLOG

SCRAPES = 200
HELD = 2000
#: Generous bounds on success paths: a scrape, and the exporter closing what it must.
SCRAPE_BOUND = 120.0
CLOSE_BOUND = 120.0


def _raise_open_files(need: int) -> None:
    """Let this process (and the exporter it starts) hold ``need`` sockets, or skip."""
    try:
        import resource
    except ImportError:
        pytest.skip("no RLIMIT_NOFILE here")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the open-files limit ({hard}) cannot hold {need} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@pytest.fixture()
def exporter(lab: LabEstate, tmp_path: Path) -> Iterator[tuple[str, int, subprocess.Popen[str]]]:
    """A running exporter of one lab listener: (host, port, process) once it serves."""
    _raise_open_files(HELD + SCRAPES + 512)
    env = {**os.environ, "CERTFLEET_STATE_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "exporter", "--listen", "127.0.0.1:0",
         "--interval", "3600", "--no-inventory", "--target", f"127.0.0.1:{lab.tls_ports[0]}",
         "--ca-bundle", str(lab.ca_path), "--ca-bundle", str(lab.sbc_ca_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(600, proc.kill)  # never outlives the test
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving metrics on " in line, line + (proc.stderr.read() if proc.stderr else "")
        url = urlsplit(line.split("serving metrics on ", 1)[1].split()[0])
        assert url.hostname is not None and url.port is not None
        yield url.hostname, url.port, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        watchdog.cancel()


async def _scrape(host: str, port: int) -> tuple[int, str]:
    """One GET /metrics on a connection of its own: (status, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "User-Agent: certfleet-test\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()  # Connection: close
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()


def _metric_names(body: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(body)}


async def _scrapes(host: str, port: int, count: int) -> list[tuple[int, str]]:
    async with asyncio.timeout(SCRAPE_BOUND):
        return await asyncio.gather(*(_scrape(host, port) for _ in range(count)))


@pytest.mark.oracle
def test_200_simultaneous_scrapes_are_all_answered(
    exporter: tuple[str, int, subprocess.Popen[str]],
) -> None:
    """200 scrapes at once all get the metrics; the listen queue holds a burst that size."""
    host, port, proc = exporter
    answers = asyncio.run(_scrapes(host, port, SCRAPES))
    assert [status for status, _ in answers] == [200] * SCRAPES
    for _, body in answers:
        assert {"x509_cert_not_after", "certfleet_listener_up"} <= _metric_names(body)
    # The kernel's accept queue (ss: Send-Q of a listening socket) is what keeps a burst
    # from having its SYNs dropped and retried seconds later.
    ss = require_tool("ss")
    listing = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert int(listing[2]) == min(BACKLOG, somaxconn) and int(listing[2]) >= SCRAPES
    assert proc.poll() is None


async def _hold(host: str, port: int, partial: bool) -> tuple[asyncio.StreamReader,
                                                              asyncio.StreamWriter] | None:
    """A connection that never finishes its request (None when refused at once)."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionError:
        return None
    if partial:  # the start of a request, never its end
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    return reader, writer


async def _closed_by_peer(reader: asyncio.StreamReader | None) -> bool:
    if reader is None:  # refused at once
        return True
    try:
        return await reader.read(1) == b""
    except ConnectionError:  # a reset: closed with our unread request in its buffer
        return True


async def _held_connections(host: str, port: int) -> tuple[list[tuple[int, str]], list[bool]]:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
    for start in range(0, HELD, 200):
        held += await asyncio.gather(*(_hold(host, port, n % 2 == 0)
                                       for n in range(start, start + 200)))
    try:
        fresh = await _scrapes(host, port, 3)
        async with asyncio.timeout(CLOSE_BOUND):
            closed = await asyncio.gather(*(_closed_by_peer(c[0] if c else None) for c in held))
        return fresh, closed
    finally:
        for connection in held:
            if connection is not None:
                connection[1].close()


def test_2000_held_connections_leave_it_serving(
    exporter: tuple[str, int, subprocess.Popen[str]],
) -> None:
    """2,000 connections that never send a request: the exporter answers a fresh scrape,
    closes every one of them (cap and read timeout), and serves on."""
    host, port, proc = exporter
    fresh, closed = asyncio.run(_held_connections(host, port))
    assert [status for status, _ in fresh] == [200] * 3
    assert "x509_cert_not_after" in _metric_names(fresh[0][1])
    assert len(closed) == HELD and all(closed)
    assert proc.poll() is None
    [(status, body)] = asyncio.run(_scrapes(host, port, 1))
    assert status == 200 and "certfleet_listener_up" in _metric_names(body)
