"""Checks run on a bundle before anything touches a device.

Every problem is reported, not only the first: :func:`check_bundle` returns
a list of :class:`~certfleet.pki.model.Finding`, errors first. The codes
are stable; :data:`FINDING_CODES` documents each one (the README table is
generated from it).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from .bundle import (
    assemble,
    is_ca,
    is_self_signed,
    may_be_root_of,
    safe_spki_sha256,
    signature_ok,
    subject_text,
)
from .load import load_files
from .model import Bundle, Finding, Severity
from .names import san_entries, why_not_covered
from .quiet import certificate_notes, quietly

__all__ = ["FINDING_CODES", "check_bundle", "check_client_auth_dropped", "has_errors",
           "preflight"]

FINDING_CODES: dict[str, tuple[Severity, str]] = {
    "KEY_MISMATCH": ("error", "the private key given does not belong to the leaf certificate"),
    "CHAIN_INCOMPLETE": ("error", "the issuer of the top certificate of the chain is missing"),
    "BAD_SIGNATURE": ("error", "a certificate's signature does not verify with its issuer's key"),
    "EXPIRED": ("error", "the leaf or an intermediate is past its notAfter date"),
    "NOT_YET_VALID": ("error", "the leaf or an intermediate is before its notBefore date"),
    "NAME_NOT_COVERED": ("error", "a host name given with --host is not covered by the leaf"),
    "WEAK_KEY": ("error", "an RSA key under 2048 bits or an EC key under 256 bits"),
    "WEAK_SIGNATURE": ("error", "a certificate other than a self-signed root is signed with "
                       "SHA-1 or MD5"),
    "NO_SERVER_AUTH": ("error", "the leaf's extended key usage does not allow TLS servers"),
    "EXPIRES_SOON": ("warning", "the leaf or an intermediate expires within the warning window"),
    "KEY_MISSING": ("warning", "no private key was given with the certificate"),
    "CHAIN_UNRELATED": ("warning", "a certificate in the input belongs to no chain of the leaf"),
    "SELF_SIGNED_LEAF": ("warning", "the leaf is self-signed: clients will not trust it"),
    "NOT_RFC5280": ("warning", "a certificate's serial number is not positive, or a name in "
                    "it is longer than RFC 5280 allows: clients accept it today, stricter "
                    "parsers will refuse it"),
    "CHAIN_REORDERED": ("info", "the input was not in leaf-to-root order; it was reordered"),
    "CHAIN_DUPLICATE": ("info", "a certificate appeared more than once; the copies were dropped"),
    "ROOT_INCLUDED": ("info", "the input includes the root; it is kept apart from the chain"),
    "CSR_GIVEN": ("error", "a certificate request (CSR) was given instead of the issued "
                  "certificate"),
    "NO_CLIENT_AUTH": ("info", "the leaf's extended key usage lacks clientAuth (matters for "
                       "mutual TLS, e.g. Teams Direct Routing)"),
    "CLIENT_AUTH_DROPPED": ("warning", "a device doing mutual TLS serves a certificate with "
                            "clientAuth and its renewal lacks it (Teams Direct Routing)"),
}

_EKU_NAMES: dict[x509.ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}
_RANK: dict[str, int] = {"error": 0, "warning": 1, "info": 2}
_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error."""
    return any(f.severity == "error" for f in findings)


def _finding(code: str, message: str, hint: str, subject: str | None = None) -> Finding:
    return Finding(code, FINDING_CODES[code][0], message, hint, subject)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _role(bundle: Bundle, cert: x509.Certificate) -> str:
    if cert is bundle.leaf:
        return "leaf"
    if cert is bundle.root:
        return "root"
    return "intermediate"


