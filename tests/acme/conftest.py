"""Pebble and pebble-challtestsrv on loopback for the ACME tests (Debian package ``pebble``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certfleet.lab.pebble import LabPebble
from pebble_support import start_pebble


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabPebble]:
    """One Pebble for the module: no EAB, one alternate root."""
    server = start_pebble(tmp_path_factory.mktemp("pebble"), alternate_roots=1)
    try:
        yield server
    finally:
        server.stop()
