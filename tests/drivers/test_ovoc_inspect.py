"""What OVOC would make of staged files (pure), menu label matching, and silent devices."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet.drivers.ovoc import (
    MenuStep,
    OvocDriver,
    _pick_option,
    diagnosis_line,
    inspect_staged,
)
from certfleet.errors import ConfigError
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.profiles import OvocProfile

NEEDS = "OVOC needs an unencrypted PEM key (PKCS#1, 'Apache compatible')"


@pytest.fixture(scope="module")
def ca() -> LabCA:
    return LabCA("OVOC Inspect Test")


@pytest.fixture(scope="module")
def cert(ca: LabCA) -> Issued:
    return ca.issue(["ovoc.example.com"], key_type="rsa2048")


def good(issued: Issued) -> dict[str, bytes]:
    return {"server.crt": issued.leaf_pem, "server.key": issued.key_pem("pkcs1"),
            "root.crt": issued.root_pem, "ca1.crt": issued.chain_pem}


def errors(files: dict[str, bytes], **kwargs: object) -> list[str]:
    findings = inspect_staged(files, **kwargs)  # type: ignore[arg-type]
    return [f"{f.code}: {f.message}" for f in findings if f.severity == "error"]


def test_good_files_pass(cert: Issued) -> None:
    """The profile's four PEM files with a PKCS#1 key: nothing OVOC would reject."""
    assert errors(good(cert)) == []
    assert diagnosis_line(inspect_staged(good(cert))) is None


def test_encrypted_pkcs8_key_is_the_story(cert: Issued) -> None:
    """An encrypted PKCS#8 key is diagnosed in one line, as the story needed."""
    assert cert.key is not None
    files = good(cert)
    files["server.key"] = cert.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"))
    line = diagnosis_line(inspect_staged(files))
    assert line == f"OVOC will reject these files: server.key is an encrypted PKCS#8 key; {NEEDS}"


def test_legacy_encrypted_key(cert: Issued) -> None:
    """A Proc-Type: 4,ENCRYPTED key is named as OpenSSL legacy encryption."""
    assert cert.key is not None
    files = good(cert)
    files["server.key"] = cert.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"pw"))
    assert errors(files) == [
        f"OVOC_KEY_ENCRYPTED: server.key is an encrypted PEM key (OpenSSL legacy encryption); "
        f"{NEEDS}"]


def test_key_only_inside_pfx(cert: Issued) -> None:
    """No server.key but a .pfx: the key is only inside the .pfx."""
    assert cert.key is not None
    files = good(cert)
    del files["server.key"]
    files["wildcard.pfx"] = pkcs12.serialize_key_and_certificates(
        b"x", cert.key, cert.leaf, None, serialization.BestAvailableEncryption(b"pw"))
    assert errors(files) == [
        f"OVOC_KEY_MISSING: server.key is missing; the key is only inside 'wildcard.pfx'; "
        f"{NEEDS}"]


def test_mismatched_key(cert: Issued, ca: LabCA) -> None:
    """A key of another certificate is a mismatch."""
    files = good(cert)
    files["server.key"] = ca.issue(["x.example.com"]).key_pem("pkcs1")
    assert errors(files) == ["OVOC_KEY_MISMATCH: server.key does not belong to server.crt"]


def test_misnamed_certificate(cert: Issued) -> None:
    """The certificate staged under the CA's name is reported with the name OVOC reads."""
    files = good(cert)
    files["star_example_com.cer"] = files.pop("server.crt")
    assert errors(files) == [
        "OVOC_CERT_MISSING: server.crt is missing (found 'star_example_com.cer'; OVOC reads "
        "only 'server.crt')"]


def test_der_certificate_and_key(cert: Issued) -> None:
    """DER files are named as DER: OVOC reads PEM."""
    assert cert.key is not None
    files = good(cert)
    files["server.crt"] = cert.leaf.public_bytes(serialization.Encoding.DER)
    files["server.key"] = cert.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    found = errors(files)
    assert "OVOC_CERT_UNREADABLE: server.crt is a DER (binary) certificate; OVOC needs a PEM " \
        "certificate" in found
    assert f"OVOC_KEY_FORMAT: server.key is a DER (binary) key; {NEEDS}" in found


def test_unencrypted_pkcs8_is_a_warning(cert: Issued) -> None:
    """An unencrypted PKCS#8 RSA key is a warning (OVOC documents PKCS#1), not an error."""
    files = good(cert)
    files["server.key"] = cert.key_pem("pkcs8")
    findings = inspect_staged(files)
    assert [f.code for f in findings if f.severity == "warning"] == ["OVOC_KEY_FORMAT"]
    assert diagnosis_line(findings) is None


