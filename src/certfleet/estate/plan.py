"""What a deploy would do, device by device, decided by handshake.

For each device: what every listener serves now, what it will serve, the
steps the driver takes, and whether a rollback will be possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..inventory import Inventory, select_devices
from .options import DeployOptions
from .store import Store
from .targets import rollback_possible

if TYPE_CHECKING:
    from .decide import Decision
    from .targets import DriverFactory

__all__ = ["DevicePlan", "make_plan", "plan_from", "rollback_possible"]

_DEFAULTS = DeployOptions()

def _steps(kind: str) -> tuple[str, ...]:
    """What a deploy does on a device of ``kind``, in words (the kind says)."""
    from ..drivers.registry import get_kind

    return get_kind(kind).steps


@dataclass
class DevicePlan:
    name: str
    kind: str
    certificate: str
    action: str  # deploy, skip, blocked
    reason: str
    served: dict[str, str | None] = field(default_factory=dict)
    served_subjects: dict[str, str | None] = field(default_factory=dict)
    target_sha256: str | None = None
    target_version: int | None = None
    target_not_after: str | None = None
    steps: tuple[str, ...] = ()
    rollback: bool = False
    rollback_reason: str = ""
    unreachable: str | None = None  # the listeners that did not answer, and why
    hint: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "certificate": self.certificate,
            "action": self.action,
            "reason": self.reason,
            "served": self.served,
            "served_subjects": self.served_subjects,
            "target_sha256": self.target_sha256,
            "target_version": self.target_version,
            "target_not_after": self.target_not_after,
            "steps": list(self.steps),
            "rollback": self.rollback,
            "rollback_reason": self.rollback_reason,
            "unreachable": self.unreachable,
            "hint": self.hint,
        }


def plan_from(decision: Decision) -> DevicePlan:
    """The plan row of a deploy decision (the same decision ``deploy`` acts on)."""
    device = decision.device
    action = {"refuse": "blocked"}.get(decision.action, decision.action)
    plan = DevicePlan(device.name, device.kind, device.certificate, action, decision.reason)
    plan.served = decision.served
    plan.served_subjects = {
        str(r.listener): (
            r.certificate.subject.rfc4514_string() if r.certificate is not None else r.error
        )
        for r in decision.results
    }
    plan.unreachable = decision.unreachable
    plan.hint = decision.hint
    plan.steps = _steps(device.kind) if action == "deploy" else ()
    plan.rollback, plan.rollback_reason = decision.rollback, decision.rollback_reason
    if decision.version is not None:
        plan.target_sha256 = decision.version.leaf_sha256
        plan.target_version = decision.version.number
        plan.target_not_after = decision.version.not_after
    return plan


async def make_plan(
    inventory: Inventory,
    store: Store,
    options: DeployOptions = _DEFAULTS,
    *,
    factory: DriverFactory | None = None,
) -> list[DevicePlan]:
    """The plan for the devices ``options.only`` selects (all by default). Raises ConfigError.

    Decided by :func:`certfleet.estate.decide.decide_all`, as ``deploy`` decides
    with the same options.
    """
    from .decide import decide_all

    devices = select_devices(inventory, options.only)
    decisions = await decide_all(devices, inventory, store, factory, options)
    return [plan_from(d) for d in decisions]
