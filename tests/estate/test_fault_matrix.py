"""The fault matrix of issue 9: every step that changes a device, killed, then recovered.

For each driver and each fault (SIGKILL, SIGTERM, an exception injected by
the lab at the step), every step that changes the device is reached (the lab
says so; no timer), the fault strikes there, and from that same point the
device is recovered once with ``certfleet deploy`` and once with
``certfleet rollback DEVICE``. Every ending must be the new certificate
(deploy) or the old one (rollback), served by handshake, with key and
certificate consistent on the lab's side: 0 half states. See
:mod:`certfleet.lab.faultmatrix`; ``benchmarks/fault_matrix.py`` prints the
matrix.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certfleet.cli.app import invoke
from certfleet.lab.faultmatrix import FAULTS, FaultMatrix, render_matrix

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and SIGTERM are POSIX")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("driver", ["sbc", "ovoc"])
def test_every_step_ends_new_or_old_after_recovery(
    driver: str, fault: str, tmp_path: Path
) -> None:
    matrix = FaultMatrix(driver, tmp_path, cli=invoke)
    with matrix.running():
        cases = [matrix.run_case(point, fault) for point in matrix.points()]
    table = render_matrix(cases)
    print(table)
    assert len(cases) == (5 if driver == "sbc" else 4)
    assert sum(c.half_states for c in cases) == 0, table
    problems = [f"{c.point}: {p}" for c in cases for p in c.problems]
    assert not problems, table + "\n" + "\n".join(problems)
    for case in cases:
        assert case.endings["deploy"].served == "new", table
        assert case.endings["rollback"].served == "old", table
        assert case.journal == ("interrupted" if fault == "sigkill" else "restored"), table
