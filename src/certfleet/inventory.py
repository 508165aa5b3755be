"""The inventory: which certificates exist and which devices serve them.

An inventory is a TOML file (``certfleet.toml``). It names certificates
(``[certificates.NAME]``), devices (``[devices.NAME]``) and defaults
(``[defaults]``, ``[defaults.sbc]``, ``[defaults.ovoc]``). It never holds a
secret: passwords are references (``env:VAR``, ``keyring:SERVICE/USER``,
``file:PATH`` or ``prompt``) that :mod:`certfleet.secrets` resolves.

Errors name the file, the line and the key. :mod:`tomllib` gives no line
numbers for keys, so the line is found by scanning the text for the table
header and then the key; that is good enough for a hand-written file. Every
error of the file is reported at once (one line each), not only the first:
unknown keys and literal secrets are collected and parsing goes on; any other
problem ends the parsing of its certificate, device or table only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .inventory_checks import SECRET_SCHEMES as SECRET_SCHEMES
from .inventory_checks import _bounded, _expect, _host, _missing, _names, _port
from .inventory_checks import _check_keys as _check_keys
from .inventory_checks import _check_secret as _check_secret
from .inventory_checks import _Ctx as _Ctx
from .inventory_renewal import Renewal, parse_renewal
from .inventory_skeleton import SKELETON as SKELETON
from .inventory_text import decode
from .inventory_text import loads as toml_loads
from .kinds import INSTALLED, KeySpec, KindCatalog, KindSchema
from .model import LEGACY_SECRETS as _LEGACY_SECRETS
from .model import NO_NOTIFY, NotifyConfig
from .model import CertificateSpec as CertificateSpec
from .model import Device as Device
from .model import DeviceKind as DeviceKind
from .model import Listener as Listener
from .pki.keygen import KEY_TYPES
from .pki.names import is_ip_literal

__all__ = [
    "SECRET_KEYS",
    "SKELETON",
    "CertificateSpec",
    "Device",
    "Inventory",
    "StateConfig",
    "load_inventory",
    "load_state_config",
    "parse_inventory",
    "select_devices",
]

# Keys whose values are secrets: only references are accepted for them.
SECRET_KEYS = (
    "password",
    "root_password",
    "keystore_password",
    "passphrase",
    "key_passphrase",
    "secret",
    "token",
)

_CERT_KEYS = {"cn", "sans", "key_type", "organization", "key_passphrase", "description"}
# Unattended renewal (certfleet.inventory_renewal checks these tables).
_CERT_KEYS |= {"acme", "dns", "renew_before_days"}
_DEVICE_KEYS = {
    "kind",
    "address",
    "fqdn",
    "port",
    "ssh_port",
    "https_port",
    "user",
    "password",
    "root_password",
    "keystore_password",
    "ssh_host_key",
    "tls_pin",
    "ca_file",
    "tls_contexts",
    "listeners",
    "certificate",
    "tags",
    "profile",
    "verify_timeout",
    "description",
    "su_user",
    "staging_dir",
    "menu",
    "x509_strict",
}
_NOT_DEFAULTS = {"kind", "address", "fqdn", "listeners", "description"}
_DEFAULT_KEYS = _DEVICE_KEYS - _NOT_DEFAULTS
_TOP_KEYS = {"certificates", "devices", "defaults", "settings", "notify", "state"}
_STATE_KEYS = {"url", "password", "key"}
_SETTINGS_KEYS = {"concurrency", "expiry_warn_days"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# [settings] concurrency: devices deployed at once; past a few hundred a run only
# multiplies connections, threads and file handles.
MAX_CONCURRENCY = 256
# Day counts (expiry_warn_days, renew_before_days): ten years, past any certificate's life.
MAX_DAYS = 3650


@dataclass(frozen=True)
class StateConfig:
    """The inventory's ``[state]`` table: a shared store (PostgreSQL) and its secrets.

    ``password`` and ``key`` are secret references (``env:``, ``keyring:``,
    ``file:``); the URL in the file never holds a password.
    """

    url: str | None = None
    password: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Inventory:
    """A parsed, validated inventory. ``text`` is the exact file content."""

    path: Path
    text: str
    certificates: dict[str, CertificateSpec]
    devices: dict[str, Device]
    concurrency: int = 8
    expiry_warn_days: int = 30
    notify: NotifyConfig = NO_NOTIFY  # [notify]: no URLs when absent
    state: StateConfig = field(default_factory=StateConfig)

    def certificate(self, name: str) -> CertificateSpec:
        """The certificate named ``name``. Raises ConfigError."""
        try:
            return self.certificates[name]
        except KeyError:
            known = ", ".join(sorted(self.certificates)) or "none"
            raise ConfigError(
                f"{self.path}: no certificate named {name!r} (known: {known})",
                hint=f"add a [certificates.{name}] table to the inventory",
                path=str(self.path),
            ) from None

    def devices_using(self, certificate: str) -> list[Device]:
        return [d for d in self.devices.values() if d.certificate == certificate]

    def hosts_for(self, certificate: str) -> list[str]:
        """Every device FQDN that ``certificate`` must cover."""
        hosts: list[str] = []
        for device in self.devices_using(certificate):
            hosts.extend(h for h in device.hosts if h not in hosts)
        return hosts


_NO_DEVICES_HINT = (
    'add one table per device: [devices.sbc1] with kind = "sbc" and '
    'address = "sbc1.example.com" (certfleet init writes a commented example)'
)


def select_devices(inventory: Inventory, only: Sequence[str] = ()) -> list[Device]:
    """Devices matching any of ``only`` (a name or a tag); all when empty. Raises ConfigError,
    also when the inventory has no device at all (one of certificates only: csr, renew)."""
    if not inventory.devices:
        raise ConfigError(
            f"{inventory.path}: has no [devices] table: no device to work on",
            hint=_NO_DEVICES_HINT, path=str(inventory.path),
        )
    if not only:
        return list(inventory.devices.values())
    chosen: list[Device] = []
    for item in only:
        matched = [
            d for d in inventory.devices.values() if d.name == item or item in d.tags
        ]
        if not matched:
            raise ConfigError(
                f"--only {item!r} names no device and no tag of {inventory.path}",
                hint="devices: " + ", ".join(sorted(inventory.devices)),
            )
        chosen.extend(d for d in matched if d not in chosen)
    return chosen


def _parse_certificate(ctx: _Ctx, name: str, data: object) -> CertificateSpec:
    table = ("certificates", name)
    if not isinstance(data, dict):
        raise ctx.error(("certificates",), name, "must be a table", f"write [certificates.{name}]")
    if not _NAME_RE.match(name):
        raise ctx.error(
            table, None, f"name {name!r} is not a simple name", "use letters, digits, -_."
        )
    _check_keys(ctx, table, data, _CERT_KEYS)
    if "cn" not in data:
        raise _missing(ctx, table, data, _CERT_KEYS, "cn", "has no cn", 'add cn = "*.example.com"')
    cn = _host(ctx, table, "cn", data["cn"], "a common name", spaces=True)
    sans = _names(ctx, table, "sans", data.get("sans", [cn]))
    for san in sans:
        _host(ctx, table, "sans", san, "a DNS name or IP address")
    days = data.get("renew_before_days")
    if isinstance(days, int) and not isinstance(days, bool) and days > MAX_DAYS:
        raise ctx.error(table, "renew_before_days", f"is over {MAX_DAYS} days",
                        "write renew_before_days = 30")
    key_type = _expect(ctx, table, "key_type", data.get("key_type", "rsa2048"), str, "a key type")
    if key_type not in KEY_TYPES:
        raise ctx.error(
            table,
            "key_type",
            f"unknown key type {key_type!r}",
            "use one of " + ", ".join(KEY_TYPES),
        )
    org = data.get("organization")
    if org is not None:
        _expect(ctx, table, "organization", org, str, "a string")
    passphrase = data.get("key_passphrase")
    if passphrase is not None:
        passphrase = _check_secret(ctx, table, "key_passphrase", passphrase)
    return CertificateSpec(name, cn, sans, key_type, org, passphrase)


def _parse_listeners(
    ctx: _Ctx, table: Sequence[str], value: Any, address: str, fqdn: str | None
) -> tuple[Listener, ...]:
    _expect(ctx, table, "listeners", value, list, "a list")
    result: list[Listener] = []
    for item in value:
        label = ""
        server_name = fqdn
        if isinstance(item, dict):
            unknown = set(item) - {"address", "host", "port", "label", "server_name"}
            if unknown:
                raise ctx.error(
                    table, "listeners", f"unknown listener key {sorted(unknown)[0]!r}",
                    "a listener takes host, port, label and server_name",
                )
            host = item.get("host", item.get("address", address))
            port = item.get("port")
            label = str(item.get("label", ""))
            server_name = item.get("server_name", server_name)
            if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
                raise ctx.error(
                    table, "listeners", f"listener {item!r} needs a host and an integer port",
                    '{ host = "sbc1.example.com", port = 5061, label = "sip" }',
                )
            if server_name is not None:
                _host(ctx, table, "listeners", server_name, "a listener's server_name")
        elif isinstance(item, int) and not isinstance(item, bool):
            host, port = address, item
        elif isinstance(item, str):
            try:
                parsed = Listener.parse(item)
            except ValueError as exc:
                raise ctx.error(
                    table, "listeners", str(exc), 'write "HOST:PORT" or a port'
                ) from None
            host, port = parsed.host, parsed.port
        else:
            raise ctx.error(
                table, "listeners", f"listener {item!r} is not HOST:PORT, a port or a table",
                'write listeners = [443, "sbc1.example.com:5061"]',
            )
        _host(ctx, table, "listeners", host, "a listener's host name or IP")
        try:
            result.append(Listener(host, port, server_name=server_name, label=label))
        except ValueError as exc:
            raise ctx.error(table, "listeners", str(exc), "use a port 1-65535") from None
    if not result:
        raise ctx.error(table, "listeners", "is empty", "name at least one TLS listener to verify")
    return tuple(result)


def _parse_device(
    ctx: _Ctx,
    name: str,
    data: object,
    defaults: Mapping[str, Mapping[str, object]],
    certificates: Mapping[str, CertificateSpec],
    kinds: KindCatalog,
    raw_certs: object = None,
) -> Device:
    table = ("devices", name)
    if not isinstance(data, dict):
        raise ctx.error(("devices",), name, "must be a table", f"write [devices.{name}]")
    if not _NAME_RE.match(name):
        raise ctx.error(
            table, None, f"name {name!r} is not a simple name", "use letters, digits, -_."
        )
    kind, spec = _kind_of(ctx, table, data, kinds)
    allowed = _allowed_keys(spec)
    _check_keys(ctx, table, data, allowed)
    kind_defaults = defaults.get(kind, {})
    generic = {k: v for k, v in defaults.get("", {}).items() if k in allowed}
    merged: dict[str, Any] = {**generic, **kind_defaults, **data}
    sources = _secret_sources(name, kind, spec, data, kind_defaults, merged)
    options = _kind_options(ctx, table, spec.schema, merged, data, allowed)
    for key in SECRET_KEYS:
        if key in data:
            _check_secret(ctx, table, key, data[key])
    address, fqdn = _address_and_fqdn(ctx, table, data, merged, allowed)
    cert = _certificate_of(ctx, table, data, merged, allowed, certificates, raw_certs)
    key = spec.port_alias if spec.port_alias and spec.port_alias in merged else "port"
    port = _port(ctx, table, key, merged.get(key, spec.default_port))
    https_port = _port(ctx, table, "https_port", merged.get("https_port", 443))
    strings = _strings(ctx, table, merged)
    # Checked above (the device's own) or in [defaults]: reported once, at its line.
    secrets = {item: value if isinstance(value := merged.get(item), str) else None
               for item in ("password", "root_password", "keystore_password")}
    contexts = _tls_contexts(ctx, table, merged.get("tls_contexts", [0]))
    if "listeners" in merged:
        listeners = _parse_listeners(ctx, table, merged["listeners"], address, fqdn)
    else:
        default = https_port if spec.listener_port == "https_port" else port
        listeners = (Listener(address, default, server_name=fqdn),)
    tags = _names(ctx, table, "tags", merged.get("tags", []))
    profile = _expect(ctx, table, "profile", merged.get("profile", {}), dict,
                      "a table of profile overrides")
    menu = _expect(ctx, table, "menu", merged.get("menu", {}), dict,
                   "a table of EmsServerManager menu settings")
    x509_strict = merged.get("x509_strict")
    if x509_strict is not None:
        _expect(ctx, table, "x509_strict", x509_strict, bool, "true or false")
    return Device(
        name=name,
        kind=kind,
        address=address,
        certificate=cert,
        port=port,
        listeners=listeners,
        fqdn=fqdn,
        https_port=https_port,
        user=strings["user"],
        password=secrets["password"],
        root_password=secrets["root_password"],
        keystore_password=secrets["keystore_password"],
        ssh_host_key=strings["ssh_host_key"],
        tls_pin=strings["tls_pin"],
        ca_file=strings["ca_file"],
        tls_contexts=contexts,
        tags=tags,
        profile=dict(profile),
        verify_timeout=_verify_timeout(ctx, table, merged.get("verify_timeout", 120.0)),
        description=strings["description"] or "",
        su_user=strings["su_user"],
        staging_dir=strings["staging_dir"],
        menu=dict(menu),
        x509_strict=x509_strict,
        options=options,
        secret_sources=sources,
    )


def _secret_sources(name: str, kind: str, spec: KindSchema, data: Mapping[str, object],
                    kind_defaults: Mapping[str, object], merged: Mapping[str, object],
                    ) -> dict[str, str]:
    """Secret key -> the table that gives it (``devices.NAME``, ``defaults.KIND``, ``defaults``)."""
    return {
        key: f"devices.{name}" if key in data
        else f"defaults.{kind}" if key in kind_defaults else "defaults"
        for key in (*_LEGACY_SECRETS, *(k for k, v in spec.schema.items() if v.type == "secret"))
        if key in merged
    }


def _kind_of(ctx: _Ctx, table: Sequence[str], data: Mapping[str, object],
             kinds: KindCatalog) -> tuple[str, KindSchema]:
    """The device's ``kind``, one of ``kinds``, and its schema."""
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in kinds.names():
        raise ctx.error(
            table, "kind" if "kind" in data else None,
            f"kind must be one of {', '.join(kinds.names())}, not {kind!r}",
            'write kind = "sbc" (or "ovoc", "sftp"...)',
        )
    try:
        return kind, kinds.get(kind)
    except ConfigError as exc:
        raise ctx.error(table, "kind", exc.message, exc.hint or "") from None


