"""Relate what was found: listeners to devices and TLS contexts, HA units into one device,
served certificates into ``[certificates.NAME]``; then the commented inventory and JSON."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from cryptography import x509

from ..pki.model import cert_sha256
from ..pki.names import certificate_names
from .recognise import Credentials, Host

__all__ = ["Device", "Estate", "relate", "render_toml"]

ROOT_PASSWORD_ENV = "CERTFLEET_OVOC_ROOT_PASSWORD"
KEYSTORE_PASSWORD_ENV = "CERTFLEET_OVOC_KEYSTORE_PASSWORD"
SBC_PASSWORD_ENV = "CERTFLEET_SBC_PASSWORD"
SSH_PASSWORD_ENV = "CERTFLEET_OVOC_PASSWORD"


@dataclass
class Listener:
    host: str
    port: int
    label: str
    sha256: str
    mutual: bool
    context: int | None = None


@dataclass
class Device:
    name: str
    kind: str  # "sbc" or "ovoc"
    addresses: list[str]
    port: int  # SBC: management HTTPS; OVOC: SSH
    https_port: int | None = None
    tls_pin: str | None = None
    ssh_host_key: str | None = None
    listeners: list[Listener] = field(default_factory=list)
    contexts: dict[int, str] = field(default_factory=dict)
    management_context: int | None = None
    tls_contexts: list[int] = field(default_factory=list)
    certificate: str | None = None
    proven: bool = False
    logged_in: bool = False
    product: str | None = None
    version: str | None = None
    ha: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "kind": self.kind, "addresses": self.addresses,
            "port": self.port, "https_port": self.https_port, "tls_pin": self.tls_pin,
            "ssh_host_key": self.ssh_host_key, "proven": self.proven,
            "logged_in": self.logged_in, "product": self.product, "version": self.version,
            "ha": self.ha, "contexts": {str(k): v for k, v in self.contexts.items()},
            "management_context": self.management_context, "tls_contexts": self.tls_contexts,
            "certificate": self.certificate, "notes": self.notes,
            "listeners": [{"host": li.host, "port": li.port, "label": li.label,
                           "sha256": li.sha256, "mutual_tls": li.mutual,
                           "context": li.context} for li in self.listeners],
        }


@dataclass
class Certificate:
    name: str
    cn: str
    sans: list[str]
    sha256: str
    not_after: str
    devices: list[str]


class UnmanagedListener(TypedDict):
    """A listener of a host that is no device: TLS (subject, sha256) or SSH (banner, key)."""

    host: str
    port: int
    subject: NotRequired[str]
    sha256: NotRequired[str]
    mutual_tls: NotRequired[bool]
    ssh_banner: NotRequired[str | None]
    ssh_host_key: NotRequired[str | None]


@dataclass
class Estate:
    devices: list[Device]
    certificates: list[Certificate]
    unmanaged: list[UnmanagedListener]
    silent: dict[str, int]
    probed: int
    trust_on_first_use: bool
    credentials_sent_to: list[str]
    credentials: Credentials

    def to_dict(self) -> dict[str, object]:
        return {
            "devices": [d.to_dict() for d in self.devices],
            "certificates": [c.__dict__ for c in self.certificates],
            "unmanaged": self.unmanaged,
            "not_answered": dict(self.silent),
            "endpoints_probed": self.probed,
            "trust_on_first_use": self.trust_on_first_use,
            "credentials_sent_to": self.credentials_sent_to,
        }


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower()
    return (slug or "device")[:62]


def _device_name(cert: x509.Certificate | None, kind: str, address: str,
                 taken: set[str]) -> str:
    """A name from the management certificate's first DNS name (its first label), else
    kind and address."""
    base = ""
    if cert is not None:
        try:
            names = [n for n in certificate_names(cert) if not n.startswith("*")]
        except ValueError:
            names = []
        dns = [n for n in names if any(c.isalpha() for c in n) and n != "localhost"]
        if dns:
            base = _slug(dns[0].split(".")[0])
    if not base or base in taken:
        base = _slug(f"{kind}-{address.replace(':', '-').replace('.', '-')}")
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    taken.add(name)
    return name


def _cert_name(cn: str, taken: set[str]) -> str:
    base = _slug("wildcard-" + cn[2:] if cn.startswith("*.") else cn) or "certificate"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    taken.add(name)
    return name


def _cn(cert: x509.Certificate) -> str:
    try:
        values = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        values = []
    if values:
        return str(values[0].value)
    try:
        names = certificate_names(cert)
    except ValueError:
        names = []
    return names[0] if names else cert_sha256(cert)[:16]


def relate(hosts: list[Host], *, silent: dict[str, int], probed: int, tofu: bool,
           credentials: Credentials) -> Estate:
    """Devices (HA units grouped by their shared management certificate), listeners,
    certificates and unmanaged listeners from the recognised hosts."""
    taken: set[str] = set()
    devices: list[Device] = []
    leaves: dict[str, x509.Certificate] = {}
    unmanaged: list[UnmanagedListener] = []
    by_management: dict[str, list[Host]] = {}
    for host in hosts:
        if host.sbc is not None:
            by_management.setdefault(host.sbc.management_sha256, []).append(host)
    for units in by_management.values():
        # The active unit first (its status says so), else the lowest address.
        units.sort(key=lambda h: (h.sbc is not None and h.sbc.status.get("haUnitRole")
                                  == "standby", hosts.index(h)))
        devices.append(_sbc_device(units, taken, leaves))
    for host in hosts:
        if host.ovoc is not None:
            devices.append(_ovoc_device(host, taken, leaves))
        elif host.sbc is None:
            for seen in host.tls:
                assert seen.probe is not None and seen.probe.certificate is not None
                leaf = seen.probe.certificate
                unmanaged.append({"host": host.address, "port": seen.port,
                                  "subject": leaf.subject.rfc4514_string(),
                                  "sha256": cert_sha256(leaf),
                                  "mutual_tls": seen.probe.client_cert_requested})
            for seen in host.ssh:
                unmanaged.append({"host": host.address, "port": seen.port,
                                  "ssh_banner": seen.ssh_banner,
                                  "ssh_host_key": seen.ssh_host_key})
    certificates = _group_certificates(devices, leaves)
    sent = [where for host in hosts for where in host.credentials_sent]
    return Estate(devices, certificates, unmanaged, silent, probed, tofu, sent, credentials)


def _sbc_device(units: list[Host], taken: set[str],
                leaves: dict[str, x509.Certificate]) -> Device:
    first = units[0]
    facts = first.sbc
    assert facts is not None
    management = next(o.probe.certificate for o in first.tls
                      if o.port == facts.management_port and o.probe is not None)
    device = Device(_device_name(management, "sbc", first.address, taken), "sbc",
                    [u.address for u in units], facts.management_port,
                    tls_pin=facts.management_sha256, proven=facts.proven,
                    logged_in=facts.logged_in, ha=len(units) > 1)
    device.product = facts.status.get("productType")
    device.version = facts.status.get("versionID")
    if facts.status.get("highAvailability") == "Operational":
        device.ha = True
    if facts.error:
        device.notes.append(facts.error)
    ini = facts.ini
    if ini is not None:
        device.contexts = dict(ini.contexts)
        device.management_context = facts.management_context
    by_port = {s.tls_port: s for s in (ini.sip_interfaces if ini else [])}
    for unit in units:
        for seen in unit.tls:
            if seen.port == facts.management_port:
                continue
            probe = seen.probe
            assert probe is not None and probe.certificate is not None
            sha = cert_sha256(probe.certificate)
            leaves.setdefault(sha, probe.certificate)
            interface = by_port.get(seen.port)
            label = interface.name if interface else f"tls-{seen.port}"
            if len(units) > 1:
                label += "-" + "abcdefgh"[units.index(unit) % 8]
            context = ini.context_index(interface.context) if ini and interface else None
            device.listeners.append(Listener(
                unit.address, seen.port, label, sha,
                interface.mutual if interface else probe.client_cert_requested, context))
    return device


def _ovoc_device(host: Host, taken: set[str], leaves: dict[str, x509.Certificate]) -> Device:
    facts = host.ovoc
    assert facts is not None
    device = Device(_device_name(None, "ovoc", host.address, taken) if "ovoc" in taken
                    else _claim("ovoc", taken), "ovoc", [host.address], facts.ssh_port,
                    https_port=facts.https_port, ssh_host_key=facts.host_key,
                    proven=facts.proven, logged_in=facts.confirmed)
    if facts.error:
        device.notes.append(facts.error)
    elif facts.proven and facts.confirmed:
        device.notes.append(f"confirmed: {facts.ems_path}; staging folder "
                            + ("found" if facts.staging else "missing (created on deploy)"))
    for seen in host.tls:
        if seen.port != facts.https_port or seen.probe is None:
            continue
        assert seen.probe.certificate is not None
        sha = cert_sha256(seen.probe.certificate)
        leaves.setdefault(sha, seen.probe.certificate)
        device.listeners.append(Listener(host.address, seen.port, "https", sha, False))
    return device


def _claim(name: str, taken: set[str]) -> str:
    taken.add(name)
    return name


def _group_certificates(devices: list[Device],
                        leaves: dict[str, x509.Certificate]) -> list[Certificate]:
    """One certificate per leaf served on the devices' listeners; each device takes the one
    most of its listeners serve, and the SBC contexts that hold it."""
    taken: set[str] = set()
    names: dict[str, str] = {}
    certificates: dict[str, Certificate] = {}
    for device in devices:
        counts = Counter(li.sha256 for li in device.listeners)
        if not counts:
            device.notes.append("no listener serving a certificate besides management")
            continue
        sha = counts.most_common(1)[0][0]
        if sha not in names:
            leaf = leaves[sha]
            cn = _cn(leaf)
            try:
                sans = certificate_names(leaf)
            except ValueError:
                sans = [cn]
            names[sha] = _cert_name(cn, taken)
            certificates[sha] = Certificate(
                names[sha], cn, sans, sha,
                leaf.not_valid_after_utc.astimezone(dt.UTC).strftime("%Y-%m-%d"), [])
        device.certificate = names[sha]
        certificates[sha].devices.append(device.name)
        others = [li for li in device.listeners if li.sha256 != sha]
        for li in others:
            device.notes.append(f"{li.host}:{li.port} serves another certificate "
                                f"({li.sha256[:16]}…): not listed")
        device.listeners = [li for li in device.listeners if li.sha256 == sha]
        if device.kind == "sbc":
            device.tls_contexts = sorted({li.context for li in device.listeners
                                          if li.context is not None})
    return list(certificates.values())


def _q(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def render_toml(estate: Estate, *, when: str) -> str:
    """The inventory as commented TOML: env: references for secrets, pins marked as first
    seen by discovery."""
    creds = estate.credentials
    sbc_env = creds.sbc_password_env or SBC_PASSWORD_ENV
    ssh_env = creds.ssh_password_env or SSH_PASSWORD_ENV
    lines = [
        f"# certfleet inventory written by 'certfleet discover' on {when}.",
        "# Review it before use: every pin below was first seen by discovery; compare each",
        "# with the device (its web interface or console) before trusting it.",
        "# Passwords are env: references, never the passwords themselves.",
    ]
    if estate.trust_on_first_use:
        lines.append("# TRUST ON FIRST USE: credentials were sent to hosts no pin had proven.")
    unproven = [d.name for d in estate.devices if not d.logged_in]
    if unproven:
        lines += [
            "# Not logged in to (no credentials, or no pin proved them): "
            + ", ".join(unproven) + ".",
            "# Their TLS contexts are unknown: run discover again with --pins-from this file",
            "# and credentials before deploying to them.",
        ]
    lines += ["", "[settings]", "concurrency = 8", ""]
    for cert in estate.certificates:
        lines += [
            f"# Served by {', '.join(cert.devices)} (SHA-256 {cert.sha256}, "
            f"valid to {cert.not_after}).",
            f"[certificates.{cert.name}]",
            f"cn = {_q(cert.cn)}",
            "sans = [" + ", ".join(_q(s) for s in cert.sans) + "]",
            "",
        ]
    for device in estate.devices:
        if device.certificate is None:
            lines += [f"# {device.kind} {device.name} at {', '.join(device.addresses)}: "
                      "serves no certificate besides management; not listed.", ""]
            continue
        lines += _device_lines(device, sbc_env, ssh_env, creds)
    if estate.unmanaged:
        lines.append("# Listeners no device claims (unmanaged): add them, or switch them off.")
        for item in estate.unmanaged:
            what = (f"serves {item['subject']}" if "subject" in item
                    else f"SSH {item.get('ssh_banner')}")
            lines.append(f"#   {item['host']}:{item['port']} {what}")
        lines.append("")
    return "\n".join(lines)


def _device_lines(device: Device, sbc_env: str, ssh_env: str, creds: Credentials) -> list[str]:
    about = f"{device.product} {device.version}" if device.product else device.kind.upper()
    out = [f"# {about} at {', '.join(device.addresses)}"
           + (" (HA pair: one device, both units)" if len(device.addresses) > 1 else "")]
    out += [f"# {note}" for note in device.notes]
    out += [f"[devices.{device.name}]", f"kind = {_q(device.kind)}",
            f"address = {_q(device.addresses[0])}"]
    if device.kind == "sbc":
        out += [f"port = {device.port}", f"user = {_q(creds.sbc_user or 'Admin')}",
                f'password = "env:{sbc_env}"',
                f"tls_pin = {_q(device.tls_pin or '')}  # management certificate SHA-256: "
                "first seen by discovery"]
        if device.contexts:
            known = ", ".join(f"{i} {n!r}" for i, n in sorted(device.contexts.items()))
            web = device.management_context
            out.append(f"# TLS contexts: {known}; management uses "
                       f"{web if web is not None else '?'}")
        if device.tls_contexts:
            out.append(f"tls_contexts = {device.tls_contexts}")
        else:
            out.append("# tls_contexts = [?]  (unknown: discover with credentials)")
    else:
        out += [f"ssh_port = {device.port}", f"https_port = {device.https_port}",
                f"user = {_q(creds.ssh_user)}", f'password = "env:{ssh_env}"',
                f'root_password = "env:{ROOT_PASSWORD_ENV}"',
                f'keystore_password = "env:{KEYSTORE_PASSWORD_ENV}"',
                f"ssh_host_key = {_q(device.ssh_host_key or '')}  # host key SHA-256: "
                "first seen by discovery"]
    rendered = []
    for li in device.listeners:
        host = f"host = {_q(li.host)}, " if li.host != device.addresses[0] else ""
        rendered.append("{ " + f"{host}port = {li.port}, label = {_q(li.label)}" + " }")
    out.append("listeners = [" + ", ".join(rendered) + "]")
    mutual = [li.label for li in device.listeners if li.mutual]
    if mutual:
        out.append(f"# mutual TLS (a client certificate required): {', '.join(mutual)}")
    out += [f"certificate = {_q(device.certificate or '')}", ""]
    return out
