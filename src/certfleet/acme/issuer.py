"""Order a certificate by ACME with DNS-01, and choose the chain to keep.

The estate's side (the key made and stored before the order, the import
as a new version) is :mod:`certfleet.estate.issue`. Each name gets its DNS-01 TXT value
(a wildcard and its apex share one name: both values are published
together), every value must be visible on the nameservers before a
challenge is answered, and the records are removed afterwards whatever
happened. The issued chain is the ``preferred_chain`` when the CA offers
alternates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from . import AcmeError
from .config import AcmeConfig

__all__ = ["choose_chain", "issuer_cn", "load_chain", "order_certificate", "root_for"]

Log = Callable[[str], None]


def issuer_cn(name: Any) -> str:
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def load_chain(pem: str) -> list[Any]:
    from cryptography import x509

    return list(x509.load_pem_x509_certificates(pem.encode()))


def choose_chain(fullchains: Sequence[str], preferred: str | None) -> str:
    """The chain whose top certificate is issued by ``preferred`` (a CN), else the first.

    As certbot does: the issuer CN of the topmost certificate decides; then
    any certificate's subject or issuer CN in the chain.
    """
    if not preferred or len(fullchains) < 2:
        return fullchains[0]
    for chain in fullchains:
        certs = load_chain(chain)
        if certs and issuer_cn(certs[-1].issuer) == preferred:
            return chain
    for chain in fullchains:
        for cert in load_chain(chain):
            if preferred in (issuer_cn(cert.issuer), issuer_cn(cert.subject)):
                return chain
    return fullchains[0]


def _issued_by(cert: Any, issuer: Any) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # any mismatch or bad signature: not this issuer
        return False
    return True


#: Bytes read at most from a caIssuers URL: a root certificate is a few kB.
_MAX_ROOT_BYTES = 65536


def _read_at_most(client: Any, url: str, cap: int) -> bytes:
    """The body at ``url``, read in chunks; ValueError past ``cap`` bytes (not read on)."""
    chunks: list[bytes] = []
    size = 0
    with client.stream("GET", url) as response:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise ValueError(f"{url} answers with more than {cap:,} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def root_for(top: Any, config: AcmeConfig, log: Log) -> Any | None:
    """The root that signed ``top``: from ``root_file``, else its AIA caIssuers URL."""
    from cryptography import x509

    if config.root_file is not None:
        try:
            candidates = x509.load_pem_x509_certificates(config.root_file.read_bytes())
        except (OSError, ValueError) as exc:
            from ..errors import ConfigError

            raise ConfigError(
                f"root_file {str(config.root_file)!r} cannot be read: {exc}",
                hint="give a PEM file with the CA's root certificates",
            ) from None
        for root in candidates:
            if _issued_by(top, root):
                return root
    try:
        aia = top.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for item in aia:
        if item.access_method == x509.oid.AuthorityInformationAccessOID.CA_ISSUERS:
            url = item.access_location.value
            try:
                import httpx

                with httpx.Client(timeout=10.0, follow_redirects=True) as client:
                    data = _read_at_most(client, url, _MAX_ROOT_BYTES)
                cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                        else x509.load_der_x509_certificate(data))
            except Exception:  # the root is optional: the import decides
                log(f"could not fetch the root from {url}")
                continue
            if _issued_by(top, cert):
                return cert
    return None


def order_certificate(
    session: Any,
    names: Sequence[str],
    csr_pem: bytes,
    dns: Any,
    *,
    timeout: float,
    replaces: str | None = None,
    profile: str | None = None,
    log: Log = lambda _: None,
    provider: Any = None,
    stop_before_finalize: bool = False,
) -> list[str]:
    """Order ``names``, answer DNS-01, finalise with ``csr_pem``; every fullchain offered.

    Raises AcmeError with the CA's problem document in words (refused
    order, failed validation, refused CSR), DnsError (records), ConfigError.
    With ``stop_before_finalize`` the order is validated and left unfinalised.
    """
    from acme import challenges, messages
    from acme import errors as acme_errors

    from ..dns.propagation import follow_cname, wait_for_records
    from ..dns.providers import TxtRecord, make_provider, zone_for
    from .account import problem_text

    client = session.client
    if profile:
        offered = sorted(getattr(client.directory.meta, "profiles", None) or {})
        if profile not in offered:
            raise AcmeError(
                f"the CA's directory offers no profile {profile!r}"
                + (f" (it offers: {', '.join(offered)})" if offered
                   else " (it offers no profiles at all)"),
                hint="set profile in the acme table to one the CA offers, or remove it "
                "to get the CA's default")
    try:
        orderr = client.order(csr_pem, names, replaces=replaces, profile=profile)
    except messages.Error as exc:
        raise AcmeError(f"the CA refused the order for {', '.join(names)}: "
                        f"{problem_text(exc)}", hint="check the names and the CA's policy",
                        problem=problem_text(exc)) from None
    records: list[TxtRecord] = []
    answers: list[Any] = []
    for authzr in orderr.authorizations:
        if authzr.body.status == messages.STATUS_VALID:
            continue
        domain = authzr.body.identifier.value
        challb = next((c for c in authzr.body.challenges
                       if isinstance(c.chall, challenges.DNS01)), None)
        if challb is None:
            raise AcmeError(f"the CA offers no dns-01 challenge for {domain}",
                            hint="certfleet validates by DNS-01 only; ask the CA to allow it")
        response, value = challb.response_and_validation(session.key)
        record_name = follow_cname(challb.chall.validation_domain_name(domain), dns.resolvers)
        records.append(TxtRecord(record_name, value, zone_for(record_name, dns)))
        answers.append((challb, response))
    deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
    if records:
        dns_provider = provider if provider is not None else make_provider(dns)
        try:
            log(f"publishing {len(records)} TXT record(s): "
                + ", ".join(sorted({r.name for r in records})))
            dns_provider.add(records)
            wait_for_records(records, resolvers=dns.resolvers,
                             timeout=dns.propagation_timeout, on_wait=log)
            log("records visible; answering the challenges")
            for challb, response in answers:
                client.answer_challenge(challb, response)
            try:
                orderr = client.poll_authorizations(orderr, deadline)
            except acme_errors.ValidationError as exc:
                reasons = []
                for failed in exc.failed_authzrs:
                    for chall in failed.body.challenges:
                        if chall.error is not None:
                            reasons.append(f"{failed.body.identifier.value}: "
                                           f"{problem_text(chall.error)}")
                text = "; ".join(reasons) or "no reason given"
                raise AcmeError(f"the CA could not validate {text}",
                                hint="check that the TXT records are published in the zone "
                                "the CA queries (CNAMEs, split DNS)", problem=text) from None
            except acme_errors.TimeoutError:
                raise AcmeError(f"the CA did not finish validation within {timeout:.0f}s",
                                hint="raise timeout in the acme table, or retry later") from None
        finally:
            try:
                dns_provider.remove(records)
                log("TXT records removed")
            except Exception as exc:  # reported, never hides the order's outcome
                log(f"could not remove the TXT records: {exc}")
    if stop_before_finalize:
        return []
    try:
        orderr = client.finalize_order(orderr, deadline, fetch_alternative_chains=True)
    except messages.Error as exc:
        raise AcmeError(f"the CA refused to issue: {problem_text(exc)}",
                        hint="check the CSR (names, key) against the order",
                        problem=problem_text(exc)) from None
    except acme_errors.IssuanceError as exc:
        raise AcmeError(f"the CA refused to issue: {problem_text(exc.error)}",
                        hint="check the CSR (names, key) against the order",
                        problem=problem_text(exc.error)) from None
    except acme_errors.TimeoutError:
        raise AcmeError(f"the CA did not issue within {timeout:.0f}s",
                        hint="raise timeout in the acme table, or retry later") from None
    return [orderr.fullchain_pem, *(orderr.alternative_fullchains_pem or [])]
