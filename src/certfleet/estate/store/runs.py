"""Runs, deployments and their steps (the journal), history, and the audit log.

A deploy writes each device's deployment as ``in-progress`` when it starts
and each step as it starts and ends, so that a process that dies leaves a
record of how far it got. Each run holds an OS lock on its own file
(``locks/run-TOKEN.lock``) while it lives: a reader that can take that lock
knows the run's process is gone, and marks its unfinished deployments
``interrupted`` (:meth:`RunsMixin.settle_interrupted`).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from ...errors import StateError
from .backend import PostgresDatabase
from .base import StoreBase
from .lock import RUN_CLASS, AdvisoryLock, FileLock
from .schema import now, os_user

if TYPE_CHECKING:
    from ...drivers.base import DeployOutcome, StepEvent

__all__ = ["INTERRUPTED", "IN_PROGRESS", "DeploymentStart", "RunsMixin"]

IN_PROGRESS = "in-progress"
INTERRUPTED = "interrupted"


class DeploymentStart(TypedDict):
    """What a deployment is of and when it began (keyword arguments of the journal)."""

    run_id: int | None
    device: str
    kind: str
    certificate: str | None  # the certificate's name
    version_id: int | None
    started: str


_DEPLOYMENT_COLUMNS = (
    "d.id, d.run_id, d.device, d.kind, c.name AS certificate, d.version_id,"
    " v.number AS version_number, d.target_sha256, d.outcome, d.exit_code, d.message, d.hint,"
    " d.served_before, d.served_after, d.backup_id, d.started, d.finished"
)
_DEPLOYMENT_FROM = (
    " FROM deployments d LEFT JOIN certificates c ON c.id = d.certificate_id"
    " LEFT JOIN versions v ON v.id = d.version_id"
)


def _step_text(step: dict[str, Any] | None) -> str | None:
    if step is None:
        return None
    return f"{step['step']} ({step['status']})"


class RunsMixin(StoreBase):
    _run_locks: dict[int, FileLock | AdvisoryLock]

    def _run_lock(self, token: str) -> FileLock | AdvisoryLock:
        """The lock a live run holds: its file, or on PostgreSQL an advisory lock of the server."""
        if isinstance(self.db, PostgresDatabase):
            return AdvisoryLock(self.db, RUN_CLASS, token)
        return FileLock(self.root / "locks" / f"run-{token}.lock")

    # ---- audit -------------------------------------------------------------

    def audit(
        self, command: str, outcome: str, *, device: str | None = None, detail: str = ""
    ) -> None:
        """Append one audit line (time, OS user and host, command, device, outcome)."""
        self.db.execute(
            "INSERT INTO audit (at, user, host, command, device, outcome, detail)"
            " VALUES (?,?,?,?,?,?,?)",
            (now(), os_user(), socket.gethostname(), command, device, outcome, detail),
        )

    def audit_log(self, device: str | None = None, limit: int = 200, *,
                  command: str | None = None) -> list[dict[str, Any]]:
        """The newest audit lines first (of ``device`` and of ``command`` when given)."""
        sql = "SELECT * FROM audit"
        where: list[str] = []
        args: list[Any] = []
        if device:
            where.append("device = ?")
            args.append(device)
        if command:
            where.append("command = ?")
            args.append(command)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [dict(row) for row in self.db.execute(sql, args)]

    # ---- runs --------------------------------------------------------------

    def start_run(
        self,
        command: str,
        *,
        inventory_path: str | None = None,
        inventory_text: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> int:
        """Record a run; its OS lock is taken before the row exists and held until finish_run."""
        token = secrets.token_hex(8)
        lock = self._run_lock(token)
        try:
            lock.try_acquire()  # a fresh name: nobody else holds it
        except OSError as exc:
            raise StateError.from_os_error(
                "create the run lock", self.root / "locks", exc,
                hint="check that the state folder is writable (or pass --state-dir)",
            ) from None
        cur = self.db.execute(
            "INSERT INTO runs (command, started, user, host, pid, inventory_path, inventory_text,"
            " options, lock) VALUES (?,?,?,?,?,?,?,?,?)",
            (command, now(), os_user(), socket.gethostname(), os.getpid(), inventory_path,
             inventory_text, json.dumps(options or {}, default=str), token),
        )
        run_id = int(cur.lastrowid or 0)
        self._run_locks[run_id] = lock
        return run_id

    def finish_run(self, run_id: int, exit_code: int) -> None:
        """Close the run; a deployment of it still in progress is marked interrupted."""
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET finished = ?, exit_code = ? WHERE id = ?",
                (now(), exit_code, run_id),
            )
            self._mark_interrupted(run_id)
        lock = self._run_locks.pop(run_id, None)
        if lock is not None:
            lock.release(remove=True)

    def release_run_locks(self) -> None:
        for lock in self._run_locks.values():
            lock.release()
        self._run_locks.clear()

    def run(self, run_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(self, limit: int = 200) -> list[dict[str, Any]]:
        """Runs newest first, without their inventory text, each with its deployment counts
        (``devices``) and each device's outcome (``outcomes``)."""
        rows = self.db.execute(
            "SELECT r.id, r.command, r.started, r.finished, r.user, r.host, r.pid,"
            " r.inventory_path, r.options, r.exit_code"
            " FROM runs r ORDER BY r.id DESC LIMIT ?", (limit,),
        ).fetchall()
        result: list[dict[str, Any]] = []
        by_id: dict[int, dict[str, Any]] = {}
        for row in rows:
            item = dict(row)
            item["options"] = json.loads(item["options"] or "{}")
            item["devices"], item["outcomes"] = 0, {}
            by_id[item["id"]] = item
            result.append(item)
        if by_id:
            # One pass over the deployments of the listed runs (not two subqueries a run).
            low, high = min(by_id), max(by_id)
            for run_id, device, outcome in self.db.execute(
                "SELECT run_id, device, outcome FROM deployments"
                " WHERE run_id BETWEEN ? AND ? ORDER BY id", (low, high),
            ):
                listed = by_id.get(run_id)
                if listed is not None:
                    listed["devices"] += 1
                    listed["outcomes"][device] = outcome
        return result

    def settle_interrupted(self) -> list[int]:
        """Mark the deployments of runs whose process is gone ``interrupted``; their run ids."""
        rows = self.db.execute(
            "SELECT DISTINCT r.id, r.lock FROM deployments d JOIN runs r ON r.id = d.run_id"
            " WHERE d.outcome = ?", (IN_PROGRESS,),
        ).fetchall()
        settled = []
        for run_id, token in rows:
            if run_id in self._run_locks:
                continue  # ours, alive
            if token:
                probe = self._run_lock(token)
                try:
                    if not probe.try_acquire():
                        continue  # its process still runs
                except OSError:
                    continue
            else:
                probe = None
            with self.transaction():
                self._mark_interrupted(run_id)
                self.db.execute(
                    "UPDATE runs SET finished = COALESCE(finished, ?) WHERE id = ?",
                    (now(), run_id),
                )
            if probe is not None:
                probe.release(remove=True)
            self.audit("deploy", INTERRUPTED, detail=f"run {run_id}: its process ended mid-run")
            settled.append(run_id)
        return settled

    def _mark_interrupted(self, run_id: int) -> None:
        for (deployment_id,) in self.db.execute(
            "SELECT id FROM deployments WHERE run_id = ? AND outcome = ?", (run_id, IN_PROGRESS)
        ).fetchall():
            last = self.db.execute(
                "SELECT step, status FROM steps WHERE deployment_id = ? ORDER BY id DESC LIMIT 1",
                (deployment_id,),
            ).fetchone()
            where = f"{last['step']} ({last['status']})" if last else "its start"
            self.db.execute(
                "UPDATE deployments SET outcome = ?, exit_code = 3, message = ?, hint = ?,"
                " finished = ? WHERE id = ?",
                (
                    INTERRUPTED,
                    f"interrupted at {where}: the deploy process ended; device state unknown",
                    "run 'certfleet deploy' to finish the job or 'certfleet rollback DEVICE' "
                    "to restore the backup taken before it",
                    now(),
                    deployment_id,
                ),
            )

    # ---- deployments and steps (the journal) -------------------------------

    def begin_deployment(
        self, *, target_sha256: str | None, **start: Unpack[DeploymentStart]
    ) -> int:
        """Write a deployment as ``in-progress``; steps follow with :meth:`record_step`."""
        certificate = start["certificate"]
        cur = self.db.execute(
            "INSERT INTO deployments (run_id, device, kind, certificate_id, version_id,"
            " target_sha256, outcome, message, served_before, served_after, started)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (start["run_id"], start["device"], start["kind"],
             self.certificate_id(certificate) if certificate else None, start["version_id"],
             target_sha256, IN_PROGRESS, "", "{}", "{}", start["started"]),
        )
        return int(cur.lastrowid or 0)

    def record_step(self, deployment_id: int, event: StepEvent) -> None:
        """Append one step as it happens (committed at once)."""
        # INSERT ... SELECT: no new id asked back (PostgreSQL: no RETURNING).
        self.db.execute(
            "INSERT INTO steps (deployment_id, device, step, status, detail, at)"
            " SELECT ?,?,?,?,?,?",
            (deployment_id, event.device, event.step, event.status, event.detail, event.at),
        )

    def set_deployment_backup(self, deployment_id: int, backup_id: int) -> None:
        self.db.execute(
            "UPDATE deployments SET backup_id = ? WHERE id = ?", (backup_id, deployment_id)
        )

    def finish_deployment(
        self,
        deployment_id: int,
        outcome: DeployOutcome,
        *,
        status: str | None = None,
        backup_id: int | None = None,
    ) -> None:
        """Write the outcome of a deployment begun with :meth:`begin_deployment`."""
        self.db.execute(
            "UPDATE deployments SET target_sha256 = COALESCE(?, target_sha256), outcome = ?,"
            " exit_code = ?, message = ?, hint = ?, served_before = ?, served_after = ?,"
            " backup_id = COALESCE(?, backup_id), finished = ? WHERE id = ?",
            (outcome.target_sha256, status or outcome.outcome, outcome.exit_code,
             outcome.message, outcome.hint, json.dumps(outcome.served_before),
             json.dumps(outcome.served_after), backup_id, now(), deployment_id),
        )

    def record_deployment(
        self,
        *,
        outcome: DeployOutcome,
        backup_id: int | None = None,
        status: str | None = None,
        **start: Unpack[DeploymentStart],
    ) -> int:
        """Record one finished device outcome and every step it emitted, at once.

        ``status`` replaces ``outcome.outcome`` for states the drivers do not
        have (``not-attempted``).
        """
        with self.transaction():
            deployment_id = self.begin_deployment(target_sha256=outcome.target_sha256, **start)
            for step in outcome.steps:
                self.record_step(deployment_id, step)
            self.finish_deployment(deployment_id, outcome, status=status, backup_id=backup_id)
        return deployment_id

    def device_names(self) -> list[str]:
        """Every device that has a deployment or rollback in the history, sorted."""
        return [row[0] for row in self.db.execute(
            "SELECT DISTINCT device FROM deployments ORDER BY device")]

    def deployments(
        self, device: str | None = None, run_id: int | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Deployments, newest first (one query)."""
        clauses: list[str] = []
        args: list[Any] = []
        if device:
            clauses.append("d.device = ?")
            args.append(device)
        if run_id is not None:
            clauses.append("d.run_id = ?")
            args.append(run_id)
        sql = f"SELECT {_DEPLOYMENT_COLUMNS}{_DEPLOYMENT_FROM}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY d.id DESC LIMIT ?"
        args.append(limit)
        result = []
        for row in self.db.execute(sql, args).fetchall():
            item = dict(row)
            item["served_before"] = json.loads(item["served_before"])
            item["served_after"] = json.loads(item["served_after"])
            result.append(item)
        return result

    def steps(self, deployment_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT step, status, detail, at FROM steps WHERE deployment_id = ? ORDER BY id",
            (deployment_id,),
        )
        return [dict(row) for row in rows]

    def _steps_of(self, ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        steps: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        if not ids:
            return steps
        for chunk in _chunks(ids):  # a deployment's steps are all in its chunk's query
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                "SELECT deployment_id, step, status, detail, at FROM steps"
                f" WHERE deployment_id IN ({marks}) ORDER BY id", chunk,
            ):
                item = dict(row)
                steps[item.pop("deployment_id")].append(item)
        return steps

    def history(self, device: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Deployments newest first with their run's command and user, steps and last step.

        Three queries whatever the number of rows (deployments with their
        run, then the steps of all of them).
        """
        rows = self.deployments(device=device, limit=limit)
        run_ids = sorted({r["run_id"] for r in rows if r["run_id"] is not None})
        runs: dict[int, tuple[str, str]] = {}
        if run_ids:
            marks = ",".join("?" * len(run_ids))
            for run in self.db.execute(
                f"SELECT id, command, user FROM runs WHERE id IN ({marks})", run_ids
            ):
                runs[run["id"]] = (run["command"], run["user"])
        steps = self._steps_of([r["id"] for r in rows])
        for row in rows:
            command, user = runs.get(row["run_id"], (None, None))
            row["command"] = command
            row["user"] = user
            row["steps"] = steps[row["id"]]
            row["last_step"] = _step_text(row["steps"][-1] if row["steps"] else None)
        return rows

    def latest_deployments(self, devices: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest deployment of each of ``devices`` (with ``last_step``), in two queries
        per ``_CHUNK`` devices."""
        items = []
        for chunk in _chunks(devices):
            marks = ",".join("?" * len(chunk))
            items += [dict(row) for row in self.db.execute(
                f"SELECT {_DEPLOYMENT_COLUMNS}{_DEPLOYMENT_FROM} WHERE d.id IN"
                f" (SELECT MAX(id) FROM deployments WHERE device IN ({marks}) GROUP BY device)",
                chunk,
            ).fetchall()]
        steps = self._steps_of([item["id"] for item in items])
        result = {}
        for item in items:
            item["served_before"] = json.loads(item["served_before"])
            item["served_after"] = json.loads(item["served_after"])
            own = steps[item["id"]]
            item["last_step"] = _step_text(own[-1] if own else None)
            result[item["device"]] = item
        return result


#: Values bound in one ``IN (...)`` query: SQLite refuses more than its variable limit
#: (999 before 3.32, 32,766 by default since; builds differ), and an estate can have
#: 90,000 devices.
_CHUNK = 900


def _chunks(values: Sequence[Any]) -> list[list[Any]]:
    """``values`` in lists of at most ``_CHUNK``."""
    return [list(values[start:start + _CHUNK]) for start in range(0, len(values), _CHUNK)]
