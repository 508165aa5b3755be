"""The tables fit 100 columns and wrap no value mid-word (plan, status, deploy, history)."""

from __future__ import annotations

import re
from pathlib import Path

from certfleet.lab.estate import LabEstate
from lab_support import invoke


def _table(lab: LabEstate, state: Path, *args: str) -> str:
    result = invoke(lab, state, *args, env={"COLUMNS": "100"})
    assert result.exit_code in (0, 1, 2), result.output
    return result.output


def test_tables_fit_100_columns_without_cutting_words(sbc_lab: LabEstate, tmp_path: Path) -> None:
    """Newcomer findings: plan printed each device's name twice (name and kind in one cell);
    tables cut values. Each value is once in its own column, every line fits 100 columns,
    and the identifiers and the options named in tips are whole on one line."""
    from cryptography import x509

    state = tmp_path / "state"
    out = _table(sbc_lab, state, "csr", "wildcard", "--stdout")
    issued = sbc_lab.ca.issue(csr=x509.load_pem_x509_csr(out.split("key for")[0].encode()))
    (tmp_path / "new.crt").write_bytes(issued.leaf_pem + issued.chain_pem)
    _table(sbc_lab, state, "import", "wildcard", str(tmp_path / "new.crt"))
    outputs = {
        "plan": _table(sbc_lab, state, "plan"),
        "deploy": _table(sbc_lab, state, "deploy"),  # refused: no rollback (long tips)
        "status": _table(sbc_lab, state, "status"),
        "history": _table(sbc_lab, state, "history"),
        "history --steps": _table(sbc_lab, state, "history", "--steps"),
    }
    # The progress lines before the summary are a log (one line per event), not a table.
    outputs["deploy"] = outputs["deploy"][outputs["deploy"].index("Deploy summary"):]
    for name, text in outputs.items():
        too_long = [line for line in text.splitlines() if len(line) > 100]
        assert not too_long, f"{name}: {too_long}"
    plan = outputs["plan"]
    rows = [line for line in plan.splitlines() if re.match(r"^│ sbc", line)]
    assert [row.split("│")[1].strip() for row in rows] == ["sbc1", "sbc2-ha"]
    assert all(row.split("│")[2].strip() == "sbc" for row in rows)
    assert all(row.count("sbc1") <= 1 for row in rows)
    deploy = outputs["deploy"]
    for word in ("--previous-key", "--allow-no-rollback", "sbc2-ha", "refused"):
        assert word in deploy, deploy
    for word in ("sbc2-ha", "teams-a", "sip-b"):
        assert word in outputs["status"]
