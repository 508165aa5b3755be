"""Helpers shared by the OVOC driver and lab tests: files, bundles and drivers."""

from __future__ import annotations

from typing import Any

from certfleet.drivers.ovoc import OvocDriver
from certfleet.drivers.tlsprobe import Listener
from certfleet.lab.ca import Issued
from certfleet.lab.ovoc import LabOvoc
from certfleet.pki.bundle import assemble
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle

__all__ = ["KEYSTORE", "lab_ovoc_driver", "ovoc_bundle", "ovoc_files"]

#: The keystore password the tests give the OVOC import.
KEYSTORE = "keystore-Pa55w0rd"


def ovoc_files(issued: Issued) -> dict[str, bytes]:
    """What OVOC's import expects staged: server.crt, a PKCS#1 server.key, root.crt, caN.crt."""
    files = {"server.crt": issued.leaf_pem, "server.key": issued.key_pem("pkcs1"),
             "root.crt": issued.root_pem}
    for index, cert in enumerate(issued.chain, 1):
        files[f"ca{index}.crt"] = issued.pem(cert)
    return files


def ovoc_bundle(issued: Issued, *, key: bool = True) -> Bundle:
    """Leaf, chain and root (and the PKCS#8 key unless ``key`` is false) as one input file."""
    data = issued.leaf_pem + issued.chain_pem + issued.root_pem
    if key:
        data += issued.key_pem("pkcs8")
    return assemble(load_bytes(data, "input.pem"))


def lab_ovoc_driver(lab: LabOvoc, **overrides: Any) -> OvocDriver:
    """A driver for the lab OVOC: its passwords, its pinned host key, 5-second timeouts."""
    options: dict[str, Any] = dict(
        ssh_port=lab.ssh_port, password=lab.acems_password, su_password=lab.root_password,
        keystore_password=KEYSTORE, host_key=lab.host_key_sha256,
        listeners=[Listener("127.0.0.1", lab.https_port)], prompt_timeout=5,
        import_timeout=5, verify_timeout=5,
    )
    options.update(overrides)
    return OvocDriver("ovoc-lab", "127.0.0.1", **options)
