"""The acme, dns and notify tables: checked while the inventory is read, errors name the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from certfleet.acme.config import acme_config, dns_config, notify_config
from certfleet.errors import ConfigError
from certfleet.inventory import parse_inventory

BASE = '[certificates.wildcard]\ncn = "*.example.com"\n'
ACME = '[certificates.wildcard.acme]\ndirectory = "https://ca.example/dir"\n'
DNS = '[certificates.wildcard.dns]\nprovider = "hook"\nadd = "./a.sh"\nremove = "./r.sh"\n'
README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_inventory_example_parses() -> None:
    """The README's inventory block is a valid inventory, read as the issuer reads it."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"### The inventory keys\n\n```toml\n(.*?)```", text, re.S)
    assert block is not None
    inventory = parse_inventory(block.group(1), "/etc/certfleet/certfleet.toml")
    acme = acme_config(inventory, "wildcard")
    assert acme is not None and acme.email == "pki@example.com"
    dns = dns_config(inventory, "wildcard")
    assert dns.provider == "rfc2136" and dns.tsig_secret == "env:TSIG"
    assert notify_config(inventory).urls == ("env:CERTFLEET_NOTIFY_URL",)


def test_relative_paths_are_read_from_the_inventory_folder() -> None:
    """ca_bundle, root_file and hook paths are relative to the inventory, not the shell."""
    text = BASE + ACME + 'ca_bundle = "ca.pem"\n' + DNS
    inventory = parse_inventory(text, "/srv/estate/certfleet.toml")
    acme = acme_config(inventory, "wildcard")
    assert acme is not None and acme.ca_bundle == Path("/srv/estate/ca.pem")
    assert dns_config(inventory, "wildcard").base_dir == Path("/srv/estate")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + ACME, r"certfleet.toml:1: certificates.wildcard: has an acme table but no dns"),
        (BASE + ACME + 'eab_kid = "env:K"\n' + DNS, r"eab_kid and eab_hmac_key go together"),
        (BASE + ACME.replace("https://ca.example/dir", "ca.example") + DNS,
         r"certificates.wildcard.acme.directory: 'ca.example' is not an http\(s\) URL"),
        (BASE + ACME + '[certificates.wildcard.dns]\nprovider = "route53"\n',
         r"unknown DNS provider 'route53'"),
        (BASE + ACME + '[certificates.wildcard.dns]\nprovider = "rfc2136"\n',
         r"provider 'rfc2136' needs server"),
        (BASE + ACME + DNS + 'tsig_secret = "s3cret"\n',
         r"dns.tsig_secret: holds a literal secret"),
        (BASE + ACME + DNS + 'tsig_secret = "env:S"\n', r"tsig_name and tsig_secret go together"),
        (BASE + ACME + DNS + 'propagation_timeout = 0\n', r"positive number of seconds"),
        (BASE + 'renew_before_days = "soon"\n', r"renew_before_days: must be a whole number"),
        (BASE + '[notify]\nurls = ["https://hooks.example/T0KEN"]\n',
         r"notify.urls: holds a literal secret"),
        (BASE + '[notify]\nurls = []\non = ["always"]\n', r"notify.on: must list events"),
        (BASE + ACME + DNS + 'ttl = 60\n', r"unknown key 'ttl'"),
    ],
)
def test_bad_tables_are_refused_with_their_line(text: str, message: str) -> None:
    """Each mistake: a ConfigError naming file, line and key, never the secret."""
    with pytest.raises(ConfigError, match=message) as caught:
        parse_inventory(text, "certfleet.toml")
    assert "T0KEN" not in str(caught.value) and "s3cret" not in str(caught.value)
