"""The inventory's values as frozen data, below everything that reads or uses them.

Nothing here imports anything above :mod:`certfleet.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NOTIFY_EVENTS", "DnsConfig", "NotifyConfig"]

#: The events ``[notify] on`` may name.
NOTIFY_EVENTS = ("failure", "renewed", "expiring")


@dataclass(frozen=True)
class DnsConfig:
    """``[certificates.NAME.dns]``: how TXT records are published and checked."""

    certificate: str
    provider: str
    server: str | None = None
    tsig_name: str | None = None
    tsig_secret: str | None = None  # secret reference
    tsig_algorithm: str = "hmac-sha256"
    add: str | None = None
    remove: str | None = None
    resolvers: tuple[str, ...] = ()
    propagation_timeout: float = 300.0
    zone: str | None = None
    credentials: Mapping[str, str] | None = None  # lexicon: option -> secret reference
    url: str | None = None  # challtestsrv management URL
    hook_timeout: float = 120.0
    base_dir: Path = Path()


@dataclass(frozen=True)
class NotifyConfig:
    """``[notify]``: apprise URLs (secret references) and the events to tell."""

    urls: tuple[str, ...] = ()
    on: tuple[str, ...] = NOTIFY_EVENTS
