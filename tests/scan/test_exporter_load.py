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
from certfleet.scan.serve import BACKLOG, MAX_CONNECTIONS

SCRAPES = 200
HELD = 2000
#: Generous bounds on success paths: a scrape, and the exporter closing what it must.
SCRAPE_BOUND = 120.0
CLOSE_BOUND = 120.0


#: Descriptors this process keeps for itself (the lab, pytest, the scrapes) besides the held ones.
_MARGIN = SCRAPES + 256


def _holdable(wanted: int) -> tuple[int, str]:
    """How many connections this process can hold (raising its soft open-files limit to the
    hard one), at most ``wanted``, and a note on the limit for the assertion messages."""
    try:
        import resource
    except ImportError:  # no such per-process limit
        return wanted, "no open-files limit"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else wanted + _MARGIN
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= wanted + _MARGIN:
        return wanted, f"open-files limit {soft}"
    return max(1, soft - _MARGIN), (f"only {soft - _MARGIN} of {wanted} connections held: "
                                    f"the open-files hard limit is {hard}")


def _start(lab: LabEstate, tmp_path: Path, *extra: str) -> tuple[str, int, subprocess.Popen[str]]:
    """A running exporter of one lab listener: (host, port, process) once it serves."""
    env = {**os.environ, "CERTFLEET_STATE_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    with (tmp_path / "exporter.err").open("w") as err:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "certfleet", "exporter", "--listen", "127.0.0.1:0",
             "--interval", "3600", "--no-inventory", "--target",
             f"127.0.0.1:{lab.tls_ports[0]}", "--ca-bundle", str(lab.ca_path),
             "--ca-bundle", str(lab.sbc_ca_path), *extra],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving metrics on " in line, line + (tmp_path / "exporter.err").read_text()
        url = urlsplit(line.split("serving metrics on ", 1)[1].split()[0])
        assert url.hostname is not None and url.port is not None
    except BaseException:
        _stop(proc)
        raise
    return url.hostname, url.port, proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def _exporter(lab: LabEstate, tmp_path: Path,
              *extra: str) -> Iterator[tuple[str, int, subprocess.Popen[str]]]:
    started = _start(lab, tmp_path, *extra)
    watchdog = threading.Timer(600, started[2].kill)  # never outlives the test
    watchdog.start()
    try:
        yield started
    finally:
        _stop(started[2])
        watchdog.cancel()
    # Nothing but the exporter's own words on stderr: no traceback, no asyncio noise.
    noise = (tmp_path / "exporter.err").read_text()
    assert "Traceback" not in noise and "exception" not in noise.lower(), noise[-2000:]


@pytest.fixture()
def exporter(lab: LabEstate, tmp_path: Path) -> Iterator[tuple[str, int, subprocess.Popen[str]]]:
    with _exporter(lab, tmp_path) as started:
        yield started


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


def _threads_and_files(pid: int) -> tuple[int, int]:
    """The process's threads and open file descriptors (Linux's /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(next(line for line in status.splitlines() if line.startswith("Threads:"))
                  .split()[1])
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


async def _held_connections(host: str, port: int, count: int, pid: int) -> tuple[
        int, list[tuple[int, str]], list[bool], tuple[int, int]]:
    """Open ``count`` connections that never finish a request and hold them; then three fresh
    scrapes; then wait until the server has closed each held one (cap or read timeout)."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
    try:
        for start in range(0, count, 200):
            held += await asyncio.gather(*(_hold(host, port, n % 2 == 0)
                                           for n in range(start, min(count, start + 200))))
        opened = sum(1 for c in held if c is not None)
        fresh = await _scrapes(host, port, 3)
        usage = _threads_and_files(pid)  # while every connection is still held
        async with asyncio.timeout(CLOSE_BOUND):
            closed = await asyncio.gather(*(_closed_by_peer(c[0] if c else None) for c in held))
        return opened, fresh, closed, usage
    finally:
        for connection in held:
            if connection is not None:
                connection[1].close()


def test_2000_held_connections_leave_it_serving(lab: LabEstate, tmp_path: Path) -> None:
    """2,000 connections that never finish a request: the exporter answers fresh scrapes
    among them, closes every one of them (cap and read timeout), and serves on."""
    count, note = _holdable(HELD)
    with _exporter(lab, tmp_path, "--read-timeout", "2") as (host, port, proc):
        opened, fresh, closed, (threads, files) = asyncio.run(
            _held_connections(host, port, count, proc.pid))
        assert opened == count, note
        assert [status for status, _ in fresh] == [200] * 3, note
        assert "x509_cert_not_after" in _metric_names(fresh[0][1])
        assert len(closed) == count and all(closed), note
        # No thread per connection, and no more sockets than --max-connections (and spares).
        assert threads < 64, f"{threads} threads with {count} connections held"
        assert files <= MAX_CONNECTIONS + 256, f"{files} open files with {count} held"
        assert proc.poll() is None, note
        [(status, body)] = asyncio.run(_scrapes(host, port, 1))
        assert status == 200 and "certfleet_listener_up" in _metric_names(body)


async def _idle_then_eof(host: str, port: int) -> tuple[bytes, bytes, int]:
    """Two connections held, one silent and one with half a request: what each reads until
    the server closes it; then a scrape's status."""
    silent_reader, silent_writer = await asyncio.open_connection(host, port)
    half_reader, half_writer = await asyncio.open_connection(host, port)
    try:
        half_writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        await half_writer.drain()
        async with asyncio.timeout(CLOSE_BOUND):  # a safety net: EOF is what is awaited
            silent = await silent_reader.read()
            half = await half_reader.read()
        [(status, _body)] = await _scrapes(host, port, 1)
        return silent, half, status
    finally:
        silent_writer.close()
        half_writer.close()


def test_an_idle_connection_is_closed_after_the_read_timeout(
    lab: LabEstate, tmp_path: Path,
) -> None:
    """A connection that sends nothing, or never ends its request, is closed by the server
    (EOF, no answer) once --read-timeout has passed; the exporter serves on."""
    with _exporter(lab, tmp_path, "--read-timeout", "0.5") as (host, port, proc):
        silent, half, status = asyncio.run(_idle_then_eof(host, port))
        assert (silent, half, status) == (b"", b"", 200)
        assert proc.poll() is None


def test_help_names_the_limits() -> None:
    out = subprocess.run([sys.executable, "-m", "certfleet", "exporter", "--help"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "--read-timeout" in out.stdout and "--max-connections" in out.stdout
    assert "1024" in out.stdout


def test_max_connections_caps_the_open_sockets(lab: LabEstate, tmp_path: Path) -> None:
    """With --max-connections 8, 50 held connections leave the exporter with at most 8
    client sockets open, and a fresh scrape still answered (it closes the oldest held)."""
    with _exporter(lab, tmp_path, "--max-connections", "8", "--read-timeout", "1") as (
            host, port, proc):
        _threads, idle_files = _threads_and_files(proc.pid)
        opened, fresh, closed, (_threads, files) = asyncio.run(
            _held_connections(host, port, 50, proc.pid))
        assert opened == 50 and all(closed)
        assert [status for status, _ in fresh] == [200] * 3
        assert files - idle_files <= 8, (idle_files, files)
        assert proc.poll() is None
