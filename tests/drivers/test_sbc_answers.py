"""Certificates in an SBC's GET answers: read block by block, each distinct one
parsed once for the whole estate (the same wildcard and roots come back from every
device), with the same result as a first reading."""

from __future__ import annotations

import json

from certfleet.drivers.sbc_model import SbcContext, _certificates, _load_certificate
from certfleet.lab.ca import Issued
from certfleet.pki.model import cert_sha256


def test_every_readable_block_whatever_the_wrapping(issued: Issued) -> None:
    pems = [issued.leaf_pem, *(issued.pem(c) for c in issued.chain), issued.root_pem]
    broken = b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    answer = b"leading text\r\n" + pems[0].replace(b"\n", b"\r\n") + broken + b"".join(pems[1:])
    in_json = json.dumps({"certificate": b"".join(pems).decode()}).encode()
    for text in (answer, in_json, answer):  # the third: from what the first one kept
        certs = _certificates(text)
        assert [cert_sha256(c) for c in certs] == [
            cert_sha256(c) for c in (issued.leaf, *issued.chain, issued.root)]


def test_a_certificate_is_parsed_once_for_every_device(issued: Issued) -> None:
    first = _certificates(issued.fullchain_pem)
    again = _certificates(b"\n" + issued.fullchain_pem.replace(b"\n", b"\r\n"))
    assert [a is b for a, b in zip(first, again, strict=True)] == [True] * len(first)


def test_a_block_larger_than_a_certificate_is_not_kept() -> None:
    huge = b"-----BEGIN CERTIFICATE-----\n" + b"A" * 200_000 + b"\n-----END CERTIFICATE-----\n"
    before = _load_certificate.cache_info().currsize
    assert _certificates(huge) == []
    assert _load_certificate.cache_info().currsize == before


def test_a_context_described_from_kept_certificates(issued: Issued) -> None:
    ctx = SbcContext(1, "SIP-TLS", issued.leaf, (issued.root,), True, 256)
    described = ctx.to_dict()
    assert described["subject"] == issued.leaf.subject.rfc4514_string()
    assert described["issuer"] == issued.leaf.issuer.rfc4514_string()
    assert described["sha256"] == cert_sha256(issued.leaf)
    assert described["trusted_roots"] == [
        {"subject": issued.root.subject.rfc4514_string(), "sha256": cert_sha256(issued.root)}]
