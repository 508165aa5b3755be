"""Inputs crafted to make the loader work for minutes are refused at once."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from certfleet.errors import CertificateError
from certfleet.lab.ca import LabCA
from certfleet.pki.load import MAX_KDF_ITERATIONS, load_bytes
from certfleet.pki.load.limits import pkcs12_mac_iterations


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _children(data: bytes) -> list[bytes]:
    """Split the content of a DER SEQUENCE into its children's full TLVs."""
    assert data[0] == 0x30
    pos = 1
    first = data[pos]
    pos += 1
    if first & 0x80:
        count = first & 0x7F
        pos += count
    out = []
    while pos < len(data):
        start = pos
        pos += 1
        length = data[pos]
        pos += 1
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        pos += length
        out.append(data[start:pos])
    return out


def _with_mac_iterations(pfx: bytes, rounds: int) -> bytes:
    version, auth_safe, mac_data = _children(pfx)
    digest, salt, _ = _children(mac_data)
    count = rounds.to_bytes((rounds.bit_length() + 8) // 8, "big")
    new_mac = _tlv(0x30, digest + salt + _tlv(0x02, count))
    return _tlv(0x30, version + auth_safe + new_mac)


@pytest.fixture(scope="module")
def pfx() -> bytes:
    issued = LabCA().issue(key_type="ec-p256")
    assert issued.key is not None
    return pkcs12.serialize_key_and_certificates(
        b"lab", issued.key, issued.leaf, None, BestAvailableEncryption(b"secret")
    )


def test_mac_iterations_are_read_from_the_file(pfx: bytes) -> None:
    """The round count certfleet reads is the one the file states."""
    assert pkcs12_mac_iterations(_with_mac_iterations(pfx, 4096)) == 4096


def test_huge_mac_iteration_count_is_refused(pfx: bytes) -> None:
    """A .pfx asking for 2**31-1 rounds is refused before any key derivation."""
    crafted = _with_mac_iterations(pfx, 2**31 - 1)
    with pytest.raises(CertificateError, match="key-derivation rounds"):
        load_bytes(crafted, "crafted.pfx", b"secret")
    assert MAX_KDF_ITERATIONS < 2**31 - 1


def test_ordinary_pfx_still_loads(pfx: bytes) -> None:
    """The cap leaves files made with ordinary settings alone."""
    kinds = sorted(obj.type for obj in load_bytes(pfx, "ok.pfx", b"secret"))
    assert kinds == ["certificate", "private_key"]