def _address_and_fqdn(ctx: _Ctx, table: Sequence[str], data: Mapping[str, object],
                      merged: Mapping[str, object], allowed: set[str]) -> tuple[str, str | None]:
    """``address`` and ``fqdn`` (the address when it is a name and no fqdn is given)."""
    if "address" not in merged:
        raise _missing(ctx, table, data, allowed, "address", "has no address",
                       f'add address = "{table[-1]}.example.com" (its DNS name or IP address)')
    address = _host(ctx, table, "address", merged["address"], "its DNS name or IP address")
    fqdn = merged.get("fqdn")
    if fqdn is not None:
        return address, _host(ctx, table, "fqdn", fqdn, "the DNS name the certificate covers")
    return address, None if is_ip_literal(address) else address


def _certificate_of(
    ctx: _Ctx, table: Sequence[str], data: Mapping[str, object], merged: dict[str, Any],
    allowed: set[str], certificates: Mapping[str, CertificateSpec], raw_certs: object,
) -> str:
    """The device's ``certificate``: the only one declared when it names none."""
    declared = list(raw_certs) if isinstance(raw_certs, dict) else list(certificates)
    if len(declared) == 1 and "certificate" not in merged:
        merged["certificate"] = declared[0]
    if "certificate" not in merged:
        example = sorted(declared)[0] if declared else "wildcard"
        raise _missing(ctx, table, data, allowed, "certificate", "names no certificate",
                       f'add certificate = "{example}"')
    cert = _expect(ctx, table, "certificate", merged["certificate"], str, "a certificate name")
    if cert not in certificates and cert not in declared:
        known = ", ".join(sorted(declared)) or "none"
        raise ctx.error(
            table, "certificate", f"no certificate named {cert!r} (known: {known})",
            f"add [certificates.{cert}] or fix the name",
        )
    return str(cert)


