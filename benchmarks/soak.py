"""The soak: the renewal loop as a schedule runs it, for M minutes of real time, under faults.

A lab estate (one OVOC, sbc1, sbc2 and the HA pair sbc3-ha) renews its
wildcard from Pebble, whose certificates live ``--validity`` seconds
(Pebble's ``certificateValidityPeriod``), by real DNS-01 through
pebble-challtestsrv. ``certfleet renew --json`` is started as a process of
its own every ``--interval`` seconds, as a timer would (like a systemd
timer, not while the previous one still runs), and ``certfleet exporter``
runs beside it. With no ``renew_before_days`` a certificate is due when a
third of its lifetime is left.

A fault injector, at random moments (``--seed``), makes an SBC answer 409
or 500 or hang, takes an SBC unit down for a while, makes the DNS hook fail
(the challtestsrv API behind a proxy that answers 500) or never propagate
(the proxy says yes and drops the record), makes the CA refuse (the
inventory's directory points for a while to a CA that answers every request
with a problem document), and SIGKILLs a ``renew`` in the middle of a
deploy (when the lab says a device was reached at a step that changes it).

A watcher handshakes every listener every second. After every renew that
ran to its end, and at the end, every device is checked on the lab's side
(its served certificate, running and saved configuration, key; OVOC: the
keystore and the staged files). Notifications go to a webhook (apprise's
``json://``) of the soak; a failed run must have one naming the device, the
step and the next command. At the end the faults stop, the loop runs until
every device serves the current version, and the store's integrity is
checked. The last line is:

    soak: M min, R renewals, E s expired, H half states, S silent failures

R: device installs verified by renew; E: seconds in which a listener served
an expired certificate; H: devices found inconsistent; S: failed runs
without such a notification. POSIX only (signals, /proc for the exporter's
memory and open files: Linux). Run from a checkout:
``python benchmarks/soak.py --minutes 30 [--seed N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certfleet.estate.store import Store
from certfleet.fsutil import write_file_atomic
from certfleet.lab.estate import LabEstate
from certfleet.lab.pebble import LabPebble, add_acme_to_inventory, pebble_missing
from certfleet.lab.sbc import LabSbc

NOTIFY_ENV = "CERTFLEET_SOAK_NOTIFY_URL"
SBC_TIMEOUT = 5  # seconds per SBC REST request (the driver's timeout option)
CERTIFICATE = "wildcard"
OUTAGES = ("device-down", "dns-fail", "dns-never", "ca-refuse")
FAULT_KINDS = ("sbc-409", "sbc-500", "sbc-hang", "device-down", "dns-fail", "dns-never",
               "ca-refuse", "sigkill")


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%H:%M:%S")


def say(text: str) -> None:
    print(f"[{stamp()}] {text}", flush=True)


def _sha(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _public(key_or_cert: Any) -> bytes:
    data: bytes = key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


# ---- small servers of the soak ------------------------------------------------------


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, code: int, body: bytes = b"", kind: str = "application/json",
                headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a thread of its own."""

    def __init__(self, handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.soak = self  # type: ignore[attr-defined]  # the handler's way back
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class NotifyReceiver(_Server):
    """The webhook of ``json://127.0.0.1:PORT/notify``: every message with its arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[float, dict[str, Any]]] = []

        class Handler(_Quiet):
            def do_POST(self) -> None:
                receiver: NotifyReceiver = self.server.soak  # type: ignore[attr-defined]
                try:
                    message = json.loads(self._body() or b"{}")
                except ValueError:
                    message = {"title": "", "message": "(not JSON)"}
                with receiver.lock:
                    receiver.received.append((time.monotonic(), message))
                self._answer(200, b"{}")

        super().__init__(Handler)

    def since(self, moment: float) -> list[dict[str, Any]]:
        with self.lock:
            return [m for at, m in self.received if at >= moment]


class DnsProxy(_Server):
    """challtestsrv's management API behind a switch: ``ok`` forwards, ``fail`` answers
    500, ``never`` answers 200 and drops the record (it never propagates)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "ok"

        class Handler(_Quiet):
            def do_POST(self) -> None:
                import httpx

                proxy: DnsProxy = self.server.soak  # type: ignore[attr-defined]
                body = self._body()
                mode = proxy.mode
                if mode == "fail":
                    self._answer(500, b"soak: the DNS API is failing", "text/plain")
                    return
                if mode == "never" and self.path.startswith("/set-txt"):
                    self._answer(200)
                    return
                try:
                    answer = httpx.post(proxy.upstream + self.path, content=body, timeout=10,
                                        headers={"Content-Type": "application/json"})
                except httpx.HTTPError:
                    self._answer(502)
                    return
                self._answer(answer.status_code, answer.content)

        super().__init__(Handler)


class RefusingCA(_Server):
    """An ACME server that refuses: a directory, nonces, and a 503 problem for every POST."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_path), str(key_path))

        class Handler(_Quiet):
            def _nonce(self) -> dict[str, str]:
                return {"Replay-Nonce": os.urandom(16).hex(), "Cache-Control": "no-store"}

            def do_HEAD(self) -> None:
                self._answer(200, headers=self._nonce())

            def do_GET(self) -> None:
                ca: RefusingCA = self.server.soak  # type: ignore[attr-defined]
                if self.path.startswith("/dir"):
                    base = f"https://127.0.0.1:{ca.port}"
                    directory = {name: f"{base}/{name}" for name in
                                 ("newNonce", "newAccount", "newOrder", "revokeCert",
                                  "keyChange")}
                    self._answer(200, json.dumps(directory).encode())
                    return
                self._answer(204 if "Nonce" in self.path else 404, headers=self._nonce())

            def do_POST(self) -> None:
                self._body()
                problem = {"type": "urn:ietf:params:acme:error:serverInternal",
                           "detail": "the CA is refusing every request (soak fault)",
                           "status": 503}
                self._answer(503, json.dumps(problem).encode(), "application/problem+json",
                             {**self._nonce(), "Retry-After": "10"})

        super().__init__(Handler, context)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"


# ---- the watcher ----------------------------------------------------------------------


class Watcher:
    """Handshakes every listener every second; counts the seconds an expired one is served."""

    def __init__(self, listeners: dict[str, int]) -> None:
        self.listeners = listeners
        self.expired_seconds: set[int] = set()
        self.expired_where: dict[str, int] = {}
        self.handshakes = 0
        self.unanswered = 0
        self.served: dict[str, str] = {}
        self.not_after: dict[str, dt.datetime] = {}
        self.seen: dict[str, set[str]] = {}  # sha256 -> the listeners that served it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-watcher")

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
        from certfleet.errors import CertfleetError

        async def one(name: str, port: int) -> tuple[str, x509.Certificate | None]:
            try:
                return name, await fetch_served_certificate(Listener("127.0.0.1", port),
                                                            timeout=3)
            except CertfleetError:
                return name, None

        while not self._stop.is_set():
            tick = time.monotonic()
            results = await asyncio.gather(*(one(n, p) for n, p in self.listeners.items()))
            now = dt.datetime.now(dt.UTC)
            for name, cert in results:
                self.handshakes += 1
                if cert is None:
                    self.unanswered += 1
                    continue
                sha = _sha(cert)
                self.served[name] = sha
                self.not_after[name] = cert.not_valid_after_utc
                self.seen.setdefault(sha, set()).add(name)
                if cert.not_valid_after_utc <= now:
                    self.expired_seconds.add(int(time.time()))
                    self.expired_where[name] = self.expired_where.get(name, 0) + 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


# ---- the exporter's footprint --------------------------------------------------------


def footprint(pid: int) -> tuple[float, int]:
    """(resident memory in MiB, open files) of a process, from /proc (Linux)."""
    rss_kib = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


# ---- the soak -------------------------------------------------------------------------


@dataclass
class RunRecord:
    number: int
    started: float
    ended: float = 0.0
    exit_code: int | None = None
    killed: bool = False
    killed_at: str | None = None  # the device the SIGKILL caught mid-deploy
    faults: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)
    issued: str | None = None
    silent: list[str] = field(default_factory=list)
    traceback: bool = False


@dataclass
class Kill:
    """An armed SIGKILL: fires when ``reached()`` says the lab got to a deploy step."""

    device: str
    where: str
    reached: Callable[[], bool]
    disarm: Callable[[], None]
    armed_at: float


class Soak:
    def __init__(self, work: Path, *, minutes: float, seed: int, validity: int,
                 interval: float, kinds: tuple[str, ...] = FAULT_KINDS,
                 quiet_faults: bool = False) -> None:
        self.kinds = kinds
        self.work = work
        self.minutes = minutes
        self.seconds = minutes * 60.0
        self.random = random.Random(seed)
        self.seed = seed
        self.validity = validity
        self.interval = interval
        self.quiet_faults = quiet_faults
        self.lab = LabEstate(work / "lab", sbcs=3, key_type="ec-p256")
        self.state = work / "state"
        self.runs: list[RunRecord] = []
        self.half_states = 0
        self.half_details: list[str] = []
        self.fault_counts: dict[str, int] = {k: 0 for k in FAULT_KINDS}
        self.active_faults: set[str] = set()
        self.down: set[str] = set()
        self.kill: Kill | None = None
        self.versions: dict[str, set[str]] = {}
        self._fault_lock = threading.Lock()
        self._stop_faults = threading.Event()
        self.pebble: LabPebble | None = None
        self.exporter: subprocess.Popen[bytes] | None = None
        self.samples: list[tuple[float, float, int]] = []
        self.outages: list[tuple[float, float]] = []
        self._budget_lock = threading.Lock()
        self.untold_kills: list[RunRecord] = []
        self.pending: set[str] = set()  # SBCs with an error answer or hang waiting

    # ---- set-up --------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.lab.env, NOTIFY_ENV: self.notify_url, "COLUMNS": "200",
                "CERTFLEET_INVENTORY": str(self.lab.inventory_path),
                "CERTFLEET_STATE_DIR": str(self.state)}

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "certfleet", *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def set_up(self) -> None:
        from certfleet.cli.lab import _seed_previous

        self.lab.start()
        self.pebble = LabPebble(self.work / "pebble", validity=self.validity).start()
        self.receiver = NotifyReceiver().start()
        self.notify_url = f"json://127.0.0.1:{self.receiver.port}/notify"
        self.dns = DnsProxy(self.pebble.challtestsrv_url).start()
        self.refusing = RefusingCA(self.pebble.directory / "pebble-https.pem",
                                   self.pebble.directory / "pebble-https.key").start()
        add_acme_to_inventory(self.lab.inventory_path, self.pebble, notify_env=NOTIFY_ENV,
                              dns={"url": f"http://127.0.0.1:{self.dns.port}",
                                   "propagation_timeout": 15})
        # No renew_before_days: due at a third of the lifetime; SBC requests time out soon.
        text = self.lab.inventory_path.read_text(encoding="utf-8")
        text = re.sub(r"(?m)^renew_before_days = \d+\n", "", text)
        text = text.replace("verify_timeout = 30\n",
                            f"verify_timeout = 30\ntimeout = {SBC_TIMEOUT}\n")
        write_file_atomic(self.lab.inventory_path, text.encode())
        self.inventory_text = text
        with Store.open(self.state) as store:
            _seed_previous(self.lab, store)

    def listeners(self) -> dict[str, int]:
        found: dict[str, int] = {}
        if self.lab.ovoc is not None:
            found["ovoc:https"] = self.lab.ovoc.https_port
        for name, unit in self.units().items():
            for role, port in unit.listener_ports.items():
                if role in ("sip", "teams"):
                    found[f"{name}:{role}"] = port
        return found

    def units(self) -> dict[str, LabSbc]:
        units = dict(self.lab.sbcs)
        for name, pair in self.lab.pairs.items():
            units[f"{name}/a"] = pair.active
            units[f"{name}/b"] = pair.standby
        return units

    def start_exporter(self) -> None:
        from certfleet.lab.tls import free_port

        port = free_port()
        self.exporter_url = f"http://127.0.0.1:{port}/metrics"
        log = (self.work / "exporter.log").open("wb")
        self.exporter = subprocess.Popen(
            [sys.executable, "-m", "certfleet", "exporter", "--listen", f"127.0.0.1:{port}",
             "--interval", "5", "--ca-bundle", str(self.lab.ca_path),
             "--ca-bundle", str(self.lab.sbc_ca_path)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.exporter_url, timeout=5).status_code == 200:
                    return
            if self.exporter.poll() is not None:
                raise RuntimeError("certfleet exporter exited: "
                                   + (self.work / "exporter.log").read_text(errors="replace"))
            time.sleep(0.5)
        raise RuntimeError("certfleet exporter did not serve /metrics within 60 s")

    def sample_exporter(self, elapsed: float) -> None:
        if self.exporter is None or self.exporter.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            # Files open at rest: the fewest of five readings over a second (a scan in
            # progress holds a socket per listener for a moment).
            readings = []
            for _ in range(5):
                readings.append(footprint(self.exporter.pid))
                time.sleep(0.2)
            self.samples.append((elapsed, readings[-1][0], min(f for _, f in readings)))

    # ---- faults --------------------------------------------------------------------

    def _fault(self, kind: str, text: str) -> None:
        self.fault_counts[kind] += 1
        if not self.quiet_faults:
            say(f"fault: {kind}: {text}")

    def faults_loop(self) -> None:
        """Every few seconds a fault, each in a thread of its own (they overlap); outages
        are aimed, more often than not, at a moment in the next renewal window."""
        threads: list[threading.Thread] = []
        while not self._stop_faults.wait(self.random.uniform(0.05, 0.2) * self.window):
            kind = self.random.choice(self.kinds)
            aim = kind in OUTAGES and self.random.random() < 0.7
            thread = threading.Thread(target=self._inject_safely, args=(kind, aim),
                                      daemon=True, name=f"soak-fault-{kind}")
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
        for thread in threads:
            thread.join(120)

    def _inject_safely(self, kind: str, aim: bool) -> None:
        if aim:
            due = self.next_due()
            if due is not None:
                at = due + self.random.uniform(-0.05, 0.3) * self.window
                if 0 < at - time.monotonic() <= 2 * self.window:
                    self._sleep(at - time.monotonic())
        if self._stop_faults.is_set():
            return
        try:
            self.inject(kind)
        except Exception as exc:  # a fault that could not be set is reported, not fatal
            say(f"fault {kind} not injected: {type(exc).__name__}: {exc}")

    def next_due(self) -> float | None:
        """When (monotonic) the certificate served now becomes due, by the watcher."""
        ends = list(self.watcher.not_after.values())
        if not ends:
            return None
        left = (min(ends) - dt.datetime.now(dt.UTC)).total_seconds()
        return time.monotonic() + left - self.window

    def _sleep(self, seconds: float) -> None:
        self._stop_faults.wait(seconds)

    @property
    def window(self) -> float:
        """The renewal window: a third of the lifetime (the due rule without
        renew_before_days)."""
        return self.validity / 3

    def budget(self, wanted: float, *, exact: bool = False) -> float:
        """How long a fault may last now: faults (a device down, the DNS hook or the CA
        failing, and a run's worth for an SBC's error answer or hang, or a SIGKILL) take at
        most 40 % of any renewal window, so that a run can renew in time; more would make
        an expiry the soak's doing, not the product's. ``exact``: all of it or nothing."""
        with self._budget_lock:
            return self._budget(wanted, exact)

    def _budget(self, wanted: float, exact: bool) -> float:
        now = time.monotonic()
        since = now - self.window
        self.outages = [(a, b) for a, b in self.outages if b > since]
        used = sum(min(b, now + wanted) - max(a, since) for a, b in self.outages)
        allowed = max(0.0, min(wanted, 0.4 * self.window - used))
        if exact and allowed < wanted:
            return 0.0
        if allowed >= 3:
            self.outages.append((now, now + allowed))
            return allowed
        return 0.0

    def inject(self, kind: str) -> None:
        r = self.random
        span = (0.1 * self.window, 0.4 * self.window)
        sbc_names = list(self.lab.sbcs) + list(self.lab.pairs)
        if kind in ("sbc-409", "sbc-500", "sbc-hang"):
            name = r.choice(sbc_names)
            unit = self.lab.sbcs.get(name) or self.lab.pairs[name].active
            action = kind.removeprefix("sbc-")
            times = r.randint(1, 8) if action == "409" else 1
            # One waiting per SBC; the run it spoils (a hang: the request's timeout too).
            with self._fault_lock:
                if name in self.pending:
                    return
                if not self.budget(self.interval + (SBC_TIMEOUT if action == "hang" else 0),
                                   exact=True):
                    return
                self.pending.add(name)
            path = r.choice(["/files/tls/*/privateKey", "/files/tls/*/certificate",
                             "/files/tls/*/trustedRoot*", "/actions/saveConfiguration"])
            method = "POST" if path.startswith("/actions") else "PUT"
            rule = unit.faults.add(action, method=method, path=path, times=times)
            self._fault(kind, f"{name} answers {action} x{times} to {method} {path}")
            # Until the next deploy meets it (or two renewal windows went by).
            until = time.monotonic() + 2 * self.window
            while rule.fired < rule.times and time.monotonic() < until:
                if self._stop_faults.wait(0.5):
                    break
            with unit.faults._lock:
                if rule in unit.faults.rules:
                    unit.faults.rules.remove(rule)
            with self._fault_lock:
                self.pending.discard(name)
        elif kind == "device-down":
            name = r.choice(list(self.units()))
            unit = self.units()[name]
            with self._fault_lock:
                if name in self.down:
                    return
                seconds = self.budget(r.uniform(*span))
                if not seconds:
                    return
                self.down.add(name)
            self._fault(kind, f"{name} down for {seconds:.0f} s")
            unit.ports = dict(unit.listener_ports)  # the same ports when it comes back
            unit.stop()
            self._sleep(seconds)
            unit.start()
            with self._fault_lock:
                self.down.discard(name)
        elif kind in ("dns-fail", "dns-never"):
            with self._fault_lock:
                if self.dns.mode != "ok":
                    return
                seconds = self.budget(r.uniform(*span))
                if not seconds:
                    return
                self.dns.mode = kind.removeprefix("dns-")
            how = "fails" if kind == "dns-fail" else "never propagates"
            self._fault(kind, f"the DNS hook {how} for {seconds:.0f} s")
            self._sleep(seconds)
            self.dns.mode = "ok"
        elif kind == "ca-refuse":
            with self._fault_lock:
                if "ca-refuse" in self.active_faults:
                    return
                seconds = self.budget(r.uniform(*span))
                if not seconds:
                    return
                self.active_faults.add("ca-refuse")
            assert self.pebble is not None
            self._fault(kind, f"the CA refuses for {seconds:.0f} s")
            self.write_inventory(self.inventory_text.replace(self.pebble.directory_url,
                                                             self.refusing.directory_url))
            self._sleep(seconds)
            self.write_inventory(self.inventory_text)
            with self._fault_lock:
                self.active_faults.discard("ca-refuse")
        elif kind == "sigkill" and self.kill is None and self.budget(self.interval, exact=True):
            self.arm_kill()

    def write_inventory(self, text: str) -> None:
        write_file_atomic(self.lab.inventory_path, text.encode())

    def arm_kill(self) -> None:
        """Stop the next deploy at a step that changes a device, then SIGKILL the renew."""
        r = self.random
        with self._fault_lock:
            if self.kill is not None or "kill" in self.active_faults:
                return
            self.active_faults.add("kill")
        try:
            self._arm_kill(r)
        finally:
            with self._fault_lock:
                self.active_faults.discard("kill")

    def _arm_kill(self, r: random.Random) -> None:
        choices = [*(f"sbc:{n}" for n in [*self.lab.sbcs, *self.lab.pairs]), "ovoc"]
        target = r.choice(choices)
        if target == "ovoc":
            assert self.lab.ovoc is not None
            ovoc = self.lab.ovoc
            point, nth = r.choice([("upload", 2), ("rename", 1), ("menu", 1), ("import", 1)])
            stop = ovoc.stop_at(point, "hang", nth)

            def disarm_ovoc() -> None:
                if ovoc.stop_point is stop:
                    ovoc.stop_point = None

            self.kill = Kill("ovoc", f"ovoc at {point}", stop.reached.is_set, disarm_ovoc,
                             time.monotonic())
        else:
            name = target.removeprefix("sbc:")
            unit = self.lab.sbcs.get(name) or self.lab.pairs[name].active
            method, path, action = r.choice([
                ("PUT", "/files/tls/*/privateKey", "hang-after"),
                ("PUT", "/files/tls/*/certificate", "hang-after"),
                ("PUT", "/files/tls/*/trustedRoot*", "hang-after"),
                ("POST", "/actions/saveConfiguration", "hang"),
                ("POST", "/actions/saveConfiguration", "hang-after"),
            ])
            rule = unit.faults.add(action, method=method, path=path)

            def disarm_sbc() -> None:
                with unit.faults._lock:
                    if rule in unit.faults.rules:
                        unit.faults.rules.remove(rule)

            self.kill = Kill(name, f"{name} at {action} {method} {path}", lambda: rule.held > 0,
                             disarm_sbc, time.monotonic())
        self._fault("sigkill", f"armed: the next deploy is killed at {self.kill.where}")

    def clear_faults(self) -> None:
        self.dns.mode = "ok"
        self.write_inventory(self.inventory_text)
        for unit in self.units().values():
            unit.faults.clear()
        if self.kill is not None:
            self.kill.disarm()
            self.kill = None

    # ---- one renew -----------------------------------------------------------------

    def run_renew(self, number: int) -> RunRecord:
        record = RunRecord(number, time.monotonic())
        out_path, err_path = self.work / "renew.out", self.work / "renew.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            child = subprocess.Popen([sys.executable, "-m", "certfleet", "renew", "--json"],
                                     env=self.env(), stdout=out, stderr=err,
                                     stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 600
            while child.poll() is None:
                kill = self.kill
                if kill is not None and kill.reached():
                    child.send_signal(signal.SIGKILL)
                    child.wait()
                    record.killed = True
                    record.killed_at = kill.device
                    record.faults.append(f"SIGKILL at {kill.where}")
                    kill.disarm()
                    self.kill = None
                    break
                if time.monotonic() > deadline:
                    child.kill()
                    child.wait()
                    record.faults.append("a renew ran for 10 minutes: killed")
                    break
                time.sleep(0.05)
        record.ended = time.monotonic()
        record.exit_code = child.returncode
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
        record.traceback = "Traceback (most recent call last)" in stdout + stderr
        if record.killed:
            self.untold_kills.append(record)
            return record
        time.sleep(0.3)  # a notice sent just before the exit is in by now
        report: dict[str, Any] | None = None
        with contextlib.suppress(ValueError):
            report = json.loads(stdout)
        self.account(record, report, stderr)
        return record

    def account(self, record: RunRecord, report: dict[str, Any] | None, stderr: str) -> None:
        """Count installs; for a failed run, check the notices name device, step and next;
        for the runs SIGKILLed since the last one that ended, a notice of this one must."""
        notices = self.receiver.since(record.started)
        texts = [f"{n.get('title', '')}\n{n.get('message', '')}" for n in notices]
        failures = [t for t, n in zip(texts, notices, strict=True)
                    if n.get("type") == "failure" or "FAILED" in t or "CRASHED" in t]
        for killed in self.untold_kills:
            needles = [f"{killed.killed_at}: failed at step ", "Next: certfleet"]
            if not any(all(n in text for n in needles) for text in failures):
                killed.silent.append(f"{killed.killed_at} (SIGKILLed mid-deploy)")
                say(f"SILENT: run {killed.number} was SIGKILLed at {killed.killed_at}; run "
                    f"{record.number}, the next to end, told nobody")
        self.untold_kills = []
        items = report.get("certificates", []) if isinstance(report, dict) else []
        for item in items:
            if item.get("action") == "issued" and item.get("version"):
                record.issued = str(item["version"]["leaf_sha256"])
            for device in item.get("devices", []):
                if device.get("status") in ("installed", "skipped") and device.get(
                        "target_sha256"):
                    self.versions.setdefault(device["target_sha256"], set()).add(
                        device["device"])
                if device.get("status") == "installed":
                    record.installed.append(device["device"])
        if record.exit_code == 0:
            return
        wanted: list[tuple[str, list[str]]] = []
        for item in items:
            if item.get("action") == "failed":
                wanted.append((f"{item['certificate']} (issuance)",
                               [f"{item['certificate']}:", "Next: certfleet"]))
            for device in item.get("devices", []):
                if device.get("exit_code", 0) != 0:
                    name = device["device"]
                    wanted.append((name, [f"{name}: failed at step ", "Next: certfleet"]))
        if report is None:
            # No report: a crash (or a refusal before the run). The notice must say where.
            wanted.append(("the run (no report)", ["Next:"]))
        if not wanted:
            wanted.append(("the run", ["Next:"]))
        for what, needles in wanted:
            if not any(all(needle in text for needle in needles) for text in failures):
                record.silent.append(what)
        if record.silent:
            say(f"SILENT: run {record.number} exited {record.exit_code}; no notice names "
                f"{', '.join(record.silent)}; stderr: {stderr.strip()[-600:]}")

    # ---- the lab's side of every device --------------------------------------------

    def check_devices(self, when: str) -> int:
        """Devices (or HA units) whose served certificate, key or saved state do not agree."""
        from certfleet.drivers.tlsprobe import Listener, fetch_served_certificate
        from certfleet.errors import CertfleetError

        def served(port: int) -> str | None:
            try:
                cert = asyncio.run(fetch_served_certificate(Listener("127.0.0.1", port),
                                                            timeout=10))
            except CertfleetError:
                return None
            return _sha(cert)

        found = 0
        with self._fault_lock:
            down = set(self.down)
        for name, unit in self.units().items():
            problems = []
            for role, index in (("sip", 1), ("teams", 2)):
                if role not in unit.listener_ports:
                    continue
                running, saved = unit.context(index), unit.saved_context(index)
                if not running.key_matches:
                    problems.append(f"context {index}: the running key does not match")
                if saved.sha256 != running.sha256 or not saved.key_matches:
                    problems.append(f"context {index}: flash differs from the running "
                                    f"configuration (key matches: {saved.key_matches})")
                if name not in down:
                    sha = served(unit.listener_ports[role])
                    if sha is not None and sha != running.sha256:
                        problems.append(f"{role} serves {sha[:12]}, context {index} holds "
                                        f"{(running.sha256 or '-')[:12]}")
            if problems:
                found += 1
                self.half_details.append(f"{when}: {name}: {'; '.join(problems)}")
        ovoc = self.lab.ovoc
        if ovoc is not None:
            deadline = time.monotonic() + 60
            while not ovoc.web_up and time.monotonic() < deadline:
                time.sleep(0.1)
            problems = self.ovoc_problems(served(ovoc.https_port))
            if problems:
                found += 1
                self.half_details.append(f"{when}: ovoc: {'; '.join(problems)}")
        if found:
            say(f"HALF STATE after {when}: " + " | ".join(self.half_details[-found:]))
        self.half_states += found
        return found

    def ovoc_problems(self, served: str | None) -> list[str]:
        from cryptography.hazmat.primitives.serialization import pkcs12

        ovoc = self.lab.ovoc
        assert ovoc is not None
        problems = []
        if served is None:
            return ["the OVOC web server does not answer"]
        if ovoc.pkcs12_path.exists() and ovoc.keystore_password:
            key, cert, _ = pkcs12.load_key_and_certificates(
                ovoc.pkcs12_path.read_bytes(), ovoc.keystore_password.encode())
            if cert is None or key is None or _sha(cert) != served:
                problems.append("the keystore does not hold the served certificate")
            elif _public(key) != _public(cert):
                problems.append("the keystore's key does not match its certificate")
        elif served != _sha(self.lab.old.leaf):
            problems.append("no keystore, yet not the initial certificate served")
        staged = ovoc.staged_files()
        try:
            cert = x509.load_pem_x509_certificate(staged["server.crt"])
            key = serialization.load_pem_private_key(staged["server.key"], None)
            if _public(key) != _public(cert):
                problems.append("the staged server.key does not match server.crt")
        except (KeyError, ValueError) as exc:
            problems.append(f"the staged files are not a pair: {exc}")
        return problems

    # ---- the whole soak ------------------------------------------------------------

    def loop(self, until: float, *, faults: bool) -> None:
        number = len(self.runs)
        next_sample = 0.0
        next_minute = 60.0
        begin = self.begin
        while time.monotonic() < until:
            tick = time.monotonic()
            elapsed = tick - begin
            if elapsed >= next_sample:
                self.sample_exporter(elapsed)
                next_sample = elapsed + 15
            if elapsed >= next_minute:
                self.progress(elapsed)
                next_minute += 60
            kill = self.kill
            if kill is not None and tick - kill.armed_at > 2 * self.window:
                kill.disarm()  # no deploy came by: let it go
                self.kill = None
                say(f"sigkill at {kill.where}: no deploy got there; disarmed")
            number += 1
            record = self.run_renew(number)
            self.runs.append(record)
            self.report_run(record)
            if not record.killed:
                self.check_devices(f"run {record.number}")
            rest = self.interval - (time.monotonic() - tick)
            if rest > 0:
                time.sleep(rest)

    def progress(self, elapsed: float) -> None:
        failed = sum(1 for r in self.runs if not r.killed and r.exit_code != 0)
        killed = sum(1 for r in self.runs if r.killed)
        memory = f"{self.samples[-1][1]:.1f} MiB, {self.samples[-1][2]} files" \
            if self.samples else "-"
        say(f"minute {elapsed / 60:.0f}: {len(self.runs)} runs ({failed} failed, {killed} "
            f"killed), {sum(len(r.installed) for r in self.runs)} installs, "
            f"{len(self.watcher.expired_seconds)} s expired, {self.half_states} half states, "
            f"{sum(1 for r in self.runs if r.silent)} silent; exporter {memory}")

    def report_run(self, record: RunRecord) -> None:
        what = "killed" if record.killed else f"exit {record.exit_code}"
        parts = [f"run {record.number}: {what}, {record.ended - record.started:.1f} s"]
        if record.issued:
            parts.append(f"issued {record.issued[:12]}")
        if record.installed:
            parts.append("installed on " + ", ".join(record.installed))
        parts += record.faults
        if record.traceback:
            parts.append("TRACEBACK")
        if record.exit_code != 0 or record.issued or record.installed or record.killed:
            say("; ".join(parts))

    def settle(self) -> bool:
        """Faults off: renew until every device serves the current version (at most 5 min)."""
        self.clear_faults()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            record = self.run_renew(len(self.runs) + 1)
            self.runs.append(record)
            self.report_run(record)
            status = self.cli("status", "--json")
            with contextlib.suppress(ValueError):
                data = json.loads(status.stdout)
                if record.exit_code == 0 and all(d.get("is_current") for d in data["devices"]):
                    return True
            time.sleep(self.interval)
        return False

    def integrity(self) -> str:
        """PRAGMA integrity_check of every database in the state folder, and status."""
        results = []
        for path in sorted(self.state.rglob("*.db")) + sorted(self.state.rglob("*.sqlite*")):
            if path.suffix in (".db", ".sqlite", ".sqlite3"):
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    answer = db.execute("PRAGMA integrity_check").fetchone()[0]
                    results.append(f"{path.name}: {answer}")
        return ", ".join(results) or "no database found"

    def run(self) -> int:
        say(f"soak: {self.minutes:g} min, seed {self.seed}, certificates live "
            f"{self.validity} s, renew every {self.interval:g} s")
        self.set_up()
        assert self.pebble is not None
        try:
            first = self.cli("renew", "--force", "--json")
            if first.returncode != 0:
                say(f"the first renew (--force) exited {first.returncode}: "
                    f"{(first.stdout + first.stderr)[-2000:]}")
                return 1
            forced = json.loads(first.stdout)["certificates"][0]["version"]
            self.before = {forced["leaf_sha256"], _sha(self.lab.old.leaf)}
            say(f"first renew (--force) ordered from Pebble and deployed: exit 0; it lives "
                f"{self.lifetime(forced):.0f} s")
            self.start_exporter()
            self.begin = time.monotonic()
            self.sample_exporter(0.0)
            start_rss, start_files = self.samples[-1][1:]
            say(f"exporter at start: {start_rss:.1f} MiB resident, {start_files} open files")
            self.watcher = Watcher(self.listeners()).start()
            injector = threading.Thread(target=self.faults_loop, daemon=True,
                                        name="soak-faults")
            injector.start()
            try:
                self.loop(self.begin + self.seconds, faults=True)
            finally:
                self._stop_faults.set()
                injector.join(60)
            settled = self.settle()
            self.sample_exporter(time.monotonic() - self.begin)
            self.watcher.stop()
            final = self.check_devices("the end")
            return self.summary(settled, final)
        finally:
            if self.exporter is not None:
                self.exporter.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.exporter.wait(10)
                if self.exporter.poll() is None:
                    self.exporter.kill()
                    self.exporter.wait()
            for server in ("receiver", "dns", "refusing"):
                if hasattr(self, server):
                    getattr(self, server).stop()
            self.lab.stop()
            self.pebble.stop()

    def summary(self, settled: bool, final: int) -> int:
        runs = [r for r in self.runs]
        failed = [r for r in runs if not r.killed and r.exit_code != 0]
        killed = [r for r in runs if r.killed]
        renewals = sum(len(r.installed) for r in runs)
        issued = self.issued_versions()
        listeners = set(self.watcher.listeners)
        everywhere = sum(1 for sha in issued if self.watcher.seen.get(sha, set()) >= listeners)
        silent = sum(1 for r in runs if r.silent)
        tracebacks = sum(1 for r in runs if r.traceback)
        expired = len(self.watcher.expired_seconds)
        crashes = sorted(p.name for p in self.state.glob("crash-*.txt"))
        say(f"runs: {len(runs)} ({len(failed)} failed, {len(killed)} SIGKILLed), "
            f"tracebacks: {tracebacks}, crash reports: {len(crashes)}"
            + (f" ({', '.join(crashes)})" if crashes else ""))
        say("faults injected: " + ", ".join(f"{k} {v}" for k, v in self.fault_counts.items()))
        say(f"{CERTIFICATE}: {len(issued)} renewals ordered during the soak, {everywhere} "
            f"served on every listener ({len(listeners)}, by the watcher); {renewals} installs "
            "verified by renew")
        say(f"watcher: {self.watcher.handshakes} handshakes, {self.watcher.unanswered} "
            f"unanswered (a device down or restarting), expired served on: "
            f"{self.watcher.expired_where or 'none'}")
        say(f"after the faults: every device serves the current version: "
            f"{'yes' if settled else 'NO'}; half states at the end: {final}")
        for detail in self.half_details:
            say(f"  half state: {detail}")
        say(f"store integrity: {self.integrity()}")
        self.print_exporter()
        print(f"soak: {self.minutes:g} min, {renewals} renewals, {expired} s expired, "
              f"{self.half_states} half states, {silent} silent failures", flush=True)
        ok = settled and expired == 0 and self.half_states == 0 and silent == 0 and renewals > 0
        return 0 if ok and tracebacks == 0 and not crashes else 1

    @staticmethod
    def lifetime(version: dict[str, Any]) -> float:
        begin = dt.datetime.fromisoformat(version["not_before"])
        return (dt.datetime.fromisoformat(version["not_after"]) - begin).total_seconds()

    def issued_versions(self) -> list[str]:
        """The versions of the certificate stored during the soak (killed runs' too)."""
        with Store.open(self.state) as store:
            versions = store.versions(CERTIFICATE)
        return [v.leaf_sha256 for v in versions if v.leaf_sha256 not in self.before]

    def print_exporter(self) -> None:
        if not self.samples:
            say("exporter: no sample")
            return
        start, end = self.samples[0], self.samples[-1]
        say(f"exporter at start: {start[1]:.1f} MiB resident, {start[2]} open files; at the "
            f"end ({end[0] / 60:.1f} min): {end[1]:.1f} MiB, {end[2]} open files")
        # From minute 5 (or half-way through a shorter soak) to the end.
        mark = min(300.0, self.seconds / 2)
        later = [s for s in self.samples if s[0] >= mark]
        if later:
            ref = later[0]
            rss_dev = max(abs(s[1] - ref[1]) / ref[1] for s in later) * 100
            fd_dev = max(abs(s[2] - ref[2]) / ref[2] for s in later) * 100
            say(f"exporter from minute {ref[0] / 60:.1f} to the end: memory "
                f"{min(s[1] for s in later):.1f}-{max(s[1] for s in later):.1f} MiB (at most "
                f"{rss_dev:.1f} % from minute {ref[0] / 60:.1f}), open files "
                f"{min(s[2] for s in later)}-{max(s[2] for s in later)} (at most "
                f"{fd_dev:.1f} %); {'flat' if rss_dev <= 10 and fd_dev <= 10 else 'NOT flat'}"
                " (aim: within 10 %)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="how long the loop runs under faults (default 30)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the fault injector's seed (default: random, printed)")
    parser.add_argument("--validity", type=int, default=None,
                        help="seconds Pebble's certificates live (default 240; 120 for a "
                             "soak under 10 minutes, 80 under 2)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between renew starts (default 5)")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help="the faults to inject, comma-separated (default: all): "
                             + ", ".join(FAULT_KINDS))
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown or not kinds:
        parser.error(f"--faults: unknown {', '.join(unknown) or 'none given'}")
    missing = pebble_missing()
    if missing:
        print(f"soak: needs {' and '.join(missing)}: sudo apt-get install pebble",
              file=sys.stderr)
        return 2
    validity = args.validity or (240 if args.minutes >= 10 else 120 if args.minutes >= 2
                                 else 80)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM and SIGHUP stop the soak as Ctrl-C does: the lab, Pebble and the exporter too.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return Soak(args.keep.resolve(), minutes=args.minutes, seed=seed,
                    validity=validity, interval=args.interval, kinds=kinds).run()
    with tempfile.TemporaryDirectory(prefix="certfleet-soak-") as tmp:
        return Soak(Path(tmp), minutes=args.minutes, seed=seed, validity=validity,
                    interval=args.interval, kinds=kinds).run()


if __name__ == "__main__":
    sys.exit(main())
