"""Cold start: reading a PEM file never imports what only containers or wildcards need."""

from __future__ import annotations

import json
import subprocess
import sys

from certfleet.lab.ca import LabCA

# Imported only when a PKCS#12 / PKCS#7 / JKS input, an export to them, or a wildcard
# name is met: `certfleet inspect cert.pem` and `check` pay for none of them.
LAZY = (
    "jks",
    "pyasn1",
    "publicsuffixlist",
    "cryptography.hazmat.primitives.serialization.pkcs12",
    "cryptography.hazmat.primitives.serialization.pkcs7",
)

SCRIPT = """
import json, sys
import certfleet.pki.bundle, certfleet.pki.checks, certfleet.pki.describe
import certfleet.pki.export, certfleet.pki.load, certfleet.pki.names, certfleet.pki.profiles
from certfleet.pki.bundle import assemble
from certfleet.pki.checks import check_bundle
from certfleet.pki.load import load_bytes
findings = check_bundle(assemble(load_bytes(sys.stdin.buffer.read(), "x.pem")),
                        ["sbc1.example.com"])
assert not [f for f in findings if f.severity == "error"], findings
print(json.dumps(sorted(set(sys.modules))))
"""


def test_pem_path_leaves_containers_and_suffix_list_unloaded(lab_ca: LabCA) -> None:
    """Loading, assembling and checking a PEM chain and key imports no container library."""
    issued = lab_ca.issue(("sbc1.example.com",), key_type="ec-p256")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        input=issued.fullchain_pem + issued.key_pem(),
        capture_output=True,
        check=True,
    )
    loaded = set(json.loads(done.stdout))
    assert "certfleet.pki.load" in loaded
    assert not [m for m in loaded if m.startswith(LAZY)], sorted(
        m for m in loaded if m.startswith(LAZY)
    )