def _strings(ctx: _Ctx, table: Sequence[str], merged: Mapping[str, object]
             ) -> dict[str, str | None]:
    """The device's plain string settings (None when not given)."""
    strings: dict[str, str | None] = {}
    for item in ("user", "ssh_host_key", "tls_pin", "ca_file", "description", "su_user",
                 "staging_dir"):
        value = merged.get(item)
        strings[item] = None if value is None else _expect(ctx, table, item, value, str,
                                                           "a string")
    return strings


def _tls_contexts(ctx: _Ctx, table: Sequence[str], value: object) -> tuple[int, ...]:
    """``tls_contexts``: TLS context numbers >= 0."""
    contexts = _expect(ctx, table, "tls_contexts", value, list, "a list of TLS context numbers")
    for item in contexts:
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise ctx.error(
                table, "tls_contexts", f"TLS context {item!r} is not a number >= 0",
                "write tls_contexts = [0, 1]",
            )
    return tuple(contexts)


def _verify_timeout(ctx: _Ctx, table: Sequence[str], value: object) -> float:
    """``verify_timeout``: seconds > 0."""
    timeout = _expect(ctx, table, "verify_timeout", value, (int, float), "a number of seconds")
    if not timeout > 0:  # nan and inf are refused where they are written
        raise ctx.error(table, "verify_timeout", f"{timeout!r} is not a number of seconds > 0",
                        "write verify_timeout = 120")
    return float(timeout)


