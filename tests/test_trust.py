"""Named trusted root sets: package data pinned by SHA-256, audits by fingerprint."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from certfleet.errors import ConfigError, StateError
from certfleet.lab.ca import LabCA
from certfleet.trust import ROOT_SETS, PinnedRoot, RootSet, audit_roots, get_root_set


def test_teams_2026_has_the_seven_published_roots() -> None:
    """teams-2026 loads seven self-signed roots whose DER matches the pins."""
    loaded = get_root_set("teams-2026").certificates()
    assert len(loaded) == 7
    names = {root.name for root, _ in loaded}
    assert "DigiCert Global Root CA" in names
    assert "Microsoft RSA Root Certificate Authority 2017" in names
    for root, cert in loaded:
        assert cert.subject == cert.issuer
        assert hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest() \
            == root.sha256


def test_a_root_not_matching_its_pin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that does not match its pin, or is missing, raises StateError; empty sets load."""
    real = get_root_set("teams-2026")
    tampered = RootSet("teams-2026", "x", (PinnedRoot(
        "DigiCert Global Root CA", "DigiCert_Global_Root_G2.pem", real.roots[0].sha256),))
    with pytest.raises(StateError, match="not the pinned 4348a0e9"):
        tampered.certificates()
    missing = RootSet("teams-2026", "x", (PinnedRoot("Gone", "gone.pem", "00" * 32),))
    with pytest.raises(StateError, match="cannot be read"):
        missing.certificates()
    monkeypatch.setitem(ROOT_SETS, "empty", RootSet("empty", "none", ()))
    assert get_root_set("empty").certificates() == []


def test_unknown_set_names_the_known_ones() -> None:
    """An unknown set name is a ConfigError whose hint lists the sets."""
    with pytest.raises(ConfigError, match="unknown root set 'teams-1999'") as info:
        get_root_set("teams-1999")
    assert info.value.hint is not None and "teams-2026" in info.value.hint


def test_audit_reports_present_and_missing_in_set_order(lab_ca: LabCA) -> None:
    """audit_roots matches by SHA-256 and ignores unrelated roots in the store."""
    root_set = get_root_set("teams-2026")
    certs = [cert for _, cert in root_set.certificates()]
    result = audit_roots(root_set, [lab_ca.root, certs[1], certs[5]])
    assert result.present == (root_set.roots[1].name, root_set.roots[5].name)
    assert len(result.missing) == 5 and not result.complete
    assert audit_roots(root_set, certs).complete
