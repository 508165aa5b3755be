"""`import` given the CSR (with the CA's chain) instead of the issued certificate."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.lab.ca import LabCA

runner = CliRunner()


def test_import_names_a_csr_among_the_inputs(tmp_path: Path) -> None:
    """Newcomer finding: a CSR given to `import` with the chain was diagnosed as KEY_MISMATCH
    against the intermediate CA, with tips naming `check --host` (import has no such option).
    Now it is named as the request, not the issued certificate; exit 2, nothing stored."""
    inventory = tmp_path / "certfleet.toml"
    inventory.write_text('[certificates.wildcard]\ncn = "*.example.com"\nkey_type = "ec-p256"\n')
    args = ["--inventory", str(inventory), "--state-dir", str(tmp_path / "state")]
    made = runner.invoke(app, ["csr", "wildcard", *args])
    assert made.exit_code == 0, made.output
    ca = LabCA(name="Import Lab")
    issued = ca.issue(("*.example.com",), key_type="ec-p256")
    chain = tmp_path / "chain.p7b"
    chain.write_bytes(issued.p7b())
    csr = tmp_path / "wildcard.csr"
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["import", "wildcard", str(csr), str(chain), *args, *extra])
        assert result.exit_code == 2, result.output
        text = result.output
        assert "certificate request" in text and "not the issued certificate" in text, text
        assert "KEY_MISMATCH" not in text and "--host" not in text, text
        assert "KEY_MISSING" not in text and "Intermediate CA 1' in the files" not in text
    data = json.loads(result.stdout)
    assert "CSR_GIVEN" in json.dumps(data)
    listed = runner.invoke(app, ["history", "--json", *args])
    assert listed.exit_code == 0