def _kind_options(
    ctx: _Ctx, table: Sequence[str], schema: Mapping[str, KeySpec],
    merged: Mapping[str, object], data: Mapping[str, object], allowed: set[str],
) -> dict[str, object]:
    """The values of the kind's own keys, checked against its schema (KeySpec)."""
    options: dict[str, object] = {}
    for key, spec in schema.items():
        if key not in merged:
            if spec.required:
                raise _missing(ctx, table, data, allowed, key, f"has no {key}",
                               f"add {key} = <{spec.what}>")
            continue
        value = merged[key]
        if spec.type == "secret":
            options[key] = _check_secret(ctx, table, key, value)
            continue
        if not spec.accepts(value):
            raise ctx.error(table, key, f"must be {spec.what}, not {value!r}",
                            f"write {key} = <{spec.what}>")
        options[key] = tuple(value) if isinstance(value, list) else value
    return options


def _allowed_keys(spec: KindSchema) -> set[str]:
    """The keys a device of kind ``spec`` may have."""
    return _DEVICE_KEYS | set(spec.schema) | ({spec.port_alias} if spec.port_alias else set())


def _kind_keys(kinds: KindCatalog) -> set[str]:
    """The keys of every registered kind's schema (a ``[defaults]`` key may be any)."""
    keys: set[str] = set()
    for name in kinds.names():
        try:
            spec = kinds.get(name)
        except ConfigError:
            continue  # a broken plugin is named when a device uses it
        keys |= _allowed_keys(spec) - _DEVICE_KEYS
    return keys


