"""A minimal DER/BER reader: enough to tell the shapes apart before parsing.

Bounded: lengths of at most 4 bytes, nesting of indefinite lengths at most
32 deep. Raises :class:`DerError` on anything it cannot read.
"""

from __future__ import annotations

__all__ = [
    "DerError",
    "ber_tlv",
    "der_children",
    "der_int",
    "der_shape",
    "der_tlv",
    "first_tlv",
    "oid_text",
    "strip_der_padding",
]


class DerError(ValueError):
    """The bytes are not the DER shape we were looking for."""


def der_tlv(data: bytes, pos: int = 0) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the TLV at ``pos``."""
    if pos + 2 > len(data):
        raise DerError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used by the formats we read")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise DerError("truncated")
    return tag, pos, end


def ber_tlv(data: bytes, pos: int = 0, depth: int = 0) -> tuple[int, int, int, int]:
    """(tag, start of content, end of content, next position) of the value at ``pos``.

    Like :func:`der_tlv`, and also reads BER's indefinite lengths (a constructed
    value closed by two zero bytes), which old Windows and Java tools write in .pfx
    files and which cryptography reads.
    """
    if pos + 2 <= len(data) and data[pos + 1] == 0x80 and data[pos] & 0x20:
        if depth > 32:
            raise DerError("nested too deeply")
        start = child = pos + 2
        while data[child : child + 2] != b"\x00\x00":
            if child >= len(data):
                raise DerError("truncated")
            child = ber_tlv(data, child, depth + 1)[3]
        return data[pos], start, child, child + 2
    tag, start, end = der_tlv(data, pos)
    return tag, start, end, end


def der_children(data: bytes, start: int, end: int, limit: int = 4) -> list[tuple[int, bytes]]:
    """The first ``limit`` children (tag, content) of a constructed value."""
    children: list[tuple[int, bytes]] = []
    pos = start
    while pos < end and len(children) < limit:
        tag, cstart, cend, after = ber_tlv(data, pos)
        if after > end:
            raise DerError("child overruns parent")
        children.append((tag, data[cstart:cend]))
        pos = after
    return children


def der_shape(data: bytes) -> str:
    """Name the DER structure: certificate-like, pkcs7, pkcs12, pkcs8, ... or unknown."""
    try:
        tag, start, end, _ = ber_tlv(data)
        if tag != 0x30:
            return "unknown"
        kids = der_children(data, start, end)
    except DerError:
        return "unknown"
    tags = [t for t, _ in kids]
    if tags[:3] == [0x30, 0x30, 0x03]:
        return "signed"  # certificate, CSR or CRL: SEQ{tbs, algorithm, signature}
    if tags[:2] == [0x30, 0x04]:
        return "pkcs8-encrypted"
    if tags[:1] == [0x06]:
        return "pkcs7"
    if tags[:1] == [0x02]:
        version = int.from_bytes(kids[0][1], "big") if kids[0][1] else -1
        second = tags[1] if len(tags) > 1 else None
        if version == 3 and second == 0x30:
            return "pkcs12"
        if version in (0, 1) and second == 0x30:
            return "pkcs8"
        if version == 0 and second == 0x02:
            return "pkcs1"  # RSA (or DSA) traditional OpenSSL format
        if version == 1 and second == 0x04:
            return "sec1"
    return "unknown"


def strip_der_padding(data: bytes) -> bytes:
    """DER without the newline, NUL or Ctrl-Z (`copy` in text mode) bytes tools append."""
    try:
        _, _, end = der_tlv(data)
    except DerError:
        return data
    if end < len(data) and not data[end:].strip(b"\r\n\t \x00\x1a"):
        return data[:end]
    return data


def first_tlv(data: bytes) -> bytes:
    """The first DER value of ``data`` (a TRUSTED CERTIFICATE carries trust data after it)."""
    _, _, end = der_tlv(data)
    return data[:end]


def oid_text(content: bytes) -> str:
    """Dotted text of the content of a DER OBJECT IDENTIFIER."""
    if not content:
        raise DerError("empty OID")
    first = content[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def der_int(tag: int, content: bytes) -> int | None:
    if tag != 0x02 or not content or len(content) > 16:
        return None
    return int.from_bytes(content, "big", signed=True)
