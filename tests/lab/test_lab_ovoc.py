"""The lab OVOC: SSH/SFTP as acems, su, EmsServerManager menus and the real import."""

from __future__ import annotations

import asyncio
import copy
import ssl
import subprocess
from collections.abc import Iterator

import asyncssh
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from _tools import require_tool
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.ems_emulator import load_menus
from certfleet.lab.ovoc import LabOvoc
from ovoc_support import ovoc_files

SUCCESS = "PKCS#12 file and JKS Keystore generated successfully"
SUCCESS2 = "Imported files and generated PKCS#12 with JKS Keystore files"
FAILURE = "failed to generate SEM PKCS#12 file"
IMPORT_PATH = ["4", "11", "3"]


@pytest.fixture(scope="module")
def ca() -> LabCA:
    return LabCA("OVOC Lab Test", intermediates=1, key_type="ec-p256")


@pytest.fixture(scope="module")
def new_cert(ca: LabCA) -> Issued:
    return ca.issue(["ovoc.example.com"], key_type="rsa2048")


@pytest.fixture
def lab() -> Iterator[LabOvoc]:
    with LabOvoc(restart_delay=0.05) as running:
        yield running


async def _converse(lab: LabOvoc, steps: list[tuple[str, str]], *, user: str = "acems",
                    password: str | None = None) -> str:
    """Wait for each expected text on the screen, then type the answer; return the screen."""
    async with asyncssh.connect(
        "127.0.0.1", lab.ssh_port, username=user, password=password or lab.acems_password,
        known_hosts=None,
    ) as conn:
        proc = await conn.create_process(term_type="vt100", encoding="utf-8")
        screen, pos = "", 0
        for expected, answer in steps:
            while expected not in screen[pos:]:
                chunk = await asyncio.wait_for(proc.stdout.read(4096), 20)
                assert chunk, f"session ended before {expected!r}:\n{screen}"
                screen += chunk
            # the next expectation must appear after what is answered here
            pos = len(screen)
            proc.stdin.write(answer + "\n")
        proc.stdin.write_eof()
        return screen + await asyncio.wait_for(proc.stdout.read(), 20)


def converse(lab: LabOvoc, steps: list[tuple[str, str]], **kwargs: str) -> str:
    return asyncio.run(_converse(lab, steps, **kwargs))


def import_steps(lab: LabOvoc, password: str = "keystore-Pa55", path: list[str] = IMPORT_PATH,
                 su: str = "su -") -> list[tuple[str, str]]:
    steps = [("$ ", su), ("Password:", lab.root_password), ("# ", "EmsServerManager")]
    for number in path:
        steps.append(("Choose an option: ", number))
    steps += [("Press Enter to continue", ""), ("Keystore: ", password),
              ("Press Enter to continue", ""), ("Choose an option: ", "q"),
              ("Choose an option: ", "q"), ("Choose an option: ", "q"), ("# ", "exit"),
              ("$ ", "exit")]
    return steps


def served_leaf(lab: LabOvoc) -> x509.Certificate:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import socket

    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", lab.https_port), 5) as sock, \
                    ctx.wrap_socket(sock) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return x509.load_der_x509_certificate(der)
        except ConnectionRefusedError:
            # the web server restarts after an import; wait for it as a client would
            import time

            time.sleep(0.05)
    raise AssertionError("the lab web server did not come back")


def test_login_as_acems_only(lab: LabOvoc) -> None:
    """acems logs in with its password; root and wrong passwords are refused."""
    assert "acems" in converse(lab, [("$ ", "whoami"), ("acems", "exit")])
    with pytest.raises(asyncssh.PermissionDenied):
        converse(lab, [("$ ", "exit")], user="root", password=lab.root_password)
    with pytest.raises(asyncssh.PermissionDenied):
        converse(lab, [("$ ", "exit")], password="wrong")


