"""The lab SBC: documented REST shapes over real HTTPS, and it serves what it holds."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from _tools import require_tool
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.sbc import LabSbc, LabSbcPair, parse_multipart

API = "/api/v1"


def _sha(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _served(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return _sha(pem.encode())


@pytest.fixture()
def sbc() -> Iterator[LabSbc]:
    with LabSbc("lab-sbc", password="s3cret-pw") as device:
        yield device


def _client(device: LabSbc, tmp_path: Path) -> httpx.Client:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(device.ca_bundle_pem)
    ctx = ssl.create_default_context(cafile=str(ca))
    return httpx.Client(base_url=device.url + API, verify=ctx,
                        auth=(device.user, device.password), timeout=10)


def _put(client: httpx.Client, path: str, data: bytes, **fields: str) -> httpx.Response:
    return client.put(path, files={"file": ("f.pem", data, "application/octet-stream")},
                      data=fields or None)


def test_status_and_auth(sbc: LabSbc, tmp_path: Path) -> None:
    """GET /status answers the documented fields; a wrong password gets 401 with a challenge."""
    with _client(sbc, tmp_path) as client:
        status = client.get("/status").json()
        assert {"versionID", "productType", "highAvailability"} <= set(status)
        bad = client.get("/status", auth=("Admin", "wrong"))
        assert bad.status_code == 401
        assert bad.headers["WWW-Authenticate"].startswith("Basic")
        assert "description" in bad.json()


def test_install_pair_changes_what_listeners_serve(sbc: LabSbc, issued: Issued,
                                                   tmp_path: Path) -> None:
    """Key then certificate: the old pair is served until they match, then the new one."""
    old = sbc.management_sha256
    with _client(sbc, tmp_path) as client:
        assert _put(client, "/files/tls/0/privateKey", issued.key_pem("pkcs1")).status_code == 200
        assert client.get("/files/tls/0/privateKey").json() == {"size": 2048, "valid": False}
        assert _served(sbc.port) == old
        answer = _put(client, "/files/tls/0/certificate", issued.leaf_pem)
        assert answer.json() == {"description": "Certificate was successfully changed"}
        assert client.get("/files/tls/0/privateKey").json()["valid"] is True
        assert client.get("/files/tls/0/certificate").content == issued.leaf_pem
    new = _sha(issued.leaf_pem)
    assert sbc.management_sha256 == new
    assert _served(sbc.port) == new
    assert _served(sbc.sip_port) == old  # context 1 unchanged


def test_unsaved_changes_are_lost_on_restart(sbc: LabSbc, issued: Issued,
                                             tmp_path: Path) -> None:
    """Without saveConfiguration a restart serves the saved certificate; with it, the new one."""
    old = sbc.served_sha256("sip")
    with _client(sbc, tmp_path) as client:
        _put(client, "/files/tls/1/privateKey", issued.key_pem("pkcs1"))
        _put(client, "/files/tls/1/certificate", issued.leaf_pem)
        assert _served(sbc.sip_port) == _sha(issued.leaf_pem)
        sbc.restart()
        assert _served(sbc.sip_port) == old
        _put(client, "/files/tls/1/privateKey", issued.key_pem("pkcs1"))
        _put(client, "/files/tls/1/certificate", issued.leaf_pem)
        assert client.post("/actions/saveConfiguration").status_code == 200
        assert client.post("/actions/reset", json={"saveConfiguration": False,
                                                   "gracefulTimeout": 0}).status_code == 200
    assert _served(sbc.sip_port) == _sha(issued.leaf_pem)
    assert sbc.saved_context(1).sha256 == _sha(issued.leaf_pem)


def test_refusals_have_descriptions(sbc: LabSbc, tmp_path: Path) -> None:
    """Non-PEM uploads and bad keys get 400, unknown contexts 404, each with a description."""
    with _client(sbc, tmp_path) as client:
        cert = _put(client, "/files/tls/0/certificate", b"\x30\x82not pem")
        assert cert.status_code == 400 and "PEM" in cert.json()["description"]
        key = _put(client, "/files/tls/0/privateKey", b"-----BEGIN PRIVATE KEY-----\nxx\n")
        assert key.status_code == 400
        missing = client.get("/files/tls/7/certificate")
        assert missing.status_code == 404 and "7" in missing.json()["description"]
        raw = client.put("/files/tls/0/certificate", content=b"raw")
        assert raw.status_code == 400


def test_ini_lists_tls_contexts(sbc: LabSbc, tmp_path: Path) -> None:
    """GET /files/ini renders the TLSContexts table; PUT incremental renames a context."""
    with _client(sbc, tmp_path) as client:
        ini = client.get("/files/ini").text
        assert "[ TLSContexts ]" in ini and "[ \\TLSContexts ]" in ini
        assert 'TLSContexts 2 = "Teams"' in ini
        table = '[ TLSContexts ]\nTLSContexts 2 = "Teams-DR", 0, 0, 0, 2048;\n[ \\TLSContexts ]\n'
        answer = _put(client, "/files/ini/incremental", table.encode())
        assert answer.status_code == 200
        assert 'TLSContexts 2 = "Teams-DR"' in client.get("/files/ini").text


def test_trusted_roots_replace_and_add(sbc: LabSbc, lab_ca2: LabCA, tmp_path: Path) -> None:
    """trustedRoot replaces the store, trustedRoot/incremental adds one without duplicates."""
    other = lab_ca2.root.public_bytes(serialization.Encoding.PEM)
    with _client(sbc, tmp_path) as client:
        assert _put(client, "/files/tls/2/trustedRoot", sbc.ca_bundle_pem).status_code == 200
        assert _put(client, "/files/tls/2/trustedRoot/incremental", other).status_code == 200
        assert _put(client, "/files/tls/2/trustedRoot/incremental", other).status_code == 200
        assert client.get("/files/tls/2/trustedRoot").content == sbc.ca_bundle_pem + other
    assert len(sbc.context(2).trusted_roots) == 2


def test_faults_target_the_nth_request(sbc: LabSbc, issued: Issued, tmp_path: Path) -> None:
    """Fault rules fire on the Nth matching request only: 409, 500 and dropped connections."""
    sbc.faults.add("500", method="PUT", path="/files/tls/*/certificate", nth=2)
    sbc.faults.busy(2, path="/actions/saveConfiguration")
    sbc.faults.add("drop", path="/status")
    with _client(sbc, tmp_path) as client:
        assert _put(client, "/files/tls/0/certificate", issued.leaf_pem).status_code == 200
        assert _put(client, "/files/tls/0/certificate", issued.leaf_pem).status_code == 500
        assert _put(client, "/files/tls/0/certificate", issued.leaf_pem).status_code == 200
        codes = [client.post("/actions/saveConfiguration").status_code for _ in range(3)]
        assert codes == [409, 409, 200]
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/status")
        assert client.get("/status").status_code == 200


def test_ha_pair_shares_configuration(issued: Issued, tmp_path: Path) -> None:
    """A change on the active shows on the standby's listeners; a sync window answers 409."""
    with LabSbcPair("lab-ha", sync_busy=1) as pair, _client(pair.active, tmp_path) as client:
        assert _put(client, "/files/tls/1/privateKey", issued.key_pem()).status_code == 200
        assert _put(client, "/files/tls/1/certificate", issued.leaf_pem).status_code == 409
        assert _put(client, "/files/tls/1/certificate", issued.leaf_pem).status_code == 200
        new = _sha(issued.leaf_pem)
        assert _served(pair.active.sip_port) == new
        assert _served(pair.standby.sip_port) == new
        assert pair.standby.context(1).sha256 == new
        with _client(pair.standby, tmp_path) as standby:
            assert standby.get("/status").json()["highAvailability"] == "Operational"
            assert standby.post("/actions/saveConfiguration").status_code == 409


