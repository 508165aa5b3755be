"""The inventory tables of unattended renewal: ``acme``, ``dns`` and ``notify``.

The inventory loader calls :func:`parse_renewal` while it parses, so a
mistake is reported with its file and line like any other, and carries the
typed tables on each certificate (``CertificateSpec.acme``, ``.dns``,
``.renew_before_days``) and on the inventory (``Inventory.notify``). The keys
are described in :mod:`certfleet.acme.config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .inventory_checks import _check_keys, _check_secret, _Ctx, _host
from .model import NO_NOTIFY, NOTIFY_EVENTS, AcmeConfig, DnsConfig, NotifyConfig

__all__ = ["PROVIDERS", "TSIG_ALGORITHMS", "Renewal", "parse_renewal"]

PROVIDERS = ("rfc2136", "hook", "challtestsrv", "manual")  # and "lexicon:NAME"
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1",
                   "hmac-md5")
_ACME_KEYS = {"directory", "email", "eab_kid", "eab_hmac_key", "preferred_chain", "ca_bundle",
              "root_file", "reuse_key", "timeout", "staging_directory", "profile",
              "x509_strict"}
_ACME_SECRETS = ("eab_kid", "eab_hmac_key")
_DNS_KEYS = {"provider", "server", "tsig_name", "tsig_secret", "tsig_algorithm", "add",
             "remove", "resolvers", "propagation_timeout", "zone", "credentials", "url",
             "hook_timeout"}
_DNS_SECRETS = ("tsig_secret",)
_NOTIFY_KEYS = {"urls", "on", "state"}


def _path(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _check_table(
    ctx: _Ctx, table: Sequence[str], data: object, allowed: set[str], secrets: Sequence[str]
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ctx.error(table[:-1], table[-1], "must be a table", f"write [{'.'.join(table)}]")
    _check_keys(ctx, table, data, allowed)
    for key in secrets:
        if key in data:
            _check_secret(ctx, table, key, data[key])
    return data


def _string(ctx: _Ctx, table: Sequence[str], data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ctx.error(table, key, f"must be a non-empty string, not {value!r}",
                        f'write {key} = "..."')
    return value


def _required(ctx: _Ctx, table: Sequence[str], data: Mapping[str, Any], key: str,
              example: str) -> str:
    """The non-empty string ``key``, which the table must have (``example``: its value)."""
    value = _string(ctx, table, data, key)
    if value is None:
        raise ctx.error(table, None, f"has no {key}", f"add {key} = {example}")
    return value


def _paired(ctx: _Ctx, table: Sequence[str], data: Mapping[str, Any], keys: tuple[str, str],
            hint: str) -> None:
    """Both ``keys`` or neither: the one given without the other is named."""
    first, second = keys
    if (first in data) != (second in data):
        raise ctx.error(table, first if first in data else second,
                        f"{first} and {second} go together", hint)


def _number(ctx: _Ctx, table: Sequence[str], data: Mapping[str, Any], key: str,
            default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ctx.error(table, key, f"must be a positive number of seconds, not {value!r}",
                        f"write {key} = {int(default)}")
    return float(value)


def _parse_acme(ctx: _Ctx, name: str, data: Any, base: Path) -> AcmeConfig:
    table = ("certificates", name, "acme")
    data = _check_table(ctx, table, data, _ACME_KEYS, _ACME_SECRETS)
    directory = _required(ctx, table, data, "directory",
                          '"https://acme-v02.api.letsencrypt.org/directory"')
    if not directory.startswith(("https://", "http://")):
        raise ctx.error(table, "directory", f"{directory!r} is not an http(s) URL",
                        "write the ACME directory URL the CA publishes")
    _paired(ctx, table, data, ("eab_kid", "eab_hmac_key"),
            "give both (the key ID and the HMAC key the CA handed out)")
    reuse = data.get("reuse_key", False)
    if not isinstance(reuse, bool):
        raise ctx.error(table, "reuse_key", f"must be true or false, not {reuse!r}",
                        "write reuse_key = false")
    strict = data.get("x509_strict")
    if strict is not None and not isinstance(strict, bool):
        raise ctx.error(table, "x509_strict", f"must be true or false, not {strict!r}",
                        "write x509_strict = false")
    staging = _string(ctx, table, data, "staging_directory")
    return AcmeConfig(
        certificate=name,
        directory=directory,
        email=_string(ctx, table, data, "email"),
        eab_kid=data.get("eab_kid"),
        eab_hmac_key=data.get("eab_hmac_key"),
        preferred_chain=_string(ctx, table, data, "preferred_chain"),
        ca_bundle=_path(base, _string(ctx, table, data, "ca_bundle")),
        root_file=_path(base, _string(ctx, table, data, "root_file")),
        reuse_key=reuse,
        timeout=_number(ctx, table, data, "timeout", 300),
        staging_directory=staging,
        profile=_string(ctx, table, data, "profile"),
        x509_strict=strict,
    )


def _parse_dns(ctx: _Ctx, name: str, data: Any, base: Path) -> DnsConfig:
    table = ("certificates", name, "dns")
    data = _check_table(ctx, table, data, _DNS_KEYS, _DNS_SECRETS)
    provider = _required(ctx, table, data, "provider",
                         '"rfc2136" (or "lexicon:NAME", "hook", "manual")')
    if provider not in PROVIDERS and not (
        provider.startswith("lexicon:") and len(provider) > len("lexicon:")
    ):
        raise ctx.error(table, "provider", f"unknown DNS provider {provider!r}",
                        "use rfc2136, lexicon:NAME (e.g. lexicon:cloudflare), hook, "
                        "challtestsrv or manual")
    needs = {"rfc2136": ("server",), "hook": ("add", "remove"), "challtestsrv": ("url",)}
    for key in needs.get(provider, ()):
        if key not in data:
            raise ctx.error(table, None, f"provider {provider!r} needs {key}",
                            f"add {key} = \"...\" to [certificates.{name}.dns]")
    _paired(ctx, table, data, ("tsig_name", "tsig_secret"), "give both, or neither")
    algorithm = _string(ctx, table, data, "tsig_algorithm") or "hmac-sha256"
    if algorithm not in TSIG_ALGORITHMS:
        raise ctx.error(table, "tsig_algorithm", f"unknown TSIG algorithm {algorithm!r}",
                        "use one of " + ", ".join(TSIG_ALGORITHMS))
    resolvers = data.get("resolvers", [])
    if not isinstance(resolvers, list) or not all(
        isinstance(r, str) and r for r in resolvers
    ):
        raise ctx.error(table, "resolvers", f"must be a list of HOST[:PORT], not {resolvers!r}",
                        'write resolvers = ["10.0.0.53:53"]')
    for resolver in resolvers:
        _host(ctx, table, "resolvers", resolver, "HOST[:PORT] of a DNS resolver")
    for key in ("server", "zone"):  # host names: no space, no hidden character
        if isinstance(data.get(key), str) and data[key]:
            _host(ctx, table, key, data[key], "a DNS name or IP address")
    credentials = data.get("credentials")
    if credentials is not None:
        if not isinstance(credentials, dict):
            raise ctx.error(table, "credentials", "must be a table of secret references",
                            'write credentials = { auth_token = "env:CF_TOKEN" }')
        for key, value in credentials.items():
            _check_secret(ctx, table, "credentials", value)
            del key
    return DnsConfig(
        certificate=name,
        provider=provider,
        server=_string(ctx, table, data, "server"),
        tsig_name=_string(ctx, table, data, "tsig_name"),
        tsig_secret=data.get("tsig_secret"),
        tsig_algorithm=algorithm,
        add=_string(ctx, table, data, "add"),
        remove=_string(ctx, table, data, "remove"),
        resolvers=tuple(resolvers),
        propagation_timeout=_number(ctx, table, data, "propagation_timeout", 300),
        zone=_string(ctx, table, data, "zone"),
        credentials=dict(credentials) if credentials else None,
        url=_string(ctx, table, data, "url"),
        hook_timeout=_number(ctx, table, data, "hook_timeout", 120),
        base_dir=base,
    )


def _parse_notify(ctx: _Ctx, data: Any) -> NotifyConfig:
    table = ("notify",)
    data = _check_table(ctx, table, data, _NOTIFY_KEYS, ())
    urls = data.get("urls", [])
    if not isinstance(urls, list):
        raise ctx.error(table, "urls", "must be a list of secret references",
                        'write urls = ["env:CERTFLEET_NOTIFY_URL"]')
    for url in urls:
        # A notification URL carries its token: only references are taken.
        _check_secret(ctx, table, "urls", url)
    on = data.get("on", list(NOTIFY_EVENTS))
    if not isinstance(on, list) or any(item not in NOTIFY_EVENTS for item in on):
        raise ctx.error(table, "on", f"must list events among {', '.join(NOTIFY_EVENTS)}",
                        'write on = ["failure", "renewed", "expiring"]')
    return NotifyConfig(tuple(urls), tuple(on))


@dataclass(frozen=True)
class Renewal:
    """The renewal tables of an inventory, parsed and validated."""

    acme: Mapping[str, AcmeConfig]
    dns: Mapping[str, DnsConfig]
    renew_before_days: Mapping[str, int]
    notify: NotifyConfig


def parse_renewal(ctx: _Ctx, data: Mapping[str, Any]) -> Renewal:
    """Check every acme, dns and notify table of parsed TOML ``data``. Raises ConfigError."""
    base = Path(ctx.path).parent
    acme: dict[str, AcmeConfig] = {}
    dns: dict[str, DnsConfig] = {}
    days_before: dict[str, int] = {}
    certificates = data.get("certificates", {})
    for name, table in certificates.items() if isinstance(certificates, dict) else ():
        if not isinstance(table, dict):
            continue
        if "acme" in table:
            acme[name] = _parse_acme(ctx, name, table["acme"], base)
        if "dns" in table:
            dns[name] = _parse_dns(ctx, name, table["dns"], base)
        if "acme" in table and "dns" not in table:
            raise ctx.error(("certificates", name), None,
                            "has an acme table but no dns table",
                            f"add [certificates.{name}.dns] with a provider: certfleet "
                            "answers DNS-01 challenges")
        days = table.get("renew_before_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)
                                 or days < 1):
            raise ctx.error(("certificates", name), "renew_before_days",
                            f"must be a whole number of days >= 1, not {days!r}",
                            "write renew_before_days = 30")
        if days is not None:
            days_before[name] = days
    notify = _parse_notify(ctx, data["notify"]) if "notify" in data else NO_NOTIFY
    return Renewal(acme, dns, days_before, notify)
