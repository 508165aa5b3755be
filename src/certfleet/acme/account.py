"""One ACME account per directory and e-mail, kept in the state folder.

The account key and its URL live in ``STATE/acme/accounts/<id>.json``
(0600; ``<id>`` is a hash of directory and e-mail), next to the store's
database rather than in it, so that the store's schema stays the estate's.
An account the CA no longer knows is registered again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

from ..fsutil import write_private_file
from . import AcmeError
from .config import AcmeConfig
from .transport import USER_AGENT

if TYPE_CHECKING:
    from acme import messages
    from acme.client import ClientNetwork
    from josepy.jwk import JWK

    from .client import ClientWithReplaces

__all__ = ["USER_AGENT", "AcmeSession", "account_path", "open_session"]


def account_path(state_root: Path, directory: str, email: str | None) -> Path:
    digest = hashlib.sha256(f"{directory}\n{email or ''}".encode()).hexdigest()[:16]
    return state_root / "acme" / "accounts" / f"{digest}.json"


@dataclass
class AcmeSession:
    """A client bound to a registered account: ``client`` (ClientV2), ``key`` (JWK)."""

    client: ClientWithReplaces
    key: JWK
    directory: messages.Directory


class _SavedAccount(TypedDict):
    """The account file (0600): the CA's account URI and registration, and its key."""

    directory: str
    email: str | None
    uri: NotRequired[str]
    body: NotRequired[dict[str, object]]
    key: str


def problem_text(error: object) -> str:
    """An ACME problem document in words: type (without the URN prefix) and detail."""
    typ = str(getattr(error, "typ", "") or "").removeprefix("urn:ietf:params:acme:error:")
    detail = str(getattr(error, "detail", "") or "").strip()
    subs = getattr(error, "subproblems", None) or ()
    extra = "; ".join(
        f"{getattr(getattr(s, 'identifier', None), 'value', '?')}: {getattr(s, 'detail', '')}"
        for s in subs
    )
    text = f"{typ}: {detail}" if typ and detail else (detail or typ or str(error))
    return text + (f" ({extra})" if extra else "")


def _network(config: AcmeConfig, key: JWK) -> ClientNetwork:
    from .transport import client_network

    return client_network(config, key)


def _get_directory(config: AcmeConfig, net: ClientNetwork, url: str) -> messages.Directory:
    import requests
    from acme import client as acme_client
    from acme import errors as acme_errors
    from acme import messages

    from .transport import tls_failure

    try:
        return acme_client.ClientV2.get_directory(url, net)
    except (requests.RequestException, acme_errors.Error, messages.Error, ValueError) as exc:
        strict = tls_failure(config, url, exc)
        if strict is not None:
            raise strict from None
        raise AcmeError(
            f"cannot read the ACME directory {url}: {str(exc)[:300]}",
            hint="check the directory URL, the network, and ca_bundle for a private CA",
        ) from None


def open_session(
    config: AcmeConfig, state_root: Path, *, directory_url: str | None = None
) -> AcmeSession:
    """Connect to the directory and load or register the account. Raises AcmeError, ConfigError."""
    from acme import errors as acme_errors
    from acme import messages
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from josepy.jwa import ES256
    from josepy.jwk import JWKEC

    from ..secrets import resolve_secret
    from .client import ClientWithReplaces

    url = directory_url or config.directory
    path = account_path(state_root, url, config.email)
    saved: _SavedAccount | None = None
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
    if saved is not None:
        private = serialization.load_pem_private_key(saved["key"].encode(), None)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    key = JWKEC(key=private)
    net = _network(config, key)
    net.alg = ES256
    directory = _get_directory(config, net, url)
    client = ClientWithReplaces(directory, net)
    if saved is not None and saved.get("uri"):
        net.account = messages.RegistrationResource(
            uri=saved["uri"], body=messages.Registration.from_json(saved.get("body", {}))
        )
        return AcmeSession(client, key, directory)
    contact = (f"mailto:{config.email}",) if config.email else ()
    try:
        if config.eab_kid and config.eab_hmac_key:
            kid = resolve_secret(config.eab_kid, what=f"EAB key ID of {config.certificate!r}")
            hmac = resolve_secret(config.eab_hmac_key,
                                  what=f"EAB HMAC key of {config.certificate!r}")
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(), kid=kid, hmac_key=hmac,
                directory=directory,
            )
            registration = messages.NewRegistration.from_data(
                contact=contact, terms_of_service_agreed=True, external_account_binding=eab
            )
        else:
            if client.external_account_required():
                from ..errors import ConfigError

                raise ConfigError(
                    f"the ACME directory {url} requires external account binding",
                    hint=f"add eab_kid and eab_hmac_key (secret references) to "
                    f"[certificates.{config.certificate}.acme]: the CA hands them out",
                )
            registration = messages.NewRegistration.from_data(
                contact=contact, terms_of_service_agreed=True
            )
        regr = client.new_account(registration)
    except acme_errors.ConflictError as exc:  # the key is known: reuse that account
        regr = messages.RegistrationResource(uri=str(exc), body=messages.Registration())
        net.account = regr
    except messages.Error as exc:
        raise AcmeError(
            f"the CA refused to register an account at {url}: {problem_text(exc)}",
            hint="check the e-mail and, for a commercial CA, eab_kid and eab_hmac_key",
            problem=problem_text(exc),
        ) from None
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    record: _SavedAccount = {
        "directory": url, "email": config.email, "uri": regr.uri,
        "body": regr.body.to_json() if regr.body else {}, "key": pem.decode()}
    write_private_file(path, json.dumps(record, indent=2, default=str).encode())
    return AcmeSession(client, key, directory)
