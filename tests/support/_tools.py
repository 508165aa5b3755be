"""External tools used as independent oracles (openssl, keytool, curl, sshd)."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require_tool", "tool_missing"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tool_missing(reason: str) -> NoReturn:
    """Skip the test because an external tool (or a capability of it) is missing; fail in CI."""
    if in_ci():
        pytest.fail(f"{reason}: required in CI")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of tool ``name``; skip the test when missing, but fail in CI.

    CI installs every tool the suite needs, so a missing one there is a broken
    CI set-up, not a reason to skip.
    """
    sbin = f"/usr/sbin/{name}"
    path = shutil.which(name) or (sbin if os.path.exists(sbin) else None)
    if path is None:
        tool_missing(f"{name} is not installed")
    return path
