"""Fixtures of the estate tests: loopback devices (see tests/support/loopdev.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.lab.ca import Issued, LabCA
from loopdev import LoopEstate


@pytest.fixture(scope="session")
def old_issued(lab_ca: LabCA) -> Issued:
    """The certificate the loop devices serve at first: valid only a few more days."""
    return lab_ca.issue(("*.example.com", "example.com"), key_type="ec-p256", days=5)


@pytest.fixture
def loop_estate(lab_ca: LabCA, old_issued: Issued, tmp_path: Path) -> Iterator[LoopEstate]:
    """Three loopback devices serving the old certificate, and their inventory."""
    estate = LoopEstate(lab_ca, old_issued, 3, tmp_path)
    try:
        yield estate
    finally:
        estate.stop()
