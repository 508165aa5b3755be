"""Estate deploy at scale: 1 lab OVOC + 100 lab SBCs with 100 ms per REST request.

Prints the wall time of a deploy to one SBC (a fresh one-device estate),
the wall time of a deploy to the whole estate, the ratio of the two (aim:
under 3x), the CPU time of the deploying process per device (aim: under
30 ms; the lab devices run in another process) and the peak memory of the
process. ``--profile FILE`` writes a cProfile (CPU time) of the estate
deploy. ``--state-url postgresql://USER@HOST/DB`` deploys the whole estate
once more with the store on that PostgreSQL (in a schema of its own, dropped
after; the user needs CREATE on the database) and prints it beside SQLite
(aim: at most 1.2x SQLite's time). Figures are printed, never asserted. Run
from a checkout: ``python benchmarks/bench_estate.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from certfleet.estate.deploy import DeployReport, run_deploy
from certfleet.estate.devices import make_factory
from certfleet.estate.importer import import_certificate
from certfleet.estate.store import Store
from certfleet.inventory import load_inventory
from certfleet.lab.ca import LabCA
from certfleet.lab.estate import WILDCARD, LabEstate

AIM_RATIO = 3.0
AIM_CPU_MS = 30.0
AIM_POSTGRES_RATIO = 1.2


@contextlib.contextmanager
def bench_schema(url: str) -> Iterator[str]:
    """``url`` with a new, empty schema first on its search path (dropped at the end)."""
    import secrets

    import psycopg

    schema = f"certfleet_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in url else "?"
    try:
        yield f"{url}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def peak_memory_mib() -> float:
    """Peak resident memory of this process (MiB); tracemalloc's peak where resource is missing."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    except ImportError:  # Windows
        import tracemalloc

        return tracemalloc.get_traced_memory()[1] / (1024 * 1024)


def _lab_process(
    conn: Any, directory: str, sbcs: int, ovoc: bool, ha: bool, latency: float
) -> None:
    """Run a lab estate in its own process, as real devices run on their own hardware."""
    ca = LabCA(name="certfleet Bench")
    lab = LabEstate(Path(directory), sbcs=sbcs, ovoc=ovoc, ha=ha, latency=latency, ca=ca,
                    key_type="ec-p256")
    lab.start()
    try:
        old = lab.old
        (lab.directory / "previous.pem").write_bytes(
            old.fullchain_pem + old.root_pem + old.key_pem()
        )
        renewed = ca.issue(WILDCARD, key_type=lab.key_type)
        (lab.directory / "renewed.pem").write_bytes(
            renewed.fullchain_pem + renewed.root_pem + renewed.key_pem()
        )
        conn.send(lab.env)
        conn.recv()  # until the benchmark is done
    finally:
        lab.stop()
        conn.send("stopped")


