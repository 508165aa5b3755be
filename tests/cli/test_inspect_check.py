"""``certfleet inspect`` and ``certfleet check``: exit codes and JSON, as scripts use them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.model import cert_sha256, spki_sha256

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PW = "Pfx pass 1"


@pytest.fixture(scope="module")
def good(lab_ca: LabCA) -> Issued:
    """A wildcard leaf with serverAuth and clientAuth: checks find nothing wrong."""
    return lab_ca.issue(
        ("*.example.com", "example.com"),
        key_type="ec-p256",
        eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, good: Issued, issued_ec: Issued) -> Path:
    """A folder with the files a CA download and a key export leave behind."""
    assert good.key is not None
    d = tmp_path_factory.mktemp("inputs")
    (d / "server.crt").write_bytes(good.leaf.public_bytes(serialization.Encoding.DER))
    (d / "chain.pem").write_bytes(good.root_pem + good.chain_pem)
    (d / "fullchain.pem").write_bytes(good.fullchain_pem)
    (d / "server.key").write_bytes(good.key_pem("pkcs8"))
    (d / "other.key").write_bytes(issued_ec.key_pem())
    (d / "server.pfx").write_bytes(pkcs12.serialize_key_and_certificates(
        b"lab", good.key, good.leaf, list(good.chain),
        serialization.BestAvailableEncryption(PW.encode()),
    ))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(good.leaf.subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.example.com")]), False)
        .sign(good.key, hashes.SHA256())
    )
    (d / "server.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (d / "password.txt").write_text(PW + "\n")
    (d / "junk.bin").write_bytes(b"not a certificate\n")
    return d


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_inspect_json_fields(files: Path, good: Issued) -> None:
    """inspect --json lists certificate, key and CSR with the documented fields."""
    code, out, _ = invoke("inspect", files / "server.crt", files / "server.key",
                          files / "server.csr", "--json")
    assert code == 0
    objects = json.loads(out)["objects"]
    assert [o["type"] for o in objects] == ["certificate", "private_key", "csr"]
    cert, key, csr = objects
    assert cert["source"] == str(files / "server.crt")
    assert cert["format"] == "der"
    assert cert["subject"] == "CN=*.example.com"
    assert cert["issuer"] == "CN=certfleet Lab Intermediate CA 1,O=certfleet lab"
    assert cert["serial"] == format(good.leaf.serial_number, "x")
    assert cert["sha256"] == cert_sha256(good.leaf) and HEX64.match(cert["sha256"])
    assert cert["spki_sha256"] == spki_sha256(good.leaf)
    assert ISO_Z.match(cert["not_before"]) and ISO_Z.match(cert["not_after"])
    assert cert["sans"] == ["*.example.com", "example.com"]
    assert (cert["is_ca"], cert["key_type"], cert["key_bits"]) == (False, "ec", 256)
    assert key == {**key, "type": "private_key", "key_type": "ec", "key_bits": 256,
                   "format": "pkcs8", "encrypted": False, "spki_sha256": spki_sha256(good.leaf)}
    assert (csr["subject"], csr["sans"], csr["format"]) == ("CN=*.example.com",
                                                             ["*.example.com"], "pem")
    assert csr["spki_sha256"] == spki_sha256(good.leaf)


def test_inspect_human_table(files: Path) -> None:
    """Without --json, inspect prints a table naming the subject and the key format."""
    code, out, _ = invoke("inspect", files / "chain.pem", files / "server.key",
                          env={"COLUMNS": "200"})
    assert code == 0
    assert "certfleet Lab Root CA" in out and "pkcs8" in out


def test_inspect_pfx_with_password_env_and_file(files: Path) -> None:
    """The .pfx password comes from --password-env or --password-file, never argv."""
    code, out, _ = invoke("inspect", files / "server.pfx", "--password-env", "PFX_PW", "--json",
                          env={"PFX_PW": PW})
    assert code == 0
    assert [o["format"] for o in json.loads(out)["objects"]] == ["pkcs12"] * 3
    code, out, _ = invoke("inspect", files / "server.pfx", "--password-file",
                          files / "password.txt", "--json")
    assert code == 0 and json.loads(out)["objects"][0]["encrypted"] is True


def test_inspect_encrypted_without_password(files: Path) -> None:
    """No password and no terminal: exit 2 with a one-line error naming --password-env."""
    code, _, err = invoke("inspect", files / "server.pfx")
    assert code == 2
    assert "no password was given" in err and "--password-env" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["inspect", "check"])
def test_unusable_input_json_error(files: Path, command: str) -> None:
    """Missing or unrecognisable files: exit 2 and {"error": ...} with --json."""
    for path in (files / "missing.pem", files / "junk.bin"):
        code, out, _ = invoke(command, path, "--json")
        assert code == 2
        error = json.loads(out)["error"]
        assert str(path.name) in error


def test_check_ok(files: Path, good: Issued) -> None:
    """A complete bundle: exit 0, ok true, bundle leaf/chain/root/key described."""
    code, out, _ = invoke("check", files / "server.crt", files / "chain.pem",
                          files / "server.key", "--host", "ovoc.example.com", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True
    assert {f["code"] for f in data["findings"]} == {"CHAIN_REORDERED", "ROOT_INCLUDED"}
    assert all(set(f) >= {"code", "severity", "message", "hint"} for f in data["findings"])
    bundle = data["bundle"]
    assert bundle["leaf"]["sha256"] == cert_sha256(good.leaf)
    assert bundle["leaf"]["subject"] == "CN=*.example.com"
    assert ISO_Z.match(bundle["leaf"]["not_after"])
    assert [c["sha256"] for c in bundle["chain"]] == [cert_sha256(good.chain[0])]
    assert bundle["root"]["sha256"] == cert_sha256(good.root)
    assert bundle["private_key"]["spki_sha256"] == spki_sha256(good.leaf)
    assert bundle["private_key"]["format"] == "pkcs8"


def test_check_errors_exit_1(files: Path) -> None:
    """A foreign key and an uncovered host: exit 1, ok false, errors listed first."""
    code, out, _ = invoke("check", files / "fullchain.pem", files / "other.key",
                          "--host", "a.b.example.com", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    severities = [f["severity"] for f in data["findings"]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    assert {"KEY_MISMATCH", "NAME_NOT_COVERED"} <= {f["code"] for f in data["findings"]}
    assert data["bundle"]["private_key"] is None and data["bundle"]["root"] is None


def test_check_expiry_warn_days(files: Path) -> None:
    """--expiry-warn-days widens the window: a warning, still exit 0."""
    code, out, _ = invoke("check", files / "fullchain.pem", files / "server.key",
                          "--expiry-warn-days", "400", "--json")
    assert code == 0
    assert "EXPIRES_SOON" in {f["code"] for f in json.loads(out)["findings"]}


def test_check_human_output(files: Path) -> None:
    """Human output: the bundle summary, then each finding with its hint."""
    code, out, _ = invoke("check", files / "fullchain.pem", files / "other.key")
    assert code == 1
    assert "CN=*.example.com" in out and "*.example.com, example.com" in out
    assert "KEY_MISMATCH" in out and "find the key that was used" in out


def test_check_wrong_password_and_usage(files: Path) -> None:
    """A wrong password, no file, an unknown option: all exit 2."""
    code, out, _ = invoke("check", files / "server.pfx", "--password-env", "PFX_PW", "--json",
                          env={"PFX_PW": "wrong"})
    assert code == 2 and "password is wrong" in json.loads(out)["error"]
    assert invoke("check")[0] == 2
    assert invoke("check", files / "server.pfx", "--password", "x")[0] == 2
    code, _, err = invoke("check", files / "server.pfx", "--password-env", "UNSET_VAR_X")
    assert code == 2 and "UNSET_VAR_X" in err


def test_check_pfx_alone(files: Path) -> None:
    """A .pfx alone, with its password: key and chain inside, exit 0."""
    code, out, _ = invoke("check", files / "server.pfx", "--password-file",
                          files / "password.txt", "--json")
    assert code == 0, out
    key = json.loads(out)["bundle"]["private_key"]
    assert key["format"] == "pkcs12"


def test_python_dash_m(files: Path) -> None:
    """`python -m certfleet check` runs the same command, exit codes included."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    ok = subprocess.run(
        [sys.executable, "-m", "certfleet", "check", str(files / "fullchain.pem"),
         str(files / "server.key"), "--json"],
        capture_output=True, text=True, env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    bad = subprocess.run(
        [sys.executable, "-m", "certfleet", "check", str(files / "junk.bin")],
        capture_output=True, text=True, env=env,
    )
    assert bad.returncode == 2 and "contains no certificate" in bad.stderr


