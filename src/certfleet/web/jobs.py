"""Actions started from the page: deploy, renew and rollback, in the background.

Each runs the CLI's own code (:func:`~certfleet.estate.deploy.run_deploy`,
:func:`~certfleet.estate.renew.run_renew`,
:func:`~certfleet.estate.rollback.rollback_device`) in a thread of its own
with a writable store, so the store's locks apply exactly as on the CLI: an
action while any deploy, renew or rollback holds the lock (from this page,
the CLI or the schedule) is refused with the holder named. Device secrets
come from the server's environment (``env:`` and the other references of
the inventory); a ``prompt`` fails: there is no terminal.

Progress is kept per job (every step event and device result) for the page
to poll; nothing secret is in it (drivers never put secrets in events).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CertfleetError, InputError, StateError
from ..estate.store import ReadOnlyStore, Store
from .users import Account

__all__ = ["ACTIONS", "Busy", "Job", "Jobs"]

ACTIONS = ("deploy", "renew", "rollback")


class Busy(Exception):
    """An action was refused: another one holds the lock (``holder`` says who)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Job:
    id: int
    action: str
    target: str | None
    user: str
    started: str = field(default_factory=_now)
    finished: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None
    hint: str | None = None
    run_id: int | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def title(self) -> str:
        return self.action + (f" {self.target}" if self.target else "")

    def describe(self) -> str:
        return f"{self.title} started from the page by {self.user} at {self.started}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "action": self.action, "target": self.target, "user": self.user,
            "started": self.started, "finished": self.finished, "running": self.running,
            "exit_code": self.exit_code, "error": self.error, "hint": self.hint,
            "run_id": self.run_id, "events": list(self.events), "results": list(self.results),
        }


def _exit_code(exc: CertfleetError) -> int:
    """As the CLI: 2 when nothing was touched (bad input, a lock, before any device), else 3."""
    return 2 if exc.nothing_changed else 3


class Jobs:
    """The actions of this server (one at a time, as the store's lock allows)."""

    def __init__(self, inventory_path: Path, state_dir: Path, reader: ReadOnlyStore,
                 on_done: Callable[[], None] = lambda: None, *,
                 open_store: Callable[[], Store] | None = None) -> None:
        self.inventory_path = inventory_path
        self.state_dir = state_dir
        # How an action opens the store to write: SQLite in the state folder unless told.
        self.open_store = open_store or (lambda: Store.open(state_dir))
        self.reader = reader
        self.on_done = on_done
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)

    def holder(self) -> str | None:
        """Who holds the lock an action needs now, in words (None: free)."""
        for job in self._jobs.values():
            if job.running:
                return job.describe()
        for name in ("deploy", "renew"):
            held = self.reader.lock_holder(name)
            if held is not None:
                return held.describe()
        return None

    def start(self, action: str, account: Account, target: str | None = None) -> Job:
        """Start ``action`` for ``account`` (an operator). Raises Busy, InputError."""
        if action not in ACTIONS:
            raise InputError(f"no action {action!r}", hint="actions: " + ", ".join(ACTIONS))
        if action == "rollback" and not target:
            raise InputError("rollback needs a device", hint="start it from the device's page")
        with self._lock:
            holder = self.holder()
            if holder is not None:
                raise Busy(holder)
            job = Job(len(self._jobs) + 1, action, target, account.name)
            self._jobs[job.id] = job
        thread = threading.Thread(target=self._run, args=(job,), name=f"certfleet-{action}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()
        return job

    def wait(self, timeout: float = 300.0) -> None:
        for thread in list(self._threads):
            thread.join(timeout)

    def _run(self, job: Job) -> None:
        from ..estate.devices import make_factory
        from ..inventory import load_inventory

        def on_event(event: Any) -> None:
            job.events.append({"device": event.device, "step": event.step,
                               "status": event.status, "detail": event.detail,
                               "at": event.at})

        def on_result(result: Any) -> None:
            job.results.append({"device": result.device, "status": result.status,
                                "exit_code": result.exit_code, "message": result.message,
                                "hint": result.hint})

        try:
            inventory = load_inventory(self.inventory_path)
            with self.open_store() as store:
                factory = make_factory(store)  # secrets resolved per device, never asking
                try:
                    job.exit_code = self._action(job, inventory, store, factory,
                                                 on_event, on_result)
                finally:
                    store.audit(f"serve {job.action}",
                                "ok" if job.exit_code == 0 else "failed",
                                device=job.target,
                                detail=f"started from the page by {job.user}; exit "
                                f"{job.exit_code}")
        except CertfleetError as exc:
            job.error, job.hint, job.exit_code = exc.message, exc.hint, _exit_code(exc)
            if isinstance(exc, StateError) and exc.held is not None:
                job.error = f"refused: {exc.message}"
        except Exception as exc:  # a bug must not leave the job running for ever
            job.error, job.exit_code = f"{type(exc).__name__}: {exc}", 3
        finally:
            job.finished = _now()
            self.on_done()

    def _action(self, job: Job, inventory: Any, store: Any, factory: Any,
                on_event: Callable[[Any], None], on_result: Callable[[Any], None]) -> int:
        if job.action == "deploy":
            from ..estate.deploy import run_deploy

            only = [job.target] if job.target else []
            report = asyncio.run(run_deploy(inventory, store, factory, only=only,
                                            on_event=on_event, on_result=on_result))
            job.run_id = report.run_id
            return report.exit_code
        if job.action == "renew":
            from ..estate.options import RenewOptions
            from ..estate.renew import run_renew

            chosen = (job.target,) if job.target else ()
            renewed = asyncio.run(run_renew(
                inventory, store, factory, RenewOptions(only=chosen),
                log=lambda line: on_event(_Line(line)), on_event=on_event, on_result=on_result))
            if renewed.deploy is not None:
                job.run_id = renewed.deploy.run_id
            for item in renewed.items:
                job.results.append({"device": item.certificate, "status": item.action,
                                    "exit_code": 0 if item.error is None else 1,
                                    "message": item.reason if item.error is None else item.error,
                                    "hint": item.hint})
            return renewed.exit_code
        from ..estate.rollback import rollback_device

        assert job.target is not None
        result = asyncio.run(rollback_device(inventory, store, factory, job.target,
                                             on_event=on_event))
        job.results.append({"device": result.device, "status": "restored" if result.ok
                            else "failed", "exit_code": result.exit_code,
                            "message": result.message, "hint": result.hint})
        return result.exit_code


@dataclass
class _Line:
    """A line of the renew log, as a step event of no device."""

    detail: str
    device: str = ""
    step: str = "renew"
    status: str = "ok"
    at: float = field(default_factory=lambda: dt.datetime.now(dt.UTC).timestamp())
