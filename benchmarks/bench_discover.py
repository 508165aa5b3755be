"""Discovery of a /20: a few lab devices among closed and silent loopback addresses.

A server process (this file with ``--serve``) starts a spread lab (OVOC, three
SBCs, one an HA pair, a listener nobody manages) in the first /28 of a /20 of
127.x addresses, and "silent" listeners (they accept and never answer) on a
few more addresses; every other address refuses. This process then runs
``certfleet discover`` over the whole /20 on three ports (4,096 hosts x 3 ports)
and prints the time, the endpoints per second and its peak memory. Aim: under
60 s on 2 cores with a 2 s timeout, under 200 MiB. Figures are printed, never
asserted.

    python benchmarks/bench_discover.py [--concurrency 512] [--timeout 2] [--silent 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def peak_memory_mib() -> float:
    """Peak resident memory of this process (MiB); tracemalloc's peak where resource is missing."""
    try:
        import resource
    except ImportError:
        import tracemalloc

        return tracemalloc.get_traced_memory()[1] / (1024 * 1024)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def serve(network: str, silent: int) -> None:
    """Start the lab and the silent listeners; print where; run until stdin closes."""
    import ipaddress

    from certfleet.lab.estate import LabEstate

    net = ipaddress.ip_network(network)
    lab = LabEstate(tempfile.mkdtemp(prefix="bench-discover-"), sbcs=3,
                    spread=str(next(net.subnets(new_prefix=28))))
    with lab:
        assert lab.spread is not None
        ports = [lab.spread.ports[r] for r in ("https", "sip", "ssh")]
        held = []
        hosts = list(net.hosts())
        for address in random.sample(hosts[64:], silent):
            for port in ports:
                sock = socket.socket()
                sock.bind((str(address), port))
                sock.listen(64)
                held.append(sock)
        print(json.dumps({"ports": ports}), flush=True)
        sys.stdin.read()
        for sock in held:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="NETWORK")
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--silent", type=int, default=16)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.silent)
        return
    network = f"127.{random.randint(64, 250)}.{random.randrange(0, 256, 16)}.0/20"
    child = subprocess.Popen([sys.executable, __file__, "--serve", network, "--silent",
                              str(args.silent)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())["ports"]
        from certfleet.discover import Credentials, Pins, discover

        target = f"{network}:{','.join(map(str, ports))}"
        started = time.perf_counter()
        estate = asyncio.run(discover([target], pins=Pins(), credentials=Credentials(),
                                      concurrency=args.concurrency, timeout=args.timeout))
        seconds = time.perf_counter() - started
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(30)
    print(f"discover {target}: {estate.probed:,} endpoints in {seconds:.1f} s "
          f"({estate.probed / seconds:,.0f} endpoints/s), concurrency {args.concurrency}, "
          f"timeout {args.timeout:g} s")
    print(f"  found {len(estate.devices)} devices, {len(estate.unmanaged)} unmanaged; "
          f"not answering: {dict(estate.silent)}")
    print(f"  peak memory {peak_memory_mib():.0f} MiB (aim: under 60 s and 200 MiB)")


if __name__ == "__main__":
    main()
