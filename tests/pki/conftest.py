"""Fixtures the pki tests share."""

from __future__ import annotations

import pytest

from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.model import Bundle


@pytest.fixture(scope="module")
def rsa_issued(lab_ca2: LabCA) -> Issued:
    """An RSA-2048 wildcard leaf under two intermediates, with key and root."""
    return lab_ca2.issue(("*.example.com", "example.com"), key_type="rsa2048")


@pytest.fixture(scope="module")
def full(rsa_issued: Issued) -> Bundle:
    """The complete bundle: key, leaf, two intermediates, root."""
    return Bundle(rsa_issued.leaf, rsa_issued.chain, rsa_issued.root, rsa_issued.key)