def test_teams_listener_and_multipart_parser(issued: Issued) -> None:
    """A Teams listener serves context 2; the multipart parser reads named parts."""
    with LabSbc("lab-teams", teams_listener=True) as device:
        assert device.teams_port is not None
        assert _served(device.teams_port) == device.context(2).sha256
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\nPEM\r\nDATA\r\n--XyZ--\r\n")
    assert parse_multipart("multipart/form-data; boundary=XyZ", body) == {"file": b"PEM\r\nDATA"}


@pytest.mark.oracle
def test_curl_and_openssl_see_the_lab(sbc: LabSbc, issued: Issued, tmp_path: Path) -> None:
    """curl uploads with -F and reads back; openssl s_client sees the new certificate."""
    curl = require_tool("curl")
    openssl = require_tool("openssl")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(sbc.ca_bundle_pem)
    config = tmp_path / "curl.cfg"
    config.write_text(f'user = "{sbc.user}:{sbc.password}"\n')
    config.chmod(0o600)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    key.write_bytes(issued.key_pem("pkcs1"))
    cert.write_bytes(issued.leaf_pem)
    for what, path in (("privateKey", key), ("certificate", cert)):
        out = subprocess.run(
            [curl, "-sS", "--fail-with-body", "--cacert", str(ca), "-K", str(config), "-X", "PUT",
             "-F", f"file=@{path};type=application/octet-stream",
             f"{sbc.url}{API}/files/tls/1/{what}"],
            capture_output=True, text=True, check=True, timeout=30)
        assert "successfully changed" in out.stdout
    read = subprocess.run(
        [curl, "-sS", "--fail", "--cacert", str(ca), "-K", str(config),
         f"{sbc.url}{API}/files/tls/1/certificate"],
        capture_output=True, check=True, timeout=30)
    assert read.stdout == issued.leaf_pem
    shown = subprocess.run(
        f"{openssl} s_client -connect 127.0.0.1:{sbc.sip_port} -servername x </dev/null "
        f"2>/dev/null | {openssl} x509 -fingerprint -sha256 -noout",
        shell=True, capture_output=True, text=True, check=True, timeout=30)
    assert shown.stdout.strip().split("=")[1].replace(":", "").lower() == _sha(issued.leaf_pem)


