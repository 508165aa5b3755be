"""Helpers shared by the SBC driver and CLI tests: bundles and drivers against the lab."""

from __future__ import annotations

import asyncio
from typing import Any

from certfleet.drivers.base import DeployOutcome
from certfleet.drivers.sbc import SbcDriver
from certfleet.drivers.tlsprobe import Listener
from certfleet.lab.ca import Issued
from certfleet.lab.sbc import LabSbc
from certfleet.pki.bundle import assemble
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle


def bundle_of(issued: Issued) -> Bundle:
    """The bundle certfleet would assemble from a CA download plus the key."""
    objects = load_bytes(issued.fullchain_pem + issued.root_pem, "download.pem")
    objects += load_bytes(issued.key_pem("pkcs8"), "key.pem")
    return assemble(objects)


def listeners(sbc: LabSbc) -> list[Listener]:
    return [Listener("127.0.0.1", sbc.port, label="management"),
            Listener("127.0.0.1", sbc.sip_port, label="sip")]


def driver_for(sbc: LabSbc, **options: Any) -> SbcDriver:
    """A driver pinned to the lab's management certificate, with fast timings."""
    settings: dict[str, Any] = {
        "password": sbc.password,
        "contexts": (0, 1),
        "listeners": listeners(sbc),
        "pin_sha256": sbc.management_sha256,
        "verify_timeout": 10.0,
        "busy_delay": 0.01,
        "timeout": 5.0,
    }
    settings.update(options)
    if "ca_bundle" in options or options.get("insecure"):
        settings.pop("pin_sha256", None)
    return SbcDriver(sbc.name, sbc.url, **settings)


def deploy(driver: SbcDriver, bundle: Bundle, **options: Any) -> DeployOutcome:
    return asyncio.run(driver.deploy(bundle, **options))
