"""The options of a deploy, a plan and a renew's deploy: one frozen value per run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

__all__ = ["DeployOptions", "DeploySettings"]


@dataclass(frozen=True)
class DeployOptions:
    """What a run was asked to do, fixed before it starts.

    ``only``: the selection (device names or ``tag:`` filters; empty: all);
    ``concurrency``: devices at once (None: the inventory's); ``canary``: the
    device deployed first (``auto``: the kind most preferred); ``force``:
    redeploy where the target is served already (``--redeploy``); ``dry_run``:
    change nothing; ``allow_no_rollback``: deploy where no rollback is
    possible; ``break_lock``: accepted for old scripts; ``command``: the name
    the run is recorded under; ``skip_refused``: deploy the others when a
    device would refuse; ``ignore_findings``: error codes to go past.
    """

    only: tuple[str, ...] = ()
    concurrency: int | None = None
    canary: str | None = None
    force: bool = False
    dry_run: bool = False
    allow_no_rollback: bool = False
    break_lock: bool = False
    command: str = "deploy"
    skip_refused: bool = False
    ignore_findings: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, settings: DeploySettings) -> DeployOptions:
        """The options ``settings`` name (keyword arguments of the callers), sequences frozen."""
        return cls(
            only=tuple(settings.get("only", ())),
            concurrency=settings.get("concurrency"),
            canary=settings.get("canary"),
            force=settings.get("force", False),
            dry_run=settings.get("dry_run", False),
            allow_no_rollback=settings.get("allow_no_rollback", False),
            break_lock=settings.get("break_lock", False),
            command=settings.get("command", "deploy"),
            skip_refused=settings.get("skip_refused", False),
            ignore_findings=tuple(settings.get("ignore_findings", ())),
        )

    def recorded(self, concurrency: int) -> dict[str, object]:
        """What the run's record says of its options (``concurrency``: the one in force)."""
        return {
            "only": list(self.only),
            "concurrency": concurrency,
            "canary": self.canary,
            "force": self.force,
            "dry_run": self.dry_run,
            "allow_no_rollback": self.allow_no_rollback,
            "skip_refused": self.skip_refused,
            "ignore_findings": list(self.ignore_findings),
        }


@dataclass(frozen=True)
class RenewOptions:
    """What a renewal run was asked to do, fixed before it starts.

    ``only``: certificates, devices or ``tag:`` filters (empty: every
    certificate with an issuer); ``force``: order even when not due;
    ``dry_run``: order nothing (the CA's staging directory when one is known)
    and rehearse the deploy; ``notify``: send the ``[notify]`` messages.
    """

    only: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    notify: bool = True


class DeploySettings(TypedDict, total=False):
    """:class:`DeployOptions` as keyword arguments (sequences as the callers have them)."""

    only: Sequence[str]
    concurrency: int | None
    canary: str | None
    force: bool
    dry_run: bool
    allow_no_rollback: bool
    break_lock: bool
    command: str
    skip_refused: bool
    ignore_findings: Sequence[str]
