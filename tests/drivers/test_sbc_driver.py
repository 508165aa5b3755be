"""SbcDriver against the lab SBC over real HTTPS: install, verify, refuse, roll back."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certfleet.drivers.sbc import SbcDriver, normalize_sha256, tls_contexts_in_ini
from certfleet.errors import ConfigError, DeviceRefusedError, HostKeyError
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.sbc import LabSbc, LabSbcPair
from certfleet.pki.model import Bundle
from sbc_support import bundle_of, deploy, driver_for, listeners


def _served(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@pytest.fixture()
def sbc(old_key: rsa.RSAPrivateKey) -> Iterator[LabSbc]:
    with LabSbc("sbc-drv", key=old_key) as device:
        yield device


@pytest.fixture(scope="module")
def bundle(issued: Issued) -> Bundle:
    return bundle_of(issued)


def test_installs_into_two_contexts_and_listeners_serve_it(
    sbc: LabSbc, bundle: Bundle, old_key: rsa.RSAPrivateKey, issued: Issued
) -> None:
    """Key, certificate and roots go into contexts 0 and 1; both listeners serve the new leaf."""
    outcome = deploy(driver_for(sbc, previous_keys=[old_key]), bundle)
    assert outcome.outcome == "installed", outcome.message
    assert outcome.exit_code == 0
    new = bundle.leaf_sha256
    assert _served(sbc.port) == new and _served(sbc.sip_port) == new
    for index in (0, 1):
        saved = sbc.saved_context(index)
        assert saved.sha256 == new and saved.key_matches
        assert set(saved.trusted_root_sha256) >= {
            hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
            for c in (*issued.chain, issued.root)}
    assert sbc.context(2).sha256 != new  # untouched
    steps = [s.step for s in outcome.steps if s.status == "ok"]
    assert steps == ["preflight", "connect", "observe", "backup", "install", "verify"]
    assert outcome.backup is not None and outcome.backup.has_private_key
    assert "config.ini" in outcome.backup.files


def test_second_deploy_adds_no_duplicate_roots(
    sbc: LabSbc, bundle: Bundle, issued: Issued
) -> None:
    """Trusted roots already present are skipped: a second run adds none."""
    sip_only = listeners(sbc)[1:]
    first = deploy(driver_for(sbc, contexts=(1,), listeners=sip_only), bundle,
                   allow_no_rollback=True)
    assert first.outcome == "installed", first.message
    added = [r for r in sbc.requests if r[1].endswith("/trustedRoot/incremental")]
    assert len(added) == 2  # intermediate and root
    sbc.requests.clear()
    again = deploy(driver_for(sbc, contexts=(1,), listeners=sip_only,
                              previous_keys=[issued.key]), bundle)
    assert again.outcome == "installed", again.message
    assert not [r for r in sbc.requests if "trustedRoot/incremental" in r[1]]
    assert len(sbc.context(1).trusted_roots) == 4


def test_ca_bundle_trust_and_management_swap(sbc: LabSbc, bundle: Bundle,
                                             old_key: rsa.RSAPrivateKey) -> None:
    """With a CA bundle the device is trusted; after a management swap the new cert is pinned."""
    driver = driver_for(sbc, ca_bundle=sbc.ca_bundle_pem, contexts=(0,),
                        listeners=listeners(sbc)[:1], previous_keys=[old_key])
    outcome = deploy(driver, bundle)
    assert outcome.outcome == "installed", outcome.message
    assert sbc.management_sha256 == bundle.leaf_sha256
    assert bundle.leaf_sha256 in driver._pins


def test_without_previous_key_refuses_before_any_change(sbc: LabSbc, bundle: Bundle) -> None:
    """No known previous key: refused (exit 2) with a hint naming both ways forward."""
    before = sbc.context(0).sha256
    outcome = deploy(driver_for(sbc), bundle)
    assert outcome.outcome == "refused" and outcome.exit_code == 2
    assert "no rollback is possible" in outcome.message
    assert outcome.hint is not None
    assert "--previous-key" in outcome.hint and "--allow-no-rollback" in outcome.hint
    assert sbc.context(0).sha256 == before
    assert not [r for r in sbc.requests if r[0] == "PUT"]


def test_wrong_pin_sends_no_credentials(sbc: LabSbc, bundle: Bundle) -> None:
    """A wrong pin stops before any request: the message names the SHA-256 seen."""
    outcome = deploy(driver_for(sbc, pin_sha256="ab" * 32), bundle, allow_no_rollback=True)
    assert outcome.outcome == "refused"
    assert sbc.management_sha256 in outcome.message
    assert sbc.requests == []


def test_wrong_password_is_a_clear_refusal(sbc: LabSbc, bundle: Bundle) -> None:
    """401 maps to 'the SBC refused user ...' and nothing changes."""
    outcome = deploy(driver_for(sbc, password="nope"), bundle, allow_no_rollback=True)
    assert outcome.outcome == "refused"
    assert "answered 401: the SBC refused user 'Admin'" in outcome.message
    assert "nope" not in outcome.message


def test_unknown_context_is_refused(sbc: LabSbc, bundle: Bundle) -> None:
    """A context the device does not have is refused before any change."""
    outcome = deploy(driver_for(sbc, contexts=(7,)), bundle, allow_no_rollback=True)
    assert outcome.outcome == "refused"
    assert "TLS context 7 does not exist" in outcome.message


def test_failure_midway_rolls_back(sbc: LabSbc, bundle: Bundle,
                                   old_key: rsa.RSAPrivateKey) -> None:
    """A 500 on the second context's certificate restores both contexts (exit 1)."""
    before = {0: _served(sbc.port), 1: _served(sbc.sip_port)}
    sbc.faults.add("500", method="PUT", path="/files/tls/*/certificate", nth=2)
    outcome = deploy(driver_for(sbc, previous_keys=[old_key]), bundle)
    assert outcome.outcome == "restored" and outcome.exit_code == 1, outcome.message
    assert "answered 500: the SBC failed" in outcome.message
    assert _served(sbc.port) == before[0] and _served(sbc.sip_port) == before[1]
    assert sbc.saved_context(0).sha256 == before[0]
    assert sbc.saved_context(1).key_matches


