"""ARI (RFC 9773): what a CA's renewalInfo says of a certificate.

Only the directory and the renewalInfo resource are read (no account). A CA
without ``renewalInfo`` gives an empty answer; a certificate ARI cannot name
(no Authority Key Identifier) or must not be asked about (expired) is skipped
with the reason in the answer's ``note``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import AcmeError
from .config import AcmeConfig

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["AriLookup", "ari_lookup", "ari_window"]


@dataclass(frozen=True)
class AriLookup:
    """What ARI said of a certificate: the renewal time, or why there is none.

    ``cert_id`` is set only when the CA answered for the certificate (it knows
    it): only then does a renewal order name it in ``replaces``.
    """

    window: dt.datetime | None = None
    cert_id: str | None = None
    note: str = ""


def ari_lookup(
    config: AcmeConfig, leaf: x509.Certificate, *, now: dt.datetime | None = None,
) -> AriLookup:
    """Ask the CA's renewalInfo about ``leaf`` (RFC 9773), when it can be asked.

    Only the directory and the renewalInfo resource are fetched (no account).
    A CA without ``renewalInfo`` gives an empty answer; a certificate ARI cannot
    name (no Authority Key Identifier) or must not be asked about (expired) is
    skipped with the reason in ``note``. Raises AcmeError when the directory
    cannot be read or the CA's answer cannot be read.
    """
    import random

    from acme import client as acme_client
    from acme import messages

    from .client import ari_cert_id, directory_has
    from .transport import client_network, tls_failure

    net = client_network(config, None)
    try:
        directory = acme_client.ClientV2.get_directory(config.directory, net)
    except Exception as exc:  # requests, acme and JSON errors alike
        strict = tls_failure(config, config.directory, exc)
        if strict is not None:
            raise strict from None
        raise AcmeError(f"cannot read the ACME directory {config.directory}: {str(exc)[:200]}",
                        hint="check the directory URL and the network") from None
    if not directory_has(directory, "renewalInfo"):
        return AriLookup()
    moment = now or dt.datetime.now(dt.UTC)
    # RFC 9773 §4.3: a client must not ask about a certificate that has expired.
    if leaf.not_valid_after_utc <= moment:
        return AriLookup(note=" (ARI skipped: the certificate has expired)")
    cert_id = ari_cert_id(leaf)
    if cert_id is None:
        return AriLookup(note=" (ARI skipped: the certificate has no Authority Key Identifier)")
    url = str(directory["renewalInfo"]).rstrip("/") + "/" + cert_id
    try:
        response = net.get(url, content_type="application/json")
        info = messages.RenewalInfo.from_json(response.json())
        start, end = info.suggested_window.start, info.suggested_window.end
    except Exception as exc:  # HTTP problem, 404 (another CA's certificate), bad JSON
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise AcmeError(f"the CA's renewal information could not be read: {text}",
                        hint="retry later; the CA's renewalInfo answered badly") from None
    start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    # §4.2: a random moment in the window spreads a fleet's renewals.
    span = max((end - start).total_seconds(), 0.0)
    when = start + dt.timedelta(seconds=random.uniform(0, span))
    return AriLookup(when, cert_id)


def ari_window(config: AcmeConfig, leaf: x509.Certificate) -> dt.datetime | None:
    """The CA's suggested renewal time for ``leaf`` (ARI), or None when it offers none.

    Raises AcmeError when the CA offers ARI but the answer cannot be read.
    """
    return ari_lookup(config, leaf).window
