"""A large inventory: 90,000 devices (about 10 MB) read, validated and shown by status.

Prints the time of ``load_inventory`` (read, parse, validate; median of
``--runs``), the peak memory of one load (tracemalloc: the inventory, its
text and the parsed tables), the peak memory of what ``renew`` reads
before it orders (the inventory and each certificate's renewal
tables), the time to refuse the same inventory with a misspelt key in every
device (one error line each), and the wall
time of ``certfleet status`` to its first line of output in a fresh process (stdout
or stderr; then to the table's first line, and to its end)
(every device at 127.0.0.1 on a closed port, so each probe is refused at
once). ``--profile`` prints a cProfile of one load. Figures are printed,
never asserted. Run from a checkout: ``python benchmarks/bench_inventory.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from certfleet.inventory import load_inventory

SRC = Path(__file__).resolve().parents[1] / "src"

AIM_LOAD_S = 3.0
AIM_STATUS_S = 5.0
AIM_PEAK_MIB = 200.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_inventory(path: Path, devices: int, *, loopback_port: int | None = None) -> int:
    """An inventory of ``devices`` SBCs, 50 sites, one wildcard; its size in bytes."""
    lines = [
        "[settings]", "concurrency = 8", "",
        "[certificates.wildcard]", 'cn = "*.example.com"', "",
        "[defaults.sbc]", 'user = "Admin"', 'password = "env:SBC_PASSWORD"', "",
    ]
    for i in range(devices):
        site = f"site{i % 50:02d}"
        address = "127.0.0.1" if loopback_port else f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        lines += [f"[devices.sbc{i:05d}]", 'kind = "sbc"', f'address = "{address}"',
                  f'fqdn = "sbc{i:05d}.{site}.example.com"', f'tags = ["{site}"]']
        if loopback_port:
            lines.append(f"port = {loopback_port}")
        lines.append("")
    text = "\n".join(lines)
    path.write_text(text, encoding="utf-8")
    return len(text.encode())


def write_typos(path: Path, devices: int) -> None:
    """The same inventory with a misspelt key in every device (one error line each)."""
    text = path.read_text(encoding="utf-8").replace('kind = "sbc"', 'kind = "sbc"\nkindd = 1')
    path.write_text(text, encoding="utf-8")


def time_errors(path: Path) -> tuple[float, int]:
    """Seconds to refuse an inventory with an error in every device, and the error count."""
    from certfleet.errors import ConfigError

    start = time.perf_counter()
    try:
        load_inventory(path)
    except ConfigError as exc:
        return time.perf_counter() - start, len(exc.message.splitlines())
    return time.perf_counter() - start, 0


def peak_renew_mib(path: Path) -> float:
    """Peak traced memory (MiB) of what renew reads before ordering: the inventory and each
    certificate's renewal tables (certfleet.acme.config). Not timed: tracing slows it."""
    from certfleet.acme.config import acme_config, dns_config, renew_before_days

    gc.collect()
    tracemalloc.start()
    inventory = load_inventory(path)
    for name in inventory.certificates:
        acme_config(inventory, name)
        renew_before_days(inventory, name)
        with contextlib.suppress(Exception):  # no dns table: renew says so, not a figure
            dns_config(inventory, name)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / (1024 * 1024)


def time_load(path: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        load_inventory(path)
        times.append(time.perf_counter() - start)
    return times


def peak_load_mib(path: Path) -> float:
    """Peak traced memory of one load, the inventory kept (as renew keeps it)."""
    gc.collect()
    tracemalloc.start()
    inventory = load_inventory(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del inventory
    return peak / (1024 * 1024)


def status_first_line(path: Path, state: Path) -> tuple[float, float, float, int]:
    """Seconds to the first line ``certfleet status`` prints (on stdout or stderr), to the
    table's first line (stdout), to its end, and its exit code."""
    import threading

    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "120", "SBC_PASSWORD": "x"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "status", "--inventory", str(path),
         "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    said: list[float] = []
    errors = proc.stderr

    def read_stderr() -> None:
        if errors.readline():
            said.append(time.perf_counter() - start)
        errors.read()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    proc.stdout.readline()
    table = time.perf_counter() - start
    proc.stdout.read()
    code = proc.wait(timeout=600)
    total = time.perf_counter() - start
    reader.join()
    return min([table, *said]), table, total, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=90_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-status", action="store_true")
    parser.add_argument("--skip-errors", action="store_true",
                        help="do not time refusing an error in every device")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one load")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, float | int | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "certfleet.toml"
        figures["devices"] = args.devices
        figures["bytes"] = write_inventory(path, args.devices)
        loads = time_load(path, args.runs)
        figures["load_median_s"] = round(statistics.median(loads), 2)
        figures["load_best_s"] = round(min(loads), 2)
        figures["load_peak_mib"] = round(peak_load_mib(path), 1)
        figures["renew_reads_peak_mib"] = round(peak_renew_mib(path), 1)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            load_inventory(path)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue())
        if not args.skip_errors:
            typos = Path(tmp) / "typos.toml"
            typos.write_bytes(path.read_bytes())
            write_typos(typos, args.devices)
            figures["errors_s"], figures["errors"] = (round(x, 2) for x in time_errors(typos))
        if not args.skip_status:
            status_path = Path(tmp) / "status.toml"
            write_inventory(status_path, args.devices, loopback_port=closed_port())
            first, table, total, code = status_first_line(status_path, Path(tmp) / "state")
            figures["status_first_line_s"] = round(first, 2)
            figures["status_table_s"] = round(table, 2)
            figures["status_total_s"] = round(total, 2)
            figures["status_exit"] = code
    if args.json:
        print(json.dumps(figures))
        return
    mib = int(figures["bytes"]) / (1024 * 1024)
    print(f"inventory: {figures['devices']} devices, {mib:.1f} MiB")
    rows = [("load_inventory (median)", figures["load_median_s"], AIM_LOAD_S, "s"),
            ("load_inventory (best)", figures["load_best_s"], None, "s"),
            ("peak memory of a load", figures["load_peak_mib"], AIM_PEAK_MIB, "MiB"),
            ("renew's reads: peak memory", figures["renew_reads_peak_mib"], AIM_PEAK_MIB, "MiB")]
    if "errors_s" in figures:
        rows.append((f"refuse {figures['errors']} errors", figures["errors_s"], AIM_LOAD_S, "s"))
    if "status_first_line_s" in figures:
        rows += [("status: first line", figures["status_first_line_s"], AIM_STATUS_S, "s"),
                 ("status: table's first line", figures["status_table_s"], None, "s"),
                 ("status: end", figures["status_total_s"], None, "s")]
    for name, value, aim, unit in rows:
        over = "  OVER" if aim is not None and float(value) > aim else ""
        aim_text = f"(aim {aim} {unit})" if aim is not None else ""
        print(f"  {name:28} {value:>8} {unit:4}{aim_text}{over}")
    if "status_exit" in figures:
        print(f"  status exit code: {figures['status_exit']}")


if __name__ == "__main__":
    main()
