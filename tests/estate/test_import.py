"""Import: CA files become a stored version; the key may come from `certfleet csr`."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfleet.errors import PreflightError
from certfleet.estate.csr import make_inventory_csr
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.inventory import parse_inventory
from certfleet.lab.ca import LabCA

INVENTORY = """\
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com", "example.com"]
key_type = "ec-p256"

[devices.sbc1]
kind = "sbc"
address = "sbc1.example.com"
password = "env:X"

[devices.sbc2]
kind = "sbc"
address = "10.1.1.1"
fqdn = "sbc2.other.org"
password = "env:X"
certificate = "wildcard"
"""


def test_csr_then_import_finds_key_by_public_key(tmp_path: Path, lab_ca: LabCA) -> None:
    """A leaf issued from `csr NAME` imports with the stored key, the p7b's order fixed."""
    inv = parse_inventory(INVENTORY.replace('fqdn = "sbc2.other.org"', 'fqdn = "sbc2.example.com"'))
    with Store.open(tmp_path / "state") as store:
        made = make_inventory_csr("wildcard", inventory=inv, store=store, out_dir=tmp_path)
        assert made.csr_path is not None and made.csr_path.read_bytes() == made.csr_pem
        issued = lab_ca.issue(csr=made.csr)
        (tmp_path / "leaf.crt").write_bytes(issued.leaf_pem)
        (tmp_path / "chain.p7b").write_bytes(issued.p7b(wrong_order=True))
        result = import_certificate(
            inv, store, "wildcard", [tmp_path / "leaf.crt", tmp_path / "chain.p7b"]
        )
        assert result.new and result.key_from_store
        assert result.version.leaf_sha256 == result.bundle.leaf_sha256
        assert result.version.key_id == made.key.id
        assert not [f for f in result.findings if f.severity == "error"]
        # importing the same files again stores nothing new
        again = import_certificate(
            inv, store, "wildcard", [tmp_path / "leaf.crt", tmp_path / "chain.p7b"]
        )
        assert not again.new and again.version.id == result.version.id
        assert [i["outcome"] for i in store.imports()] == ["stored", "unchanged"]


def test_device_fqdn_not_covered_is_refused(tmp_path: Path, lab_ca: LabCA) -> None:
    """A device FQDN outside the certificate's names refuses the import; nothing stored."""
    inv = parse_inventory(INVENTORY)
    issued = lab_ca.issue(("*.example.com",), key_type="ec-p256")
    (tmp_path / "all.pem").write_bytes(issued.fullchain_pem + issued.key_pem())
    with Store.open(tmp_path / "state") as store:
        with pytest.raises(PreflightError) as info:
            import_certificate(inv, store, "wildcard", [tmp_path / "all.pem"])
        assert any(f.code == "NAME_NOT_COVERED" for f in info.value.findings)
        assert "sbc2.other.org" in str([f.message for f in info.value.findings])
        assert store.current_version("wildcard") is None
        assert store.imports()[0]["outcome"] == "refused"


def test_import_without_any_key_is_refused(tmp_path: Path, lab_ca: LabCA) -> None:
    """A leaf whose key is neither in the files nor in the store cannot become a version."""
    inv = parse_inventory(INVENTORY.replace('fqdn = "sbc2.other.org"', 'fqdn = "sbc2.example.com"'))
    issued = lab_ca.issue(("*.example.com", "example.com"), key_type="ec-p256")
    (tmp_path / "leaf.pem").write_bytes(issued.fullchain_pem)
    with Store.open(tmp_path / "state") as store, pytest.raises(PreflightError) as info:
        import_certificate(inv, store, "wildcard", [tmp_path / "leaf.pem"])
    assert any(f.code == "KEY_MISSING" and f.severity == "error" for f in info.value.findings)


def test_csr_given_with_the_chain_is_named_a_request(tmp_path: Path, lab_ca: LabCA) -> None:
    """The CSR from `csr NAME` imported with the CA's chain: named as the request, no
    KEY_MISMATCH against the intermediate, and no tip quoting an option import lacks."""
    inv = parse_inventory(INVENTORY.replace('fqdn = "sbc2.other.org"', 'fqdn = "sbc2.example.com"'))
    with Store.open(tmp_path / "state") as store:
        made = make_inventory_csr("wildcard", inventory=inv, store=store, out_dir=tmp_path)
        assert made.csr_path is not None
        issued = lab_ca.issue(csr=made.csr)
        (tmp_path / "chain.p7b").write_bytes(issued.p7b())
        with pytest.raises(PreflightError) as info:
            import_certificate(inv, store, "wildcard", [made.csr_path, tmp_path / "chain.p7b"])
        codes = [f.code for f in info.value.findings]
        assert "CSR_GIVEN" in codes and "KEY_MISMATCH" not in codes
        assert "this is the certificate request, not the issued certificate" in info.value.message
        assert all("--host" not in (f.hint or "") for f in info.value.findings)
        assert store.current_version("wildcard") is None


def test_name_not_covered_tip_names_no_option_import_lacks(
    tmp_path: Path, lab_ca: LabCA
) -> None:
    """The NAME_NOT_COVERED tip seen from import quotes no `--host` (import has none)."""
    inv = parse_inventory(INVENTORY)
    issued = lab_ca.issue(("*.example.com",), key_type="ec-p256")
    (tmp_path / "all.pem").write_bytes(issued.fullchain_pem + issued.key_pem())
    with Store.open(tmp_path / "state") as store, pytest.raises(PreflightError) as info:
        import_certificate(inv, store, "wildcard", [tmp_path / "all.pem"])
    (finding,) = [f for f in info.value.findings if f.code == "NAME_NOT_COVERED"]
    assert "--host" not in (finding.hint or "") and "sbc2.other.org" in finding.message
