"""Device and certificate text is data: control characters never reach the terminal raw,
and a CSV cell is quoted as needed and never a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from certfleet.cli.app import app
from certfleet.lab.ca import LabCA
from certfleet.lab.tls import CertSlot, LabTLSListener

#: Sets the terminal's title, clears the screen, turns the text red.
EVIL_CN = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mevil"
#: Ends the line in the middle of a CSV row, then starts a formula.
CSV_CNS = ("\r=cmd", '=HYPERLINK("http://x","y"),\n"@a",-1+2', " +SUM(A1)\t@x")
CONTROL = [chr(c) for c in (*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, 0x9b)]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabCA, Path]:
    """A lab CA and its root's PEM file (for --ca-bundle)."""
    authority = LabCA()
    root = tmp_path_factory.mktemp("hostile-ca") / "root.pem"
    root.write_bytes(authority.issue(("x.example",)).root_pem)
    return authority, root


@pytest.fixture(scope="module")
def serving(ca: tuple[LabCA, Path]) -> Iterator[dict[str, LabTLSListener]]:
    """One TLS listener on 127.0.0.1 per hostile CN (the SAN is a plain name)."""
    servers: dict[str, LabTLSListener] = {}
    slots = []
    for number, cn in enumerate((EVIL_CN, *CSV_CNS)):
        issued = ca[0].issue((f"h{number}.example",), common_name=cn)
        slot = CertSlot(issued.leaf_pem, issued.key_pem(), issued.chain_pem)
        slots.append(slot)
        servers[cn] = LabTLSListener(slot).start()
    yield servers
    for server in servers.values():
        server.stop()
    for slot in slots:
        slot.close()


def _scan(*args: str, tmp_path: Path, columns: int = 200) -> Result:
    runner = CliRunner(env={"COLUMNS": str(columns), "CERTFLEET_STATE_DIR": str(tmp_path)})
    return runner.invoke(app, ["scan", *args], catch_exceptions=False)


def _no_raw_control(text: str) -> list[str]:
    return [repr(c) for c in CONTROL if c in text]


@pytest.mark.parametrize("columns", [200, 80])
def test_a_cn_with_escape_sequences_is_shown_visibly_in_the_scan_table(
    serving: dict[str, LabTLSListener], ca: tuple[LabCA, Path], tmp_path: Path, columns: int
) -> None:
    """The scan table shows a CN's ESC and BEL as \\x1b and \\x07, never sends them."""
    server = serving[EVIL_CN]
    result = _scan(f"127.0.0.1:{server.port}", "--ca-bundle", str(ca[1]), tmp_path=tmp_path,
                   columns=columns)
    assert result.exit_code == 0, result.output  # trusted; an address target: no name check
    assert not _no_raw_control(result.stdout + result.stderr), result.output
    if columns == 200:  # on one line
        assert "\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mevil" in result.stdout, result.output
    else:  # folded in its column
        assert "\\x1b]0;PWNED\\x07" in result.stdout and "mevil" in result.stdout


def test_a_target_with_escape_sequences_is_shown_visibly(tmp_path: Path) -> None:
    """A target name holding ESC is shown as \\x1b in the table, its error and the JSON."""
    result = _scan("a\x1b[2Jb:443", tmp_path=tmp_path)
    assert result.exit_code == 1, result.output
    assert not _no_raw_control(result.stdout + result.stderr), result.output
    assert "a\\x1b[2Jb:443" in result.stdout.split()
    result = _scan("a\x1b[2Jb:443", "--json", tmp_path=tmp_path)
    assert not _no_raw_control(result.stdout)
    assert json.loads(result.stdout)[0]["target"] == "a\x1b[2Jb:443"  # JSON keeps the data


def test_a_bad_target_with_escape_sequences_gets_a_visible_error(tmp_path: Path) -> None:
    """A target that is not host:port, holding ESC and CR: one error line, exit 2, shown."""
    result = _scan("\x1b]0;PWNED\x07\r:notaport", tmp_path=tmp_path)
    assert result.exit_code == 2, result.output
    assert not _no_raw_control(result.stdout + result.stderr), result.output
    assert "\\x1b]0;PWNED" in result.stderr and "Traceback" not in result.output


def test_every_csv_cell_is_quoted_and_guarded_whatever_it_holds(
    serving: dict[str, LabTLSListener], ca: tuple[LabCA, Path], tmp_path: Path
) -> None:
    """CR, LF, quotes, commas and formula starts in a CN: csv.reader reads one row per
    endpoint, as many cells as columns, and no cell starts a formula."""
    ports = ",".join(str(serving[cn].port) for cn in (EVIL_CN, *CSV_CNS))
    result = _scan(f"127.0.0.1/32:{ports}", "--csv", "--ca-bundle", str(ca[1]),
                   tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert not _no_raw_control(result.stdout.replace("\n", ""))
    rows = list(csv.reader(io.StringIO(result.stdout)))
    header, data = rows[0], rows[1:]
    assert len(data) == 1 + len(CSV_CNS), rows
    assert all(len(row) == len(header) for row in data)
    for row in data:
        for cell in row:
            assert not cell.lstrip(" \t").startswith(("=", "+", "-", "@")), (cell, row)
    cns = {row[header.index("leaf_subject_cn")] for row in data}
    assert "\\x0d=cmd" in cns  # the CR shown: no line break, no formula
    assert any(cn.startswith("'=HYPERLINK(") and "\n" in cn for cn in cns), cns
    days = {row[header.index("leaf_days_left")] for row in data}
    assert all(d.isdigit() for d in days)  # numbers stay numbers
