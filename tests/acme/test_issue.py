"""certfleet issue against Pebble: real DNS-01 through challtestsrv, a hook, EAB, chains."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from _tools import require_tool
from certfleet.acme import AcmeError
from certfleet.cli.app import app
from certfleet.lab.pebble import LabPebble, eab_key
from pebble_support import start_pebble, write_inventory


def issue(inventory: Path, state: Path, *extra: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, ["issue", "wildcard", "--json", "--inventory",
                                      str(inventory), "--state-dir", str(state), *extra])
    return result.exit_code, json.loads(result.stdout)


def stored_leaf(state: Path) -> x509.Certificate:
    from certfleet.estate.store import Store

    with Store.open(state) as store:
        version = store.current_version("wildcard")
        assert version is not None
        return x509.load_pem_x509_certificate((version.dir / "leaf.pem").read_bytes())


def test_wildcard_and_apex_by_dns01(pebble: LabPebble, tmp_path: Path) -> None:
    """One order for *.example.com and example.com: both TXT values published, then removed."""
    code, data = issue(write_inventory(tmp_path, pebble), tmp_path / "state")
    assert code == 0, data
    leaf = stored_leaf(tmp_path / "state")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"*.example.com", "example.com"}
    assert data["new"] is True and data["key_from_store"] is True
    assert pebble.txt_records("_acme-challenge.example.com") == []
    account = next((tmp_path / "state" / "acme" / "accounts").iterdir())
    assert account.stat().st_mode & 0o777 == 0o600


def test_hook_provider_gets_name_value_zone(pebble: LabPebble, tmp_path: Path) -> None:
    """The hook gets CERTFLEET_DNS_NAME/VALUE/ZONE; its records (set by curl) validate the order."""
    curl = require_tool("curl")
    log = tmp_path / "hook.log"
    for verb, path in (("add", "set-txt"), ("remove", "clear-txt")):
        script = tmp_path / f"dns-{verb}.sh"
        body = '{"host":"\'"$CERTFLEET_DNS_NAME"\'.","value":"\'"$CERTFLEET_DNS_VALUE"\'"}'
        script.write_text(
            "#!/bin/sh\nset -e\n"
            f'echo "{verb} $CERTFLEET_DNS_NAME $CERTFLEET_DNS_ZONE" >> {log}\n'
            f"{curl} -sf -X POST -d '{body}' {pebble.challtestsrv_url}/{path}\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    inventory = write_inventory(tmp_path, pebble, dns={
        "provider": "hook", "add": "./dns-add.sh", "remove": "./dns-remove.sh",
        "zone": "example.com", "resolvers": [pebble.dns_server], "propagation_timeout": 30})
    code, data = issue(inventory, tmp_path / "state")
    assert code == 0, data
    lines = log.read_text().splitlines()
    assert lines.count("add _acme-challenge.example.com example.com") == 2
    assert lines.count("remove _acme-challenge.example.com example.com") == 2
    assert pebble.txt_records("_acme-challenge.example.com") == []


def test_record_that_never_propagates(pebble: LabPebble, tmp_path: Path) -> None:
    """A record that never appears: exit 1 after propagation_timeout, and the records removed."""
    log = tmp_path / "hook.log"
    for verb in ("add", "remove"):
        script = tmp_path / f"dns-{verb}.sh"
        script.write_text(f'#!/bin/sh\necho "{verb} $CERTFLEET_DNS_VALUE" >> {log}\n')
        script.chmod(0o700)
    inventory = write_inventory(tmp_path, pebble, dns={
        "provider": "hook", "add": "./dns-add.sh", "remove": "./dns-remove.sh",
        "resolvers": [pebble.dns_server], "propagation_timeout": 1})
    code, data = issue(inventory, tmp_path / "state")
    assert code == 1
    assert "did not appear within 1s" in str(data["error"])
    added = sorted(line.split()[1] for line in log.read_text().splitlines() if "add" in line)
    removed = sorted(line.split()[1] for line in log.read_text().splitlines()
                     if "remove" in line)
    assert len(added) == 2 and added == removed


def test_failing_hook_names_its_output(pebble: LabPebble, tmp_path: Path) -> None:
    """A hook that exits non-zero fails the issue with its exit code and its last words."""
    script = tmp_path / "dns-add.sh"
    script.write_text("#!/bin/sh\necho 'zone example.com is locked' >&2\nexit 3\n")
    script.chmod(0o700)
    (tmp_path / "dns-remove.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "dns-remove.sh").chmod(0o700)
    inventory = write_inventory(tmp_path, pebble, dns={
        "provider": "hook", "add": "./dns-add.sh", "remove": "./dns-remove.sh"})
    code, data = issue(inventory, tmp_path / "state")
    assert code == 1
    assert "exited 3" in str(data["error"]) and "zone example.com is locked" in str(data["error"])


def test_preferred_chain_picks_the_alternate(pebble: LabPebble, tmp_path: Path) -> None:
    """With alternate roots offered, preferred_chain keeps the chain that ends at that root."""
    roots = [x509.load_pem_x509_certificate(pem) for pem in pebble.roots_pem()]
    cns = [r.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for r in roots]
    for want in cns:
        state = tmp_path / str(want).replace(" ", "_")
        inventory = write_inventory(state, pebble, acme={"preferred_chain": want})
        code, data = issue(inventory, state / "state")
        assert code == 0, data
        assert data["chain_issuer"] == want
        from certfleet.estate.store import Store

        with Store.open(state / "state") as store:
            version = store.current_version("wildcard")
            assert version is not None
            root = x509.load_pem_x509_certificate((version.dir / "root.pem").read_bytes())
        assert root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == want


def test_ca_refuses_a_bad_csr(pebble: LabPebble, tmp_path: Path) -> None:
    """Pebble refuses to finalise with a CSR that does not match the order: the CA's words."""
    from certfleet.acme.account import open_session
    from certfleet.acme.config import acme_config, dns_config
    from certfleet.acme.issuer import order_certificate
    from certfleet.inventory import load_inventory
    from certfleet.pki.keygen import build_csr, csr_pem, generate_private_key

    inventory = load_inventory(write_inventory(tmp_path, pebble))
    config = acme_config(inventory, "wildcard")
    assert config is not None
    session = open_session(config, tmp_path / "state")
    csr = csr_pem(build_csr(generate_private_key("ec-p256"), "other.example.org",
                            ["other.example.org"]))
    refused = r"the CA refused to issue: \w+: Order includes different number"
    with pytest.raises(AcmeError, match=refused):
        order_certificate(session, ["*.example.com", "example.com"], csr,
                          dns_config(inventory, "wildcard"), timeout=60)
    assert pebble.txt_records("_acme-challenge.example.com") == []