def test_failure_without_rollback_is_exit_3(sbc: LabSbc, bundle: Bundle) -> None:
    """With --allow-no-rollback a failure after a change ends failed (exit 3)."""
    sbc.faults.add("500", method="PUT", path="/files/tls/1/certificate")
    outcome = deploy(driver_for(sbc), bundle, allow_no_rollback=True)
    assert outcome.outcome == "failed" and outcome.exit_code == 3
    assert "no backup to restore" in outcome.message


@pytest.mark.parametrize(
    ("action", "path", "expected"),
    [
        ("drop", "/files/tls/1/privateKey", "connection to"),
        ("400", "/files/tls/0/certificate", "answered 400: the SBC refused the file"),
        ("hang", "/files/tls/1/certificate", "did not answer within"),
    ],
)
def test_faults_end_restored(sbc: LabSbc, bundle: Bundle, old_key: rsa.RSAPrivateKey,
                             action: str, path: str, expected: str) -> None:
    """Dropped connections, 400s and timeouts mid-install all end restored (exit 1)."""
    before = _served(sbc.port)
    sbc.faults.add(action, method="PUT", path=path)
    # A hung request is waited out for one request timeout: short for that case only.
    timeout = 2.0 if action == "hang" else 30.0
    outcome = deploy(driver_for(sbc, previous_keys=[old_key], timeout=timeout), bundle)
    assert outcome.outcome == "restored", outcome.message
    assert expected in outcome.message
    assert _served(sbc.port) == before


def test_busy_is_retried_then_reported(sbc: LabSbc, bundle: Bundle,
                                       old_key: rsa.RSAPrivateKey) -> None:
    """409s are retried; past the retries the message says busy (HA sync?) and it rolls back."""
    sbc.faults.busy(2, path="/actions/saveConfiguration")
    ok = deploy(driver_for(sbc, previous_keys=[old_key], busy_retries=2), bundle)
    assert ok.outcome == "installed", ok.message
    with LabSbc("sbc-busy", key=old_key) as other:
        other.faults.busy(3, path="/actions/saveConfiguration")
        outcome = deploy(driver_for(other, previous_keys=[old_key], busy_retries=2), bundle)
        assert outcome.outcome == "restored", outcome.message
        assert "busy (HA sync?)" in outcome.message


def test_verification_failure_rolls_back(sbc: LabSbc, bundle: Bundle,
                                         old_key: rsa.RSAPrivateKey) -> None:
    """A listener that keeps the old certificate fails verification; the rollback is verified."""
    sbc.faults.freeze("sip")
    outcome = deploy(driver_for(sbc, previous_keys=[old_key], verify_timeout=0.3), bundle)
    assert outcome.outcome == "restored", outcome.message
    assert "not served" in outcome.message
    assert sbc.context(0).sha256 != bundle.leaf_sha256


def test_backup_and_status_reads(sbc: LabSbc) -> None:
    """backup() saves the INI and each context's certificate and roots; contexts are listed."""
    driver = driver_for(sbc, contexts=(0, 2))

    async def run() -> tuple[dict[int, str], object]:
        async with driver.session():
            return await driver.list_contexts(), await driver.backup()

    names, backup = asyncio.run(run())
    assert names == {0: "default", 1: "SIP-TLS", 2: "Teams"}
    assert {"config.ini", "tls0-certificate.pem", "tls2-trusted_roots.pem"} <= set(
        backup.files)  # type: ignore[attr-defined]
    assert backup.meta["contexts"]["0"]["serves_management"] is True  # type: ignore[attr-defined]