def parse_inventory(
    text: str, path: Path | str = "certfleet.toml", kinds: KindCatalog = INSTALLED
) -> Inventory:
    """Parse and validate inventory ``text``. Raises ConfigError naming file, line and key.

    ``kinds``: the device kinds it may name (their keys and secrets), by default
    the installed ones."""
    path = Path(path)
    ctx = _Ctx(path, text, collect=True)
    data, non_finite = toml_loads(text, path)
    for table, key in non_finite:
        ctx.record(ctx.error(table, key, "is nan or inf, not a number",
                             f"write {key} = <a finite number, e.g. 30>"))
    _check_keys(ctx, (), data, _TOP_KEYS)
    concurrency, warn_days = _settings(ctx, data.get("settings", {}))
    defaults = _defaults(ctx, data.get("defaults", {}), kinds)
    certificates: dict[str, CertificateSpec] = {}
    devices: dict[str, Device] = {}
    if "devices" not in data and "certificates" not in data:
        ctx.record(ConfigError(
            f"{path}: has no [devices] table: no device to manage",
            hint=_NO_DEVICES_HINT, path=str(path),
        ))
    for top, kind in (("certificates", "a table of certificates"),
                      ("devices", "a table of devices")):
        raw = data.get(top, {})
        try:
            _expect(ctx, (), top, raw, dict, kind)
        except ConfigError as exc:
            ctx.record(exc)
            continue
        for name, value in raw.items():
            try:
                if top == "certificates":
                    certificates[name] = _parse_certificate(ctx, name, value)
                else:
                    devices[name] = _parse_device(ctx, name, value, defaults, certificates,
                                                  kinds, raw_certs=data.get("certificates", {}))
            except ConfigError as exc:
                ctx.record(exc)
    renewal = Renewal({}, {}, {}, NO_NOTIFY)
    try:
        renewal = parse_renewal(ctx, data)
    except ConfigError as exc:
        ctx.record(exc)
    state = StateConfig()
    try:
        state = _parse_state(ctx, data.get("state", {}))
    except ConfigError as exc:
        ctx.record(exc)
    ctx.raise_collected()
    certificates = {
        name: replace(spec, acme=renewal.acme.get(name), dns=renewal.dns.get(name),
                      renew_before_days=renewal.renew_before_days.get(name))
        for name, spec in certificates.items()
    }
    return Inventory(path, text, certificates, devices, concurrency, warn_days,
                     notify=renewal.notify, state=state)


