"""Runs whose process died mid-deploy (SIGKILL, a reboot, a scheduler's timeout), told once.

A killed ``renew`` or ``deploy`` cannot say anything; the next run records
its deployments ``interrupted`` (:meth:`Store.settle_interrupted`) and
finishes the job. Without more, nobody would hear that a device was left
midway, even for a while. :func:`tell_interrupted` sends one failure
notification naming each such device, the step it stopped at and the
command to run next; what was told is kept in ``STATE/notify-interrupted.json``
(the highest deployment id told), only once a target took the notice, so a
failed send is tried again at the next run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..fsutil import write_file_atomic
from ..notify import deliver, interrupted_notification

__all__ = ["TOLD_FILE", "tell_interrupted", "untold_interrupted"]

TOLD_FILE = "notify-interrupted.json"


def _told(root: Path) -> int:
    try:
        return int(json.loads((root / TOLD_FILE).read_text(encoding="utf-8"))["told"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def untold_interrupted(store: Any) -> list[dict[str, Any]]:
    """The deployments recorded ``interrupted`` and not told yet, oldest first."""
    told = _told(store.root)
    rows = [d for d in store.deployments(limit=500)
            if d["outcome"] == "interrupted" and int(d["id"]) > told]
    return sorted(rows, key=lambda d: int(d["id"]))


def tell_interrupted(store: Any, config: Any, log: Callable[[str], None] = lambda _: None,
                     ) -> int:
    """Notify the untold interrupted deployments; how many were told (0 when none or when
    no target took the notice: they are tried again next time)."""
    rows = untold_interrupted(store)
    if not rows:
        return 0
    if deliver(config, interrupted_notification(rows), log).sent == 0:
        return 0
    write_file_atomic(store.root / TOLD_FILE,
                      json.dumps({"told": max(int(d["id"]) for d in rows)}).encode())
    return len(rows)
