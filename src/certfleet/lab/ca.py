"""A lab certificate authority: root, intermediates, and leaves as a CA issues them.

Every certificate follows RFC 5280 the way a public CA profile sets it (the
CA/Browser Forum baseline requirements), so that the strictest verifier
(OpenSSL's ``X509_V_FLAG_X509_STRICT``, which Python 3.13's default context
turns on) accepts the lab:

- root: basicConstraints CA (critical), keyUsage keyCertSign + cRLSign +
  digitalSignature (critical), subjectKeyIdentifier, and an
  authorityKeyIdentifier equal to it;
- intermediates: the same, pathLenConstraint 0 on the lowest, an
  authorityKeyIdentifier naming the issuer's key and an AIA caIssuers URL;
- leaves: basicConstraints CA:FALSE (critical), keyUsage digitalSignature
  (+ keyEncipherment for RSA) (critical), extendedKeyUsage serverAuth,
  subjectKeyIdentifier, authorityKeyIdentifier, AIA, and every name in the
  subjectAltName (DNS names as dNSName, ``ip_addresses`` as iPAddress).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "LabCA", "make_key"]

_CAKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyType = str  # "rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384", "rsa1024"


def make_key(key_type: KeyType = "rsa2048") -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A fresh private key. ``rsa1024`` exists for weak-key tests."""
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    curves: dict[str, ec.EllipticCurve] = {
        "ec-p256": ec.SECP256R1(),
        "ec-p384": ec.SECP384R1(),
        "ec-p521": ec.SECP521R1(),
    }
    if key_type not in curves:
        raise ValueError(f"unknown key type {key_type!r}")
    return ec.generate_private_key(curves[key_type])


