"""Assembly: leaf choice, chain order, root, duplicates, unrelated certificates, key match."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from _tools import require_tool
from certfleet.errors import CertificateError
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.bundle import assemble
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle, cert_sha256, spki_sha256


def codes(bundle: Bundle) -> list[str]:
    return [f.code for f in bundle.findings]


def sha(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> list[str]:
    return [cert_sha256(c) for c in certs]


@pytest.fixture(scope="module")
def deep(lab_ca2: LabCA) -> Issued:
    """An EC leaf under two intermediates (lab_ca2), with key and root."""
    return lab_ca2.issue(("sbc.example.net",), key_type="ec-p256")


def test_ordered_input(issued: Issued) -> None:
    """leaf, intermediate, root, key in order: root kept apart, key attached, no reorder."""
    objects = load_bytes(issued.fullchain_pem + issued.root_pem + issued.key_pem(), "all.pem")
    bundle = assemble(objects)
    assert cert_sha256(bundle.leaf) == cert_sha256(issued.leaf)
    assert sha(bundle.chain) == sha(issued.chain)
    assert bundle.root is not None and cert_sha256(bundle.root) == cert_sha256(issued.root)
    assert bundle.private_key is not None
    assert spki_sha256(bundle.private_key) == spki_sha256(issued.leaf)
    assert bundle.key_format == "pkcs8" and not bundle.key_encrypted
    assert bundle.key_source == "all.pem"
    assert codes(bundle) == ["ROOT_INCLUDED"]
    assert bundle.unrelated == ()


def test_reversed_two_intermediates(deep: Issued) -> None:
    """Root first, intermediates top-down, leaf last: put in leaf-to-root order."""
    pems = [deep.root_pem, *(deep.pem(c) for c in reversed(deep.chain)), deep.leaf_pem]
    bundle = assemble(load_bytes(b"".join(pems), "ca-download.pem"))
    assert sha(bundle.fullchain) == sha([deep.leaf, *deep.chain])
    assert "CHAIN_REORDERED" in codes(bundle)
    assert "KEY_MISSING" in codes(bundle)


def test_shuffled_across_files(deep: Issued) -> None:
    """Intermediates from a .p7b, the leaf from DER, the key from a PEM: one bundle."""
    objects = [
        *load_bytes(deep.p7b(wrong_order=True, der=True), "chain.p7b"),
        *load_bytes(deep.leaf.public_bytes(serialization.Encoding.DER), "leaf.cer"),
        *load_bytes(deep.key_pem("sec1"), "leaf.key"),
    ]
    bundle = assemble(objects)
    assert sha(bundle.chain) == sha(deep.chain)
    assert bundle.key_format == "sec1" and bundle.key_source == "leaf.key"
    assert sorted(codes(bundle)) == ["CHAIN_REORDERED", "ROOT_INCLUDED"]


def test_duplicates_dropped(issued: Issued) -> None:
    """A leaf and intermediate listed twice are kept once, with one CHAIN_DUPLICATE each."""
    data = issued.fullchain_pem + issued.leaf_pem + issued.chain_pem + issued.key_pem()
    bundle = assemble(load_bytes(data))
    assert sha(bundle.fullchain) == sha([issued.leaf, *issued.chain])
    assert codes(bundle).count("CHAIN_DUPLICATE") == 2
    assert all(f.severity == "info" for f in bundle.findings if f.code == "CHAIN_DUPLICATE")


def test_unrelated_certificate_set_aside(issued: Issued, deep: Issued) -> None:
    """A certificate of another CA is set aside with a CHAIN_UNRELATED warning."""
    data = issued.fullchain_pem + deep.chain_pem + issued.key_pem()
    bundle = assemble(load_bytes(data, "mixed.pem"))
    assert cert_sha256(bundle.leaf) == cert_sha256(issued.leaf)
    assert sha(bundle.unrelated) == sha(deep.chain)
    unrelated = [f for f in bundle.findings if f.code == "CHAIN_UNRELATED"]
    assert len(unrelated) == 2 and all(f.severity == "warning" for f in unrelated)
    assert "'mixed.pem'" in unrelated[0].message


def test_leaf_is_the_one_matching_the_key(issued: Issued, deep: Issued) -> None:
    """Two end-entity certificates: the one whose key is present is the leaf."""
    data = deep.leaf_pem + issued.leaf_pem + issued.chain_pem + issued.key_pem()
    bundle = assemble(load_bytes(data))
    assert cert_sha256(bundle.leaf) == cert_sha256(issued.leaf)
    assert sha(bundle.unrelated) == sha([deep.leaf])


def test_leaf_without_key_is_the_newest_end_entity(lab_ca: LabCA) -> None:
    """No key and two end entities: the newest notAfter wins, the other is unrelated."""
    now = dt.datetime.now(dt.UTC)
    old = lab_ca.issue(("a.example.com",), key_type="ec-p256", not_after=now + dt.timedelta(5))
    new = lab_ca.issue(("a.example.com",), key_type="ec-p256", not_after=now + dt.timedelta(90))
    bundle = assemble(load_bytes(old.leaf_pem + new.leaf_pem + new.chain_pem))
    assert cert_sha256(bundle.leaf) == cert_sha256(new.leaf)
    assert sha(bundle.unrelated) == sha([old.leaf])
    assert sorted(codes(bundle)) == ["CHAIN_UNRELATED", "KEY_MISSING"]


def test_key_mismatch(issued: Issued, deep: Issued) -> None:
    """A key of another certificate: KEY_MISMATCH error quoting the leaf and the key file."""
    objects = [*load_bytes(issued.fullchain_pem, "server.crt"),
               *load_bytes(deep.key_pem(), "old.key")]
    bundle = assemble(objects)
    assert bundle.private_key is None and bundle.key_source is None
    (finding,) = [f for f in bundle.findings if f.code == "KEY_MISMATCH"]
    assert finding.severity == "error"
    assert "'old.key'" in finding.message and "'CN=*.example.com'" in finding.message


def test_pkcs12_bundle_key_flags(issued: Issued) -> None:
    """A protected .pfx gives key_format pkcs12 and key_encrypted True."""
    data = pkcs12.serialize_key_and_certificates(
        b"x", issued.key, issued.leaf, list(issued.chain),
        serialization.BestAvailableEncryption(b"pw"),
    )
    bundle = assemble(load_bytes(data, "s.pfx", b"pw"))
    assert (bundle.key_format, bundle.key_encrypted, bundle.key_source) == ("pkcs12", True, "s.pfx")
    assert codes(bundle) == []


def test_only_ca_certificates(issued: Issued) -> None:
    """A chain file alone: the lowest certificate stands in as the leaf."""
    bundle = assemble(load_bytes(issued.chain_pem + issued.root_pem))
    assert cert_sha256(bundle.leaf) == cert_sha256(issued.chain[0])
    assert bundle.root is not None


def test_no_certificate_is_an_error(issued: Issued) -> None:
    """Only a key: CertificateError naming the input."""
    with pytest.raises(CertificateError, match=r"no certificate among the inputs 'k\.pem'"):
        assemble(load_bytes(issued.key_pem(), "k.pem"))


def test_openssl_accepts_the_assembled_order(tmp_path: Path, deep: Issued) -> None:
    """openssl verifies the full chain, and each link with only the next cert as anchor."""
    openssl = require_tool("openssl")
    shuffled = deep.chain_pem + deep.root_pem + deep.leaf_pem
    bundle = assemble(load_bytes(shuffled))
    assert bundle.root is not None
    pem = [c.public_bytes(serialization.Encoding.PEM) for c in (*bundle.fullchain, bundle.root)]
    (tmp_path / "leaf.pem").write_bytes(pem[0])
    (tmp_path / "chain.pem").write_bytes(b"".join(pem[1:-1]))
    (tmp_path / "root.pem").write_bytes(pem[-1])
    subprocess.run(
        [openssl, "verify", "-CAfile", str(tmp_path / "root.pem"),
         "-untrusted", str(tmp_path / "chain.pem"), str(tmp_path / "leaf.pem")],
        check=True, capture_output=True,
    )
    # Order: each certificate must be issued by the one after it.
    for number, (child, parent) in enumerate(itertools.pairwise(pem)):
        (tmp_path / f"c{number}.pem").write_bytes(child)
        (tmp_path / f"p{number}.pem").write_bytes(parent)
        result = subprocess.run(
            [openssl, "verify", "-partial_chain", "-CAfile", str(tmp_path / f"p{number}.pem"),
             str(tmp_path / f"c{number}.pem")],
            capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
