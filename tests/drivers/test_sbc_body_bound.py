"""Answers read from an SBC are bounded: past the bound, a clear error, not a memory hog."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from certfleet.drivers.sbc import MAX_BODY_BYTES, SbcDriver
from certfleet.errors import DeviceRefusedError
from certfleet.lab.sbc import LabSbc
from sbc_support import driver_for


@pytest.fixture(scope="module")
def sbc() -> Iterator[LabSbc]:
    with LabSbc("sbc-bound") as unit:
        yield unit


def _read_ini(driver: SbcDriver) -> bytes:
    async def run() -> bytes:
        async with driver.session():
            return await driver.read_ini()

    return asyncio.run(run())


def test_an_answer_within_the_bound_is_read_whole(sbc: LabSbc) -> None:
    driver = driver_for(sbc)
    assert driver.max_body == MAX_BODY_BYTES
    ini = _read_ini(driver)
    assert ini.decode() == sbc.ini()
    assert b"TLSContexts 0" in ini


def test_an_answer_past_the_bound_is_a_one_line_error(sbc: LabSbc) -> None:
    driver = driver_for(sbc)
    size = len(sbc.ini().encode())
    driver.max_body = size - 1  # the INI is one byte too large
    with pytest.raises(DeviceRefusedError) as caught:
        _read_ini(driver)
    message = caught.value.message
    assert "GET /api/v1/files/ini on sbc-bound" in message
    assert f"larger than {size - 1:,} bytes" in message
    assert "\n" not in message
    assert sbc.password not in message
    assert "REST API" in (caught.value.hint or "")
