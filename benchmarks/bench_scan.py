"""Scan throughput: certfleet scan against sslyze and a minimal asyncio handshake loop.

One server process (this file with ``--serve``) opens 1,000 TLS listeners on
127.0.0.1, all presenting one RSA-2048 leaf with its intermediate. Measured
in the same run, on the first 200 listeners (endpoints per second, median of
``--runs``):

- the ceiling: a minimal asyncio loop that handshakes (stdlib ssl) and closes;
- certfleet's scan engine in-process (handshake, chain, trust, names);
- sslyze's certificate_info scan of the same listeners, when an interpreter
  with sslyze is given (``--sslyze-python``) or sslyze imports here.

Then the whole ``certfleet scan --from-file --json`` process (start-up
included) over all 1,000 listeners, against the ceiling for those 1,000.
Aims: scan >= 80 % of the ceiling and >= 15x sslyze; whole process >= 70 %
of the ceiling. Figures are printed, never asserted.

    python benchmarks/bench_scan.py [--runs 3] [--concurrency 100] [--json]
        [--sslyze-python /path/to/venv-with-sslyze/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

AIM_CEILING = 0.80
AIM_SSLYZE = 15.0
AIM_PROCESS = 0.70
LIFETIME = 900.0  # the server stops by itself after this many seconds

SSLYZE_SCRIPT = r"""
import json, sys, time
from sslyze import Scanner, ServerScanRequest, ServerNetworkLocation, ScanCommand
ports = json.loads(sys.argv[1])
requests = [ServerScanRequest(server_location=ServerNetworkLocation("127.0.0.1", p),
                              scan_commands={ScanCommand.CERTIFICATE_INFO}) for p in ports]
scanner = Scanner()
started = time.perf_counter()
scanner.queue_scans(requests)
done = errors = 0
for result in scanner.get_results():
    done += 1
    cert = result.scan_result.certificate_info if result.scan_result else None
    if cert is None or cert.status.value != "COMPLETED":
        errors += 1
print(json.dumps({"seconds": time.perf_counter() - started, "done": done, "errors": errors}))
"""


# ---- the server process ----------------------------------------------------------------


def serve(count: int) -> None:
    from certfleet.lab.ca import LabCA

    issued = LabCA(name="bench").issue(("bench.example.com",), key_type="rsa2048")
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-"))
    try:
        (work / "cert.pem").write_bytes(issued.fullchain_pem)
        (work / "key.pem").write_bytes(issued.key_pem())
        os.chmod(work / "key.pem", 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(work / "cert.pem", work / "key.pem")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _context: None)  # clients hang up: fine
        servers = [await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx, backlog=1024)
                   for _ in range(count)]
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        print(json.dumps(ports), flush=True)
        stop = asyncio.Event()
        # Stops when the parent closes stdin, or after LIFETIME seconds.
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                         daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LIFETIME)
        for server in servers:
            server.close()

    asyncio.run(main())


# ---- the clients -----------------------------------------------------------------------


async def ceiling(ports: list[int], concurrency: int) -> float:
    """Seconds for a minimal asyncio handshake (stdlib ssl) with every port."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    gate = asyncio.Semaphore(concurrency)

    async def one(port: int) -> None:
        async with gate:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in ports))
    return time.perf_counter() - started


def engine(ports: list[int], concurrency: int) -> tuple[float, int]:
    """Seconds for certfleet's scan engine over every port, and how many failed."""
    from certfleet.scan.engine import TrustStore, scan
    from certfleet.scan.targets import Endpoint

    store = TrustStore.system()
    started = time.perf_counter()
    results = asyncio.run(scan([Endpoint("127.0.0.1", p) for p in ports], store=store,
                               concurrency=concurrency, timeout=30))
    return time.perf_counter() - started, sum(1 for r in results if r.leaf is None)


