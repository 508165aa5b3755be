"""The HTTPS side of talking to an ACME server: its TLS context and its failures in words.

The ACME library speaks through ``requests``. With ``x509_strict`` set in
``[certificates.NAME.acme]`` the HTTPS adapter gets a context whose strict
RFC 5280 checks (``VERIFY_X509_STRICT``, Python's default from 3.13 on) are
set or cleared, and nothing else changes: ``ca_bundle`` (or the default
roots) and host-name checks stay. A handshake refused by a strict check is
named in words with the way forward, as the SBC driver does.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from . import AcmeError
from .config import AcmeConfig

if TYPE_CHECKING:
    from acme.client import ClientNetwork
    from josepy.jwk import JWK
    from requests.adapters import HTTPAdapter

__all__ = ["USER_AGENT", "client_network", "tls_failure"]

USER_AGENT = "certfleet (+https://github.com/certfleet)"


def client_network(config: AcmeConfig, key: JWK | None) -> ClientNetwork:
    """An ``acme`` ClientNetwork for ``config``: its ``ca_bundle`` and ``x509_strict``."""
    from acme import client as acme_client

    verify: str | bool = str(config.ca_bundle) if config.ca_bundle else True
    net = acme_client.ClientNetwork(
        key, verify_ssl=verify,  # type: ignore[arg-type]  # requests takes a CA file too
        user_agent=USER_AGENT, timeout=30)
    if config.x509_strict is not None:
        net.session.mount("https://", _adapter(config.x509_strict))
    return net


def _adapter(x509_strict: bool) -> HTTPAdapter:
    from requests.adapters import HTTPAdapter
    from urllib3.util.ssl_ import create_urllib3_context

    class StrictnessAdapter(HTTPAdapter):
        """requests' adapter with a context whose only change is the strict flag."""

        def init_poolmanager(
            self, connections: int, maxsize: int, block: bool = False, **kwargs: object,
        ) -> None:
            context = create_urllib3_context()
            if x509_strict:
                context.verify_flags |= ssl.VERIFY_X509_STRICT
            else:
                context.verify_flags &= ~ssl.VERIFY_X509_STRICT
            kwargs["ssl_context"] = context
            super().init_poolmanager(connections, maxsize, block, **kwargs)

    return StrictnessAdapter()


def _verify_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The ``ssl.SSLCertVerificationError`` behind a requests/urllib3 error, if any:
    urllib3 keeps it in an error's ``reason`` or arguments, not only in its cause."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *current.args]
        todo += [item for item in linked if isinstance(item, BaseException)]
    return None


def tls_failure(config: AcmeConfig, url: str, exc: BaseException) -> AcmeError | None:
    """``exc`` in words when a strict X.509 check refused the ACME server's
    certificate (with ``x509_strict = false`` as the way forward); None otherwise."""

    from ..drivers.pinning import strict_failure, strict_reason

    error = _verify_error(exc)
    if error is None:
        return None
    strict = strict_failure(error)
    if strict is None:
        return None
    why = strict_reason(config.x509_strict)
    table = f"[certificates.{config.certificate}.acme]"
    return AcmeError(
        f"cannot read the ACME directory {url}: the ACME server's certificate {strict}; {why}",
        hint=f"have the CA's certificate reissued with that extension, or accept it from "
        f"ca_bundle without the strict checks: x509_strict = false in {table}",
    )
