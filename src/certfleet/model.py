"""The inventory's values as frozen data, below everything that reads or uses them.

Nothing here imports anything above :mod:`certfleet.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NOTIFY_EVENTS",
    "NO_NOTIFY",
    "AcmeConfig",
    "CertificateSpec",
    "Device",
    "DeviceKind",
    "DnsConfig",
    "Listener",
    "NotifyConfig",
]

#: The events ``[notify] on`` may name.
NOTIFY_EVENTS = ("failure", "renewed", "expiring")

# A registered kind's name (certfleet.kinds): "ovoc", "sbc", "sftp" or a plugin's.
DeviceKind = str
#: The secret keys that are fields of :class:`Device` (a kind's own are in its options).
LEGACY_SECRETS = ("password", "root_password", "keystore_password")


@dataclass(frozen=True)
class AcmeConfig:
    """``[certificates.NAME.acme]``: the CA's directory and the account to order with."""

    certificate: str
    directory: str
    email: str | None = None
    eab_kid: str | None = None  # secret reference
    eab_hmac_key: str | None = None  # secret reference
    preferred_chain: str | None = None
    ca_bundle: Path | None = None
    root_file: Path | None = None
    reuse_key: bool = False
    timeout: float = 300.0
    staging_directory: str | None = None
    profile: str | None = None
    # Strict X.509 checks (VERIFY_X509_STRICT) of the ACME server's certificate:
    # None keeps Python's default (strict from 3.13 on), False clears only them.
    x509_strict: bool | None = None


@dataclass(frozen=True)
class DnsConfig:
    """``[certificates.NAME.dns]``: how TXT records are published and checked."""

    certificate: str
    provider: str
    server: str | None = None
    tsig_name: str | None = None
    tsig_secret: str | None = None  # secret reference
    tsig_algorithm: str = "hmac-sha256"
    add: str | None = None
    remove: str | None = None
    resolvers: tuple[str, ...] = ()
    propagation_timeout: float = 300.0
    zone: str | None = None
    credentials: Mapping[str, str] | None = None  # lexicon: option -> secret reference
    url: str | None = None  # challtestsrv management URL
    hook_timeout: float = 120.0
    base_dir: Path = Path()


@dataclass(frozen=True)
class NotifyConfig:
    """``[notify]``: apprise URLs (secret references) and the events to tell."""

    urls: tuple[str, ...] = ()
    on: tuple[str, ...] = NOTIFY_EVENTS


@dataclass(frozen=True)
class Listener:
    """A TLS endpoint of a device: management HTTPS, SIP over TLS..."""

    host: str
    port: int
    server_name: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ValueError(f"port must be 1-65535, not {self.port!r}")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, label: str = "") -> Listener:
        """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6). Raises ValueError."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listener must be HOST:PORT, not {text!r}")
        return cls(host.strip("[]"), int(port), label=label)


@dataclass(frozen=True)
class CertificateSpec:
    """A certificate the estate uses: its names and the key type to generate."""

    name: str
    cn: str
    sans: tuple[str, ...]
    key_type: str = "rsa2048"
    organization: str | None = None
    key_passphrase: str | None = None  # a secret reference: encrypts the key in the store
    # Unattended renewal: [certificates.NAME.acme], [certificates.NAME.dns], renew_before_days.
    acme: AcmeConfig | None = None
    dns: DnsConfig | None = None
    renew_before_days: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """CN and SANs without duplicates, CN first."""
        return tuple(dict.fromkeys((self.cn, *self.sans)))


@dataclass(frozen=True)
class Device:
    """One device of the estate, as the inventory describes it.

    ``port`` is the management port: HTTPS (REST) for an SBC, SSH for OVOC.
    ``listeners`` are the TLS endpoints to verify; ``fqdn`` is the name the
    certificate must cover (defaults to ``address`` when that is a name).
    """

    name: str
    kind: DeviceKind
    address: str
    certificate: str
    port: int
    listeners: tuple[Listener, ...]
    fqdn: str | None = None
    https_port: int = 443
    user: str | None = None
    password: str | None = None
    root_password: str | None = None
    keystore_password: str | None = None  # OVOC: protects the PKCS#12/JKS it builds
    ssh_host_key: str | None = None
    tls_pin: str | None = None
    ca_file: str | None = None
    tls_contexts: tuple[int, ...] = (0,)
    tags: tuple[str, ...] = ()
    profile: Mapping[str, Any] = field(default_factory=dict)
    verify_timeout: float = 120.0
    description: str = ""
    su_user: str | None = None  # OVOC: whom su becomes to run EmsServerManager (root)
    staging_dir: str | None = None  # OVOC: the folder EmsServerManager imports from
    menu: Mapping[str, Any] = field(default_factory=dict)  # OVOC: menu labels on this firmware
    x509_strict: bool | None = None  # SBC + ca_file: strict X.509 checks (None: Python's default)
    # The keys of the kind's own schema (certfleet.drivers.registry.KeySpec), validated.
    options: Mapping[str, Any] = field(default_factory=dict)
    # Secret key -> the table it is written in ("devices.NAME", "defaults.KIND", "defaults").
    secret_sources: Mapping[str, str] = field(default_factory=dict)

    def secret_keys(self) -> tuple[str, ...]:
        """The keys holding secret references on this device."""
        return tuple(self.secret_sources)

    def secret_ref(self, key: str) -> str | None:
        """The reference written for secret ``key`` (``env:VAR``, ``prompt``...), or None."""
        value = getattr(self, key) if key in LEGACY_SECRETS else self.options.get(key)
        return value if isinstance(value, str) else None

    def secret_source(self, key: str) -> str:
        """The inventory table that gives secret ``key`` (``prompt`` asks once per table)."""
        return self.secret_sources.get(key, f"devices.{self.name}")

    @property
    def hosts(self) -> tuple[str, ...]:
        """The names the certificate must cover for this device."""
        return (self.fqdn,) if self.fqdn else ()


#: The ``[notify]`` of an inventory without one: no URLs, no events.
NO_NOTIFY = NotifyConfig((), ())
