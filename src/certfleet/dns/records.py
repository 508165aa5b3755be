"""A TXT record to publish: what the providers and the propagation check share."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TxtRecord"]


@dataclass(frozen=True)
class TxtRecord:
    """One TXT value to publish: ``name`` without the trailing dot, its ``zone``."""

    name: str
    value: str
    zone: str

    def __post_init__(self) -> None:
        if self.name.endswith(".") or not self.name:
            raise ValueError(f"name {self.name!r} must be a DNS name without a trailing dot")