def deploy_once(
    work: Path, *, sbcs: int, ovoc: bool, ha: bool, latency: float, concurrency: int,
    profile: str | None = None, state_url: str | None = None,
) -> tuple[float, float, float, DeployReport]:
    """Start an estate (another process), import the renewal, deploy.

    Returns (setup seconds, deploy seconds, deploy CPU seconds of this process, report).
    """
    import multiprocessing
    import os

    started = time.perf_counter()
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_lab_process, args=(child, str(work), sbcs, ovoc, ha, latency), daemon=True
    )
    process.start()
    try:
        env: dict[str, str] = parent.recv()
        os.environ.update(env)
        store_key = os.environ.get("CERTFLEET_STORE_KEY") or "certfleet benchmark store key"
        opened = (Store.open(work / "state", url=state_url, key=store_key) if state_url
                  else Store.open_sqlite(work / "state"))
        with opened as store:
            inventory = load_inventory(work / "certfleet.toml")
            import_certificate(inventory, store, "wildcard", [work / "previous.pem"])
            import_certificate(inventory, store, "wildcard", [work / "renewed.pem"])
            setup = time.perf_counter() - started
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile(time.process_time)  # CPU, not wall
                profiler.enable()
            began = time.perf_counter()
            cpu = time.process_time()
            report = asyncio.run(
                run_deploy(inventory, store, make_factory(store), concurrency=concurrency)
            )
            cpu = time.process_time() - cpu
            wall = time.perf_counter() - began
            if profiler is not None and profile:
                profiler.disable()
                profiler.dump_stats(profile)
            return setup, wall, cpu, report
    finally:
        parent.send("stop")
        if parent.poll(60):
            parent.recv()
        process.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbcs", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per SBC request")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--no-ovoc", action="store_true", help="leave the OVOC out")
    parser.add_argument(
        "--ha", action="store_true",
        help="make the last SBC an HA pair (its sync answers 409 after each change, so it "
        "alone takes several seconds: the ratio then measures the pair, not the scale)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--state-url", metavar="URL",
        help="also deploy the whole estate with the store on this PostgreSQL "
        "(postgresql://USER@HOST/DB; a schema of its own, dropped after)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the estate deploy")
    args = parser.parse_args()
    if sys.platform == "win32":
        import tracemalloc

        tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        _, one, one_cpu, one_report = deploy_once(
            Path(tmp) / "one", sbcs=1, ovoc=False, ha=False, latency=args.latency,
            concurrency=1,
        )
        all_setup, full, full_cpu, report = deploy_once(
            Path(tmp) / "all", sbcs=args.sbcs, ovoc=not args.no_ovoc, ha=args.ha,
            latency=args.latency, concurrency=args.concurrency, profile=args.profile,
        )
        postgres: tuple[float, float, float, DeployReport] | None = None
        if args.state_url:
            with bench_schema(args.state_url) as url:
                postgres = deploy_once(
                    Path(tmp) / "postgres", sbcs=args.sbcs, ovoc=not args.no_ovoc, ha=args.ha,
                    latency=args.latency, concurrency=args.concurrency, state_url=url,
                )
    outcomes: dict[str, int] = {}
    for result in report.results:
        outcomes[result.status] = outcomes.get(result.status, 0) + 1
    ratio = full / one if one else float("inf")
    figures: dict[str, Any] = {
        "devices": len(report.results),
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "one_device_s": round(one, 3),
        "one_device_outcome": one_report.results[0].status,
        "estate_s": round(full, 3),
        "estate_setup_s": round(all_setup, 3),
        "ratio": round(ratio, 2),
        "aim_ratio": AIM_RATIO,
        "one_device_cpu_ms": round(one_cpu * 1000, 1),
        "estate_cpu_s": round(full_cpu, 3),
        "cpu_ms_per_device": round(full_cpu * 1000 / max(len(report.results), 1), 1),
        "aim_cpu_ms_per_device": AIM_CPU_MS,
        "peak_memory_mib": round(peak_memory_mib(), 1),
        "device_seconds": {r.device: round(r.seconds, 3) for r in report.results},
        "outcomes": outcomes,
        "exit_code": report.exit_code,
    }
    if postgres is not None:
        _, pg_full, pg_cpu, pg_report = postgres
        figures["postgres"] = {
            "estate_s": round(pg_full, 3),
            "estate_cpu_s": round(pg_cpu, 3),
            "ratio_to_sqlite": round(pg_full / full if full else float("inf"), 2),
            "aim_ratio_to_sqlite": AIM_POSTGRES_RATIO,
            "exit_code": pg_report.exit_code,
        }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        over = "" if ratio < AIM_RATIO else "  OVER"
        print(f"estate deploy: {figures['devices']} devices, {args.latency * 1000:.0f} ms per "
              f"SBC request, concurrency {args.concurrency}")
        print(f"  one SBC:        {one:7.2f} s ({one_report.results[0].status})")
        print(f"  whole estate:   {full:7.2f} s (setup {all_setup:.1f} s, not counted)")
        print(f"  ratio:          {ratio:7.2f} x (aim < {AIM_RATIO:g} x){over}")
        per = figures["cpu_ms_per_device"]
        print(f"  CPU, deploying: {per:7.1f} ms per device ({full_cpu:.2f} s in all; one SBC "
              f"alone {figures['one_device_cpu_ms']:.0f} ms; aim < {AIM_CPU_MS:g} ms)"
              f"{'' if per < AIM_CPU_MS else '  OVER'}")
        print(f"  peak memory:    {figures['peak_memory_mib']:7.1f} MiB")
        print(f"  outcomes:       {outcomes}")
        times = sorted(r.seconds for r in report.results)
        slowest = max(report.results, key=lambda r: r.seconds)
        print(f"  per device:     median {times[len(times) // 2]:.2f} s, slowest "
              f"{slowest.seconds:.2f} s ({slowest.device})")
        for result in report.results:
            if result.exit_code:
                print(f"  {result.device}: {result.status}: {result.message}")
        if postgres is not None:
            pg = figures["postgres"]
            pg_over = "" if pg["ratio_to_sqlite"] <= AIM_POSTGRES_RATIO else "  OVER"
            print(f"  store on SQLite:     {full:7.2f} s, CPU {full_cpu:.2f} s")
            print(f"  store on PostgreSQL: {pg['estate_s']:7.2f} s, CPU {pg['estate_cpu_s']:.2f} "
                  f"s, {pg['ratio_to_sqlite']:.2f} x SQLite (aim <= {AIM_POSTGRES_RATIO:g} x)"
                  f"{pg_over}, exit {pg['exit_code']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
