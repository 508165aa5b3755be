"""Helpers shared by the SBC driver and CLI tests: bundles and drivers against the lab.

Also a pytest plugin (``pytest_plugins`` in ``tests/conftest.py``): the fixtures
``old_key`` and ``sbc_app`` are there for every test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certfleet.cli import sbc as sbc_cli
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


@pytest.fixture(scope="module")
def old_key() -> rsa.RSAPrivateKey:
    """The key of the certificate a lab SBC holds before a deploy (one per test module)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sbc_app() -> typer.Typer:
    """A bare app with only the sbc group, as cli/app.py registers it."""
    application = typer.Typer()
    application.command("noop")(lambda: None)  # keeps "sbc" a sub-command
    sbc_cli.register(application)
    return application


def deploy_files(
    where: Path, issued: Issued, old_key: rsa.RSAPrivateKey
) -> tuple[Path, Path, Path]:
    """``sbc deploy``'s files in ``where``: the renewed certificate as a CA download
    (fullchain + root), its key (PKCS#1) and the old key (for --previous-key)."""
    cert, key, old = where / "wildcard.crt", where / "wildcard.key", where / "old.key"
    cert.write_bytes(issued.fullchain_pem + issued.root_pem)
    key.write_bytes(issued.key_pem("pkcs1"))
    old.write_bytes(old_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return cert, key, old