def _read_until(fd: int, marker: bytes | None) -> bytes:
    """Read from a pty until ``marker`` (or EOF when None); a 60 s guard against hangs."""
    import select

    seen = b""
    while marker is None or marker not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            raise AssertionError(f"no {marker!r} from the command; got {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_prompts_for_password_on_a_terminal(files: Path) -> None:
    """On a terminal with no password flag, the command asks for the password once."""
    import pty

    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "200"}
    argv = [sys.executable, "-m", "certfleet", "inspect", str(files / "server.pfx"), "--json"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: run the command with the pty as its terminal
        os.execve(sys.executable, argv, env)
    try:
        _read_until(fd, b"Password")
        os.write(fd, PW.encode() + b"\n")
        out = _read_until(fd, None)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert PW.encode() not in out
    assert b'"format": "pkcs12"' in out


def test_check_names_a_csr_given_with_the_chain(files: Path) -> None:
    """`check server.csr chain.pem server.key`: CSR_GIVEN, exit 1, no KEY_MISMATCH."""
    code, out, _ = invoke("check", files / "server.csr", files / "chain.pem",
                          files / "server.key", "--json")
    assert code == 1
    data = json.loads(out)
    codes = [f["code"] for f in data["findings"] if f["severity"] == "error"]
    assert codes == ["CSR_GIVEN"], codes
    assert "this is the certificate request" in data["findings"][0]["message"]
    code, out, _ = invoke("check", files / "server.csr", files / "chain.pem")
    assert code == 1 and "none: the input holds the request" in out and "CSR_GIVEN" in out
    code, _, err = invoke("check", files / "server.csr")
    assert code == 2 and "certificate request (CSR)" in err and "Traceback" not in err
