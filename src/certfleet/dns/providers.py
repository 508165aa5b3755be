"""Publish and remove ``_acme-challenge`` TXT records, one provider per way of doing it.

Every provider takes the whole list of records at once: a wildcard and its
apex share one name (``_acme-challenge.example.com``) and both values must
be served together. ``remove`` is called whatever happened, and removes
only what this run added.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import ConfigError, DnsError
from ..model import DnsConfig
from .records import TxtRecord as TxtRecord

if TYPE_CHECKING:
    import dns.name
    import dns.update

__all__ = ["DnsProvider", "TxtRecord", "make_provider", "zone_for"]

_OUTPUT_LIMIT = 2000


class DnsProvider(Protocol):
    """Adds and removes TXT records. Both raise DnsError."""

    def add(self, records: Sequence[TxtRecord]) -> None: ...

    def remove(self, records: Sequence[TxtRecord]) -> None: ...


def _secret(reference: str | None, what: str) -> str | None:
    from ..secrets import resolve_secret

    return resolve_secret(reference, what=what) if reference else None


def zone_for(name: str, config: DnsConfig) -> str:
    """The zone that holds ``name``: the configured one, the SOA found by DNS, or its parent.

    The SOA lookup asks the configured resolvers (or the system's) and
    walks up from ``name``; when nothing answers, the last two labels are
    taken, which is right for most company domains.
    """
    zone = (config.zone or "").rstrip(".")
    if zone and (name == zone or name.endswith("." + zone)):
        return zone  # a CNAME target outside the configured zone is looked up instead
    try:
        import dns.exception
        import dns.resolver

        from .propagation import resolver_for

        resolver = resolver_for(config.resolvers)
        labels = name.rstrip(".").split(".")
        for start in range(1, len(labels) - 1):
            candidate = ".".join(labels[start:])
            try:
                resolver.resolve(candidate, "SOA", lifetime=3.0)
                return candidate
            except dns.exception.DNSException:
                continue
    except Exception:  # no resolver configured on this machine: fall back
        pass
    return ".".join(name.rstrip(".").split(".")[-2:])


class HookProvider:
    """Runs the ``add`` / ``remove`` scripts once per record.

    Each gets ``CERTFLEET_DNS_NAME`` (no trailing dot), ``CERTFLEET_DNS_VALUE``
    and ``CERTFLEET_DNS_ZONE`` in its environment; a non-zero exit or a
    timeout is a failure whose message quotes the end of its output.
    """

    def __init__(self, config: DnsConfig) -> None:
        assert config.add is not None and config.remove is not None
        self.add_command = self._argv(config.add, config.base_dir)
        self.remove_command = self._argv(config.remove, config.base_dir)
        self.timeout = config.hook_timeout

    @staticmethod
    def _argv(command: str, base: Path) -> list[str]:
        argv = shlex.split(command, posix=os.name != "nt")
        if not argv:
            raise ConfigError("a DNS hook command is empty", hint='write add = "./dns-add.sh"')
        first = Path(argv[0])
        if not first.is_absolute() and (base / first).exists():
            argv[0] = str(base / first)
        return argv

    def _run(self, argv: list[str], record: TxtRecord, what: str) -> None:
        env = {
            **os.environ,
            "CERTFLEET_DNS_NAME": record.name,
            "CERTFLEET_DNS_VALUE": record.value,
            "CERTFLEET_DNS_ZONE": record.zone,
        }
        try:
            result = subprocess.run(  # the inventory's own script
                argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                timeout=self.timeout, check=False,
            )
        except FileNotFoundError:
            raise ConfigError(
                f"DNS {what} hook {argv[0]!r} does not exist",
                hint="fix add/remove in the dns table (a path relative to the inventory)",
            ) from None
        except PermissionError:
            raise ConfigError(
                f"DNS {what} hook {argv[0]!r} cannot be run",
                hint=f"make it executable: chmod +x {argv[0]}",
            ) from None
        except subprocess.TimeoutExpired:
            raise DnsError(
                f"DNS {what} hook {argv[0]!r} did not finish within {self.timeout:.0f}s "
                f"for {record.name}",
                hint="raise hook_timeout in the dns table, or fix the script",
            ) from None
        if result.returncode != 0:
            output = (result.stderr or result.stdout)[-_OUTPUT_LIMIT:]
            text = output.decode("utf-8", "replace").strip().replace("\n", " | ")
            raise DnsError(
                f"DNS {what} hook {argv[0]!r} exited {result.returncode} for {record.name}"
                + (f": {text}" if text else ""),
                hint="run the script by hand with CERTFLEET_DNS_NAME, CERTFLEET_DNS_VALUE "
                "and CERTFLEET_DNS_ZONE set",
            )

    def add(self, records: Sequence[TxtRecord]) -> None:
        for record in records:
            self._run(self.add_command, record, "add")

    def remove(self, records: Sequence[TxtRecord]) -> None:
        errors: list[DnsError] = []
        for record in records:
            try:
                self._run(self.remove_command, record, "remove")
            except DnsError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class ChalltestsrvProvider:
    """Pebble's pebble-challtestsrv through its management API (labs and tests only)."""

    def __init__(self, config: DnsConfig) -> None:
        assert config.url is not None
        self.url = config.url.rstrip("/")

    def _post(self, path: str, body: dict[str, str]) -> None:
        import httpx

        try:
            response = httpx.post(self.url + path, json=body, timeout=10.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise DnsError(
                f"challtestsrv at {self.url} refused {path}: {exc}",
                hint="is pebble-challtestsrv running with -management on that address?",
            ) from None

    def add(self, records: Sequence[TxtRecord]) -> None:
        for record in records:
            self._post("/set-txt", {"host": record.name + ".", "value": record.value})

    def remove(self, records: Sequence[TxtRecord]) -> None:
        for name in dict.fromkeys(r.name for r in records):
            self._post("/clear-txt", {"host": name + "."})


class Rfc2136Provider:
    """RFC 2136 dynamic update over TCP, signed with TSIG when a key is given."""

    def __init__(self, config: DnsConfig) -> None:
        assert config.server is not None
        from .propagation import split_host_port

        self.host, self.port = split_host_port(config.server, 53)
        self.config = config
        self.keyring: dict[dns.name.Name, object] | None = None
        if config.tsig_name and config.tsig_secret:
            import dns.tsigkeyring

            secret = _secret(config.tsig_secret, f"TSIG secret of {config.certificate!r}")
            self.keyring = dns.tsigkeyring.from_text({config.tsig_name: secret or ""})

    def _update(
        self, zone: str, change: Callable[[dns.update.UpdateMessage], None], what: str,
    ) -> None:
        import dns.exception
        import dns.name
        import dns.query
        import dns.rcode
        import dns.update

        update = dns.update.Update(
            zone, keyring=self.keyring,
            keyalgorithm=dns.name.from_text(self.config.tsig_algorithm),
        ) if self.keyring is not None else dns.update.Update(zone)
        change(update)
        try:
            response = dns.query.tcp(update, self.host, port=self.port, timeout=15.0)
        except (dns.exception.DNSException, OSError) as exc:
            if self.keyring is not None and "TSIG" in str(exc).upper():
                # A server that does not know the key answers NOTAUTH unsigned.
                raise DnsError(
                    f"RFC 2136 {what} for zone {zone} refused by {self.host}: the TSIG key "
                    f"{self.config.tsig_name!r} was not accepted ({exc})",
                    hint="check tsig_name, tsig_secret and tsig_algorithm against the "
                    "server's key",
                ) from None
            raise DnsError(
                f"RFC 2136 {what} at {self.host}:{self.port} for zone {zone} failed: {exc}",
                hint="check server, tsig_name, tsig_secret and that the zone allows updates",
            ) from None
        if response.rcode() != dns.rcode.NOERROR:
            raise DnsError(
                f"RFC 2136 {what} for zone {zone} refused by {self.host}: "
                f"{dns.rcode.to_text(response.rcode())}",
                hint="the server's update-policy must allow this TSIG key to change TXT "
                "records under _acme-challenge",
            )

    def add(self, records: Sequence[TxtRecord]) -> None:
        for zone in dict.fromkeys(r.zone for r in records):
            mine = [r for r in records if r.zone == zone]

            def change(
                update: dns.update.UpdateMessage, mine: list[TxtRecord] = mine,
            ) -> None:
                for record in mine:
                    update.add(record.name + ".", 60, "TXT", f'"{record.value}"')

            self._update(zone, change, "add")

    def remove(self, records: Sequence[TxtRecord]) -> None:
        for zone in dict.fromkeys(r.zone for r in records):
            mine = [r for r in records if r.zone == zone]

            def change(
                update: dns.update.UpdateMessage, mine: list[TxtRecord] = mine,
            ) -> None:
                for record in mine:
                    update.delete(record.name + ".", "TXT", f'"{record.value}"')

            self._update(zone, change, "remove")


class LexiconProvider:
    """Any DNS provider dns-lexicon knows (``lexicon:cloudflare``...); an optional extra."""

    def __init__(self, config: DnsConfig) -> None:
        self.name = config.provider.split(":", 1)[1]
        self.config = config
        try:
            import lexicon.client  # noqa: F401 - only: is the optional package there?
        except ImportError:
            raise ConfigError(
                f"DNS provider {config.provider!r} needs dns-lexicon, which is not installed",
                hint="pip install 'certfleet[lexicon]' (or pip install dns-lexicon)",
            ) from None

    def _options(self, record: TxtRecord, action: str) -> dict[str, object]:
        options: dict[str, object] = {
            "provider_name": self.name,
            "action": action,
            "domain": record.zone,
            "type": "TXT",
            "name": record.name,
            "content": record.value,
            "ttl": 60,
        }
        provider_options = {
            key: _secret(ref, f"lexicon option {key!r} of {self.config.certificate!r}")
            for key, ref in (self.config.credentials or {}).items()
        }
        options[self.name] = provider_options
        return options

    def _run(self, record: TxtRecord, action: str) -> None:
        from lexicon.client import Client
        from lexicon.config import ConfigResolver

        resolved = ConfigResolver().with_dict(self._options(record, action))
        try:
            with Client(resolved) as operations:
                if action == "create":
                    operations.create_record("TXT", record.name, record.value)
                else:
                    operations.delete_record(None, "TXT", record.name, record.value)
        except Exception as exc:  # every lexicon provider raises its own types
            raise DnsError(
                f"dns-lexicon {self.name} could not {action} TXT {record.name}: "
                f"{type(exc).__name__}: {str(exc)[:300]}",
                hint=f"check the credentials table of [certificates.{self.config.certificate}"
                ".dns]",
            ) from None

    def add(self, records: Sequence[TxtRecord]) -> None:
        for record in records:
            self._run(record, "create")

    def remove(self, records: Sequence[TxtRecord]) -> None:
        for record in records:
            self._run(record, "delete")


class ManualProvider:
    """Prints the records and waits for Enter: a person publishes them (terminal only)."""

    def __init__(self, config: DnsConfig) -> None:
        del config
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise ConfigError(
                "DNS provider 'manual' needs a terminal, and this run has none",
                hint="use rfc2136, lexicon:NAME or a hook for unattended runs",
            )

    def add(self, records: Sequence[TxtRecord]) -> None:
        sys.stderr.write("Publish these TXT records, then press Enter:\n")
        for record in records:
            sys.stderr.write(f"  {record.name}.  60  IN  TXT  \"{record.value}\"\n")
        sys.stderr.flush()
        input()

    def remove(self, records: Sequence[TxtRecord]) -> None:
        sys.stderr.write("The challenge is over: remove these TXT records:\n")
        for record in records:
            sys.stderr.write(f"  {record.name}  TXT  \"{record.value}\"\n")
        sys.stderr.flush()


def make_provider(config: DnsConfig) -> DnsProvider:
    """The provider ``config`` names. Raises ConfigError."""
    if config.provider == "hook":
        return HookProvider(config)
    if config.provider == "challtestsrv":
        return ChalltestsrvProvider(config)
    if config.provider == "rfc2136":
        return Rfc2136Provider(config)
    if config.provider == "manual":
        return ManualProvider(config)
    if config.provider.startswith("lexicon:"):
        return LexiconProvider(config)
    raise ConfigError(f"unknown DNS provider {config.provider!r}",
                      hint="use rfc2136, lexicon:NAME, hook, challtestsrv or manual")
