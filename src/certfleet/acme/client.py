"""certbot's ``ClientV2`` with what it lacks: ``replaces`` in a new order (RFC 9773 §5).

``acme`` builds the new-order payload from the CSR alone; ARI asks a client
that renews to name the certificate it replaces, by its ARI identifier
(base64url AKI "." base64url serial), so that the CA can keep the renewal
out of rate limits and stop suggesting a renewal window for the old one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from acme import client as acme_client
from acme import messages
from josepy.json_util import field as jose_field

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["ClientWithReplaces", "NewOrderReplacing", "ari_cert_id", "directory_has"]


class NewOrderReplacing(messages.NewOrder):
    """A new-order payload with RFC 9773's ``replaces`` field."""

    replaces: str | None = jose_field("replaces", omitempty=True)


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """The ARI certificate identifier of ``cert`` (an x509.Certificate), RFC 9773 §4.1:
    base64url of the Authority Key Identifier's keyIdentifier, ".", base64url of the
    DER serial (signed, big-endian). None when the certificate has no Authority Key
    Identifier with a keyIdentifier (a factory or hand-made certificate): no ARI for it.
    """
    import base64

    from cryptography import x509

    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if not aki.key_identifier:
        return None
    serial = int(cert.serial_number)
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")

    return f"{b64(aki.key_identifier)}.{b64(serial_bytes)}"


def directory_has(directory: messages.Directory, field: str) -> bool:
    """Whether the ACME directory names ``field`` (``Directory`` has no ``in``)."""
    try:
        directory[field]
    except KeyError:
        return False
    return True


class ClientWithReplaces(acme_client.ClientV2):
    """``ClientV2`` whose :meth:`order` takes the identifiers and an optional ``replaces``."""

    def order(
        self,
        csr_pem: bytes,
        names: Sequence[str],
        *,
        replaces: str | None = None,
        profile: str | None = None,
    ) -> messages.OrderResource:
        """Place a new order for ``names`` (DNS identifiers), finalised later with ``csr_pem``."""
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
                       for name in names]
        fields: dict[str, Any] = {"identifiers": identifiers}
        if profile:
            fields["profile"] = profile
        if replaces and directory_has(self.directory, "renewalInfo"):
            fields["replaces"] = replaces
        payload = NewOrderReplacing(**fields)
        response = self._post(self.directory["newOrder"], payload)
        body = messages.Order.from_json(response.json())
        authorizations = [
            self._authzr_from_response(self._post_as_get(url), uri=url)
            for url in body.authorizations
        ]
        return messages.OrderResource(
            body=body, uri=response.headers.get("Location"),
            authorizations=authorizations, csr_pem=csr_pem,
        )
