"""A whole lab estate on loopback: one OVOC, N SBCs (one an HA pair) and a CA.

Every device starts serving the same old wildcard certificate (a few days
left), as an estate does before its yearly renewal. :class:`LabEstate`
writes an inventory for it, a secrets file (an env file, 0600) with the
generated passwords, and the lab CA's files; ``certfleet lab up`` and
``certfleet demo`` use it, and so do the tests and the benchmark.

SBCs: the management interface keeps the device's factory certificate
(context 0, trusted through the lab SBC CA file), and the wildcard lives in
the SIP-TLS context (1), which the inventory deploys and verifies. POSIX
only, like the rest of the lab.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NotRequired, TypedDict

from ..fsutil import write_file_atomic, write_private_file
from .ca import Issued, LabCA
from .ovoc import LabOvoc
from .sbc import LabSbc, LabSbcPair
from .tls import CertSlot, LabTLSListener

__all__ = ["LabEstate", "Spread", "seed_sbc_context"]

DOMAIN = "example.com"
UNLISTED_ROLE = "sip-forgotten"
WILDCARD = (f"*.{DOMAIN}", DOMAIN)
# A spread lab's one administrator password for every SBC (in lab.env).
SPREAD_SBC_PASSWORD = "CERTFLEET_LAB_SBC_PASSWORD"


class _SbcPlace(TypedDict, total=False):
    """Where a spread lab's SBC listens (keywords of ``LabSbc``; none: the default place)."""

    host: str
    ports: dict[str, int]


class _PairPlace(TypedDict, total=False):
    """Where a spread lab's HA pair listens (keywords of ``LabSbcPair``; none: the default)."""

    hosts: tuple[str, str]
    ports: dict[str, int]


class _OvocPlace(TypedDict, total=False):
    """Where a spread lab's OVOC listens (keywords of ``LabOvoc``; none: the default)."""

    host: str
    ssh_port: int
    https_port: int


class _ListenerLine(TypedDict):
    """A listener of the lab inventory: ``{ host = ..., port = ..., label = ... }``."""

    host: NotRequired[str]
    port: int
    label: str


class Spread:
    """Where a spread lab puts its devices: one loopback address each (127.0.0.0/8 is all
    loopback on Linux), the same ports on every address (``https``: SBC management and
    OVOC web; ``sip``; ``teams``; ``ssh``), as an estate's devices have."""

    ROLES = ("https", "sip", "teams", "ssh")

    def __init__(self, addresses: dict[str, str], unmanaged: str, ports: dict[str, int],
                 network: str = "") -> None:
        self.network = network
        self.addresses = addresses
        self.unmanaged = unmanaged
        self.ports = ports

    @classmethod
    def plan(cls, network: str, *, sbcs: int, ha: bool, ovoc: bool) -> Spread:
        """Addresses in ``network`` (in order: OVOC, the SBCs, the HA pair's two units, the
        unmanaged listener) and ports free on all of them. Raises ValueError."""
        import ipaddress

        net = ipaddress.ip_network(network, strict=False)
        if not net.is_loopback or net.version != 4:
            raise ValueError(f"--spread {network}: a spread lab needs a 127.x.y.z range")
        names = (["ovoc"] if ovoc else []) + [f"sbc{n}" for n in range(1, sbcs + 1)]
        if ha and sbcs:
            names[-1:] = [f"sbc{sbcs}-ha-a", f"sbc{sbcs}-ha-b"]
        hosts = [str(h) for h in net.hosts()] if net.num_addresses > 2 else [str(net[0])]
        if len(hosts) < len(names) + 1:
            raise ValueError(f"--spread {network} has {len(hosts)} addresses; the lab needs "
                             f"{len(names) + 1}")
        addresses = dict(zip(names, hosts, strict=False))
        unmanaged = hosts[len(names)]
        return cls(addresses, unmanaged, _free_ports([*addresses.values(), unmanaged],
                                                     len(cls.ROLES)), str(net))

    def sbc_args(self, name: str) -> _SbcPlace:
        return {"host": self.addresses[name], "ports": self._sbc_ports()}

    def pair_args(self, name: str) -> _PairPlace:
        return {"hosts": (self.addresses[f"{name}-a"], self.addresses[f"{name}-b"]),
                "ports": self._sbc_ports()}

    def ovoc_args(self) -> _OvocPlace:
        return {"host": self.addresses["ovoc"], "ssh_port": self.ports["ssh"],
                "https_port": self.ports["https"]}

    def _sbc_ports(self) -> dict[str, int]:
        return {"management": self.ports["https"], "sip": self.ports["sip"],
                "teams": self.ports["teams"]}