def sslyze(python: str, ports: list[int]) -> dict[str, Any] | None:
    out = subprocess.run([python, "-c", SSLYZE_SCRIPT, json.dumps(ports)], capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        print(f"sslyze failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def whole_process(ports: list[int], concurrency: int, work: Path) -> tuple[float, int]:
    targets = work / "targets.txt"
    targets.write_text("".join(f"127.0.0.1:{p}\n" for p in ports))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "certfleet", "scan", "--from-file", str(targets), "--json",
         "--concurrency", str(concurrency), "--timeout", "30"],
        capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - started
    rows = json.loads(out.stdout)
    return seconds, sum(1 for r in rows if r["leaf"] is None)


def _sslyze_python(given: str | None) -> str | None:
    if given:
        return given
    try:
        import sslyze as _sslyze  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--process-endpoints", type=int, default=1000)
    parser.add_argument("--sslyze-python", help="an interpreter that has sslyze installed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    total = max(args.listeners, args.process_endpoints)
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(total)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-scan-"))
    figures: dict[str, Any] = {"listeners": args.listeners, "concurrency": args.concurrency,
                               "runs": args.runs}
    try:
        assert server.stdout is not None
        ports: list[int] = json.loads(server.stdout.readline())
        small = ports[: args.listeners]
        asyncio.run(ceiling(small, args.concurrency))  # warm-up
        ceil_s, scan_s, failures = [], [], 0
        for _ in range(args.runs):
            ceil_s.append(asyncio.run(ceiling(small, args.concurrency)))
            seconds, failed = engine(small, args.concurrency)
            scan_s.append(seconds)
            failures += failed
        figures["ceiling_eps"] = len(small) / statistics.median(ceil_s)
        figures["scan_eps"] = len(small) / statistics.median(scan_s)
        figures["scan_failures"] = failures
        python = _sslyze_python(args.sslyze_python)
        if python is not None:
            found = sslyze(python, small)
            if found is not None:
                figures["sslyze_eps"] = len(small) / found["seconds"]
                figures["sslyze_errors"] = found["errors"]
        big = ports[: args.process_endpoints]
        proc_s, ceil_big = [], []
        for _ in range(args.runs):
            ceil_big.append(asyncio.run(ceiling(big, args.concurrency)))
            seconds, failed = whole_process(big, args.concurrency, work)
            proc_s.append(seconds)
            figures["process_failures"] = failed
        figures["process_endpoints"] = len(big)
        figures["ceiling_big_eps"] = len(big) / statistics.median(ceil_big)
        figures["process_eps"] = len(big) / statistics.median(proc_s)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    report(figures)


def _aim(value: float, aim: float) -> str:
    return "" if value >= aim else "  OVER"


def report(f: dict[str, Any]) -> None:
    n = f["listeners"]
    print(f"Scan throughput: {n} TLS listeners on 127.0.0.1 (one server process, RSA-2048), "
          f"concurrency {f['concurrency']}, median of {f['runs']} runs")
    print(f"{'':38} {'endpoints/s':>12} {'vs ceiling':>11} {'aim':>6}")
    print(f"{'asyncio handshake loop (ceiling)':38} {f['ceiling_eps']:12.0f} {'100 %':>11}")
    ratio = f["scan_eps"] / f["ceiling_eps"]
    print(f"{'certfleet scan engine':38} {f['scan_eps']:12.0f} {ratio:10.0%} "
          f"{AIM_CEILING:6.0%}{_aim(ratio, AIM_CEILING)}")
    if "sslyze_eps" in f:
        times = f["scan_eps"] / f["sslyze_eps"]
        print(f"{'sslyze certificate_info':38} {f['sslyze_eps']:12.1f} "
              f"{f['sslyze_eps'] / f['ceiling_eps']:10.0%}")
        print(f"  certfleet scan / sslyze: {times:.1f}x (aim {AIM_SSLYZE:g}x){_aim(times, 15)}")
    else:
        print("sslyze: not measured (give --sslyze-python, see benchmarks/README.md)")
    big = f["process_endpoints"]
    ratio = f["process_eps"] / f["ceiling_big_eps"]
    print(f"{'asyncio loop, ' + str(big) + ' endpoints':38} {f['ceiling_big_eps']:12.0f}")
    print(f"{'certfleet scan process, ' + str(big):38} {f['process_eps']:12.0f} {ratio:10.0%} "
          f"{AIM_PROCESS:6.0%}{_aim(ratio, AIM_PROCESS)}")
    if f.get("scan_failures") or f.get("process_failures"):
        print(f"failures: engine {f.get('scan_failures')}, process {f.get('process_failures')}")


if __name__ == "__main__":
    main()