def test_seed_context_stands_for_an_earlier_install(issued: Issued) -> None:
    """seed_context makes a context hold (and save, and serve) a given pair and roots."""
    with LabSbc("lab-seed") as device:
        device.seed_context(1, issued.leaf_pem, issued.key_pem(), [issued.root_pem])
        assert _served(device.sip_port) == _sha(issued.leaf_pem)
        assert device.saved_context(1).trusted_roots[0] == issued.root_pem
        device.restart()
        assert _served(device.sip_port) == _sha(issued.leaf_pem)
        with pytest.raises(ValueError, match="does not match"):
            device.seed_context(0, issued.leaf_pem, device.context(2).key_pem)


def test_encrypted_key_upload_and_read_only_user(issued: Issued, tmp_path: Path) -> None:
    """An encrypted key loads with its password part (400 without); a read-only user gets 403."""
    assert issued.key is not None
    encrypted = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pw"))
    with LabSbc("lab-enc", read_only_users={"Monitor": "mon-pw"}) as device, \
            _client(device, tmp_path) as client:
        assert _put(client, "/files/tls/1/privateKey", encrypted).status_code == 400
        assert _put(client, "/files/tls/1/privateKey", encrypted,
                    password="key-pw").status_code == 200
        monitor = client.put("/files/tls/1/certificate", auth=("Monitor", "mon-pw"),
                             files={"file": ("c.pem", issued.leaf_pem)})
        assert monitor.status_code == 403
        assert client.get("/status", auth=("Monitor", "mon-pw")).status_code == 200


def test_full_ini_load_resets_the_device(sbc: LabSbc, issued: Issued, tmp_path: Path) -> None:
    """PUT /files/ini loads parameters, saves them and resets: they survive a restart."""
    with _client(sbc, tmp_path) as client:
        ini = client.get("/files/ini").text.replace("SyslogServerIP = 0.0.0.0",
                                                    "SyslogServerIP = 192.0.2.7")
        assert _put(client, "/files/ini", ini.encode()).status_code == 200
        sbc.restart()
        assert "SyslogServerIP = 192.0.2.7" in client.get("/files/ini").text
        assert _put(client, "/files/ini", b"\x00\x01binary").status_code == 400
