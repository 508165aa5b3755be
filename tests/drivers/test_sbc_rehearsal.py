"""The read-only rehearsal of an SBC deploy on the lab: ready, or not ready with why and
the fix; nothing but GET requests reach the device."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from certfleet.drivers.sbc import SbcDriver
from certfleet.drivers.sbc_rehearsal import Readiness
from certfleet.lab.sbc import LabSbc, LabSbcPair
from sbc_support import driver_for


@pytest.fixture()
def sbc(old_key: rsa.RSAPrivateKey) -> Iterator[LabSbc]:
    with LabSbc("sbc-rehearse", key=old_key) as device:
        yield device


def _rehearse(driver: SbcDriver, **options: bool) -> Readiness:
    return asyncio.run(driver.rehearse(**options))


def _only_reads(device: LabSbc) -> None:
    assert device.requests, "the rehearsal reached the device"
    assert {method for method, _path, _status in device.requests} == {"GET"}
    assert device.saves == 0


def test_ready_device(sbc: LabSbc, old_key: rsa.RSAPrivateKey) -> None:
    result = _rehearse(driver_for(sbc, previous_keys=[old_key]))
    assert result.ready, result.summary()
    assert result.summary() == "sbc-rehearse: ready"
    names = [c.name for c in result.checks]
    assert names == ["trust", "credentials", "ha", "ini", "context 0", "context 1", "rollback"]
    assert result.auth == "basic"
    assert result.management_sha256 == sbc.management_sha256
    assert result.to_dict()["ready"] is True
    _only_reads(sbc)


def test_missing_context_and_unknown_key(sbc: LabSbc) -> None:
    result = _rehearse(driver_for(sbc, contexts=(0, 7)))
    assert not result.ready
    reasons = {c.name: c for c in result.reasons}
    assert set(reasons) == {"context 7", "rollback"}
    assert "TLS context 7 does not exist (the SBC has 0, 1, 2)" in reasons["context 7"].detail
    assert "tls_contexts" in (reasons["context 7"].fix or "")
    assert "--previous-key" in (reasons["rollback"].fix or "")
    # a deploy with --allow-no-rollback needs no previous key
    relaxed = _rehearse(driver_for(sbc, contexts=(0,)), allow_no_rollback=True)
    assert relaxed.ready, relaxed.summary()
    _only_reads(sbc)


def test_wrong_password(sbc: LabSbc) -> None:
    result = _rehearse(driver_for(sbc, password="not-it"))
    assert not result.ready
    assert [c.name for c in result.reasons] == ["credentials"]
    assert "401" in result.reasons[0].detail and "not-it" not in result.summary()
    assert "--password-env" in (result.reasons[0].fix or "")
    _only_reads(sbc)


def test_wrong_pin_sends_nothing(sbc: LabSbc) -> None:
    result = _rehearse(driver_for(sbc, pin_sha256="ab" * 32))
    assert [c.name for c in result.reasons] == ["trust"]
    assert sbc.management_sha256 in result.reasons[0].detail
    assert not sbc.requests


def test_device_down() -> None:
    with LabSbc("gone") as device:
        url, pin = device.url, device.management_sha256
    result = _rehearse(SbcDriver("gone", url, password="x", pin_sha256=pin, timeout=5.0))
    assert not result.ready
    assert [c.name for c in result.reasons] == ["reachable"]
    assert "not ready" in result.summary() and "fix:" in result.summary()


def test_standby_unit_is_not_ready() -> None:
    with LabSbcPair("pair-rehearse") as pair:
        standby = pair.units[1]
        result = _rehearse(driver_for(standby, contexts=(0,)), allow_no_rollback=True)
    assert [c.name for c in result.reasons] == ["ha"]
    assert "standby" in result.reasons[0].detail
