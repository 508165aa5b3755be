"""``scan`` of ranges: --open-only, the count line, and failures named as what they are."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from certfleet.cli.app import app
from certfleet.lab.estate import LabEstate
from certfleet.lab.tls import free_port


def run(*args: str, state: Path) -> Result:
    runner = CliRunner(env={"CERTFLEET_STATE_DIR": str(state), "COLUMNS": "200"})
    return runner.invoke(app, ["scan", *args], catch_exceptions=False)


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_open_only_lists_only_what_answered(lab: LabEstate, empty_state: Path) -> None:
    """--open-only drops the refused endpoints of a range and exits on what answered."""
    port = lab.unlisted_ports[0]
    result = run(f"127.0.0.1/29:{port}", "--open-only", "--json", "--ca-bundle",
                 str(lab.sbc_ca_path), state=empty_state)
    rows = json.loads(result.stdout)
    assert [(r["host"], r["port"]) for r in rows] == [("127.0.0.1", port)]
    assert rows[0]["answered"] is True and rows[0]["failure"] is None
    assert result.exit_code == 0, result.output


def test_a_range_prints_refused_endpoints_as_one_count_line(lab: LabEstate,
                                                            empty_state: Path) -> None:
    """The table of a CIDR range shows the listener, and one line counting the refused."""
    port = lab.unlisted_ports[0]
    result = run(f"127.0.0.1/29:{port}", "--ca-bundle", str(lab.sbc_ca_path),
                 state=empty_state)
    assert "5 endpoints did not answer (5 refused)" in result.stdout
    assert "--open-only" in result.stdout
    assert result.stdout.count("refused") == 1  # no row each
    assert "127.0.0.1:" in result.stdout


def test_refused_unresolvable_and_silent_are_named(silent_port: int, empty_state: Path) -> None:
    """A refused connection, a name that does not resolve and a silent listener are each
    named so, never as a failed TLS handshake."""
    closed = free_port()
    result = run(f"127.0.0.1:{closed}", "no-such-host.invalid:443", f"127.0.0.1:{silent_port}",
                 "--json", "--timeout", "1", state=empty_state)
    assert result.exit_code == 1
    rows = {r["target"]: r for r in json.loads(result.stdout)}
    refused = rows[f"127.0.0.1:{closed}"]
    assert refused["failure"] == "refused" and refused["answered"] is False
    assert "connection refused" in refused["error"] and "TLS handshake" not in refused["error"]
    unresolved = rows["no-such-host.invalid:443"]
    assert unresolved["failure"] in ("unresolved", "connect-timeout")
    assert "TLS handshake" not in unresolved["error"]
    silent = rows[f"127.0.0.1:{silent_port}"]
    assert silent["failure"] == "tls-timeout" and silent["answered"] is True
    assert "timed out" in silent["error"]