def test_eab_required(tmp_path: Path) -> None:
    """A CA that requires EAB: refused without it (exit 2, says what to add), accepted with it."""
    kid, hmac = eab_key()
    server = start_pebble(tmp_path / "pebble", eab_keys={kid: hmac})
    try:
        code, data = issue(write_inventory(tmp_path / "a", server), tmp_path / "a" / "state")
        assert code == 2
        assert "requires external account binding" in str(data["error"])
        assert "eab_kid" in str(data["hint"])
        inventory = write_inventory(tmp_path / "b", server, acme={
            "eab_kid": "env:TEST_EAB_KID", "eab_hmac_key": "env:TEST_EAB_HMAC"})
        os.environ.update({"TEST_EAB_KID": kid, "TEST_EAB_HMAC": hmac})
        try:
            code, data = issue(inventory, tmp_path / "b" / "state")
        finally:
            os.environ.pop("TEST_EAB_KID", None)
            os.environ.pop("TEST_EAB_HMAC", None)
        assert code == 0, data
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("dns", "message"),
    [
        ({"provider": "manual"}, "DNS provider 'manual' needs a terminal"),
        ({"provider": "lexicon:cloudflare"}, "needs dns-lexicon, which is not installed"),
    ],
)
def test_provider_that_cannot_work_fails_before_any_order(
    pebble: LabPebble, tmp_path: Path, dns: dict[str, str], message: str
) -> None:
    """manual without a terminal, lexicon without dns-lexicon: exit 2 before the CA is asked."""
    code, data = issue(write_inventory(tmp_path, pebble, dns=dns), tmp_path / "state")
    assert code == 2
    assert message in str(data["error"])
    assert not (tmp_path / "state" / "acme").exists()


def test_issue_prints_the_stored_version_and_what_next(pebble: LabPebble, tmp_path: Path) -> None:
    """Without --json: one line naming the version, its end date and the chain; then Next."""
    inventory = write_inventory(tmp_path, pebble)
    result = CliRunner().invoke(app, ["issue", "wildcard", "--inventory", str(inventory),
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    assert "stored wildcard v1: CN=*.example.com, " in result.output
    assert "chain to Pebble Root CA " in result.output
    assert "Next: certfleet deploy --only wildcard" in result.output