def _name(cn: str, org: str = "certfleet lab") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _slug(cert: x509.Certificate) -> str:
    """A URL path segment for a CA certificate: its CN, letters, digits and dashes only."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    text = str(cns[0].value) if cns else "ca"
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in text).strip("-")


def _leaf_key_usage(public_key: object) -> x509.KeyUsage:
    """A subscriber certificate's key usage: digitalSignature, and keyEncipherment for RSA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI of a certificate ``issuer`` signs: the issuer's own SKI, key identifier only."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key())  # type: ignore[arg-type]  # a CA key, never X25519/DH
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Issued:
    """A leaf and what came with it: ``chain`` is intermediates leaf-side first."""

    leaf: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None
    chain: tuple[x509.Certificate, ...]
    root: x509.Certificate

    def pem(self, cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    @property
    def leaf_pem(self) -> bytes:
        return self.pem(self.leaf)

    @property
    def chain_pem(self) -> bytes:
        return b"".join(self.pem(c) for c in self.chain)

    @property
    def fullchain_pem(self) -> bytes:
        return self.leaf_pem + self.chain_pem

    @property
    def root_pem(self) -> bytes:
        return self.pem(self.root)

    def key_pem(self, fmt: str = "pkcs8") -> bytes:
        """The key unencrypted: ``pkcs8``, ``pkcs1`` (RSA) or ``sec1`` (EC)."""
        if self.key is None:
            raise ValueError("this leaf was issued from a CSR: the lab never saw its key")
        formats = {
            "pkcs8": serialization.PrivateFormat.PKCS8,
            "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
            "sec1": serialization.PrivateFormat.TraditionalOpenSSL,
        }
        return self.key.private_bytes(
            serialization.Encoding.PEM, formats[fmt], serialization.NoEncryption()
        )

    def p7b(self, *, wrong_order: bool = False, der: bool = False) -> bytes:
        """The chain (intermediates + root) as PKCS#7, optionally root first."""
        certs = [*self.chain, self.root]
        if wrong_order:
            certs.reverse()
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        return pkcs7.serialize_certificates(certs, encoding)


@dataclass
class LabCA:
    """A root and ``intermediates`` levels of intermediate CAs.

    Leaves are issued by the lowest intermediate. Everything is generated at
    run time; nothing here is trusted outside the lab.
    """

    name: str = "certfleet Lab"
    intermediates: int = 1
    key_type: KeyType = "ec-p256"
    hash_algorithm: hashes.HashAlgorithm = field(default_factory=hashes.SHA256)
    root: x509.Certificate = field(init=False)
    root_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(init=False)
    chain: list[tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]] = field(
        init=False, default_factory=list
    )

    def __post_init__(self) -> None:
        self.root_key = make_key(self.key_type)
        now = _now()
        self.root = self._ca_cert(
            _name(f"{self.name} Root CA"),
            self.root_key,
            _name(f"{self.name} Root CA"),
            self.root_key,
            now - dt.timedelta(days=1),
            now + dt.timedelta(days=3650),
            path_length=None,
        )
        issuer_cert, issuer_key = self.root, self.root_key
        for level in range(1, self.intermediates + 1):
            key = make_key(self.key_type)
            cert = self._ca_cert(
                _name(f"{self.name} Intermediate CA {level}"),
                key,
                issuer_cert.subject,
                issuer_key,
                now - dt.timedelta(days=1),
                now + dt.timedelta(days=1825),
                path_length=0 if level == self.intermediates else None,
                aia_url=f"http://ca.lab.invalid/{_slug(issuer_cert)}.crt",
                issuer_public=issuer_key.public_key(),
            )
            self.chain.insert(0, (cert, key))
            issuer_cert, issuer_key = cert, key

    def _ca_cert(
        self,
        subject: x509.Name,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        not_before: dt.datetime,
        not_after: dt.datetime,
        path_length: int | None,
        aia_url: str | None = None,
        issuer_public: object | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer_public or issuer_key.public_key()  # type: ignore[arg-type]  # a CA key
                ),
                critical=False,
            )
        )
        if aia_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(aia_url),
                        )
                    ]
                ),
                critical=False,
            )
        # SHA-1/MD5 stay possible at run time for weak-signature tests; the stubs
        # only admit SHA-2/SHA-3.
        return builder.sign(issuer_key, self.hash_algorithm)  # type: ignore[arg-type]  # CA key

    # ---- kept on disk, so that another process (``certfleet lab sign``) issues too ----

    def save(self, directory: Path) -> Path:
        """Write the CA to ``directory``: ``root.crt``, ``intermediate-N.crt`` (N = 1 under
        the root) and their keys (``.key``, 0600). A lab CA only: nothing trusts it."""
        from ..fsutil import write_file_atomic, write_private_file

        directory = Path(directory)
        pairs = [("root", self.root, self.root_key)]
        pairs += [(f"intermediate-{level}", cert, key)
                  for level, (cert, key) in enumerate(reversed(self.chain), start=1)]
        for stem, cert, key in pairs:
            write_file_atomic(directory / f"{stem}.crt",
                              cert.public_bytes(serialization.Encoding.PEM))
            write_private_file(directory / f"{stem}.key", key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        return directory

    @classmethod
    def load(cls, directory: Path) -> LabCA:
        """The CA :meth:`save` wrote to ``directory``; ValueError names what is missing."""
        directory = Path(directory)

        def pair(stem: str) -> tuple[x509.Certificate, _CAKey]:
            cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
            if not cert_path.is_file() or not key_path.is_file():
                raise ValueError(f"{directory} holds no lab CA ({cert_path.name} and "
                                 f"{key_path.name} are written by 'certfleet lab up')")
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not an RSA or EC key")
            return x509.load_pem_x509_certificate(cert_path.read_bytes()), key

        ca = cls.__new__(cls)
        ca.root, ca.root_key = pair("root")
        ca.chain = []
        level = 1
        while (directory / f"intermediate-{level}.crt").is_file():
            ca.chain.insert(0, pair(f"intermediate-{level}"))
            level += 1
        cns = ca.root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ca.name = str(cns[0].value).removesuffix(" Root CA") if cns else "certfleet Lab"
        ca.intermediates = len(ca.chain)
        ca.key_type = "ec-p256" if isinstance(ca.root_key, ec.EllipticCurvePrivateKey) else (
            f"rsa{ca.root_key.key_size}")
        ca.hash_algorithm = hashes.SHA256()
        return ca

    @property
    def issuer(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
        return self.chain[0] if self.chain else (self.root, self.root_key)

    @property
    def intermediate_certs(self) -> tuple[x509.Certificate, ...]:
        return tuple(cert for cert, _ in self.chain)

    def issue(
        self,
        names: Sequence[str] = ("*.example.com", "example.com"),
        *,
        key_type: KeyType = "rsa2048",
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
        csr: x509.CertificateSigningRequest | None = None,
        common_name: str | None = None,
        days: int = 199,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
        hash_algorithm: hashes.HashAlgorithm | None = None,
        ca: bool = False,
        ip_addresses: Sequence[str] = (),
        authority_key_id: bool = True,
    ) -> Issued:
        """Issue a leaf for ``names`` (or for ``csr``: its key, CN and SANs).

        ``names`` become dNSName entries, ``ip_addresses`` iPAddress entries of
        the subjectAltName. ``eku=None`` leaves the EKU extension out; ``days``
        counts from now. ``authority_key_id=False`` leaves the Authority Key
        Identifier out (as factory and hand-made certificates do).
        """
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
        if csr is not None:
            public_key = csr.public_key()
            try:
                requested = csr.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value
                sans = list(requested.get_values_for_type(x509.DNSName))
                ips += [ip for ip in requested.get_values_for_type(x509.IPAddress)
                        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)]
            except x509.ExtensionNotFound:
                sans = []
            cn_attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cn = str(cn_attrs[0].value) if cn_attrs else (sans[0] if sans else "lab")
            names = sans or ([] if ips else [cn])
            leaf_key = None
        else:
            leaf_key = key if key is not None else make_key(key_type)
            public_key = leaf_key.public_key()
            cn = common_name or (names[0] if names else "lab")
        issuer_cert, issuer_key = self.issuer
        start = not_before or (_now() - dt.timedelta(hours=1))
        end = not_after or (start + dt.timedelta(days=days))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(public_key), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        if authority_key_id:
            builder = builder.add_extension(_authority_key_id(issuer_cert), critical=False)
        builder = (
            builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(
                                f"http://ca.lab.invalid/{self.name.replace(' ', '_')}-int.crt"
                            ),
                        )
                    ]
                ),
                critical=False,
            )
        )
        general: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        general += [x509.IPAddress(ip) for ip in ips]
        if general:
            builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        algorithm = hash_algorithm or self.hash_algorithm
        leaf = builder.sign(issuer_key, algorithm)  # type: ignore[arg-type]  # SHA-1 for tests
        return Issued(leaf, leaf_key, self.intermediate_certs, self.root)