def _aia_ca_issuers(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [
        str(d.access_location.value)
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except (x509.ExtensionNotFound, ValueError):
        return None


def _key_weakness(cert: x509.Certificate) -> str | None:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        return f"EC {key.curve.name} ({key.curve.key_size} bits)"
    if isinstance(key, dsa.DSAPublicKey) and key.key_size < 2048:
        return f"DSA {key.key_size} bits"
    return None


def _weak_hash(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    return algorithm.name.upper() if isinstance(algorithm, _WEAK_HASHES) else None


def _check_validity(
    bundle: Bundle, now: dt.datetime, warn_days: int
) -> list[Finding]:
    found: list[Finding] = []
    for cert in bundle.fullchain:
        subject = subject_text(cert)
        role = _role(bundle, cert)
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        if now > not_after:
            days = (now - not_after).days
            found.append(_finding(
                "EXPIRED",
                f"the {role} {subject!r} expired on {_iso(not_after)} ({days} days ago)",
                "renew the certificate" if role == "leaf"
                else "download the current intermediate from the CA",
                subject,
            ))
        elif now < not_before:
            found.append(_finding(
                "NOT_YET_VALID",
                f"the {role} {subject!r} is not valid before {_iso(not_before)}",
                "wait until then, or check the clock of the machine that issued it",
                subject,
            ))
        elif not_after - now <= dt.timedelta(days=warn_days):
            days = (not_after - now).days
            found.append(_finding(
                "EXPIRES_SOON",
                f"the {role} {subject!r} expires on {_iso(not_after)} (in {days} days)",
                "renew it now" if role == "leaf"
                else "ask the CA for the chain that replaces this intermediate",
                subject,
            ))
    return found


def _check_chain(bundle: Bundle, existing: Sequence[Finding]) -> list[Finding]:
    found: list[Finding] = []
    leaf_subject = subject_text(bundle.leaf)
    if is_self_signed(bundle.leaf):
        found.append(_finding(
            "SELF_SIGNED_LEAF",
            f"the leaf {leaf_subject!r} is self-signed",
            "clients and Teams will not trust it: have a CA issue the certificate",
            leaf_subject,
        ))
        return found
    links = list(bundle.fullchain) + ([bundle.root] if bundle.root is not None else [])
    reported = {f.subject for f in existing if f.code == "BAD_SIGNATURE"}
    for cert, issuer in itertools.pairwise(links):
        subject = subject_text(cert)
        if subject not in reported and not signature_ok(cert, issuer):
            found.append(_finding(
                "BAD_SIGNATURE",
                f"the signature of {subject!r} does not verify with the key of "
                f"{subject_text(issuer)!r}",
                "the chain holds the wrong issuer certificate: download it again from the CA",
                subject,
            ))
    top = bundle.fullchain[-1]
    root_issues_top = bundle.root is not None and top.issuer == bundle.root.subject
    # Without a trust store the root may be left out (servers do not send it), so an
    # intermediate on top is taken as issued by a root. Two cases are certain: a leaf
    # on top with no issuer given (the classic "only the .crt was uploaded"), and a
    # root given that the chain does not reach (an intermediate in between is missing).
    if not root_issues_top and (top is bundle.leaf or _orphan_root(bundle)):
        try:
            issuer_name = top.issuer.rfc4514_string()
        except ValueError:
            issuer_name = "<unreadable issuer>"
        urls = _aia_ca_issuers(top)
        where = f" (the CA publishes it at {urls[0]})" if urls else ""
        found.append(_finding(
            "CHAIN_INCOMPLETE",
            f"the issuer of {subject_text(top)!r}, {issuer_name!r}, is not in the input{where}",
            "add the intermediate certificate(s) the CA sent with the certificate "
            "(often a chain, ca-bundle or .p7b file), or its root if the CA has no intermediate",
            subject_text(top),
        ))
    return found


def _orphan_root(bundle: Bundle) -> bool:
    """True when a set-aside self-signed CA linked to the chain issued no set-aside certificate.

    Linked by key identifier or organisation (see ``may_be_root_of``): a stray
    self-signed certificate of another CA or device is only CHAIN_UNRELATED.
    """
    top = bundle.fullchain[-1]
    for root in bundle.unrelated:
        if is_ca(root) and is_self_signed(root) and may_be_root_of(root, top) and not any(
            other is not root and signature_ok(other, root) for other in bundle.unrelated
        ):
            return True
    return False


def _check_key(bundle: Bundle, existing: Sequence[Finding]) -> list[Finding]:
    if bundle.private_key is None or any(f.code == "KEY_MISMATCH" for f in existing):
        return []
    if safe_spki_sha256(bundle.private_key) == safe_spki_sha256(bundle.leaf):
        return []
    subject = subject_text(bundle.leaf)
    source = bundle.key_source or "the bundle"
    return [_finding(
        "KEY_MISMATCH",
        f"the private key from {source!r} does not belong to the certificate {subject!r}",
        "find the key that was used for the CSR of this certificate",
        subject,
    )]


def _check_strength(bundle: Bundle) -> list[Finding]:
    found: list[Finding] = []
    for cert in bundle.fullchain:
        subject = subject_text(cert)
        role = _role(bundle, cert)
        weakness = _key_weakness(cert)
        if weakness is not None:
            found.append(_finding(
                "WEAK_KEY",
                f"the {role} {subject!r} has a weak key: {weakness}",
                "issue a new certificate for an RSA 2048+ or EC P-256+ key"
                if role == "leaf" else "ask the CA for a current chain",
                subject,
            ))
        weak_hash = _weak_hash(cert)
        if weak_hash is not None:
            found.append(_finding(
                "WEAK_SIGNATURE",
                f"the {role} {subject!r} is signed with {weak_hash}",
                "have it reissued with a SHA-256 signature",
                subject,
            ))
    return found


def _check_conformance(bundle: Bundle) -> list[Finding]:
    found: list[Finding] = []
    for cert in bundle.fullchain:
        role = _role(bundle, cert)
        for note in certificate_notes(cert):
            subject = subject_text(cert)
            found.append(_finding(
                "NOT_RFC5280",
                f"the {role} {subject!r}: {note}",
                "have it reissued by a CA that follows RFC 5280"
                if role == "leaf" else "ask the CA for a current chain",
                subject,
            ))
    return found


def _check_usage(bundle: Bundle) -> list[Finding]:
    subject = subject_text(bundle.leaf)
    if bundle.private_key is None and is_ca(bundle.leaf) and not is_self_signed(bundle.leaf):
        # Only a CA's files were given (a .p7b or ca-bundle without the server's
        # certificate): the "leaf" is the lowest CA, which no client accepts as a server.
        # (With a matching key the CA certificate is what the user means to serve.)
        return [_finding(
            "NO_SERVER_AUTH",
            f"the leaf {subject!r} is a CA certificate, not one issued to a server: "
            "the input holds no server certificate",
            "add the certificate the CA issued for the server (.crt, .cer or .pfx), "
            "not only the CA's chain",
            subject,
        )]
    usages = _eku(bundle.leaf)
    if usages is None or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        return []
    listed = ", ".join(_EKU_NAMES.get(u, u.dotted_string) for u in usages) or "nothing"
    found: list[Finding] = []
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        found.append(_finding(
            "NO_SERVER_AUTH",
            f"the leaf {subject!r} may not serve TLS: its extended key usage lists {listed}",
            "request a certificate with the serverAuth (TLS Web Server) usage",
            subject,
        ))
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        found.append(_finding(
            "NO_CLIENT_AUTH",
            f"the leaf {subject!r} lacks clientAuth in its extended key usage ({listed})",
            "fine for HTTPS; for mutual TLS (Teams Direct Routing) check the peer accepts it",
            subject,
        ))
    return found


def _check_names(bundle: Bundle, hosts: Sequence[str]) -> list[Finding]:
    found: list[Finding] = []
    for host in hosts:
        reason = why_not_covered(bundle.leaf, host)
        if reason is None:
            continue
        entries = san_entries(bundle.leaf)
        # Without a subjectAltName the reason says so (and names the CN).
        shown = "" if entries is None else (
            f" (it names {', '.join(value for _, value in entries) or 'nothing'})"
        )
        if "clients ignore the CN" in reason:
            hint = ("clients match only the subjectAltName: issue a certificate whose "
                    "subjectAltName lists the host")
        else:
            hint = ("issue a certificate whose subjectAltName covers the host, or correct "
                    "the host name that was checked")
        found.append(_finding(
            "NAME_NOT_COVERED",
            f"{host!r} is not covered by the leaf{shown}: {reason}",
            hint,
            subject_text(bundle.leaf),
        ))
    return found


@quietly
def check_bundle(
    bundle: Bundle,
    hosts: Sequence[str] = (),
    *,
    expiry_warn_days: int = 30,
    now: dt.datetime | None = None,
) -> list[Finding]:
    """Assembly findings plus every check, sorted errors, warnings, infos.

    ``hosts`` are the names the certificate must cover; ``now`` defaults to
    the current time (a naive datetime is taken as UTC).
    """
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    findings = list(bundle.findings)
    if any(f.code == "CSR_GIVEN" for f in findings):
        # Only the CA's chain came with the request: checking that chain as a server
        # certificate would only repeat, in other words, that the certificate is missing.
        return sorted(findings, key=lambda f: _RANK[f.severity])
    findings += _check_key(bundle, findings)
    findings += _check_chain(bundle, findings)
    findings += _check_validity(bundle, now, expiry_warn_days)
    findings += _check_strength(bundle)
    findings += _check_conformance(bundle)
    findings += _check_usage(bundle)
    findings += _check_names(bundle, hosts)
    return sorted(findings, key=lambda f: _RANK[f.severity])


@quietly
def preflight(
    paths: Sequence[str | os.PathLike[str]],
    password: bytes | None = None,
    hosts: Sequence[str] = (),
    *,
    expiry_warn_days: int = 30,
    now: dt.datetime | None = None,
) -> tuple[Bundle, list[Finding]]:
    """Load ``paths``, assemble and check. Raises CertificateError / PasswordError."""
    bundle = assemble(load_files(paths, password))
    return bundle, check_bundle(
        bundle, hosts, expiry_warn_days=expiry_warn_days, now=now
    )


def _allows_client_auth(cert: x509.Certificate) -> bool:
    """clientAuth (or anyExtendedKeyUsage) in the EKU; no EKU extension allows any use."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return (ExtendedKeyUsageOID.CLIENT_AUTH in usages
            or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages)


def check_client_auth_dropped(
    served: x509.Certificate, renewal: x509.Certificate, *, where: str
) -> list[Finding]:
    """CLIENT_AUTH_DROPPED when ``served`` (on a mutual-TLS listener ``where``) may act as
    a TLS client and its ``renewal`` may not. The caller decides that ``where`` does
    mutual TLS (it asked for a client certificate, or the inventory marks it Teams)."""
    if not _allows_client_auth(served) or _allows_client_auth(renewal):
        return []
    subject = renewal.subject.rfc4514_string()
    return [_finding(
        "CLIENT_AUTH_DROPPED",
        f"{where} serves a certificate with the clientAuth usage and its renewal {subject!r} "
        "lacks it: Microsoft Teams Direct Routing mutual TLS (the SBC presents this "
        "certificate as a client) may then fail",
        "order from a CA or profile that still includes clientAuth (Let's Encrypt's classic "
        "profile dropped it on 2026-02-11; e.g. a commercial CA's TLS server+client "
        "certificate), or confirm the peer does not require it",
        subject,
    )]