def _settings(ctx: _Ctx, settings: object) -> tuple[int, int]:
    """``[settings]``: (concurrency, expiry_warn_days); errors recorded, defaults kept."""
    concurrency, warn_days = 8, 30
    table: Mapping[str, object] = {}
    try:
        table = _expect(ctx, (), "settings", settings, dict, "a table")
        _check_keys(ctx, ("settings",), table, _SETTINGS_KEYS)
    except ConfigError as exc:
        ctx.record(exc)
        table = {}
    try:
        concurrency = _bounded(ctx, ("settings",), "concurrency", table.get("concurrency", 8),
                               1, MAX_CONCURRENCY, "devices at once", 8)
    except ConfigError as exc:
        ctx.record(exc)
    try:
        warn_days = _bounded(ctx, ("settings",), "expiry_warn_days",
                             table.get("expiry_warn_days", 30), 0, MAX_DAYS, "days", 30)
    except ConfigError as exc:
        ctx.record(exc)
    return concurrency, warn_days


def _defaults(ctx: _Ctx, raw: object, kinds: KindCatalog) -> dict[str, dict[str, object]]:
    """``[defaults]`` and ``[defaults.KIND]``: kind name ("" for every kind) -> key -> value."""
    defaults: dict[str, dict[str, object]] = {"": {}}
    raw_defaults: Mapping[str, object] = {}
    try:
        raw_defaults = _expect(ctx, (), "defaults", raw, dict, "a table")
    except ConfigError as exc:
        ctx.record(exc)
    kind_set = set(kinds.names())
    for key, value in raw_defaults.items():
        try:
            if key in kind_set:
                defaults[key] = _kind_defaults(ctx, key, value, kinds)
            else:
                if key not in _DEFAULT_KEYS:
                    _check_keys(ctx, ("defaults",), {key: value},
                                _DEFAULT_KEYS | kind_set | _kind_keys(kinds))
                if key in SECRET_KEYS:
                    _check_secret(ctx, ("defaults",), key, value)
                defaults[""][key] = value
        except ConfigError as exc:
            ctx.record(exc)
    return defaults


