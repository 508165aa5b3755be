"""The HTTPS side of talking to an ACME server: its TLS context and its failures in words.

The ACME library speaks through ``requests``. With ``x509_strict`` set in
``[certificates.NAME.acme]`` the HTTPS adapter gets a context whose strict
RFC 5280 checks (``VERIFY_X509_STRICT``, Python's default from 3.13 on) are
set or cleared, and nothing else changes: ``ca_bundle`` (or the default
roots) and host-name checks stay. A handshake refused by a strict check is
named in words with the way forward, as the SBC driver does.

Every answer is read through the same adapter, in chunks and at most
:data:`MAX_JSON_BYTES` (:data:`MAX_CHAIN_BYTES` for a certificate chain):
a CA, or whatever answers at its URL, that sends more is refused with
a ``requests`` error before the rest is read, as the SBC driver bounds
what it reads from an SBC.
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
    from requests.models import Response

__all__ = ["MAX_CHAIN_BYTES", "MAX_JSON_BYTES", "USER_AGENT", "client_network", "tls_failure"]

USER_AGENT = "certfleet (+https://github.com/certfleet)"

#: Bytes read at most from one ACME answer (directory, nonce, account, order,
#: authorization, problem document): the largest real ones are a few kB.
MAX_JSON_BYTES = 4 * 1024 * 1024
#: Bytes read at most from a certificate download (application/pem-certificate-chain).
MAX_CHAIN_BYTES = 16 * 1024 * 1024
_CHAIN_TYPE = "application/pem-certificate-chain"
_CHUNK = 64 * 1024


def _bound(content_type: str) -> int:
    return MAX_CHAIN_BYTES if content_type.split(";")[0].strip().lower() == _CHAIN_TYPE \
        else MAX_JSON_BYTES


def _too_large(url: str, cap: int) -> Exception:
    """A ``requests`` error (so the callers' handling of network failures, exit 1 with a
    Tip, covers it) naming the bound an answer went past."""
    import requests

    return requests.RequestException(
        f"the answer from {url} is larger than {cap:,} bytes ({cap // (1024 * 1024)} MiB), "
        "more than an ACME server sends")


def _read_bounded(response: Response) -> None:
    """Read ``response``'s body into it, at most its bound; else close it and raise."""
    cap = _bound(response.headers.get("Content-Type", ""))
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cap and "Content-Encoding" not in response.headers:
        response.close()
        raise _too_large(response.url, cap)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise _too_large(response.url, cap)
            chunks.append(chunk)
    except BaseException:
        response.close()
        raise
    response._content = b"".join(chunks)  # what requests' own read leaves there
    response._content_consumed = True


def client_network(config: AcmeConfig, key: JWK | None) -> ClientNetwork:
    """An ``acme`` ClientNetwork for ``config``: its ``ca_bundle`` and ``x509_strict``,
    every answer read at most to its bound."""
    from acme import client as acme_client

    verify: str | bool = str(config.ca_bundle) if config.ca_bundle else True
    net = acme_client.ClientNetwork(
        key, verify_ssl=verify,  # type: ignore[arg-type]  # requests takes a CA file too
        user_agent=USER_AGENT, timeout=30)
    adapter = _adapter(config.x509_strict)
    net.session.mount("https://", adapter)
    net.session.mount("http://", adapter)
    return net


def _adapter(x509_strict: bool | None) -> HTTPAdapter:
    from requests import PreparedRequest
    from requests.adapters import HTTPAdapter
    from urllib3.util.ssl_ import create_urllib3_context

    class BoundedAdapter(HTTPAdapter):
        """requests' adapter that reads each body within its bound, and, when
        ``x509_strict`` is set, a context whose only change is the strict flag."""

        def init_poolmanager(
            self, connections: int, maxsize: int, block: bool = False, **kwargs: object,
        ) -> None:
            if x509_strict is not None:
                context = create_urllib3_context()
                if x509_strict:
                    context.verify_flags |= ssl.VERIFY_X509_STRICT
                else:
                    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
                kwargs["ssl_context"] = context
            super().init_poolmanager(connections, maxsize, block, **kwargs)

        def send(self, request: PreparedRequest, stream: bool = False,
                 timeout: float | tuple[float | None, float | None] | None = None,
                 verify: bool | str = True, cert: str | tuple[str, str] | None = None,
                 proxies: dict[str, str] | None = None) -> Response:
            response = super().send(request, stream=True, timeout=timeout, verify=verify,
                                    cert=cert, proxies=proxies)
            if not stream:
                _read_bounded(response)
            return response

    return BoundedAdapter()


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
