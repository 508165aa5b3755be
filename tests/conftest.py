"""Fixtures shared by the whole suite. Keep this small; add, do not rename."""

from __future__ import annotations

import os
import signal

import pytest

# Tests choose the terminal width per command (CliRunner's env, a child's COLUMNS). The
# consoles certfleet makes at import would fix one inherited from the shell or from the
# test runner (a pytest-xdist worker starts with COLUMNS=80 and LINES=24), so none is kept.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

from certfleet.lab.ca import Issued, LabCA  # noqa: E402 - after the environment is cleaned

#: Shared fixtures of tests/support (on the import path): sbc_lab, seeded_lab (lab_support);
#: old_key, sbc_app (sbc_support); pg_server, pg_url, store_backend (postgres).
pytest_plugins = ["lab_support", "postgres", "sbc_support"]


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C tests need SIGINT delivered: a shell starts background jobs with it ignored,
    and children inherit that. Put Python's own handler back (children then get SIGINT's
    default, so their Python installs its KeyboardInterrupt handler too)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def lab_ca() -> LabCA:
    """A lab CA (EC P-256) with one intermediate, made once per run."""
    return LabCA()


@pytest.fixture(scope="session")
def lab_ca2() -> LabCA:
    """A second, unrelated lab CA with two intermediates."""
    return LabCA(name="certfleet Other", intermediates=2)


@pytest.fixture(scope="session")
def issued(lab_ca: LabCA) -> Issued:
    """An RSA-2048 wildcard leaf for *.example.com with its key, chain and root."""
    return lab_ca.issue(("*.example.com", "example.com"))


@pytest.fixture(scope="session")
def issued_ec(lab_ca: LabCA) -> Issued:
    """An EC P-256 leaf for sbc1.example.com with its key, chain and root."""
    return lab_ca.issue(("sbc1.example.com",), key_type="ec-p256")