def test_constructor_and_helpers_validate() -> None:
    """Bad URLs, pins and trust choices are ConfigErrors; the INI table parses."""
    with pytest.raises(ConfigError, match="not https"):
        SbcDriver("x", "http://sbc", password="p")
    with pytest.raises(ConfigError, match="not a SHA-256"):
        SbcDriver("x", "https://sbc", password="p", pin_sha256="abc")
    with pytest.raises(ConfigError, match="choose one"):
        SbcDriver("x", "https://sbc", password="p", pin_sha256="ab" * 32, insecure=True)
    assert normalize_sha256("AB:" * 31 + "AB") == "ab" * 32
    ini = '[ TLSContexts ]\nFORMAT Index = Name;\nTLSContexts 3 = "X";\n[ \\TLSContexts ]\n'
    assert tls_contexts_in_ini(ini) == {3: "X"}


def test_other_ca_bundle_is_refused(sbc: LabSbc, lab_ca2: LabCA, bundle: Bundle) -> None:
    """A CA bundle that did not issue the device certificate refuses the connection."""
    other = lab_ca2.root.public_bytes(serialization.Encoding.PEM)
    outcome = deploy(driver_for(sbc, ca_bundle=other), bundle, allow_no_rollback=True)
    assert outcome.outcome == "refused"
    assert "certificate verify failed" in outcome.message.lower(), outcome.message
    assert "nothing was changed" in outcome.message, outcome.message


def test_standby_unit_refuses_and_nothing_changes(bundle: Bundle,
                                                  old_key: rsa.RSAPrivateKey) -> None:
    """Pointed at the HA standby, the first change is refused (409): refused, not rolled back."""
    with LabSbcPair("ha-drv", key=old_key) as pair:
        standby = pair.standby
        outcome = deploy(driver_for(standby, previous_keys=[old_key], busy_retries=1), bundle)
        assert outcome.outcome == "refused", outcome.message
        assert "busy (HA sync?)" in outcome.message and "nothing was changed" in outcome.message
        assert "HA standby" in outcome.message
        assert pair.active.context(0).sha256 != bundle.leaf_sha256


def test_ha_pair_install_shows_on_both_units(bundle: Bundle,
                                             old_key: rsa.RSAPrivateKey) -> None:
    """On an HA pair (409 after each change) the install is retried and both units serve it."""
    with LabSbcPair("ha-drv2", key=old_key, sync_busy=2) as pair:
        active, standby = pair.units
        driver = driver_for(active, previous_keys=[old_key],
                            listeners=[*listeners(active), *listeners(standby)])
        outcome = deploy(driver, bundle)
        assert outcome.outcome == "installed", outcome.message
        assert len(outcome.served_after) == 4
        assert standby.served_sha256("sip") == bundle.leaf_sha256
        assert sum(1 for r in active.requests if r[2] == 409) >= 2


def test_unreachable_device_is_refused(bundle: Bundle) -> None:
    """Nothing listening: a connection error, refused before any change."""
    with LabSbc("gone") as device:
        url, pin = device.url, device.management_sha256
    driver = SbcDriver("gone", url, password="x", pin_sha256=pin, verify_timeout=0.5)
    outcome = deploy(driver, bundle, allow_no_rollback=True)
    assert outcome.outcome == "refused"
    assert "failed" in outcome.message and "nothing was changed" in outcome.message


def test_non_pem_upload_is_quoted_and_pin_rechecked_per_connection(
    sbc: LabSbc, issued: Issued
) -> None:
    """A non-PEM upload's 400 is quoted; a changed cert on a new connection fails the pin."""
    driver = driver_for(sbc)

    async def run() -> None:
        async with driver.session():
            with pytest.raises(DeviceRefusedError,
                               match=r"answered 400: the SBC refused the file: 'Failed to load"):
                await driver._request("PUT", "/files/tls/1/certificate", upload=b"\x30\x82junk",
                                      what="uploading junk")
            sbc.seed_context(0, issued.leaf_pem, issued.key_pem())
            await driver.close()
            driver._client = driver._new_client()  # the next request opens a new connection
            with pytest.raises(HostKeyError, match=bundle_sha(issued)):
                await driver.read_ini()

    asyncio.run(run())


def bundle_sha(issued: Issued) -> str:
    return hashlib.sha256(issued.leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_read_only_user_is_refused_with_403(bundle: Bundle) -> None:
    """A user that may not change the configuration: 403, refused, nothing changed."""
    with LabSbc("ro", read_only_users={"Monitor": "mon-pw"}) as device:
        driver = driver_for(device, user="Monitor", password="mon-pw")
        outcome = deploy(driver, bundle, allow_no_rollback=True)
        assert outcome.outcome == "refused", outcome.message
        assert "answered 403: the SBC refused user 'Monitor'" in outcome.message
        assert "nothing was changed" in outcome.message
