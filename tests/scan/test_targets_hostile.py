"""Hostile scan targets: absurd ports, huge ranges and files, over-long host names.

Each ends in a one-line error with exit 2 (no traceback), or is parsed in one
pass with memory bounded by the endpoints it names, not by the input.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from certfleet.cli.app import app
from certfleet.errors import ConfigError
from certfleet.scan.targets import parse_ports, parse_target, read_target_file


def scan(*args: str, state: Path) -> Result:
    runner = CliRunner(env={"CERTFLEET_STATE_DIR": str(state), "COLUMNS": "200"})
    return runner.invoke(app, ["scan", *args])


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    [error] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) < 400  # the hostile text is cut short, not echoed whole
    for needle in needles:
        assert needle in error


@pytest.mark.parametrize("port", ["9" * 5000, "0" * 5000 + "443x", "²", "٤٤٣"])
def test_absurd_port_is_a_one_line_error(port: str, tmp_path: Path) -> None:
    """A 5,000-digit port (past int()'s digit limit) or non-ASCII digits: exit 2, one line."""
    result = scan(f"127.0.0.1:{port}", state=tmp_path / "state")
    assert_one_line_error(result, "target '127.0.0.1:")
    assert "Tip:" in result.output


def test_leading_zeros_still_name_the_port() -> None:
    """Many leading zeros are still the port they spell (read without a digit limit)."""
    assert parse_ports("0" * 5000 + "443", "t") == [443]


def test_every_port_is_parsed_once_in_order() -> None:
    """1-65535 gives every port once; repeated and overlapping ranges add nothing new."""
    ports = parse_ports(",".join(["80", "1-65535"] * 200 + ["443"]), "t")
    assert ports[0] == 80 and len(ports) == 65535 == len(set(ports))
    assert ports[1:80] == list(range(1, 80)) and ports[-1] == 65535


def test_host_name_longer_than_dns_allows_is_refused(tmp_path: Path) -> None:
    """A host name over 253 characters (or a label over 63) is refused with exit 2."""
    long_name = ".".join(["a" * 60] * 5)  # 304 characters
    assert_one_line_error(scan(f"{long_name}:443", state=tmp_path / "s"), "253 characters")
    assert_one_line_error(scan("a" * 100_000, state=tmp_path / "s"), "253 characters")
    assert_one_line_error(scan("b" * 64 + ".example.com", state=tmp_path / "s"),
                          "longer than 63")
    ok = ".".join(["a" * 63] * 3 + ["b" * 61])  # exactly 253
    assert [e.host for e in parse_target(ok)] == [ok]


def test_huge_file_of_one_repeated_line_is_one_endpoint(tmp_path: Path) -> None:
    """A file of 300,000 copies of one target yields it once, in memory far below the file."""
    path = tmp_path / "targets.txt"
    line = "127.0.0.1:443,8443\n"
    path.write_text(line * 300_000)
    tracemalloc.start()
    try:
        endpoints = read_target_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [str(e) for e in endpoints] == ["127.0.0.1:443", "127.0.0.1:8443"]
    assert peak < path.stat().st_size // 4  # never the whole file, never an endpoint a line


def test_over_long_line_in_file_is_refused_with_its_line(tmp_path: Path) -> None:
    """A 1 MB line (a host name without end) names the file and line; exit 2."""
    path = tmp_path / "targets.txt"
    path.write_text("127.0.0.1:443\n" + "x" * 1_000_000 + "\n")
    with pytest.raises(ConfigError, match=r"targets.txt:2: the line is longer"):
        read_target_file(path)
    result = scan("--from-file", str(path), state=tmp_path / "state")
    assert_one_line_error(result, "targets.txt:2")


def test_file_naming_too_many_endpoints_stops_early(tmp_path: Path) -> None:
    """Distinct /15 ranges add up past the endpoint bound: refused at the line that does it."""
    path = tmp_path / "targets.txt"
    path.write_text("".join(f"10.{n}.0.0/15:443\n" for n in range(0, 20, 2)))
    with pytest.raises(ConfigError, match=r"targets.txt:3: the file names more than 262,144"):
        read_target_file(path)


def test_file_that_is_not_text_is_one_line_error(tmp_path: Path) -> None:
    """A target file with a 0xFF byte is named with the reason; exit 2."""
    path = tmp_path / "targets.txt"
    path.write_bytes(b"127.0.0.1:443\n\xff\xfe\n")
    result = scan("--from-file", str(path), state=tmp_path / "state")
    assert_one_line_error(result, "cannot read targets from")