def _kind_defaults(ctx: _Ctx, kind: str, value: object, kinds: KindCatalog) -> dict[str, object]:
    """``[defaults.KIND]``: the keys a device of ``kind`` takes, secrets as references."""
    table = _expect(ctx, ("defaults",), kind, value, dict, "a table")
    try:
        spec = kinds.get(kind)
    except ConfigError as exc:
        raise ctx.error(("defaults", kind), None, exc.message, exc.hint or "") from None
    _check_keys(ctx, ("defaults", kind), table, _allowed_keys(spec) - _NOT_DEFAULTS)
    for secret in SECRET_KEYS:
        if secret in table:
            _check_secret(ctx, ("defaults", kind), secret, table[secret])
    return dict(table)


def _parse_state(ctx: _Ctx, data: object) -> StateConfig:
    """The ``[state]`` table: ``url`` (postgresql://USER@HOST/DB), ``password``, ``key``."""
    from urllib.parse import urlsplit

    table = ("state",)
    state: Mapping[str, object] = _expect(ctx, (), "state", data, dict, "a table")
    _check_keys(ctx, table, state, _STATE_KEYS)
    url = state.get("url")
    if url is not None:
        url = _expect(ctx, table, "url", url, str, "a postgresql:// URL")
        try:
            parts = urlsplit(url)
            has_password = parts.password is not None
        except ValueError:
            raise ctx.error(table, "url", "is not a URL", 'write url = "postgresql://USER@HOST/DB"'
                            ) from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ctx.error(table, "url", "must be a postgresql:// URL",
                            'write url = "postgresql://USER@HOST/DB" (or leave [state] out for '
                            "the SQLite store in the state folder)")
        if has_password or re.search(r"(?i)(^|[?&])password=", parts.query):
            # Never echo the URL: it holds the password.
            raise ctx.error(table, "url", "holds a password; the inventory only takes references",
                            'remove it from the URL and write password = "env:VAR" (or '
                            '"keyring:SERVICE/USER", "file:PATH")')
    secrets = {key: _check_secret(ctx, table, key, state[key])
               for key in ("password", "key") if key in state}
    return StateConfig(url, secrets.get("password"), secrets.get("key"))


def load_state_config(path: Path | str) -> StateConfig:
    """Only the ``[state]`` table of the inventory at ``path`` (none: a missing file or table).

    For the commands that read the store without the devices (history,
    unlock). Raises ConfigError when the table itself is wrong.
    """
    path = Path(path)
    try:
        text = decode(path.read_bytes(), path)
        data, _ = toml_loads(text, path)
    except (OSError, ConfigError):  # the command that loads the inventory says what is wrong
        return StateConfig()
    if "state" not in data:
        return StateConfig()
    ctx = _Ctx(path, text, collect=True)
    try:
        state = _parse_state(ctx, data["state"])
    except ConfigError as exc:
        ctx.record(exc)
    ctx.raise_collected()
    return state


def load_inventory(path: Path | str, kinds: KindCatalog = INSTALLED) -> Inventory:
    """Read and validate the inventory at ``path``. Raises ConfigError.

    ``kinds``: the device kinds it may name, by default the installed ones."""
    path = Path(path)
    try:
        text = decode(path.read_bytes(), path)
    except FileNotFoundError:
        raise ConfigError(
            f"inventory {str(path)!r} does not exist",
            hint="run 'certfleet init' to write one, or pass --inventory FILE",
            path=str(path),
        ) from None
    except OSError as exc:
        raise ConfigError.from_os_error(
            "read inventory", path, exc, hint="check the path and its permissions"
        ) from None
    return parse_inventory(text, path, kinds)