def test_sftp_shows_real_paths(lab: LabOvoc) -> None:
    """SFTP starts in /home/acems and the staging folder is /home/acems/server_certs."""

    async def run() -> tuple[str, list[str]]:
        async with (
            asyncssh.connect("127.0.0.1", lab.ssh_port, username="acems",
                             password=lab.acems_password, known_hosts=None) as conn,
            conn.start_sftp_client() as sftp,
        ):
            return await sftp.realpath("."), sorted(
                await sftp.listdir("/home/acems/server_certs"))

    home, names = asyncio.run(run())
    assert home == "/home/acems"
    assert [n for n in names if not n.startswith(".")] == [
        "ca1.crt", "root.crt", "server.crt", "server.key"]


def test_staging_folder_can_be_missing() -> None:
    """staging='missing' starts without /home/acems/server_certs."""
    with LabOvoc(staging="missing") as lab:
        assert not lab.staging_dir.exists()
        assert lab.staged_files() == {}


def test_su_wrong_password(lab: LabOvoc) -> None:
    """su with a wrong password says 'su: Authentication failure' and stays acems."""
    screen = converse(lab, [("$ ", "su -"), ("Password:", "nope"), ("$ ", "whoami"),
                            ("acems", "exit")])
    assert "su: Authentication failure" in screen
    assert "nope" not in screen


def test_ems_server_manager_needs_root(lab: LabOvoc) -> None:
    """EmsServerManager refuses to run as acems."""
    screen = converse(lab, [("$ ", "EmsServerManager"), ("$ ", "exit")])
    assert "must be run as root" in screen


def test_import_happy_path(lab: LabOvoc, new_cert: Issued) -> None:
    """The import builds PKCS#12 + JKS with the password, prints the story's lines, serves it."""
    before = served_leaf(lab)
    assert before == lab.initial.leaf
    lab.stage_files(ovoc_files(new_cert))
    screen = converse(lab, import_steps(lab))
    assert SUCCESS in screen and SUCCESS2 in screen
    assert "keystore-Pa55" not in screen  # the password prompt does not echo
    assert lab.keystore_password == "keystore-Pa55"
    assert served_leaf(lab) == new_cert.leaf
    key, cert, extra = pkcs12.load_key_and_certificates(
        lab.pkcs12_path.read_bytes(), b"keystore-Pa55")
    assert cert == new_cert.leaf and key is not None
    assert [c for c in extra] == [*new_cert.chain, new_cert.root]


