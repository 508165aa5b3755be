"""The tables stay readable at 80 columns (a default PuTTY or Windows console): columns are
left out by priority and named under the table; a status or a reason is never cut."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.lab.ca import LabCA
from certfleet.lab.estate import LabEstate
from certfleet.lab.tls import CertSlot, LabTLSListener, free_port
from lab_support import invoke

#: A long issuer (the intermediate's CN is "<name> Intermediate CA 1") and a long name.
LONG_CA = "Example Corporation Enterprise Voice Services"
LONG_NAME = "sbc-frankfurt-01.voice.example-corporation.com"


@pytest.fixture(scope="module")
def long_names() -> Iterator[LabTLSListener]:
    """A TLS listener on 127.0.0.1 serving a leaf with a long name from a CA with a long name."""
    issued = LabCA(name=LONG_CA).issue((LONG_NAME,))
    slot = CertSlot(issued.leaf_pem, issued.key_pem(), issued.chain_pem)
    with LabTLSListener(slot) as server:
        yield server
    slot.close()


def _column(lines: list[str], header: str, start: str, end: str | None) -> str:
    """The text of the column whose header starts at ``start`` (up to where the header
    ``end`` starts) in the table whose header line holds ``header``, without blanks."""
    lines = [re.sub("[\u2500-\u257f]", " ", line) for line in lines]  # the frame
    head = next(i for i, line in enumerate(lines) if re.search(rf"\b{header}\b", line))
    left = lines[head].index(start)
    right = lines[head].index(end, left) if end else None
    body = []
    for line in lines[head + 2:]:  # under the header's rule
        if not line.strip():
            break
        body.append(line[left:right])
    return re.sub(r"\s", "", "".join(body))


def _scan(*args: str, columns: int) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(app, ["scan", *args],
                                                             catch_exceptions=False)
    return result.exit_code, result.stdout


def test_scan_at_80_columns_keeps_names_and_every_reason_whole(
    long_names: LabTLSListener, tmp_path: Path
) -> None:
    """At 80 columns scan leaves out issuer and chain days (and says so), and the certificate,
    each failure's reason and the endpoint read back whole, words never split."""
    targets = [f"127.0.0.1:{long_names.port}", f"127.0.0.1:{free_port()}", "nosuchhost.invalid"]
    state = ["--state-dir", str(tmp_path / "none")]
    code, out = _scan(*targets, *state, "--json", columns=80)
    rows = json.loads(out)
    reasons = {row["target"]: ", ".join(row["problems"]) for row in rows}
    assert code == 1 and all(reasons.values()), reasons
    code, out = _scan(*targets, *state, columns=80)
    assert code == 1
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    status = _column(lines, "status", "status", None)
    for target, reason in reasons.items():
        assert re.sub(r"\s", "", reason) in status, (target, out)
        for word in reason.split():
            assert any(word in line.split() for line in lines), (word, out)
    assert LONG_NAME in _column(lines, "certificate", "certificate", "days"), out
    for target in targets:
        assert (target if ":" in target else f"{target}:443") in out.split(), out
    assert "…" not in out
    note = " ".join(out[out.index("Left out at 80 columns"):].split())
    assert "issuer" in note and "chain days" in note and "certfleet scan --json" in note
    header = next(line for line in lines if "certificate" in line).split()
    assert "issuer" not in header and "status" in header and "days" in header


def test_scan_labels_the_chain_days_and_shows_the_issuer_when_wide(
    long_names: LabTLSListener, tmp_path: Path
) -> None:
    """On a wide terminal every column is there: the chain's days left under 'chain days',
    the long issuer whole; nothing is said to be left out."""
    code, out = _scan(f"127.0.0.1:{long_names.port}", "--state-dir", str(tmp_path / "none"),
                      columns=200)
    assert code == 1  # the lab CA is not trusted here
    lines = out.splitlines()
    head = [line for line in lines if "endpoint" in line]
    assert "chain" in " ".join(head) and "days" in " ".join(head)
    issuer = _column(lines, "endpoint", "issuer", "days")
    assert re.sub(r"\s", "", f"{LONG_CA} Intermediate CA 1") == issuer, out
    assert LONG_NAME in out and "Left out" not in out


def test_status_and_history_at_80_columns(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """status and history at 80 columns: labels, certificate and message whole, no word
    split, no line longer than 80; what was left out is named with what shows it."""
    from cryptography import x509

    state = tmp_path / "state"
    out = invoke(sbc_lab, state, "csr", "wildcard", "--stdout").output
    issued = sbc_lab.ca.issue(csr=x509.load_pem_x509_csr(out.split("key for")[0].encode()))
    (tmp_path / "new.crt").write_bytes(issued.leaf_pem + issued.chain_pem)
    assert invoke(sbc_lab, state, "import", "wildcard", str(tmp_path / "new.crt")).exit_code == 0
    assert invoke(sbc_lab, state, "deploy", "--allow-no-rollback").exit_code == 0

    status = invoke(sbc_lab, state, "status", env={"COLUMNS": "80"}).stdout
    lines = status.splitlines()
    assert all(len(line) <= 80 for line in lines), status
    assert "…" not in status
    tokens = status.split()
    for word in ("sbc1", "sbc2-ha", "teams-a", "sip-b", "*.example.com", "days", "current"):
        assert word in tokens, (word, status)
    note = " ".join(status[status.index("Left out at 80 columns"):].split())
    assert "issuer" in note and "certfleet status --json" in note

    history = invoke(sbc_lab, state, "history", env={"COLUMNS": "80"}).stdout
    lines = history.splitlines()
    assert all(len(line) <= 80 for line in lines), history
    message = _column(lines, "outcome", "last step", None)
    for count in (2, 4):
        assert f"installedandverifiedbyhandshakeon{count}listener(s)" in message, history
    for word in ("installed", "handshake", "listener(s)", "sbc1", "sbc2-ha"):
        assert word in history.split(), (word, history)
    rows = [line for line in lines if re.match(r"^\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line)]
    assert len(rows) == 2
    # Each entry takes at most 3 lines (the time line and its message's continuation).
    assert len([line for line in lines if line.strip()]) <= 2 * 3 + 6, history
    note = " ".join(history[history.index("Left out at 80 columns"):].split())
    assert "certfleet history --json" in note
