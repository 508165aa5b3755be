"""Assemble loaded objects into one :class:`~certfleet.pki.model.Bundle`.

CA downloads list the chain in any order, repeat certificates, include the
root or a certificate of another chain; a key may come from a separate
file. :func:`assemble` sorts this out and records what it did as findings,
so that the checks can report it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

from ..errors import CertificateError
from .model import Bundle, Finding, LoadedObject, PrivateKey, cert_sha256, spki_sha256
from .quiet import quietly

__all__ = [
    "assemble",
    "find_issuer",
    "is_ca",
    "is_self_signed",
    "issuer_text",
    "may_be_root_of",
    "safe_spki_sha256",
    "signature_ok",
    "subject_text",
]


def subject_text(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """The subject as an RFC 4514 string (what messages quote)."""
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "<unreadable subject>"


def issuer_text(cert: x509.Certificate) -> str:
    """The issuer as an RFC 4514 string."""
    try:
        return cert.issuer.rfc4514_string()
    except ValueError:
        return "<unreadable issuer>"


def safe_spki_sha256(obj: object) -> str | None:
    """spki_sha256 of a certificate or key; None when its key type is not supported."""
    try:
        return spki_sha256(obj)
    except (ValueError, TypeError, UnsupportedAlgorithm, AttributeError):
        return None


def is_ca(cert: x509.Certificate) -> bool:
    """True when basicConstraints says CA (a certificate without it is an end entity)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def signature_ok(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key verifies ``cert``'s signature (names must match too)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography refuses SHA-1 and MD5 signatures here; verify those by hand
        # so that an old chain is still ordered (WEAK_SIGNATURE reports the hash).
        return cert.issuer == issuer.subject and _legacy_signature_ok(cert, issuer)
    return True


def _legacy_signature_ok(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        algorithm = cert.signature_hash_algorithm
        if not isinstance(algorithm, (hashes.SHA1, hashes.MD5)):
            return False
        key = issuer.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            pad = params if isinstance(params, padding.AsymmetricPadding) else padding.PKCS1v15()
            key.verify(cert.signature, cert.tbs_certificate_bytes, pad, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, algorithm)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when the certificate names itself as issuer and its own key verifies it."""
    return cert.issuer == cert.subject and signature_ok(cert, cert)


def _key_id(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return value.key_identifier
    return None


def _name_matches(cert: x509.Certificate, candidate: x509.Certificate) -> bool:
    """Issuer name equals the candidate's subject and the key identifiers do not disagree."""
    if cert.issuer != candidate.subject:
        return False
    aki = _key_id(cert, x509.AuthorityKeyIdentifier)
    ski = _key_id(candidate, x509.SubjectKeyIdentifier)
    return aki is None or ski is None or aki == ski


def _organisations(name: x509.Name) -> set[str]:
    try:
        values = name.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    except ValueError:
        return set()
    return {str(a.value).strip().casefold() for a in values} - {""}


def may_be_root_of(root: x509.Certificate, top: x509.Certificate) -> bool:
    """True when ``root`` is linked to the chain whose top certificate is ``top``.

    A root the chain does not reach may still be its root with an intermediate
    missing in between when something ties them: its key identifier is the one
    ``top`` names as its authority, or its organisation is the one of ``top``'s
    issuer. A self-signed certificate with neither link is another CA's (or a
    device's own) and says nothing about the chain being incomplete.
    """
    ski = _key_id(root, x509.SubjectKeyIdentifier)
    if ski is not None and ski == _key_id(top, x509.AuthorityKeyIdentifier):
        return True
    return bool(_organisations(root.subject) & _organisations(top.issuer))


def find_issuer(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> tuple[x509.Certificate | None, bool]:
    """The issuer of ``cert`` among ``candidates`` and whether its signature verified.

    A candidate whose name and key identifier match but whose signature does
    not verify is returned with False when no better one exists.
    """
    named = [c for c in candidates if c is not cert and _name_matches(cert, c)]
    for candidate in named:
        if signature_ok(cert, candidate):
            return candidate, True
    return (named[0], False) if named else (None, False)


def _csr_text(csr_objs: Sequence[LoadedObject]) -> str:
    first = csr_objs[0]
    assert isinstance(first.value, x509.CertificateSigningRequest)  # type "csr"
    return (f"{first.source!r} holds a certificate request (CSR) for "
            f"{subject_text(first.value)!r}")


def _matching_csr(
    csr_objs: Sequence[LoadedObject], key_by_spki: dict[str, LoadedObject]
) -> LoadedObject | None:
    """The first CSR whose public key is one of the keys given."""
    for obj in csr_objs:
        if safe_spki_sha256(obj.value) in key_by_spki:
            return obj
    return None


def _csr_given(
    csr_objs: Sequence[LoadedObject],
    key_by_spki: dict[str, LoadedObject],
    leaf: x509.Certificate,
) -> Finding:
    request = _matching_csr(csr_objs, key_by_spki)
    key_note = ""
    if request is not None:
        key = key_by_spki[str(safe_spki_sha256(request.value))]
        key_note = f"; the key from {key.source!r} belongs to it: keep it for that certificate"
    return Finding(
        "CSR_GIVEN",
        "error",
        f"{_csr_text(csr_objs)}: this is the certificate request, not the issued "
        f"certificate; the other inputs hold only the CA's chain ({subject_text(leaf)!r})"
        f"{key_note}",
        hint="give the certificate the CA issued for this request (.crt, .cer, .pem, "
        ".p7b or .pfx) along with the chain",
        subject=subject_text(leaf),
    )


def _not_after(cert: x509.Certificate) -> float:
    return cert.not_valid_after_utc.timestamp()


def _pick_leaf(
    certs: list[x509.Certificate], matched: dict[str, LoadedObject], spkis: list[str | None]
) -> x509.Certificate:
    """The leaf: matching a key if one does, else the end entity at the bottom."""
    with_key = [c for c, s in zip(certs, spkis, strict=True) if s is not None and s in matched]
    if with_key:
        # A CA certificate matching the key would be odd; prefer an end entity.
        with_key.sort(key=lambda c: (not is_ca(c), _not_after(c)), reverse=True)
        return with_key[0]
    end_entities = [c for c in certs if not is_ca(c)] or certs
    # Certificates by issuer name (Name hashes as it compares): one look-up per candidate,
    # not a pass over the pile, so a pile of thousands stays linear.
    by_issuer: dict[x509.Name, list[x509.Certificate]] = {}
    for cert in certs:
        by_issuer.setdefault(cert.issuer, []).append(cert)

    def issues_another(cand: x509.Certificate) -> bool:
        return any(
            other is not cand and signature_ok(other, cand)
            for other in by_issuer.get(cand.subject, ())
        )

    bottom = [c for c in end_entities if not issues_another(c)] or end_entities
    return max(bottom, key=_not_after)


def _subject_of(leaf: x509.Certificate, chain: list[x509.Certificate]) -> x509.Certificate:
    """The certificate whose issuer is being linked: the last one of the path so far."""
    return chain[-1] if chain else leaf


def _ca_identity(cert: x509.Certificate) -> tuple[bytes, str | None]:
    """Subject (DER) and key: two certificates of one CA share it (cross-signed, re-issued)."""
    return cert.subject.public_bytes(), safe_spki_sha256(cert)


class _SetAside:
    """CHAIN_UNRELATED message and hint of each certificate left out of the path.

    Computed once per bundle: a pile of hundreds of unrelated certificates costs
    a pass, not a pass per certificate.
    """

    def __init__(
        self,
        in_path: list[x509.Certificate],
        unrelated: tuple[x509.Certificate, ...],
        leaf: x509.Certificate,
    ) -> None:
        self.leaf_text = subject_text(leaf)
        self.top = in_path[-1]
        self.top_text = subject_text(self.top)
        self.path_ids = {id(c) for c in in_path}
        self.path_cas = {
            identity for identity in map(_ca_identity, in_path) if identity[1] is not None
        }
        self.alternates = [c for c in unrelated if _ca_identity(c) in self.path_cas]
        self.path_ends_at_root = is_self_signed(in_path[-1])

    def text(self, cert: x509.Certificate, source: str) -> tuple[str, str]:
        subject, issuer = subject_text(cert), issuer_text(cert)
        named = f"certificate {subject!r} issued by {issuer!r} from {source!r}"
        if id(cert) not in self.path_ids and _ca_identity(cert) in self.path_cas:
            return (
                f"{named} is another certificate of the same CA (same name and key: "
                f"cross-signed or re-issued) and is not needed for the chain of "
                f"{self.leaf_text!r}, which goes to {self.top_text!r}",
                f"nothing to do; keep it only if old clients need the path through {issuer!r}",
            )
        if any(
            alt is not cert and alt.issuer == cert.subject and signature_ok(alt, cert)
            for alt in self.alternates
        ):
            return (
                f"{named} belongs to the alternative (cross-signed) path of the chain of "
                f"{self.leaf_text!r}",
                "nothing to do; keep it only if old clients need that path",
            )
        if (
            not self.path_ends_at_root
            and is_ca(cert)
            and is_self_signed(cert)
            and may_be_root_of(cert, self.top)
        ):
            # A root the chain does not reach: another CA's, or this one's with an
            # intermediate missing in between (CHAIN_INCOMPLETE then names it).
            return (
                f"{named} is not part of the chain of {self.leaf_text!r}: no certificate "
                "of the chain is issued by it (if it is this chain's root, an intermediate "
                "between them is missing)",
                "add the missing intermediate, or remove the root if it belongs to another CA",
            )
        return (
            f"{named} is not part of the chain of {self.leaf_text!r}",
            "remove it from the input, or check that the right files were given",
        )


class _PathFinder:
    """The best issuer path of a certificate among a pile, searched depth first.

    Names and key identifiers select the candidates; a candidate whose
    signature verifies beats one that does not. Among whole paths the best
    one is: every signature verified, ending at a root that is present, valid
    now, shortest, then the one whose certificates expire last. A bounded
    budget of steps keeps a crafted pile of look-alike CAs cheap: past it,
    the first fitting issuer is taken at each step.
    """

    _BUDGET = 2_000
    _MAX_DEPTH = 16

    def __init__(self, certs: Sequence[x509.Certificate]) -> None:
        self.certs = list(certs)
        self.steps = 0
        self._sig: dict[tuple[int, int], bool] = {}
        self._self: dict[int, bool] = {}
        self._now = _utcnow()

    def _signed(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        key = (id(cert), id(issuer))
        if key not in self._sig:
            self._sig[key] = signature_ok(cert, issuer)
        return self._sig[key]

    def _is_root(self, cert: x509.Certificate) -> bool:
        if id(cert) not in self._self:
            self._self[id(cert)] = cert.issuer == cert.subject and self._signed(cert, cert)
        return self._self[id(cert)]

    def best(self, cert: x509.Certificate) -> list[tuple[x509.Certificate, bool]]:
        """(issuer, signature verified) pairs from ``cert``'s issuer up to the root or top."""
        return self._extend(cert, frozenset({id(cert)}), 0)

    def _extend(
        self, cert: x509.Certificate, used: frozenset[int], depth: int
    ) -> list[tuple[x509.Certificate, bool]]:
        if depth >= self._MAX_DEPTH:
            return []
        named = [c for c in self.certs if id(c) not in used and _name_matches(cert, c)]
        if not named:
            return []
        verified = [c for c in named if self._signed(cert, c)]
        options = [(c, True) for c in verified] or [(named[0], False)]
        best: list[tuple[x509.Certificate, bool]] | None = None
        best_score: tuple[bool, bool, bool, int, float] | None = None
        for candidate, ok in options:
            self.steps += 1
            if self._is_root(candidate):
                tail: list[tuple[x509.Certificate, bool]] = []
            else:
                tail = self._extend(candidate, used | {id(candidate)}, depth + 1)
            path = [(candidate, ok), *tail]
            score = self._score(path)
            if best_score is None or score > best_score:
                best, best_score = path, score
            if self.steps > self._BUDGET:
                break
        return best or []

    def _score(self, path: list[tuple[x509.Certificate, bool]]) -> tuple[
        bool, bool, bool, int, float
    ]:
        certs = [c for c, _ in path]
        return (
            all(ok for _, ok in path),
            self._is_root(certs[-1]),
            all(c.not_valid_before_utc <= self._now <= c.not_valid_after_utc for c in certs),
            -len(certs),
            min(_not_after(c) for c in certs),
        )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@quietly
def assemble(objects: Sequence[LoadedObject]) -> Bundle:
    """Pick the leaf, order its chain leaf to root, attach the matching key.

    Findings made on the way (CHAIN_DUPLICATE, CHAIN_REORDERED, ROOT_INCLUDED,
    CHAIN_UNRELATED, BAD_SIGNATURE, KEY_MISSING, KEY_MISMATCH, CSR_GIVEN) land in
    ``Bundle.findings``. Raises CertificateError when there is no certificate
    (naming a certificate request when one was given instead).
    """
    findings: list[Finding] = []
    cert_objs = [o for o in objects if isinstance(o.value, x509.Certificate)]
    key_objs = [o for o in objects if o.type == "private_key"]
    csr_objs = [o for o in objects if o.type == "csr"]
    _require_certificate(objects, cert_objs, csr_objs)
    certs, first_source = _distinct(cert_objs, findings)

    # Keys, by the SHA-256 of their public key.
    key_by_spki: dict[str, LoadedObject] = {}
    for obj in key_objs:
        spki = safe_spki_sha256(obj.value)
        if spki is not None and spki not in key_by_spki:
            key_by_spki[spki] = obj
    spkis = [safe_spki_sha256(c) for c in certs]

    leaf = _pick_leaf(certs, key_by_spki, spkis)
    leaf_spki = spkis[next(i for i, c in enumerate(certs) if c is leaf)]
    chain, root = _chain_of(leaf, certs, findings)
    unrelated = _set_aside(leaf, chain, root, certs, first_source, findings)
    _order_findings(leaf, chain, root, certs, findings)

    key_obj = key_by_spki.get(leaf_spki) if leaf_spki is not None else None
    _key_findings(leaf, key_obj, key_objs, csr_objs, key_by_spki, findings)
    private_key: PrivateKey | None = None
    if key_obj is not None and not isinstance(
        key_obj.value, (x509.Certificate, x509.CertificateSigningRequest)
    ):
        private_key = key_obj.value
    return Bundle(
        leaf=leaf,
        chain=tuple(chain),
        root=root,
        private_key=private_key,
        key_format=key_obj.format if key_obj is not None else None,
        key_encrypted=key_obj.encrypted if key_obj is not None else False,
        key_source=key_obj.source if key_obj is not None else None,
        unrelated=unrelated,
        findings=tuple(findings),
    )


def _require_certificate(objects: Sequence[LoadedObject], cert_objs: Sequence[LoadedObject],
                         csr_objs: Sequence[LoadedObject]) -> None:
    """Raise CertificateError when no certificate was given (a request instead: said)."""
    if not cert_objs and csr_objs:
        raise CertificateError(
            f"{_csr_text(csr_objs)}: this is the certificate request, not the issued "
            "certificate",
            hint="send the request to the CA and give the certificate it issues "
            "(.crt, .cer, .pem, .p7b or .pfx) with its chain",
        )
    if not cert_objs:
        sources = sorted({o.source for o in objects})
        raise CertificateError(
            f"no certificate among the inputs {', '.join(map(repr, sources)) or '(none)'}",
            hint="add the certificate file the CA issued (.crt, .cer, .pem, .p7b or .pfx)",
        )


def _distinct(cert_objs: Sequence[LoadedObject],
              findings: list[Finding]) -> tuple[list[x509.Certificate], dict[str, str]]:
    """The certificates once each, and where each came from first."""
    # Duplicates: the same DER twice (a chain file repeating the leaf...).
    certs: list[x509.Certificate] = []
    first_source: dict[str, str] = {}
    seen_twice: set[str] = set()
    for obj in cert_objs:
        assert isinstance(obj.value, x509.Certificate)  # filtered above; narrows the type
        digest = cert_sha256(obj.value)
        if digest in first_source:
            if digest not in seen_twice:
                seen_twice.add(digest)
                findings.append(
                    Finding(
                        "CHAIN_DUPLICATE",
                        "info",
                        f"certificate {subject_text(obj.value)!r} appears more than once "
                        "in the input; the copies were dropped",
                        hint="nothing to do; certfleet writes each certificate once",
                        subject=subject_text(obj.value),
                    )
                )
            continue
        first_source[digest] = obj.source
        certs.append(obj.value)
    return certs, first_source


def _chain_of(leaf: x509.Certificate, certs: list[x509.Certificate],
              findings: list[Finding]) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """The chain, leaf side first, each link by name, key id and signature, and the root.

    When a CA is cross-signed, several issuers fit: the best whole path wins
    (see _PathFinder).
    """
    chain: list[x509.Certificate] = []
    root: x509.Certificate | None = None
    if is_self_signed(leaf):
        return chain, root
    for issuer, verified in _PathFinder(certs).best(leaf):
        if not verified:
            findings.append(
                Finding(
                    "BAD_SIGNATURE",
                    "error",
                    f"the signature of {subject_text(_subject_of(leaf, chain))!r} does not "
                    f"verify with the key of its named issuer {subject_text(issuer)!r}",
                    hint="the issuer certificate is the wrong one (a re-keyed or "
                    "cross-signed CA?): download the chain again from the CA",
                    subject=subject_text(_subject_of(leaf, chain)),
                )
            )
        if is_self_signed(issuer):
            root = issuer
            break
        chain.append(issuer)
    return chain, root


def _set_aside(leaf: x509.Certificate, chain: list[x509.Certificate],
               root: x509.Certificate | None, certs: list[x509.Certificate],
               first_source: dict[str, str],
               findings: list[Finding]) -> tuple[x509.Certificate, ...]:
    """The certificates outside the leaf's path, each said as CHAIN_UNRELATED."""
    in_path = [leaf, *chain, *([root] if root is not None else [])]
    used = {id(c) for c in in_path}
    unrelated = tuple(c for c in certs if id(c) not in used)
    set_aside = _SetAside(in_path, unrelated, leaf)
    for cert in unrelated:
        message, hint = set_aside.text(cert, first_source[cert_sha256(cert)])
        findings.append(
            Finding(
                "CHAIN_UNRELATED",
                "warning",
                f"{message}; it was set aside",
                hint=hint,
                subject=subject_text(cert),
            )
        )
    return unrelated


def _order_findings(leaf: x509.Certificate, chain: list[x509.Certificate],
                    root: x509.Certificate | None, certs: list[x509.Certificate],
                    findings: list[Finding]) -> None:
    """CHAIN_REORDERED when the input was out of order; ROOT_INCLUDED when it had the root."""
    expected = [leaf, *chain, *([root] if root is not None else [])]
    in_input = [c for c in certs if any(c is e for e in expected)]
    if [id(c) for c in in_input] != [id(c) for c in expected]:
        findings.append(
            Finding(
                "CHAIN_REORDERED",
                "info",
                "the certificates were not in leaf-to-root order in the input; "
                "they were put in order",
                hint="nothing to do; certfleet writes the chain leaf first",
                subject=subject_text(leaf),
            )
        )
    if root is not None:
        findings.append(
            Finding(
                "ROOT_INCLUDED",
                "info",
                f"the input includes the root {subject_text(root)!r}; it is kept apart "
                "from the chain",
                hint="nothing to do; a server sends no root, but trust stores may need it",
                subject=subject_text(root),
            )
        )


def _key_findings(leaf: x509.Certificate, key_obj: LoadedObject | None,
                  key_objs: Sequence[LoadedObject], csr_objs: Sequence[LoadedObject],
                  key_by_spki: dict[str, LoadedObject], findings: list[Finding]) -> None:
    """CSR_GIVEN, KEY_MISSING or KEY_MISMATCH, when the leaf's key is not among the inputs."""
    if csr_objs and key_obj is None and is_ca(leaf) and not is_self_signed(leaf):
        # A request given with the CA's chain: the issued certificate is missing. Said
        # as such, instead of a key that "does not belong" to an intermediate CA.
        findings.append(_csr_given(csr_objs, key_by_spki, leaf))
    elif not key_objs:
        findings.append(
            Finding(
                "KEY_MISSING",
                "warning",
                f"no private key among the inputs for {subject_text(leaf)!r}",
                hint="add the key file (PEM, \"Apache compatible\" export) or a .pfx with the key",
                subject=subject_text(leaf),
            )
        )
    elif key_obj is None:
        key_sources = ", ".join(sorted({repr(o.source) for o in key_objs}))
        request = _matching_csr(csr_objs, key_by_spki)
        findings.append(
            Finding(
                "KEY_MISMATCH",
                "error",
                f"the private key from {key_sources} does not belong to the certificate "
                f"{subject_text(leaf)!r}"
                + (f" (it belongs to the certificate request in {request.source!r})"
                   if request is not None else ""),
                hint="give the certificate the CA issued for that request"
                if request is not None
                else "find the key that was used for the CSR of this certificate, "
                "or issue a new certificate for this key",
                subject=subject_text(leaf),
            )
        )
