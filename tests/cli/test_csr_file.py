"""`certfleet csr NAME` writes NAME.csr and says where; --stdout prints it alone as well."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from typer.testing import CliRunner

from certfleet.cli.app import app

runner = CliRunner()


def _inventory(tmp_path: Path) -> Path:
    path = tmp_path / "estate" / "certfleet.toml"
    path.parent.mkdir()
    path.write_text('[certificates.wildcard]\ncn = "*.example.com"\nkey_type = "ec-p256"\n')
    return path


def test_csr_name_writes_the_file_next_to_the_inventory(tmp_path: Path) -> None:
    """Newcomer finding: `certfleet csr NAME` printed the CSR and wrote no file."""
    inventory = _inventory(tmp_path)
    state = tmp_path / "state"
    result = runner.invoke(app, ["csr", "wildcard", "--inventory", str(inventory),
                                 "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    written = inventory.parent / "wildcard.csr"
    request = x509.load_pem_x509_csr(written.read_bytes())
    assert request.is_signature_valid
    assert f"wrote {written}" in result.stdout
    assert "BEGIN CERTIFICATE REQUEST" not in result.stdout

    result = runner.invoke(app, ["csr", "wildcard", "--inventory", str(inventory),
                                 "--state-dir", str(state), "--stdout",
                                 "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert result.stdout.strip().endswith("-----END CERTIFICATE REQUEST-----")
    assert (tmp_path / "out" / "wildcard.csr").read_text() == result.stdout

    result = runner.invoke(app, ["csr", "wildcard", "--inventory", str(inventory),
                                 "--state-dir", str(state), "--json"])
    assert json.loads(result.stdout)["csr"] == str(written)
    result = runner.invoke(app, ["csr", "wildcard", "--inventory", str(inventory),
                                 "--state-dir", str(state), "--json", "--stdout"])
    assert result.exit_code == 2
