"""Key-derivation limits: what a file may ask before any derivation starts.

Round counts and scrypt costs are read from the file itself, so a crafted
3 KB .pfx could ask for minutes of work per password tried; these readers
refuse such a file up front.
"""

from __future__ import annotations

import contextlib

from ...errors import CertificateError
from .der import DerError, ber_tlv, der_children, der_int, oid_text

__all__ = [
    "MAX_KDF_ITERATIONS",
    "MAX_SCRYPT_MEMORY",
    "PbeScan",
    "pkcs12_mac_iterations",
    "refuse_absurd_mac",
]

# Real tools use 2,048 to 600,000 key-derivation rounds. The MAC's round count is
# read from the file itself, so a crafted 3 KB .pfx asking for 2**31 rounds would
# keep the loader busy for minutes per password tried: refuse it up front.
MAX_KDF_ITERATIONS = 10_000_000


def pkcs12_mac_iterations(data: bytes) -> int:
    """The MacData iteration count of a PFX (RFC 7292 section 4), 1 when absent."""
    try:
        _, start, end, _ = ber_tlv(data)
        kids = der_children(data, start, end, limit=3)
        if len(kids) < 3 or kids[2][0] != 0x30:
            return 1
        mac = kids[2][1]
        parts = der_children(mac, 0, len(mac), limit=3)
    except DerError:
        return 1
    if len(parts) == 3 and parts[2][0] == 0x02:
        return int.from_bytes(parts[2][1], "big", signed=True)
    return 1


# Password-based encryption as PKCS#8 and PKCS#12 name it. The round counts (and
# scrypt's memory cost) are read from the file, like the MAC's: cap them too.
_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_PBE_PREFIXES = ("1.2.840.113549.1.12.1.", "1.2.840.113549.1.5.")  # PKCS#12 PBE, PBES1
_OID_FRIENDLY_NAME = "1.2.840.113549.1.9.20"
_KEY_BAGS = ("1.2.840.113549.1.12.10.1.1", "1.2.840.113549.1.12.10.1.2")
#: scrypt's memory (128 * N * r * p bytes): OpenSSL's default is 16 MiB, refuse over 256 MiB.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_WALK_NODES = 20_000


def refuse_absurd_mac(data: bytes, source: str) -> None:
    """Raise CertificateError when a PFX's MAC asks for more rounds than any tool uses."""
    rounds = pkcs12_mac_iterations(data)
    if rounds > MAX_KDF_ITERATIONS:
        raise CertificateError(
            f"{source!r}: the PKCS#12 file asks for {rounds:,} key-derivation rounds, "
            f"more than certfleet accepts ({MAX_KDF_ITERATIONS:,})",
            hint="export the .pfx again with the tool's default settings",
            path=source,
        )


class PbeScan:
    """What the password-based encryption of a PKCS#8 or PKCS#12 file asks for.

    A bounded walk over the DER (into OCTET STRINGs that hold DER) that notes
    every PBE algorithm identifier, its rounds and scrypt cost, and the key bags.
    """

    def __init__(self, data: bytes) -> None:
        self.encrypted = False
        self.rounds = 0
        self.scrypt_memory = 0
        self.key_bags = 0
        self.key_names: list[str] = []
        self.walked = False  # False: the structure could not be walked, nothing is known
        self._nodes = 0
        try:
            self._walk(data, 0, len(data), 0)
            self.walked = True
        except DerError:
            pass

    def _walk(self, data: bytes, start: int, end: int, depth: int) -> None:
        if depth > 12:
            return
        pos = start
        while pos < end:
            self._nodes += 1
            if self._nodes > _WALK_NODES:
                return
            tag, cstart, cend, after = ber_tlv(data, pos)
            if tag == 0x30:
                self._sequence(data, cstart, cend)
            if tag & 0x20:
                self._walk(data, cstart, cend, depth + 1)
            elif tag == 0x04 and cend > cstart and data[cstart] in (0x30, 0x31):
                try:
                    inner_end = ber_tlv(data, cstart)[3]
                except DerError:
                    inner_end = -1
                if inner_end == cend:
                    self._walk(data, cstart, cend, depth + 1)
            pos = after

    def _sequence(self, data: bytes, start: int, end: int) -> None:
        try:
            kids = der_children(data, start, end, limit=2)
        except DerError:
            return
        if not kids or kids[0][0] != 0x06:
            return
        oid = oid_text(kids[0][1])
        if oid in _KEY_BAGS:
            self.key_bags += 1
            with contextlib.suppress(DerError):
                self._key_bag_name(data, start, end)
            return
        if len(kids) < 2 or kids[1][0] != 0x30:
            return
        params = kids[1][1]
        if oid == _OID_PBES2:
            self.encrypted = True
        elif oid == _OID_PBKDF2 or oid.startswith(_PBE_PREFIXES):
            self.encrypted = True
            values = der_children(params, 0, len(params), limit=2)
            if len(values) == 2:
                self.rounds = max(self.rounds, der_int(*values[1]) or 0)
        elif oid == _OID_SCRYPT:
            self.encrypted = True
            values = der_children(params, 0, len(params), limit=4)
            numbers = [der_int(*v) for v in values[1:]]
            if len(numbers) == 3 and all(n is not None for n in numbers):
                cost, block, parallel = (n or 0 for n in numbers)
                self.scrypt_memory = max(self.scrypt_memory, 128 * cost * block * parallel)

    def _key_bag_name(self, data: bytes, start: int, end: int) -> None:
        """Note the friendlyName (a keystore alias) of a key bag, when it has one."""
        kids = der_children(data, start, end, limit=3)
        if len(kids) < 3 or kids[2][0] != 0x31:
            return
        attrs = kids[2][1]
        for tag, attr in der_children(attrs, 0, len(attrs), limit=8):
            parts = der_children(attr, 0, len(attr), limit=2) if tag == 0x30 else []
            if len(parts) == 2 and parts[0][0] == 0x06 and oid_text(parts[0][1]) == (
                _OID_FRIENDLY_NAME
            ):
                values = der_children(parts[1][1], 0, len(parts[1][1]), limit=1)
                if values and values[0][0] == 0x1E:  # BMPString
                    self.key_names.append(values[0][1].decode("utf-16-be", "replace")[:64])

    def refuse_absurd(self, source: str, what: str) -> None:
        """Raise CertificateError when the file asks for more work than any tool uses."""
        if self.rounds > MAX_KDF_ITERATIONS:
            raise CertificateError(
                f"{source!r}: the {what} asks for {self.rounds:,} key-derivation rounds, "
                f"more than certfleet accepts ({MAX_KDF_ITERATIONS:,})",
                hint="export the file again with the tool's default settings",
                path=source,
            )
        if self.scrypt_memory > MAX_SCRYPT_MEMORY:
            mib = self.scrypt_memory // (1024 * 1024)
            raise CertificateError(
                f"{source!r}: the {what} asks for scrypt parameters needing {mib:,} MiB, "
                f"more than certfleet accepts ({MAX_SCRYPT_MEMORY // (1024 * 1024)} MiB)",
                hint="export the file again with the tool's default settings",
                path=source,
            )
