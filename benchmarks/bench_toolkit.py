"""Benchmarks of the toolkit: CLI cold start, and sorting out a pile of 500 certificates.

Run ``./dev bench`` or ``python benchmarks/bench_toolkit.py [--json] [--runs N]``.
Figures are printed, never asserted: the aims (cold start under 250 ms and within
13 times (`--help`) and 18 times (`inspect FILE`) `python -c pass` of the same run, a
500-certificate pile loaded, assembled and checked under 1 s) are shown next
to each figure so that a regression is visible in the CI log.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import functools
import io
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(SRC))

from cryptography import x509  # noqa: E402 -- after the sys.path set-up above
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from certfleet.lab.ca import LabCA  # noqa: E402
from certfleet.pki.bundle import assemble  # noqa: E402
from certfleet.pki.checks import check_bundle  # noqa: E402
from certfleet.pki.load import load_bytes  # noqa: E402

COLD_START_AIM_MS = 250.0
PILE_AIM_MS = 1000.0
PILE_SIZE = 500
# assemble() slower than this on the pile gets a cProfile in the output.
ASSEMBLE_PROFILE_MS = 100.0
TARGET_HOST = "target.example.com"

T = TypeVar("T")


@dataclass
class Row:
    """One measured figure: name, median and best in milliseconds, and the aim."""

    name: str
    median_ms: float
    min_ms: float
    runs: int
    aim_ms: float | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.aim_ms is None:
            return ""
        return "ok" if self.median_ms <= self.aim_ms else "OVER"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "median_ms": round(self.median_ms, 1),
            "min_ms": round(self.min_ms, 1),
            "runs": self.runs,
            "aim_ms": self.aim_ms,
            "verdict": self.verdict or None,
            "note": self.note,
        }


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def measure(func: Callable[[], T], runs: int) -> tuple[list[float], T]:
    """Wall-clock milliseconds of ``runs`` calls, and the last result."""
    times: list[float] = []
    result: T | None = None
    for _ in range(runs):
        started = time.perf_counter()
        result = func()
        times.append(_ms(time.perf_counter() - started))
    assert result is not None or runs == 0
    return times, result  # type: ignore[return-value]  # runs >= 1 sets result


def row(name: str, times: Sequence[float], aim_ms: float | None = None, note: str = "") -> Row:
    return Row(name, statistics.median(times), min(times), len(times), aim_ms, note)


# --- cold start ------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # An installed certfleet starts from bytecode (pip compiles it at install time); with
    # PYTHONDONTWRITEBYTECODE inherited, every start would compile the sources again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.setdefault("COLUMNS", "100")
    return env


def _commands() -> list[tuple[str, list[str]]]:
    """How certfleet is started: ``python -m certfleet``, and the console script if installed."""
    commands = [("python -m certfleet", [sys.executable, "-m", "certfleet"])]
    script = Path(sys.executable).parent / "certfleet"
    found = str(script) if script.exists() else shutil.which("certfleet")
    if found:
        commands.append(("certfleet", [found]))
    return commands


def import_culprits(argv: list[str], top: int = 12) -> list[dict[str, Any]]:
    """The modules with the largest cumulative import time (``python -X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]] if argv[0] == sys.executable else argv,
        env=_env(),
        capture_output=True,
        check=False,
    )
    entries: list[tuple[int, int, str]] = []
    for line in done.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line.split("|")
        if len(parts) != 3:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2  # two spaces per nesting level
        entries.append((int(parts[1]), depth, name.strip()))
    # Modules imported directly by the program or by certfleet: the ones to act on.
    shallow = [e for e in entries if e[1] <= 1 or e[2].startswith("certfleet")]
    shallow.sort(reverse=True)
    return [{"module": m, "cumulative_ms": round(c / 1000, 1)} for c, _, m in shallow[:top]]


#: Cold start as a multiple of ``python -c pass`` measured in the same run (issue aims).
HELP_RATIO_AIM = 13.0
INSPECT_RATIO_AIM = 18.0


