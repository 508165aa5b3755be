"""The lab estate as the estate and CLI tests set it up, and the CLI run against it.

A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``): its fixtures
``sbc_lab`` and ``seeded_lab`` are there for every test.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.cli.lab import _seed_previous
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.inventory import Inventory
from certfleet.lab.estate import WILDCARD, LabEstate

__all__ = ["ASYNCIO_NOISE", "STRICT_CERTFLEET", "import_old_and_renewed", "invoke",
           "read_lab_env", "run_in_lab", "sbc_lab", "seeded_lab", "started_lab",
           "until_serving"]

#: What asyncio logs when a transport is written to after its connection was lost.
ASYNCIO_NOISE = "socket.send() raised exception."
#: certfleet in a process whose asyncio logs ASYNCIO_NOISE at the first write to a lost
#: connection (by default from the fifth on): a close racing its peer shows every time.
STRICT_CERTFLEET = [
    sys.executable, "-c",
    "import asyncio.constants, sys; asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES = 1; "
    "from certfleet.cli.app import main; main()",
]

runner = CliRunner()


@contextlib.contextmanager
def started_lab(
    where: Path, *, seed: Path | None = None, **options: Any
) -> Iterator[LabEstate]:
    """``LabEstate(where / "lab", **options)``, started, its secret variables set in
    ``os.environ`` for the block; stopped after.

    ``seed``: a state folder in which last year's certificate, with its key, chain
    and root, is stored first (as ``lab up`` does).
    """
    with LabEstate(where / "lab", **options) as lab:
        if seed is not None:
            with Store.open(seed) as store:
                _seed_previous(lab, store)
        with lab.environment():
            yield lab


def invoke(lab: LabEstate, state: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """``certfleet ARGS --inventory <the lab's> --state-dir STATE`` in this process."""
    return runner.invoke(
        app, [*args, "--inventory", str(lab.inventory_path), "--state-dir", str(state)], env=env
    )


def run_in_lab(lab: LabEstate, *args: str) -> tuple[int, str, str]:
    """``invoke`` with the lab's own state folder (``seeded_lab``'s): exit code, stdout, stderr."""
    result = invoke(lab, lab.directory / "state", *args)
    return result.exit_code, result.stdout, result.stderr


def import_old_and_renewed(lab: LabEstate, store: Store, inventory: Inventory, tmp: Path) -> str:
    """Import last year's certificate (so rollback is possible), then a renewed one (EC key).

    Returns the renewed leaf's SHA-256, the version a deploy installs.
    """
    old = tmp / "old.pem"
    old.write_bytes(lab.old.fullchain_pem + lab.old.root_pem + lab.old.key_pem())
    import_certificate(inventory, store, "wildcard", [old])
    renewed = lab.ca.issue(WILDCARD, key_type="ec-p256")
    new = tmp / "new.pem"
    new.write_bytes(renewed.fullchain_pem + renewed.root_pem + renewed.key_pem())
    return import_certificate(inventory, store, "wildcard", [new]).version.leaf_sha256


def until_serving(process: subprocess.Popen[str], what: str) -> list[str]:
    """The lines ``what`` (a ``lab up`` process) printed up to "Press Ctrl-C", from then on
    it serves; fails the test when the process ends first."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line:
            return lines
    pytest.fail(f"{what} ended early:\n" + "".join(lines))


def read_lab_env(path: Path) -> dict[str, str]:
    """The NAME=value lines of a ``lab.env`` file (comment lines skipped)."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line and not line.startswith("#"))


@pytest.fixture
def sbc_lab(tmp_path: Path) -> Iterator[LabEstate]:
    """Two lab SBCs (the second an HA pair, EC keys, no OVOC) serving last year's wildcard;
    secrets in the environment, no state store."""
    with started_lab(tmp_path, sbcs=2, ovoc=False, key_type="ec-p256") as lab:
        yield lab


@pytest.fixture
def seeded_lab(tmp_path: Path) -> Iterator[LabEstate]:
    """`lab up`'s estate (OVOC, sbc1, the HA pair sbc2-ha) with v1 in its state folder
    (``lab.directory / "state"``); secrets in the environment."""
    with started_lab(tmp_path, sbcs=2, seed=tmp_path / "lab" / "state") as lab:
        yield lab