def _free_ports(hosts: list[str], count: int) -> dict[str, int]:
    """``count`` ports free on every host: each bound on all of them at once, then let go."""
    import socket

    for _ in range(50):
        held: list[socket.socket] = []
        ports: list[int] = []
        try:
            while len(ports) < count:
                first = socket.socket()
                held.append(first)
                first.bind((hosts[0], 0))
                port = int(first.getsockname()[1])
                for host in hosts[1:]:
                    other = socket.socket()
                    held.append(other)
                    other.bind((host, port))
                ports.append(port)
            return dict(zip(Spread.ROLES, ports, strict=True))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise ValueError("no ports free on every address of the spread lab")


def seed_sbc_context(sbc: LabSbc, issued: Issued, index: int) -> None:
    """Make context ``index`` of a lab SBC hold ``issued`` (saved too): an earlier renewal.

    The certificate, its key, and the CA's intermediates and root in the
    context's trusted store.
    """
    roots = [issued.pem(c) for c in issued.chain] + [issued.root_pem]
    sbc.seed_context(index, issued.leaf_pem, issued.key_pem("pkcs8"), roots)


def _env_name(device: str, what: str) -> str:
    return "CERTFLEET_LAB_" + device.upper().replace("-", "_") + "_" + what


class LabEstate:
    """The lab estate; see the module docstring.

    ``directory`` receives ``certfleet.toml``, ``lab.env`` (0600),
    ``lab-sbc-ca.pem`` and ``lab-ca.pem``. ``sbcs`` counts devices (the
    last one is an HA pair when ``ha``); ``latency`` is added to every SBC
    REST request; ``old_days`` is what the served certificate has left.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        sbcs: int = 3,
        ha: bool = True,
        ovoc: bool = True,
        latency: float = 0.0,
        old_days: int = 5,
        key_type: str = "rsa2048",
        ca: LabCA | None = None,
        spread: str | None = None,
    ) -> None:
        if sbcs < 0:
            raise ValueError(f"sbcs must be >= 0, not {sbcs!r}")
        self.spread = Spread.plan(spread, sbcs=sbcs, ha=ha, ovoc=ovoc) if spread else None
        where = self.spread
        self.directory = Path(directory)
        self.ca = ca or LabCA(name="certfleet Lab")
        self.key_type = key_type
        self.old = self.ca.issue(WILDCARD, key_type=key_type, days=old_days + 1)
        self.env: dict[str, str] = {}
        self.ovoc: LabOvoc | None = None
        self.sbcs: dict[str, LabSbc] = {}
        self.pairs: dict[str, LabSbcPair] = {}
        self.unmanaged: LabTLSListener | None = None
        self.unmanaged_slot: CertSlot | None = None
        # Spread: one administrator password for every SBC, as an estate often has.
        shared = secrets.token_urlsafe(12) if where else None
        if ovoc:
            self.ovoc = LabOvoc(
                self.old,
                acems_password=secrets.token_urlsafe(12),
                root_password=secrets.token_urlsafe(12),
                **(where.ovoc_args() if where else {}),
            )
        for number in range(1, sbcs + 1):
            if ha and number == sbcs and sbcs > 0:
                name = f"sbc{number}-ha"
                # Teams interfaces require a client certificate: this pair's on TLS 1.2.
                pair = LabSbcPair(name, latency=latency, teams_listener=True,
                                  tls_versions={2: 4}, password=shared,
                                  **(where.pair_args(name) if where else {}))
                seed_sbc_context(pair.active, self.old, 1)
                seed_sbc_context(pair.active, self.old, 2)
                self.pairs[name] = pair
            else:
                name = f"sbc{number}"
                if number == 1 and where:
                    # A Teams interface on TLS 1.3 (mutual TLS); the unlisted listener of
                    # a spread lab is a server of its own (self.unmanaged).
                    sbc = LabSbc(name, latency=latency, teams_listener=True,
                                 tls_versions={2: 8}, password=shared, **where.sbc_args(name))
                    seed_sbc_context(sbc, self.old, 2)
                elif number == 1:
                    # A Teams interface on TLS 1.3 (mutual TLS), and a SIP-TLS interface
                    # nobody listed in the inventory: 'certfleet scan' of the lab finds it.
                    sbc = LabSbc(name, latency=latency, teams_listener=True,
                                 tls_versions={2: 8},
                                 bindings={"management": 0, "sip": 1, UNLISTED_ROLE: 0})
                    seed_sbc_context(sbc, self.old, 2)
                else:
                    sbc = LabSbc(name, latency=latency, password=shared,
                                 **(where.sbc_args(name) if where else {}))
                seed_sbc_context(sbc, self.old, 1)
                self.sbcs[name] = sbc
        if where is not None:
            self.env[SPREAD_SBC_PASSWORD] = shared or ""
            # A TLS listener nobody manages: an intranet web server with a certificate
            # of its own, on an address of its own.
            other = LabCA(name="Intranet").issue(["intranet.example.net"], days=200)
            self.unmanaged_slot = CertSlot(other.leaf_pem, other.key_pem("pkcs8"),
                                           other.chain_pem)
            self.unmanaged = LabTLSListener(self.unmanaged_slot, host=where.unmanaged,
                                            port=where.ports["https"])
        self.started = False

    # ---- paths ----------------------------------------------------------------------

    @property
    def inventory_path(self) -> Path:
        return self.directory / "certfleet.toml"

    @property
    def env_path(self) -> Path:
        return self.directory / "lab.env"

    @property
    def sbc_ca_path(self) -> Path:
        return self.directory / "lab-sbc-ca.pem"

    @property
    def ca_path(self) -> Path:
        return self.directory / "lab-ca.pem"

    @property
    def ca_dir(self) -> Path:
        """The lab CA (certificates and keys), so ``certfleet lab sign`` issues from it."""
        return self.ca_dir_of(self.directory)

    @staticmethod
    def ca_dir_of(directory: Path) -> Path:
        return Path(directory) / "lab-ca"

    @property
    def device_names(self) -> list[str]:
        return (["ovoc"] if self.ovoc else []) + list(self.sbcs) + list(self.pairs)

    @property
    def tls_ports(self) -> list[int]:
        """The lab's service ports on 127.0.0.1 (OVOC HTTPS, SBC SIP-TLS and Teams),
        listed in the inventory or not: what a scan of the lab's range covers."""
        ports: list[int] = []
        if self.ovoc is not None:
            ports.append(self.ovoc.https_port)
        units = [*self.sbcs.values(), *(u for p in self.pairs.values() for u in p.units)]
        for unit in units:
            ports += [p for role, p in unit.listener_ports.items() if role != "management"]
        return sorted(ports)

    @property
    def management_ports(self) -> list[int]:
        """The SBCs' management HTTPS ports as the inventory lists them (each device's
        ``port``; an HA pair is managed through its active unit)."""
        return sorted([*(s.port for s in self.sbcs.values()),
                       *(p.active.port for p in self.pairs.values())])

    @property
    def unlisted_ports(self) -> list[int]:
        """The TLS ports served by a lab SBC but absent from the inventory."""
        return sorted(
            sbc.port_of(UNLISTED_ROLE) for sbc in self.sbcs.values()
            if UNLISTED_ROLE in sbc.listener_ports
        )

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> LabEstate:
        """Start every device and write the inventory, secrets and CA files."""
        try:
            if self.ovoc is not None:
                self.ovoc.start()
            for sbc in self.sbcs.values():
                sbc.start()
            for pair in self.pairs.values():
                pair.start()
            if self.unmanaged is not None:
                self.unmanaged.start()
        except BaseException:
            self.stop()
            raise
        self.started = True
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_files()
        return self

    def stop(self) -> None:
        """Stop everything that was started, in parallel (each server waits for its poll)."""
        from concurrent.futures import ThreadPoolExecutor

        def quietly(stop: Callable[[], object]) -> None:
            with contextlib.suppress(Exception):
                stop()

        stops: list[Callable[[], object]] = [p.stop for p in self.pairs.values()]
        stops += [s.stop for s in self.sbcs.values()]
        if self.ovoc is not None:
            stops.append(self.ovoc.stop)
        if self.unmanaged is not None and self.started:
            stops.append(self.unmanaged.stop)
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(quietly, stops))
        self.started = False

    def __enter__(self) -> LabEstate:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """Set the lab's secret variables in ``os.environ`` for the block, then restore."""
        saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # ---- files ----------------------------------------------------------------------

    def _write_files(self) -> None:
        sbc_ca = next(iter([*self.sbcs.values(), *(p.active for p in self.pairs.values())]), None)
        if sbc_ca is not None:
            write_file_atomic(self.sbc_ca_path, sbc_ca.ca_bundle_pem)
        write_file_atomic(self.ca_path, self.old.root_pem)
        self.ca.save(self.ca_dir)
        lines = [
            "# certfleet lab estate: devices on "
            + ("their own loopback addresses" if self.spread else "127.0.0.1")
            + ", started by 'certfleet lab up'.",
            "# Passwords are references to the variables in lab.env (next to this file).",
            "",
            "[settings]",
            "concurrency = 8",
            "",
            "[certificates.wildcard]",
            f'cn = "{WILDCARD[0]}"',
            f'sans = ["{WILDCARD[0]}", "{WILDCARD[1]}"]',
            f'key_type = "{self.key_type}"',
            "",
        ]
        if self.ovoc is not None:
            ovoc = self.ovoc
            self.env[_env_name("ovoc", "PASSWORD")] = ovoc.acems_password
            self.env[_env_name("ovoc", "ROOT_PASSWORD")] = ovoc.root_password
            self.env[_env_name("ovoc", "KEYSTORE_PASSWORD")] = secrets.token_urlsafe(12)
            lines += [
                "[devices.ovoc]",
                'kind = "ovoc"',
                f'address = "{ovoc.host}"',
                f'fqdn = "ovoc.{DOMAIN}"',
                f"ssh_port = {ovoc.ssh_port}",
                f"https_port = {ovoc.https_port}",
                'user = "acems"',
                f'password = "env:{_env_name("ovoc", "PASSWORD")}"',
                f'root_password = "env:{_env_name("ovoc", "ROOT_PASSWORD")}"',
                f'keystore_password = "env:{_env_name("ovoc", "KEYSTORE_PASSWORD")}"',
                f'ssh_host_key = "{ovoc.host_public_key_line}"',
                'certificate = "wildcard"',
                f"listeners = [{ovoc.https_port}]",
                'tags = ["core"]',
                "",
            ]
        for name, sbc in self.sbcs.items():
            var = _env_name(name, "PASSWORD")
            self.env[var] = sbc.password
            listed: list[_ListenerLine] = [{"port": sbc.sip_port, "label": "sip"}]
            if sbc.teams_port is not None:
                listed.append({"port": sbc.teams_port, "label": "teams"})
            lines += self._sbc_lines(name, sbc, var, listed,
                                     [1, 2] if sbc.teams_port is not None else [1], ["sbc"])
        for name, pair in self.pairs.items():
            var = _env_name(name, "PASSWORD")
            self.env[var] = pair.active.password
            listeners: list[_ListenerLine] = []
            for unit, role in ((pair.active, "a"), (pair.standby, "b")):
                ports = [(unit.sip_port, f"sip-{role}")]
                if unit.teams_port is not None:
                    ports.append((unit.teams_port, f"teams-{role}"))
                for port, label in ports:
                    line: _ListenerLine = {"port": port, "label": label}
                    if unit.host != pair.active.host:
                        line["host"] = unit.host
                    listeners.append(line)
            lines += self._sbc_lines(name, pair.active, var, listeners, [1, 2], ["sbc", "ha"])
        write_file_atomic(self.inventory_path, "\n".join(lines).encode())
        env_lines = ["# certfleet lab secrets: load with  set -a; . ./lab.env; set +a"]
        env_lines += [f"{name}={value}" for name, value in self.env.items()]
        write_private_file(self.env_path, ("\n".join(env_lines) + "\n").encode())

    def _sbc_lines(
        self,
        name: str,
        sbc: LabSbc,
        var: str,
        listeners: list[_ListenerLine],
        contexts: list[int],
        tags: list[str],
    ) -> list[str]:
        rendered = ", ".join(
            "{ " + (f'host = "{item["host"]}", ' if "host" in item else "")
            + f'port = {item["port"]}, label = "{item["label"]}"' + " }" for item in listeners
        )
        return [
            f"[devices.{name}]",
            'kind = "sbc"',
            f'address = "{sbc.host}"',
            f'fqdn = "{name}.{DOMAIN}"',
            f"port = {sbc.port}",
            f'user = "{sbc.user}"',
            f'password = "env:{var}"',
            f'ca_file = "{self.sbc_ca_path.name}"',
            f"tls_contexts = {contexts}",
            f"listeners = [{rendered}]",
            'certificate = "wildcard"',
            f"tags = {tags!r}".replace("'", '"'),
            "verify_timeout = 30",
            "",
        ]