def run_cold_cpu(argv: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) milliseconds of one fresh process of ``argv``."""
    before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(argv, env=_env(), capture_output=True, check=False)
    wall = _ms(time.perf_counter() - started)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}"
        )
    return wall, _ms(_children_cpu() - before)


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_cold_start(report: Report, runs: int, sample_file: Path) -> None:
    """Each round starts the floor and every command once, so load on the machine
    weighs on all of them alike; ratios are of medians within this run."""
    argv = _commands()[0][1]
    commands = [("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"], None, "")]
    for label, base in _commands():
        commands.append((f"{label} --help", [*base, "--help"], HELP_RATIO_AIM, ""))
        commands.append((f"{label} inspect FILE", [*base, "inspect", str(sample_file)],
                         INSPECT_RATIO_AIM, "fullchain + key PEM"))
    for _, command, _, _ in commands:
        run_cold_cpu(command)  # warm the file cache and .pyc files
    walls: dict[str, list[float]] = {name: [] for name, *_ in commands}
    cpus: dict[str, list[float]] = {name: [] for name, *_ in commands}
    for _ in range(runs):
        for name, command, _, _ in commands:
            wall, cpu = run_cold_cpu(command)
            walls[name].append(wall)
            cpus[name].append(cpu)
    floor_name = commands[0][0]
    floor_wall = statistics.median(walls[floor_name])
    floor_cpu = statistics.median(cpus[floor_name]) or None
    ratios: list[dict[str, Any]] = []
    for name, _, ratio_aim, note in commands:
        report.rows.append(
            row(name, walls[name], None if ratio_aim is None else COLD_START_AIM_MS, note)
        )
        if ratio_aim is None:
            continue
        wall_ratio = statistics.median(walls[name]) / floor_wall
        cpu_ratio = statistics.median(cpus[name]) / floor_cpu if floor_cpu else None
        ratios.append({
            "command": name,
            "ratio": round(wall_ratio, 1),
            "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 1),
            "aim_ratio": ratio_aim,
            "verdict": "ok" if wall_ratio <= ratio_aim else "OVER",
        })
    report.details["cold_start_ratios"] = ratios
    report.details["import_culprits_help"] = import_culprits([*argv, "--help"])
    report.details["import_culprits_inspect"] = import_culprits(
        [*argv, "inspect", str(sample_file)]
    )


# --- the pile --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pile:
    pem: bytes  # every certificate, shuffled, then the target's key
    pem_without_key: bytes
    certificates: int
    cas: int
    leaves: int
    noise: int
    duplicates: int


def _self_signed(key: ec.EllipticCurvePrivateKey, number: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"unrelated {number}")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )


def make_pile(size: int = PILE_SIZE, seed: int = 500) -> Pile:
    """20 CAs (1 or 2 intermediates), 400 leaves, 25 unrelated, 25 duplicates: 500 certs.

    EC P-256 throughout; all leaves but the target share one key so that
    generation stays quick. The target leaf's own key is appended to ``pem``.
    """
    rng = random.Random(seed)
    cas = [LabCA(name=f"Pile {n}", intermediates=1 + n % 2) for n in range(20)]
    ca_certs = [c for ca in cas for c in (*ca.intermediate_certs, ca.root)]
    shared = ec.generate_private_key(ec.SECP256R1())
    leaves_wanted = size - len(ca_certs) - 50
    leaves = [
        cas[n % len(cas)].issue([f"host{n}.example.com"], key=shared).leaf
        for n in range(leaves_wanted - 1)
    ]
    target = cas[7].issue([TARGET_HOST], key_type="ec-p256")
    leaves.append(target.leaf)
    noise = [_self_signed(shared, n) for n in range(25)]
    pool = [*ca_certs, *leaves, *noise]
    duplicates = rng.sample(pool, 25)
    certs = [*pool, *duplicates]
    rng.shuffle(certs)
    body = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return Pile(
        pem=body + target.key_pem(),
        pem_without_key=body,
        certificates=len(certs),
        cas=len(ca_certs),
        leaves=len(leaves),
        noise=len(noise),
        duplicates=len(duplicates),
    )


def profile_top(func: Callable[[], object], top: int = 12) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(func)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def bench_pile(report: Report, runs: int, pile: Pile) -> None:
    for variant, data in (("with key", pile.pem), ("no key", pile.pem_without_key)):
        load_times, objects = measure(functools.partial(load_bytes, data, "pile.pem"), runs)
        assemble_times, bundle = measure(functools.partial(assemble, objects), runs)
        check_times, findings = measure(
            functools.partial(check_bundle, bundle, hosts=(TARGET_HOST,)), runs
        )
        steps = zip(load_times, assemble_times, check_times, strict=True)
        totals = [a + b + c for a, b, c in steps]
        report.rows += [
            row(f"pile {variant}: load_bytes", load_times),
            row(f"pile {variant}: assemble", assemble_times),
            row(f"pile {variant}: check_bundle", check_times),
            row(
                f"pile {variant}: total",
                totals,
                PILE_AIM_MS,
                note=f"{len(objects)} objects, chain {len(bundle.chain)}, "
                f"{len(bundle.unrelated)} unrelated, {len(findings)} findings",
            ),
        ]
        if statistics.median(assemble_times) > ASSEMBLE_PROFILE_MS:
            report.details[f"assemble_profile_{variant.replace(' ', '_')}"] = profile_top(
                functools.partial(assemble, objects)
            )


# --- output ----------------------------------------------------------------------------


def print_table(report: Report) -> None:
    width = max(len(r.name) for r in report.rows)
    print(f"{'benchmark':<{width}}  {'median ms':>10}  {'min ms':>8}  {'runs':>4}  {'aim ms':>7}")
    for r in report.rows:
        aim = f"{r.aim_ms:.0f}" if r.aim_ms is not None else ""
        line = f"{r.name:<{width}}  {r.median_ms:>10.1f}  {r.min_ms:>8.1f}  {r.runs:>4}  {aim:>7}"
        print(f"{line}  {r.verdict:<4}  {r.note}".rstrip())
    if report.details.get("cold_start_ratios"):
        print("\ncold start as a multiple of `python -c pass` in this run (median wall clock; "
              "CPU time in brackets):")
        for ratio in report.details["cold_start_ratios"]:
            cpu = f" (CPU {ratio['cpu_ratio']}x)" if ratio["cpu_ratio"] is not None else ""
            print(f"  {ratio['command']:<{width}}  {ratio['ratio']:>5}x{cpu}  "
                  f"aim {ratio['aim_ratio']:.0f}x  {ratio['verdict']}")
    for key in ("import_culprits_help", "import_culprits_inspect"):
        if key in report.details:
            culprits = ", ".join(
                f"{c['module']} {c['cumulative_ms']}" for c in report.details[key][:8]
            )
            print(f"\n{key.replace('_', ' ')} (cumulative ms): {culprits}")
    for key, value in report.details.items():
        if key.startswith("assemble_profile"):
            print(f"\n{key}:\n{value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document only")
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (default 7)")
    parser.add_argument(
        "--pile-size", type=int, default=PILE_SIZE, help=f"certificates (default {PILE_SIZE})"
    )
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--skip-pile", action="store_true")
    args = parser.parse_args(argv)
    runs = max(1, args.runs)

    report = Report()
    report.details["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    started = time.perf_counter()
    pile = make_pile(max(args.pile_size, 100))
    report.details["pile_generation_ms"] = round(_ms(time.perf_counter() - started), 1)
    report.details["pile"] = {
        "certificates": pile.certificates,
        "cas": pile.cas,
        "leaves": pile.leaves,
        "unrelated": pile.noise,
        "duplicates": pile.duplicates,
        "pem_bytes": len(pile.pem),
    }
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        sample = Path(tmp) / "fullchain-and-key.pem"
        issued = LabCA(name="Bench").issue([TARGET_HOST], key_type="ec-p256")
        sample.write_bytes(issued.fullchain_pem + issued.root_pem + issued.key_pem())
        if not args.skip_cold_start:
            bench_cold_start(report, runs, sample)
    if not args.skip_pile:
        bench_pile(report, runs, pile)

    if args.json:
        print(json.dumps({"rows": [r.as_dict() for r in report.rows], **report.details}, indent=2))
    else:
        print(
            f"certfleet toolkit benchmarks (python {platform.python_version()}, "
            f"{os.cpu_count()} cpus); pile of {pile.certificates} certificates generated in "
            f"{report.details['pile_generation_ms']:.0f} ms\n"
        )
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