def test_missing_root_and_expired(ca: LabCA) -> None:
    """A missing root.crt and an expired leaf are both reported."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = ca.issue(["ovoc.example.com"], not_before=past - dt.timedelta(days=10),
                       not_after=past)
    files = good(expired)
    del files["root.crt"]
    codes = {f.split(":")[0] for f in errors(files)}
    assert codes == {"OVOC_ROOT_MISSING", "EXPIRED"}
    assert "(and 1 more problem(s))" in (diagnosis_line(inspect_staged(files)) or "")


def test_other_profile_names(cert: Issued) -> None:
    """A profile with other names is followed: ovoc.pem / ovoc.key / chain-{n}.pem."""
    profile = OvocProfile(cert_file="ovoc.pem", key_file="ovoc.key", root_file="anchor.pem",
                          intermediate_pattern="chain-{n}.pem")
    files = {"ovoc.pem": cert.leaf_pem, "ovoc.key": cert.key_pem("pkcs1"),
             "anchor.pem": cert.root_pem, "chain-1.pem": cert.chain_pem}
    assert errors(files, profile=profile) == []
    assert errors(good(cert), profile=profile)[0].startswith("OVOC_CERT_MISSING: ovoc.pem")


def test_pick_option_by_label_then_number() -> None:
    """Labels match exactly, then as a prefix, then inside; the number is a fallback."""
    screen = "\n".join([
        "  1. Security Audit Log", "  4. Security", " 11) Server Certificate Updates (TLS)",
        "  q. Back", "Choose an option: "])
    assert _pick_option(screen, MenuStep("Security")) == "4"
    assert _pick_option(screen, MenuStep("server certificate  updates")) == "11"
    assert _pick_option(screen, MenuStep("Nope", "1")) == "1"
    assert _pick_option(screen, MenuStep("Nope", "7")) is None


def test_bad_pin_is_config_error() -> None:
    """A pin that is neither SHA256: nor a key line is refused at construction."""
    with pytest.raises(ConfigError, match="host key pin"):
        OvocDriver("x", "127.0.0.1", host_key="deadbeef")
    with pytest.raises(ConfigError, match="absolute path"):
        OvocDriver("x", "127.0.0.1", staging_dir="server_certs")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_silent_device_times_out(silent_port: int) -> None:
    """A device that never answers SSH ends with a timeout, not a hang."""
    from certfleet.errors import DeviceTimeoutError

    driver = OvocDriver("silent", "127.0.0.1", ssh_port=silent_port, password="x",
                        su_password="y", keystore_password="keystore", host_key="SHA256:abc",
                        connect_timeout=1)
    with pytest.raises(DeviceTimeoutError, match="did not answer within 1 s"):
        asyncio.run(driver.connect())


def test_screen_joins_escapes_cut_between_reads() -> None:
    """An escape sequence or CR LF cut by a read boundary never reaches the screen text."""
    from certfleet.drivers.ovoc import _Screen

    screen = _Screen(None, ["s3cret-pw"])  # type: ignore[arg-type]  # no process needed
    for chunk in ("\x1b[?20", "04hroot@ovoc:~# ls\r", "\nserver.key s3cret-pw\r\n\x1b[0", "m$ "):
        screen.feed(chunk)
    assert screen.text == "root@ovoc:~# ls\nserver.key ********\n$ "


def test_menu_from_inventory_mapping() -> None:
    """Menu settings from an inventory: labels with numbers, prompts; bad ones refused."""
    from certfleet.drivers.ovoc import OvocMenu

    menu = OvocMenu.from_mapping({"labels": ["Security", "TLS Certificates", "Import from CA"],
                                  "numbers": ["", "14", "3"], "back": "0"})
    assert menu.path == (MenuStep("Security"), MenuStep("TLS Certificates", "14"),
                         MenuStep("Import from CA", "3"))
    assert menu.back == "0" and menu.command == "EmsServerManager"
    with pytest.raises(ConfigError, match="'colour' is unknown"):
        OvocMenu.from_mapping({"colour": "red"})
    with pytest.raises(ConfigError, match="not a regular expression"):
        OvocMenu.from_mapping({"menu_prompt": "(unclosed"})
    with pytest.raises(ConfigError, match="do not pair"):
        OvocMenu.from_mapping({"labels": ["a", "b"], "numbers": ["1"]})
