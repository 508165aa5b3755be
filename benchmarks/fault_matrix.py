"""The fault matrix of issue 9, printed: steps × faults × recoveries, and the half states.

For each driver (a lab SBC, a lab OVOC), each step that changes the device
and each fault (SIGKILL, SIGTERM, an exception injected by the lab at that
step), a ``certfleet deploy`` is stopped at the step, then the device is
recovered once with ``certfleet deploy`` and once with
``certfleet rollback DEVICE`` from that same point. Each cell shows what the
device serves afterwards (``new``, ``old``, or ``HALF`` when it serves
neither or holds an inconsistent key and certificate) and the exit code.
The last line counts the half states (aim: 0). The wall time of each
driver's matrix is printed too. The test ``tests/estate/test_fault_matrix.py``
asserts what this prints. Run from a checkout:
``python benchmarks/fault_matrix.py [--driver sbc|ovoc] [--fault sigkill|sigterm|exception]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from certfleet.cli.app import invoke
from certfleet.lab.faultmatrix import FAULTS, CaseResult, FaultMatrix, render_matrix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=["sbc", "ovoc"], action="append",
                        help="only this driver (repeatable; default both)")
    parser.add_argument("--fault", choices=FAULTS, action="append",
                        help="only this fault (repeatable; default all)")
    args = parser.parse_args(argv)
    cases: list[CaseResult] = []
    for driver in args.driver or ["sbc", "ovoc"]:
        with tempfile.TemporaryDirectory(prefix="certfleet-faults-") as tmp:
            begin = time.perf_counter()
            matrix = FaultMatrix(driver, Path(tmp), cli=invoke)
            with matrix.running():
                for fault in args.fault or FAULTS:
                    for point in matrix.points():
                        cases.append(matrix.run_case(point, fault))
            print(f"{driver}: {time.perf_counter() - begin:.1f} s", file=sys.stderr)
    print(render_matrix(cases))
    for case in cases:
        for problem in case.problems:
            print(f"  {case.driver} {case.point} {case.fault}: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
