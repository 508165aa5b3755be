"""The lab CA follows RFC 5280 as a public CA does: strict X.509 verification accepts the lab.

Python 3.13's default TLS context sets ``VERIFY_X509_STRICT``; the flag exists
on every supported Python, so these tests hold on 3.11 too. ``openssl verify
-x509_strict`` is the independent oracle.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from _tools import require_tool
from certfleet.lab.ca import Issued, LabCA, make_key
from certfleet.lab.estate import LabEstate
from certfleet.lab.sbc import LabSbc


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def _key_usage(cert: x509.Certificate) -> tuple[bool, x509.KeyUsage]:
    ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    return ext.critical, ext.value


def _csr(names: list[str]) -> x509.CertificateSigningRequest:
    key = make_key("ec-p256")
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def _strict_context(cafile: Path) -> ssl.SSLContext:
    """What Python 3.13's ``ssl.create_default_context`` does, on any Python."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def _handshake(ctx: ssl.SSLContext, port: int, host: str) -> bytes:
    """A verified TLS handshake with 127.0.0.1:``port`` as ``host``; the leaf's DER."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def _strictly_verified_before_refusal(ctx: ssl.SSLContext, port: int, host: str) -> None:
    """A Teams listener (mutual TLS) refuses us for want of a client certificate, but only
    after our strict verification of what it served: any error but a verification one."""
    try:
        _handshake(ctx, port, host)
    except ssl.SSLCertVerificationError:
        raise
    except (ssl.SSLError, OSError) as exc:
        assert "CERTIFICATE_VERIFY_FAILED" not in str(exc), exc


@pytest.mark.parametrize("key_type", ["rsa2048", "ec-p256"])
def test_every_certificate_carries_the_public_ca_profile(key_type: str) -> None:
    """Root, intermediates and leaf: basic constraints, key usage, SKI, AKI as RFC 5280 wants."""
    ca = LabCA(name="Profile Lab", intermediates=2, key_type=key_type)
    issued = ca.issue(("*.example.com", "example.com"), key_type=key_type,
                      ip_addresses=["127.0.0.1"])

    root = ca.root
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    critical, usage = _key_usage(root)
    assert critical and usage.key_cert_sign and usage.crl_sign
    assert _aki(root) == _ski(root)

    issuers = [*(cert for cert, _ in reversed(ca.chain))]
    parent = root
    for level, cert in enumerate(issuers, start=1):
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca
        assert bc.value.path_length == (0 if level == len(issuers) else None)
        critical, usage = _key_usage(cert)
        assert critical and usage.key_cert_sign and usage.crl_sign
        assert _aki(cert) == _ski(parent) and _ski(cert) != _ski(parent)
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        url = str(aia[0].access_location.value)
        assert url.startswith("http://") and " " not in url and "=" not in url
        parent = cert

    leaf = issued.leaf
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    critical, usage = _key_usage(leaf)
    assert critical and usage.digital_signature
    assert usage.key_encipherment == (key_type.startswith("rsa"))
    assert not usage.key_cert_sign and not usage.crl_sign
    assert _aki(leaf) == _ski(ca.issuer[0])
    assert _ski(leaf) == x509.SubjectKeyIdentifier.from_public_key(
        leaf.public_key()).digest  # type: ignore[arg-type]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.example.com", "example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey) == key_type.startswith("rsa")


def _openssl_verify_strict(tmp_path: Path, issued: Issued, name: str) -> None:
    openssl = require_tool("openssl")
    root = tmp_path / f"{name}-root.pem"
    chain = tmp_path / f"{name}-chain.pem"
    leaf = tmp_path / f"{name}-leaf.pem"
    root.write_bytes(issued.root_pem)
    chain.write_bytes(issued.chain_pem)
    leaf.write_bytes(issued.leaf_pem)
    result = subprocess.run(
        [openssl, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(root),
         "-untrusted", str(chain), str(leaf)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (
        f"{name}: {result.stdout}{result.stderr}")


@pytest.mark.oracle
def test_openssl_strict_accepts_every_kind_of_lab_certificate(tmp_path: Path) -> None:
    """RSA and EC leaves, a leaf issued from a CSR, a two-level chain and an SBC's factory cert."""
    ca = LabCA(name="Strict Lab", intermediates=2)
    _openssl_verify_strict(tmp_path, ca.issue(["rsa.example.com"]), "rsa")
    _openssl_verify_strict(tmp_path, ca.issue(["ec.example.com"], key_type="ec-p256"), "ec")
    from_csr = ca.issue(csr=_csr(["csr.example.com", "www.example.com"]))
    assert from_csr.key is None
    _openssl_verify_strict(tmp_path, from_csr, "csr")
    sbc = LabSbc("strict-sbc", ca=ca)
    factory = sbc.context(0).certificate
    _openssl_verify_strict(
        tmp_path, Issued(factory, None, ca.intermediate_certs, ca.root), "sbc-factory")


def test_strict_handshake_with_every_lab_listener(tmp_path: Path) -> None:
    """Each listener of a lab estate passes a strict-mode handshake under the name it answers to.

    SBC management (the factory certificate, by 127.0.0.1 as the inventory
    addresses it), every SIP/Teams listener and OVOC's HTTPS (the wildcard).
    """
    with LabEstate(tmp_path / "lab", sbcs=2) as lab:
        wildcard = _strict_context(lab.ca_path)
        management = _strict_context(lab.sbc_ca_path)
        assert lab.ovoc is not None
        seen = [_handshake(wildcard, lab.ovoc.https_port, "ovoc.example.com")]
        teams = 0
        units = [*lab.sbcs.items(), *((n, p.active) for n, p in lab.pairs.items()),
                 *((n, p.standby) for n, p in lab.pairs.items())]
        for name, unit in units:
            _handshake(management, unit.port, "127.0.0.1")
            seen.append(_handshake(wildcard, unit.sip_port, f"{name}.example.com"))
            if unit.teams_port is not None:
                teams += 1
                _strictly_verified_before_refusal(wildcard, unit.teams_port,
                                                  f"{name}.example.com")
    assert len(seen) >= 1 + 3  # ovoc, sbc1 + both HA units' SIP
    assert teams >= 1
    assert {x509.load_der_x509_certificate(d) for d in seen} == {lab.old.leaf}
