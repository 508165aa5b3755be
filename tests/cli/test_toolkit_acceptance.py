"""The toolkit run as a user runs it, on files made the way Windows tools and CAs make them.

``python -m certfleet`` in a subprocess with every Python warning turned on:
exit codes exactly 0/1/2, JSON alone on stdout, nothing alarming on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from _tools import require_tool
from certfleet.lab.ca import Issued, LabCA
from pki_support import odd_certificate

SRC = Path(__file__).resolve().parents[2] / "src"
PW = "Wizard-2026 pfx"
DER = serialization.Encoding.DER


def certfleet(*args: str | Path, cwd: Path,
              prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would; every Python warning would show on stderr."""
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "PYTHONWARNINGS": "always",
        "PFXPW": PW,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [*prefix, sys.executable, "-m", "certfleet", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def assert_clean_stderr(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Warning" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def ca() -> LabCA:
    return LabCA(name="Acceptance CLI", intermediates=2, key_type="rsa2048")


@pytest.fixture(scope="module")
def issued(ca: LabCA) -> Issued:
    return ca.issue(
        ("sbc.example.com", "example.com"), key_type="rsa2048",
        eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, issued: Issued) -> Path:
    """A Windows export (.pfx by OpenSSL's -legacy, RC2-40 + 3DES) and the CA's DER .p7b."""
    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("windows")
    (d / "leaf.pem").write_bytes(issued.leaf_pem)
    (d / "key.pem").write_bytes(issued.key_pem("pkcs8"))
    (d / "chain.pem").write_bytes(issued.chain_pem)
    subprocess.run(
        [openssl, "pkcs12", "-export", "-legacy", "-keypbe", "PBE-SHA1-3DES", "-certpbe",
         "PBE-SHA1-RC2-40", "-in", "leaf.pem", "-inkey", "key.pem", "-certfile", "chain.pem",
         "-name", "sbc.example.com (Windows)", "-out", "server.pfx", "-passout", "env:PFXPW"],
        cwd=d, check=True, capture_output=True, timeout=60, env={**os.environ, "PFXPW": PW},
    )
    (d / "ca.p7b").write_bytes(issued.p7b(wrong_order=True, der=True))
    (d / "leaf.cer").write_bytes(issued.leaf.public_bytes(DER))
    return d


# --- exit codes and JSON -------------------------------------------------------------------


def test_json_alone_on_stdout_for_exit_0_1_and_2(files: Path) -> None:
    """check --json: 0 on a good bundle, 1 on findings, 2 on unusable input; stdout is JSON."""
    ok = certfleet("check", "server.pfx", "ca.p7b", "--password-env", "PFXPW", "--json",
                   "--host", "SBC.Example.COM.", cwd=files)
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert body["ok"] is True and body["bundle"]["root"] is not None
    assert {f["code"] for f in body["findings"]} <= {
        "ROOT_INCLUDED", "CHAIN_REORDERED", "CHAIN_DUPLICATE"
    }
    assert_clean_stderr(ok)

    bad = certfleet("check", "leaf.cer", "--json", cwd=files)
    assert bad.returncode == 1
    findings = json.loads(bad.stdout)["findings"]
    incomplete = next(f for f in findings if f["code"] == "CHAIN_INCOMPLETE")
    assert incomplete["severity"] == "error"
    assert "Intermediate CA 2" in incomplete["message"] and "http://" in incomplete["message"]

    (files / "download.zip").write_bytes(b"PK\x03\x04" + bytes(40))
    unusable = certfleet("check", "download.zip", "--json", cwd=files)
    assert unusable.returncode == 2
    assert json.loads(unusable.stdout) == {
        "error": "'download.zip' is a ZIP archive; unpack it first",
        "hint": "extract the archive and give the certificate, chain and key files in it",
    }
    assert_clean_stderr(unusable)


def test_warning_prone_certificate_prints_no_python_warning(tmp_path: Path) -> None:
    """A certificate with a negative serial and a 3-letter country: no warning on stderr."""
    der, _key = odd_certificate()
    (tmp_path / "odd.cer").write_bytes(der)
    for args in (["inspect", "odd.cer"], ["inspect", "odd.cer", "--json"],
                 ["check", "odd.cer"], ["check", "odd.cer", "--json"]):
        result = certfleet(*args, cwd=tmp_path)
        assert result.returncode in (0, 1), result.stderr
        assert_clean_stderr(result)
        if "--json" in args:
            json.loads(result.stdout)


def test_bracketed_file_names_are_shown_as_text(tmp_path: Path, issued: Issued) -> None:
    """Names like 'cert[1].cer' or 'a[/]x.pem' are quoted as they are, never crash the output."""
    (tmp_path / "a[").mkdir()
    (tmp_path / "a[" / "]x.pem").write_bytes(issued.leaf_pem)
    shown = certfleet("inspect", "a[/]x.pem", cwd=tmp_path)
    assert shown.returncode == 0 and "a[/]x.pem" in shown.stdout.replace("\n", "")
    assert_clean_stderr(shown)
    for name in ("[red]cert[1].cer", "[/]missing.pem"):
        missing = certfleet("inspect", name, cwd=tmp_path)
        assert missing.returncode == 2
        assert f"cannot read {name!r}" in missing.stderr
        assert_clean_stderr(missing)


def test_html_page_and_empty_file_are_named(tmp_path: Path) -> None:
    """An HTML error page saved as .crt and an empty file each get their own message."""
    (tmp_path / "server.crt").write_text("<html><body>Session expired</body></html>")
    (tmp_path / "empty.cer").write_bytes(b"")
    page = certfleet("check", "server.crt", cwd=tmp_path)
    assert page.returncode == 2 and "is an HTML page" in page.stderr and not page.stdout
    empty = certfleet("check", "empty.cer", "--json", cwd=tmp_path)
    assert empty.returncode == 2
    assert json.loads(empty.stdout)["error"] == "'empty.cer' is empty"


def test_ca_bundle_alone_is_not_ok(files: Path) -> None:
    """check on the CA's .p7b alone exits 1: there is no server certificate."""
    result = certfleet("check", "ca.p7b", "--json", cwd=files)
    assert result.returncode == 1
    errors = [f for f in json.loads(result.stdout)["findings"] if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["NO_SERVER_AUTH"]


def test_password_file_from_notepad(files: Path, tmp_path: Path) -> None:
    """A password file with a UTF-8 BOM, CRLF and a second line: its first line is the password."""
    (tmp_path / "pw.txt").write_bytes(b"\xef\xbb\xbf" + PW.encode() + b"\r\nnotes\r\n")
    result = certfleet("check", "server.pfx", "ca.p7b", "--password-file", tmp_path / "pw.txt",
                       "--json", cwd=files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["bundle"]["private_key"]["encrypted"] is True


def test_pfx_without_mac_or_password(files: Path, tmp_path: Path) -> None:
    """A .pfx exported with no password and no MAC opens without one and says unencrypted."""
    openssl = require_tool("openssl")
    subprocess.run(
        [openssl, "pkcs12", "-export", "-keypbe", "NONE", "-certpbe", "NONE", "-nomac",
         "-in", str(files / "leaf.pem"), "-inkey", str(files / "key.pem"), "-certfile",
         str(files / "chain.pem"), "-out", str(tmp_path / "open.pfx"), "-passout", "pass:"],
        check=True, capture_output=True, timeout=60,
    )
    result = certfleet("check", tmp_path / "open.pfx", "--password-env", "PFXPW", "--json",
                       cwd=files)
    assert result.returncode == 0, result.stdout + result.stderr
    key = json.loads(result.stdout)["bundle"]["private_key"]
    assert key["encrypted"] is False and key["format"] == "pkcs12"


# --- export to what devices and Java read --------------------------------------------------


def test_ovoc_set_from_windows_pfx_and_ca_p7b(files: Path, tmp_path: Path) -> None:
    """--target ovoc: PKCS#1 unencrypted 0600 key, root and ca1/ca2 that openssl verifies."""
    openssl = require_tool("openssl")
    out = tmp_path / "ovoc"
    result = certfleet("export", "server.pfx", "ca.p7b", "--password-env", "PFXPW",
                       "--target", "ovoc", "--out-dir", out, "--json", cwd=files)
    assert result.returncode == 0, result.stderr
    written = {Path(w["path"]).name for w in json.loads(result.stdout)["written"]}
    assert written == {"server.crt", "server.key", "root.crt", "ca1.crt", "ca2.crt"}
    key_text = (out / "server.key").read_text()
    assert key_text.startswith("-----BEGIN RSA PRIVATE KEY-----") and "ENCRYPTED" not in key_text
    if os.name == "posix":
        assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600
    (tmp_path / "untrusted.pem").write_text(
        (out / "ca1.crt").read_text() + (out / "ca2.crt").read_text()
    )
    verify = subprocess.run(
        [openssl, "verify", "-CAfile", str(out / "root.crt"), "-untrusted",
         str(tmp_path / "untrusted.pem"), str(out / "server.crt")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stderr
    modulus = [
        subprocess.run([openssl, kind, "-noout", "-modulus", "-in", str(out / name)],
                       capture_output=True, text=True, timeout=60, check=True).stdout
        for kind, name in (("rsa", "server.key"), ("x509", "server.crt"))
    ]
    assert modulus[0] == modulus[1]


def test_pfx_legacy_and_jks_open_in_java_and_openssl(files: Path, tmp_path: Path) -> None:
    """pfx-legacy opens with keytool and with openssl without -legacy; jks lists in keytool."""
    openssl, keytool = require_tool("openssl"), require_tool("keytool")
    env = {**os.environ, "PFXPW": PW}
    for fmt, name in (("pfx-legacy", "legacy.pfx"), ("jks", "store.jks")):
        result = certfleet("export", "server.pfx", "ca.p7b", "--password-env", "PFXPW",
                           "--format", fmt, "--out", tmp_path / name,
                           "--out-password-env", "PFXPW", cwd=files)
        assert result.returncode == 0, result.stderr
        store_type = "pkcs12" if fmt == "pfx-legacy" else "jks"
        listed = subprocess.run(
            [keytool, "-list", "-storetype", store_type, "-keystore", str(tmp_path / name),
             "-storepass:env", "PFXPW"],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )
        assert listed.returncode == 0 and "PrivateKeyEntry" in listed.stdout, listed.stdout
    info = subprocess.run(
        [openssl, "pkcs12", "-info", "-noout", "-in", str(tmp_path / "legacy.pfx"),
         "-passin", "env:PFXPW"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert info.returncode == 0, info.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info.stderr + info.stdout
    chain = pkcs7.load_der_pkcs7_certificates((files / "ca.p7b").read_bytes())
    assert len(chain) == 3  # the CA's chain: two intermediates and the root


# --- every documented finding code, with its documented severity -------------------------


def _readme_codes() -> dict[str, str]:
    """The general finding codes table of the README: code -> severity."""
    text = (SRC.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("### Finding codes", 1)[1].split("Device profiles add", 1)[0]
    codes: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            codes[cells[0].strip("`")] = cells[1]
    return codes


def _write(path: Path, *items: x509.Certificate | bytes) -> Path:
    path.write_bytes(b"".join(
        i if isinstance(i, bytes) else i.public_bytes(serialization.Encoding.PEM)
        for i in items
    ))
    return path


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _resign_sha1(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """The certificate signed with SHA-1, as old CAs did (cryptography no longer builds it)."""
    sha256_rsa, sha1_rsa = bytes.fromhex("06092a864886f70d01010b"), bytes.fromhex(
        "06092a864886f70d010105")
    tbs = cert.tbs_certificate_bytes.replace(sha256_rsa, sha1_rsa)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = _tlv(0x30, sha1_rsa + b"\x05\x00")
    return x509.load_der_x509_certificate(
        _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))
    )


def test_every_documented_code_with_its_severity(tmp_path: Path, ca: LabCA) -> None:
    """Bundles built to fail each check: every README code appears, with its severity."""
    from typer.testing import CliRunner

    from certfleet.cli.app import app

    documented = _readme_codes()
    assert len(documented) >= 17
    now = dt.datetime.now(dt.UTC)
    weak = ca.issue(("weak.example.com",), key_type="rsa1024",
                    eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
                    not_before=now - dt.timedelta(days=90),
                    not_after=now - dt.timedelta(days=1))
    issuer_key = ca.issuer[1]
    assert isinstance(issuer_key, rsa.RSAPrivateKey)
    sha1_leaf = _resign_sha1(weak.leaf, issuer_key)
    other_key = LabCA(name="Unrelated").issue(("x.example.com",), key_type="ec-p256")
    future = ca.issue(("future.example.com",), key_type="ec-p256",
                      not_before=now + dt.timedelta(days=2), days=30)
    soon = ca.issue(("soon.example.com",), key_type="ec-p256", days=10)
    assert weak.key is not None and soon.key is not None and other_key.key is not None
    # An intermediate that claims the real one's name and key id, with another key.
    real = soon.chain[0]
    fake_key = ec.generate_private_key(ec.SECP256R1())
    ski = real.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    fake = (
        x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
        .public_key(fake_key.public_key()).serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=99))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ski, critical=False)
        .sign(fake_key, hashes.SHA256())
    )
    self_key = ec.generate_private_key(ec.SECP256R1())
    self_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self.example.com")])
    self_signed = (
        x509.CertificateBuilder().subject_name(self_name).issuer_name(self_name)
        .public_key(self_key.public_key()).serial_number(9)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=99))
        .sign(self_key, hashes.SHA256())
    )
    with warnings.catch_warnings():  # the test's own too-long name, made on purpose
        warnings.simplefilter("ignore", UserWarning)
        long_subject = x509.Name([x509.NameAttribute(
            NameOID.COMMON_NAME, "a" * 70 + ".example.com", _validate=False)])
    long_name = (
        x509.CertificateBuilder().subject_name(long_subject).issuer_name(long_subject)
        .public_key(self_key.public_key()).serial_number(11)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=99))
        .sign(self_key, hashes.SHA256())
    )
    self_key_pem = self_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    runs = [
        [_write(tmp_path / "a.pem", sha1_leaf, *weak.chain, other_key.key_pem()),
         "--host", "www.example.com"],
        [_write(tmp_path / "b.pem", future.leaf)],
        [_write(tmp_path / "c.pem", soon.root, *reversed(soon.chain), soon.leaf, soon.leaf,
                other_key.leaf, soon.key_pem())],
        [_write(tmp_path / "d.pem", self_signed, self_key_pem)],
        [_write(tmp_path / "e.pem", soon.leaf, fake, soon.key_pem())],
        # The request given with the chain instead of the issued certificate.
        [_write(tmp_path / "f.pem", x509.CertificateSigningRequestBuilder()
                .subject_name(soon.leaf.subject).sign(soon.key, hashes.SHA256())
                .public_bytes(serialization.Encoding.PEM), *soon.chain)],
        # A CN longer than RFC 5280's 64 characters (NOT_RFC5280).
        [_write(tmp_path / "g.pem", long_name, self_key_pem)],
    ]
    seen: dict[str, set[str]] = {}
    for args in runs:
        result = CliRunner().invoke(app, ["check", "--json", *map(str, args)])
        assert result.exit_code in (0, 1), result.stdout
        body = json.loads(result.stdout)
        assert body["ok"] == (result.exit_code == 0)
        assert body["ok"] == all(f["severity"] != "error" for f in body["findings"])
        for finding in body["findings"]:
            seen.setdefault(finding["code"], set()).add(finding["severity"])
    assert set(seen) >= set(documented), set(documented) - set(seen)
    for code, severity in documented.items():
        assert seen[code] == {severity}, (code, seen[code])


def test_unreadable_missing_and_folder_inputs_exit_2(tmp_path: Path, issued: Issued) -> None:
    """A missing file, a folder and (when not root) an unreadable file: exit 2, named plainly."""
    (tmp_path / "certs").mkdir()
    locked = tmp_path / "locked.pem"
    locked.write_bytes(issued.leaf_pem)
    locked.chmod(0)
    cases = [("nope.pem", "No such file"), ("certs", "it is a folder, not a file"),
             ("locked.pem", "Permission denied")]
    prefix: list[str] = []
    if os.name == "posix" and os.geteuid() == 0:
        # root reads anything: run without the capabilities that let it (CI runs as root)
        prefix = [require_tool("setpriv"), "--bounding-set", "-dac_override,-dac_read_search"]
    for name, reason in cases:
        result = certfleet("check", name, "--json", cwd=tmp_path, prefix=prefix)
        assert result.returncode == 2
        assert json.loads(result.stdout)["error"].startswith(f"cannot read {name!r}: {reason}")
        assert_clean_stderr(result)
    locked.chmod(0o600)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--json"], "Missing argument"),
        (["check", "--json", "x.pem", "--expiry-warn-days", "-3"], "--expiry-warn-days"),
        (["inspect", "--json", "--nope", "x.pem"], "No such option: --nope"),
        (["export", "x.pem", "--json", "--format"], "'--format' requires an argument"),
        (["csr", "--json", "--cn"], "'--cn' requires an argument"),
    ],
)
def test_usage_errors_with_json_print_json(args: list[str], message: str) -> None:
    """A usage error with --json exits 2 with {"error", "hint"} on stdout, nothing else."""
    from typer.testing import CliRunner

    from certfleet.cli.app import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert message in body["error"] and body["hint"] == f"see certfleet {args[0]} --help"


def test_usage_errors_without_json_keep_the_usage_text() -> None:
    """Without --json a usage error still prints the usage text on stderr, exit 2."""
    from typer.testing import CliRunner

    from certfleet.cli.app import app

    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 2 and not result.stdout and "Usage" in result.stderr
