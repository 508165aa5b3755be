"""The fault matrix: a deploy stopped at every step that changes a device, then recovered.

For each driver (a lab SBC, a lab OVOC) and each step that changes the
device, a ``certfleet deploy`` is stopped at that step by the lab's own
fault knobs (never by a timer): the lab holds the request (or the SSH
session) at the step and says when it got there; then the deploy process is
killed with SIGKILL, or sent SIGTERM, or (``exception``) the lab drops the
connection at that step instead, so the deploy meets an error there. From
that same point (the lab device and the state folder are put back between
the two), the device is recovered once with ``certfleet deploy`` and once
with ``certfleet rollback DEVICE``. Every ending is checked on the lab's
side: the device serves, by handshake, the new certificate or the old one,
and what it holds is consistent (SBC: the context's key matches its
certificate, in the running configuration and in flash; OVOC: the keystore
holds the served certificate with its key, and the staged files are a
matching pair). Anything else is a *half state*.

Used by ``tests/estate/test_fault_matrix.py`` (asserts 0 half states) and
``benchmarks/fault_matrix.py`` (prints the matrix). POSIX only (signals).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .ca import Issued, LabCA
from .estate import WILDCARD, LabEstate
from .ovoc import StopPoint
from .sbc.faults import FaultRule
from .sbc.state import Snapshot

__all__ = [
    "FAULTS",
    "OVOC_POINTS",
    "SBC_POINTS",
    "CaseResult",
    "Ending",
    "FaultMatrix",
    "render_matrix",
]

FAULTS = ("sigkill", "sigterm", "exception")
RECOVERIES = ("deploy", "rollback")
SBC_DEVICE = "sbc2"  # a plain lab SBC (one context, one SIP-TLS listener)
OVOC_DEVICE = "ovoc"
WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class SbcPoint:
    """A step of the SBC deploy: the request the lab holds (or drops) and when."""

    name: str
    method: str
    path: str
    hold: str  # the lab action for SIGKILL/SIGTERM
    drop: str  # the lab action for an exception


SBC_POINTS = (
    SbcPoint("after the key", "PUT", "/files/tls/*/privateKey", "hang-after", "drop-after"),
    SbcPoint("after the certificate", "PUT", "/files/tls/*/certificate", "hang-after",
             "drop-after"),
    SbcPoint("after the trusted roots", "PUT", "/files/tls/*/trustedRoot*", "hang-after",
             "drop-after"),
    SbcPoint("before the save", "POST", "/actions/saveConfiguration", "hang", "drop"),
    SbcPoint("after the save", "POST", "/actions/saveConfiguration", "hang-after", "drop-after"),
)

# (name, LabOvoc stop point, nth): mid-upload is the second file's write (the
# first one staged); after the rename is the first rename (new and old files mixed).
OVOC_POINTS = (
    ("mid-upload", "upload", 2),
    ("after the rename", "rename", 1),
    ("at the menu", "menu", 1),
    ("after the import", "import", 1),
)


@dataclass
class Ending:
    """How one recovery ended: its exit code and the device as the lab sees it."""

    exit_code: int
    served: str  # "new", "old", "other" or "none"
    consistent: bool
    detail: str = ""

    @property
    def half(self) -> bool:
        return self.served not in ("new", "old") or not self.consistent

    def cell(self) -> str:
        mark = "HALF" if self.half else self.served
        return f"{mark} (exit {self.exit_code})"


@dataclass
class CaseResult:
    driver: str
    point: str
    fault: str
    fault_exit: int | None = None
    journal: str = ""  # the outcome history records for the faulted run
    endings: dict[str, Ending] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def half_states(self) -> int:
        return sum(1 for e in self.endings.values() if e.half)


def _sha(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class _PublicKey(Protocol):
    def public_bytes(
        self, encoding: serialization.Encoding, format: serialization.PublicFormat,
    ) -> bytes: ...


class _HasPublicKey(Protocol):
    """A private key or a certificate: both give their public key."""

    def public_key(self) -> _PublicKey: ...


def _public(key_or_cert: _HasPublicKey) -> bytes:
    data: bytes = key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


def _served(port: int) -> str | None:
    from ..drivers.tlsprobe import Listener, fetch_served_certificate
    from ..errors import CertfleetError

    try:
        cert = asyncio.run(fetch_served_certificate(Listener("127.0.0.1", port), timeout=10))
    except CertfleetError:
        return None
    return _sha(cert)


def _wait(done: Callable[[], bool], child: subprocess.Popen[bytes] | None, what: str) -> None:
    """Until ``done()`` (the lab says the step was reached); fails when the deploy ended."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        if child is not None and child.poll() is not None:
            out, err = child.communicate()
            raise AssertionError(f"the deploy ended ({child.returncode}) before {what}:\n"
                                 f"{out.decode(errors='replace')}\n{err.decode(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the deploy never reached {what}")
        time.sleep(0.02)


