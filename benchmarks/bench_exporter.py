"""Exporter under load: a burst of simultaneous scrapes, and scrapes among held connections.

Starts ``certfleet exporter`` (this checkout's) on a free port of 127.0.0.1,
scanning one TLS listener that this file serves, then measures:

- a burst of ``--scrapes`` (200) simultaneous GET /metrics, each on its own
  connection, ``--runs`` times: the median, 95th percentile and largest latency
  of every scrape (aim: every scrape answered within 1 s);
- ``--held`` (2,000) connections opened and never finishing their request,
  then one fresh scrape: how long it takes (aim: 1 s) and whether the
  exporter is still alive.

Figures are printed, never asserted.

    python benchmarks/bench_exporter.py [--runs 5] [--scrapes 200] [--held 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

AIM_BURST = 1.0
AIM_FRESH = 1.0


def _raise_open_files(need: int) -> None:
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _scrape(port: int) -> float | None:
    """Seconds to a whole 200 answer; None when the scrape failed (reset, refused, not 200)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
    except OSError:
        return None
    if answer.split(b" ", 2)[1:2] != [b"200"]:
        return None
    return time.perf_counter() - started


async def _burst(port: int, count: int) -> list[float | None]:
    return list(await asyncio.gather(*(_scrape(port) for _ in range(count))))


async def _held_then_fresh(port: int, held: int) -> tuple[float | None, int]:
    opened: list[asyncio.StreamWriter] = []
    try:
        for start in range(0, held, 200):
            count = min(200, held - start)
            batch = await asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port) for _ in range(count)),
                return_exceptions=True)
            for item in batch:
                if isinstance(item, tuple):
                    item[1].write(b"GET /metrics HTTP/1.1\r\n")
                    opened.append(item[1])
        return await _scrape(port), len(opened)
    finally:
        for writer in opened:
            writer.close()


def _tls_listener(work: Path) -> tuple[Any, int]:
    """A TLS listener of a throwaway self-signed certificate (what the exporter scans)."""
    import datetime as dt
    import socket
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    pem = work / "bench.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return sock, port


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--held", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _raise_open_files(args.held + args.scrapes + 1024)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        listener, target = _tls_listener(work)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1",
               "CERTFLEET_STATE_DIR": str(work / "state")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "certfleet", "exporter", "--listen", "127.0.0.1:0",
             "--interval", "3600", "--no-inventory", "--target", f"127.0.0.1:{target}"],
            stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "serving metrics on " not in line:
                raise SystemExit(f"the exporter did not start: {line!r}")
            port = int(line.split("serving metrics on ", 1)[1].split()[0].rsplit(":", 1)[1]
                       .split("/")[0])
            bursts = [asyncio.run(_burst(port, args.scrapes)) for _ in range(args.runs)]
            fresh, held = asyncio.run(_held_then_fresh(port, args.held))
            alive = proc.poll() is None
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            listener.close()
    failed = sum(1 for b in bursts for t in b if t is None)
    latencies = sorted(t for b in bursts for t in b if t is not None) or [float("inf")]
    slowest = [max((t for t in b if t is not None), default=float("inf")) for b in bursts]
    figures: dict[str, Any] = {
        "burst_scrapes": args.scrapes, "runs": args.runs,
        "latency_median_s": statistics.median(latencies),
        "latency_p95_s": _percentile(latencies, 0.95), "latency_max_s": latencies[-1],
        "burst_slowest_s_median": statistics.median(slowest), "burst_failed": failed,
        "held_wanted": args.held, "held_connections": held, "fresh_scrape_s": fresh,
        "alive": alive,
    }
    if args.json:
        print(json.dumps(figures))
        return

    def mark(value: float, aim: float) -> str:
        return "" if value <= aim else "  OVER"

    print(f"exporter: {args.scrapes} simultaneous scrapes, {args.runs} bursts "
          f"({len(latencies)} answered, {failed} failed{'  OVER' if failed else ''})")
    print(f"  latency: median {figures['latency_median_s']:.3f} s, "
          f"p95 {figures['latency_p95_s']:.3f} s, max {figures['latency_max_s']:.3f} s "
          f"(aim: max {AIM_BURST:g} s){mark(figures['latency_max_s'], AIM_BURST)}")
    print(f"  slowest answer of a burst, median of the bursts: "
          f"{figures['burst_slowest_s_median']:.3f} s")
    took = "failed  OVER" if fresh is None else f"{fresh:.3f} s{mark(fresh, AIM_FRESH)}"
    short = "" if held >= args.held else f" (of {args.held}: the open-files limit)"
    print(f"exporter: {held} held connections{short}, then a fresh scrape: {took} "
          f"(aim {AIM_FRESH:g} s); alive: {'yes' if alive else 'NO'}; "
          f"serving: {'yes' if fresh is not None else 'NO'}")


def _percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


if __name__ == "__main__":
    main()
