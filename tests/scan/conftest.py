"""A small lab estate (an SBC with Teams on TLS 1.3 and an unlisted listener, an HA pair
with Teams on TLS 1.2), shared by the scan and exporter tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.lab.estate import LabEstate


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabEstate]:
    estate = LabEstate(tmp_path_factory.mktemp("scan-lab"), sbcs=2, ovoc=False)
    with estate:
        yield estate


@pytest.fixture()
def lab_args(lab: LabEstate) -> list[str]:
    """--inventory, the lab's range and the lab's CA files."""
    ports = ",".join(str(p) for p in lab.tls_ports)
    return ["--inventory", "--inventory-file", str(lab.inventory_path),
            f"127.0.0.1/32:{ports}", "--ca-bundle", str(lab.ca_path),
            "--ca-bundle", str(lab.sbc_ca_path)]


@pytest.fixture()
def empty_state(tmp_path: Path) -> Path:
    return tmp_path / "no-state"