@pytest.mark.oracle
def test_import_jks_lists_with_keytool(lab: LabOvoc, new_cert: Issued) -> None:
    """keytool lists the JKS keystore the import wrote, with the password answered."""
    keytool = require_tool("keytool")
    lab.stage_files(ovoc_files(new_cert))
    converse(lab, import_steps(lab))
    out = subprocess.run(
        [keytool, "-list", "-v", "-keystore", str(lab.jks_path), "-storepass", "keystore-Pa55"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "PrivateKeyEntry" in out
    assert "ovoc.example.com" in out


def _rejected(lab: LabOvoc, files: dict[str, bytes], remove: tuple[str, ...] = ()) -> str:
    before = lab.served_certificate()
    for name in remove:
        (lab.staging_dir / name).unlink(missing_ok=True)
    lab.stage_files(files)
    screen = converse(lab, import_steps(lab))
    assert FAILURE in screen and "SEM PKCS#12 file" in screen
    assert SUCCESS not in screen
    assert lab.served_certificate() == before
    assert served_leaf(lab) == before
    assert not lab.pkcs12_path.exists()
    assert lab.last_import is not None
    return lab.last_import.reason


def test_rejects_missing_key(lab: LabOvoc, new_cert: Issued) -> None:
    """No server.key: the SEM PKCS#12 error, nothing served changes."""
    files = ovoc_files(new_cert)
    del files["server.key"]
    assert _rejected(lab, files, remove=("server.key",)) == "server.key is missing"


def test_rejects_encrypted_key(lab: LabOvoc, new_cert: Issued) -> None:
    """An encrypted server.key is rejected."""
    files = ovoc_files(new_cert)
    assert new_cert.key is not None
    files["server.key"] = new_cert.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"))
    assert _rejected(lab, files) == "server.key is encrypted"


def test_rejects_key_only_in_pfx(lab: LabOvoc, new_cert: Issued) -> None:
    """A .pfx holding the key does not replace server.key: rejected as in the story."""
    files = ovoc_files(new_cert)
    del files["server.key"]
    assert new_cert.key is not None
    files["wildcard.pfx"] = pkcs12.serialize_key_and_certificates(
        b"x", new_cert.key, new_cert.leaf, None, serialization.BestAvailableEncryption(b"pw"))
    assert _rejected(lab, files, remove=("server.key",)) == "server.key is missing"


def test_rejects_mismatched_key(lab: LabOvoc, new_cert: Issued, ca: LabCA) -> None:
    """A server.key that is not the certificate's key is rejected."""
    files = ovoc_files(new_cert)
    files["server.key"] = ca.issue(["other.example.com"]).key_pem("pkcs1")
    assert _rejected(lab, files) == "server.key does not match server.crt"


def test_rejects_missing_or_misnamed_certificate(lab: LabOvoc, new_cert: Issued) -> None:
    """server.crt missing (staged as wildcard.cer instead) is rejected."""
    files = ovoc_files(new_cert)
    files["wildcard.cer"] = files.pop("server.crt")
    assert _rejected(lab, files, remove=("server.crt",)) == "server.crt is missing"


def test_rejects_unparseable_certificate(lab: LabOvoc, new_cert: Issued) -> None:
    """A DER or garbage server.crt is rejected."""
    files = ovoc_files(new_cert)
    files["server.crt"] = new_cert.leaf.public_bytes(serialization.Encoding.DER)
    assert _rejected(lab, files) == "server.crt is not a PEM certificate"


def test_renumbered_menus() -> None:
    """A menu file with other numbers and labels is drawn as given."""
    menus = copy.deepcopy(load_menus())
    menus["menus"]["main"]["options"][3]["key"] = "9"
    menus["menus"]["security"]["options"][10]["key"] = "21"
    menus["menus"]["security"]["options"][10]["label"] = "Server Certificates Update"
    with LabOvoc(menus=menus) as lab:
        screen = converse(lab, [("$ ", "su"), ("Password:", lab.root_password),
                                ("# ", "EmsServerManager"), ("Choose an option: ", "4"),
                                ("Choose an option: ", "9"), ("Choose an option: ", "q"),
                                ("Choose an option: ", "q"), ("# ", "exit"), ("$ ", "exit")])
    assert "   9. Security" in screen
    assert "  21. Server Certificates Update" in screen
    assert "Invalid option '4'" in screen  # Security moved away from 4


def test_web_server_never_comes_back(lab: LabOvoc, new_cert: Issued) -> None:
    """With web_fail_restarts the web server stays down after a successful import."""
    lab.web_fail_restarts = 1
    lab.stage_files(ovoc_files(new_cert))
    screen = converse(lab, import_steps(lab))
    assert SUCCESS in screen
    assert lab._restart_timer is not None
    lab._restart_timer.join(5)
    assert not lab.web_up


def test_injected_prompt(lab: LabOvoc, new_cert: Issued) -> None:
    """An injected question appears between 'Press Enter' and the password prompt."""
    lab.faults.inject_prompt = "Overwrite the existing keystore? (yes/no): "
    lab.stage_files(ovoc_files(new_cert))
    steps = import_steps(lab)
    index = steps.index(("Keystore: ", "keystore-Pa55"))
    steps.insert(index, ("(yes/no): ", "yes"))
    screen = converse(lab, steps)
    assert "Overwrite the existing keystore?" in screen and SUCCESS in screen