class _OvocSaved(NamedTuple):
    """The lab OVOC put aside: its files, what it serves, its keystore's password."""

    files: Path
    served: tuple[bytes, bytes, bytes]
    keystore_password: str | None


@dataclass(frozen=True)
class _Saved:
    """A point to start a case from: the state folder's copy and the lab device's."""

    state: Path
    sbc: Snapshot | None = None
    ovoc: _OvocSaved | None = None


class FaultMatrix:
    """One lab per driver, shared by every case: a case starts from a saved start."""

    def __init__(self, driver: str, workdir: Path,
                 cli: Callable[[list[str]], tuple[int, str]] | None = None) -> None:
        """``cli`` runs certfleet with the given arguments and returns its exit code
        and output (``certfleet.cli.app.invoke`` runs it in this process); by
        default each command is a ``python -m certfleet`` process."""
        if driver not in ("sbc", "ovoc"):
            raise ValueError(f"driver must be sbc or ovoc, not {driver!r}")
        self.driver = driver
        self._cli = cli
        self.workdir = workdir
        self.device = SBC_DEVICE if driver == "sbc" else OVOC_DEVICE
        self.lab = LabEstate(workdir / "lab", sbcs=2 if driver == "sbc" else 0, ha=False,
                             ovoc=driver == "ovoc", key_type="ec-p256")
        self.state = workdir / "state"
        self.renewed: Issued | None = None
        self._start: _Saved | None = None

    # ---- lifecycle -------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[FaultMatrix]:
        self.lab.start()
        try:
            with self.lab.environment():
                self._prepare()
                yield self
        finally:
            self.lab.stop()

    def _prepare(self) -> None:
        """Import last year's certificate and a renewal from a new CA (new roots to add)."""
        old = self.workdir / "old.pem"
        old.write_bytes(self.lab.old.fullchain_pem + self.lab.old.root_pem
                        + self.lab.old.key_pem())
        self._cli_ok("import", "wildcard", str(old))
        self.renewed = LabCA(name="certfleet Lab Renewal").issue(WILDCARD, key_type="ec-p256")
        new = self.workdir / "new.pem"
        new.write_bytes(self.renewed.fullchain_pem + self.renewed.root_pem
                        + self.renewed.key_pem())
        self._cli_ok("import", "wildcard", str(new))
        self._start = self._save("start")

    @property
    def old_sha(self) -> str:
        return _sha(self.lab.old.leaf)

    @property
    def new_sha(self) -> str:
        assert self.renewed is not None
        return _sha(self.renewed.leaf)

    # ---- the CLI ---------------------------------------------------------------------

    def _args(self, *args: str) -> list[str]:
        return [*args, "--inventory", str(self.lab.inventory_path),
                "--state-dir", str(self.state)]

    def cli(self, *args: str) -> tuple[int, str]:
        """certfleet on this lab (its secrets are in the environment): exit code, output."""
        if self._cli is not None:
            return self._cli(self._args(*args))
        env = {**os.environ, **self.lab.env, "COLUMNS": "160"}
        done = subprocess.run([sys.executable, "-m", "certfleet", *self._args(*args)],
                              env=env, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout + done.stderr

    def _cli_ok(self, *args: str) -> str:
        code, out = self.cli(*args)
        if code != 0:
            raise AssertionError(f"certfleet {' '.join(args)} exited {code}: {out}")
        return out

    def _deploy_args(self) -> list[str]:
        return ["deploy", "--only", self.device] if self.driver == "sbc" else ["deploy"]

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.lab.env, "COLUMNS": "160"}
        return subprocess.Popen(
            [sys.executable, "-m", "certfleet", *self._args(*self._deploy_args())],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    # ---- saving and putting back a point --------------------------------------------

    def _save(self, name: str) -> _Saved:
        """Copy the state folder and the lab device aside (nothing holds the store now)."""
        copy = self.workdir / f"saved-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.state, copy)
        if self.driver == "sbc":
            return _Saved(copy, sbc=self.lab.sbcs[self.device].snapshot())
        ovoc = self.lab.ovoc
        assert ovoc is not None
        _wait(lambda: ovoc.web_up, None, "the OVOC web server's restart")
        fs_copy = self.workdir / f"saved-{name}-ovoc"
        shutil.rmtree(fs_copy, ignore_errors=True)
        shutil.copytree(ovoc.root_dir, fs_copy, symlinks=True)
        slot = ovoc.slot
        return _Saved(copy, ovoc=_OvocSaved(fs_copy, (slot.cert_pem, slot.key_pem, slot.chain_pem),
                                            ovoc.keystore_password))

    def _restore(self, saved: _Saved) -> None:
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.copytree(saved.state, self.state)
        if saved.sbc is not None:
            unit = self.lab.sbcs[self.device]
            unit.faults.clear()
            unit.restore_snapshot(saved.sbc)
            return
        ovoc = self.lab.ovoc
        assert ovoc is not None
        ovoc.stop_point = None
        _wait(lambda: ovoc.web_up, None, "the OVOC web server's restart")
        assert saved.ovoc is not None
        fs_copy, slot, password = saved.ovoc
        shutil.rmtree(ovoc.root_dir)
        shutil.copytree(fs_copy, ovoc.root_dir, symlinks=True)
        ovoc.slot.set(*slot)
        ovoc.keystore_password = password

    # ---- the device as the lab sees it -----------------------------------------------

    def ending(self, exit_code: int) -> Ending:
        if self.driver == "sbc":
            return self._sbc_ending(exit_code)
        return self._ovoc_ending(exit_code)

    def _name(self, sha: str | None) -> str:
        return {self.old_sha: "old", self.new_sha: "new"}.get(sha or "", "other" if sha
                                                              else "none")

    def _sbc_ending(self, exit_code: int) -> Ending:
        unit = self.lab.sbcs[self.device]
        served = _served(unit.sip_port)
        running, saved = unit.context(1), unit.saved_context(1)
        problems = []
        if running.sha256 != served:
            problems.append(f"context 1 holds {self._name(running.sha256)}")
        if not running.key_matches:
            problems.append("the running key does not match the certificate")
        if saved.sha256 != served or not saved.key_matches:
            problems.append(f"flash holds {self._name(saved.sha256)} "
                            f"(key matches: {saved.key_matches})")
        return Ending(exit_code, self._name(served), not problems, "; ".join(problems))

    def _ovoc_ending(self, exit_code: int) -> Ending:
        from cryptography.hazmat.primitives.serialization import pkcs12

        ovoc = self.lab.ovoc
        assert ovoc is not None
        _wait(lambda: ovoc.web_up, None, "the OVOC web server's restart")
        served = _served(ovoc.https_port)
        problems = []
        if ovoc.pkcs12_path.exists() and ovoc.keystore_password:
            key, cert, _ = pkcs12.load_key_and_certificates(
                ovoc.pkcs12_path.read_bytes(), ovoc.keystore_password.encode())
            if cert is None or key is None or _sha(cert) != served:
                problems.append("the keystore does not hold the served certificate")
            elif _public(key) != _public(cert):
                problems.append("the keystore's key does not match its certificate")
        elif served != self.old_sha:
            problems.append("no keystore, yet not the initial certificate served")
        staged = ovoc.staged_files()
        try:
            cert = x509.load_pem_x509_certificate(staged["server.crt"])
            key = serialization.load_pem_private_key(staged["server.key"], None)
            if _public(key) != _public(cert):
                problems.append("the staged server.key does not match server.crt")
        except (KeyError, ValueError) as exc:
            problems.append(f"the staged files are not a pair: {exc}")
        return Ending(exit_code, self._name(served), not problems, "; ".join(problems))

    # ---- one case --------------------------------------------------------------------

    def run_case(self, point: str, fault: str) -> CaseResult:
        assert self._start is not None, "use running()"
        self._restore(self._start)
        case = CaseResult(self.driver, point, fault)
        if fault == "exception":
            self._arm(point, drop=True)
            case.fault_exit, out = self.cli(*self._deploy_args())
            if not self._reached(point):
                case.problems.append(f"the lab never reached {point}: {out}")
            if case.fault_exit != 1:
                case.problems.append(f"the deploy exited {case.fault_exit}, not 1: {out}")
        else:
            reached = self._arm(point, drop=False)
            child = self._spawn()
            try:
                _wait(reached, child, point)
                child.send_signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
                out_b, err_b = child.communicate(timeout=WAIT_SECONDS)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.communicate()
            case.fault_exit = child.returncode
            text = out_b.decode(errors="replace") + err_b.decode(errors="replace")
            expected = -signal.SIGKILL if fault == "sigkill" else 1
            if child.returncode != expected:
                case.problems.append(f"the deploy exited {child.returncode}, not {expected}")
            if "Traceback" in text:
                case.problems.append(f"a traceback: {text}")
        self._disarm()
        case.journal = self._journal()
        want = "interrupted" if fault == "sigkill" else "restored"
        if case.journal != want:
            case.problems.append(f"history says {case.journal!r}, not {want!r}")
        after = self._save("after")
        for recovery in RECOVERIES:
            self._restore(after)
            if recovery == "deploy":
                code, out = self.cli(*self._deploy_args())
            else:
                code, out = self.cli("rollback", self.device)
            ending = self.ending(code)
            case.endings[recovery] = ending
            want_served = "new" if recovery == "deploy" else "old"
            if code != 0:
                case.problems.append(f"{recovery} exited {code}: {out}")
            if ending.served != want_served or ending.half:
                case.problems.append(f"after {recovery}: {ending.served} served, "
                                     f"{ending.detail or 'consistent'}")
        return case

    def _arm(self, point: str, *, drop: bool) -> Callable[[], bool]:
        """Set the lab's knob for ``point``; a function that says whether it was reached."""
        if self.driver == "sbc":
            spec = next(p for p in SBC_POINTS if p.name == point)
            rule = self.lab.sbcs[self.device].faults.add(
                spec.drop if drop else spec.hold, method=spec.method, path=spec.path,
                nth=self._roots_to_add() if "trusted roots" in point else 1)
            self._rule: FaultRule | StopPoint = rule
            return lambda: rule.held > 0
        ovoc = self.lab.ovoc
        assert ovoc is not None
        _, where, nth = next(p for p in OVOC_POINTS if p[0] == point)
        stop = ovoc.stop_at(where, "drop" if drop else "hang", nth)
        self._rule = stop
        return stop.reached.is_set

    def _reached(self, point: str) -> bool:
        rule = self._rule
        return bool(rule.held > 0) if isinstance(rule, FaultRule) else rule.reached.is_set()

    def _disarm(self) -> None:
        if self.driver == "sbc":
            self.lab.sbcs[self.device].faults.clear()
        else:
            assert self.lab.ovoc is not None
            self.lab.ovoc.stop_point = None

    def _roots_to_add(self) -> int:
        """How many certificates the renewal adds to the trusted roots: the last one is
        "after the trusted roots"."""
        assert self.renewed is not None
        return len(self.renewed.chain) + 1

    def _journal(self) -> str:
        code, out = self.cli("history", "--json", "--device", self.device)
        if code != 0:
            return f"history exited {code}"
        rows = json.loads(out)["deployments"]
        return str(rows[0]["outcome"]) if rows else "nothing"

    def points(self) -> list[str]:
        if self.driver == "sbc":
            return [p.name for p in SBC_POINTS]
        return [p[0] for p in OVOC_POINTS]


def render_matrix(cases: list[CaseResult]) -> str:
    """The matrix as text: one row per driver, step and fault; a column per recovery."""
    rows: list[tuple[str, ...]] = [
        ("driver", "step", "fault", "exit", "journal", *RECOVERIES, "problems")]
    for case in cases:
        rows.append((case.driver, case.point, case.fault, str(case.fault_exit), case.journal,
                     *(case.endings[r].cell() if r in case.endings else "-" for r in RECOVERIES),
                     str(len(case.problems))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    halves = sum(c.half_states for c in cases)
    endings = sum(len(c.endings) for c in cases)
    lines.append(f"{len(cases)} fault(s) x {len(RECOVERIES)} recoveries: {endings} ending(s), "
                 f"{halves} half state(s) (aim: 0)")
    return "\n".join(lines)
