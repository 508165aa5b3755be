"""``certfleet csr`` and ``certfleet export``: files written, modes, exit codes, oracles."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner, Result

from _tools import require_tool
from certfleet.cli import make
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.bundle import assemble
from certfleet.pki.export import FORMATS, PASSWORD_FORMATS
from certfleet.pki.load import load_bytes, load_files
from certfleet.pki.model import spki_sha256

PW = "Export pw 7"
Invoke = Callable[..., Result]
Files = dict[str, Path]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """A bare app with only this module's commands, as cli/app.py registers them."""
    application = typer.Typer()
    make.register(application)
    return application


@pytest.fixture
def run(app: typer.Typer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """Invoke the app in ``tmp_path`` with PW in the environment."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"PW": PW, "CF_IN": "in-pass"})

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture(scope="module")
def rsa_issued(lab_ca2: LabCA) -> Issued:
    """An RSA-2048 wildcard leaf under two intermediates."""
    return lab_ca2.issue(("*.example.com", "example.com"), key_type="rsa2048")


@pytest.fixture
def inputs(tmp_path: Path, rsa_issued: Issued) -> Files:
    """The files a CA download gives, plus the key: leaf, chain (root first!), root, key."""
    d = tmp_path / "in"
    d.mkdir()
    files = {
        "leaf": d / "server.crt",
        "chain": d / "chain.pem",
        "root": d / "root.crt",
        "key": d / "server.key",
    }
    files["leaf"].write_bytes(rsa_issued.leaf_pem)
    files["chain"].write_bytes(b"".join(rsa_issued.pem(c) for c in reversed(rsa_issued.chain)))
    files["root"].write_bytes(rsa_issued.root_pem)
    files["key"].write_bytes(rsa_issued.key_pem("pkcs8"))
    return files


def _all(inputs: Files) -> list[str]:
    return [str(p) for p in inputs.values()]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------ csr


def test_csr_writes_key_and_csr(run: Invoke, tmp_path: Path) -> None:
    """csr writes wildcard.example.com.key (0600, PKCS#1) and .csr with the CN as a SAN."""
    result = run("csr", "--cn", "*.example.com", "--san", "example.com", "--out-dir", "o",
                 "--org", "Example Ltd", "--country", "GB", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    key_path, csr_path = Path(data["key"]), Path(data["csr"])
    assert key_path == Path("o/wildcard.example.com.key")
    assert csr_path == Path("o/wildcard.example.com.csr")
    key_pem = (tmp_path / key_path).read_bytes()
    assert key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    if os.name == "posix":
        assert _mode(tmp_path / key_path) == 0o600
    request = x509.load_pem_x509_csr((tmp_path / csr_path).read_bytes())
    sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["*.example.com", "example.com"]
    key = serialization.load_pem_private_key(key_pem, None)
    assert data["spki_sha256"] == spki_sha256(key) == spki_sha256(request)


def test_csr_ec_with_passphrase(run: Invoke, tmp_path: Path) -> None:
    """--passphrase-env encrypts the key as PKCS#8; EC keys are supported."""
    result = run("csr", "--cn", "sbc1.example.com", "--key-type", "ec-p384", "--out-dir", "o",
                 "--passphrase-env", "PW")
    assert result.exit_code == 0, result.output
    assert "sbc1.example.com.key" in result.stdout
    pem = (tmp_path / "o" / "sbc1.example.com.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, PW.encode())
    assert key.curve.name == "secp384r1"  # type: ignore[union-attr]  # EC key


def test_csr_refuses_to_overwrite(run: Invoke, tmp_path: Path) -> None:
    """An existing key is kept (exit 2, hint --force) unless --force is given."""
    assert run("csr", "--cn", "a.example.com", "--key-type", "ec-p256",
               "--out-dir", "o").exit_code == 0
    key = tmp_path / "o" / "a.example.com.key"
    before = key.read_bytes()
    again = run("csr", "--cn", "a.example.com", "--key-type", "ec-p256", "--out-dir", "o")
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.stderr and "--force" in again.stderr
    assert key.read_bytes() == before
    forced = run("csr", "--cn", "a.example.com", "--key-type", "ec-p256", "--out-dir", "o",
                 "--force")
    assert forced.exit_code == 0
    assert key.read_bytes() != before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cn", "a b.example.com", "--out-dir", "o"], "contains a space"),
        (["--cn", "a.example.com", "--out-dir", "o", "--key-type", "rsa1024"],
         "'rsa1024' is not one of"),
        (["--cn", "a.example.com", "--out-dir", "o", "--country", "GBR"], "'GBR'"),
        (["--cn", "a.example.com"], "--out-dir is required"),
        ([], "give --cn or an inventory certificate NAME"),
        (["web", "--cn", "a.example.com"], "not both"),
        (["web", "--san", "b.example.com"], "--san cannot be used with inventory"),
        (["--cn", "a.example.com", "--out-dir", "o", "--passphrase-env", "NOPE_UNSET"],
         "'NOPE_UNSET'"),
    ],
)
def test_csr_usage_errors(run: Invoke, tmp_path: Path, args: list[str], message: str) -> None:
    """Bad names and options exit 2 with one line naming the problem, and write nothing."""
    result = run("csr", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_csr_inventory_name(run: Invoke, tmp_path: Path) -> None:
    """csr NAME makes the key and CSR of an inventory certificate through the estate feature."""
    inventory = tmp_path / "certfleet.toml"
    inventory.write_text(
        '[certificates.web]\ncn = "*.example.com"\nsans = ["example.com"]\nkey_type = "ec-p256"\n',
        encoding="utf-8",
    )
    result = run("csr", "web", "--inventory", str(inventory), "--state-dir", "state",
                 "--out-dir", "o", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    request = x509.load_pem_x509_csr((tmp_path / "o" / "web.csr").read_bytes())
    assert data["spki_sha256"] == spki_sha256(request)


@pytest.mark.oracle
def test_openssl_verifies_cli_csr(run: Invoke, tmp_path: Path) -> None:
    """openssl verifies the written CSR and checks the written RSA key."""
    openssl = require_tool("openssl")
    assert run("csr", "--cn", "*.example.com", "--out-dir", "o").exit_code == 0
    req = subprocess.run([openssl, "req", "-verify", "-noout", "-text", "-in",
                          str(tmp_path / "o" / "wildcard.example.com.csr")],
                         capture_output=True, text=True, check=True)
    assert "DNS:*.example.com" in req.stdout
    key = subprocess.run([openssl, "rsa", "-check", "-noout", "-in",
                          str(tmp_path / "o" / "wildcard.example.com.key")],
                         capture_output=True, text=True, check=True)
    assert "RSA key ok" in key.stdout


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_every_format_round_trips(
    run: Invoke, inputs: Files, tmp_path: Path, fmt: str
) -> None:
    """Each format is written (keys 0600) and loads back into the same leaf and key."""
    extra = ["--out-password-env", "PW"] if fmt in PASSWORD_FORMATS else []
    out = tmp_path / f"out.{fmt}"
    result = run("export", *_all(inputs), "--format", fmt, "--out", str(out), *extra, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["written"][0]["path"] == str(out)
    password = PW.encode() if fmt in PASSWORD_FORMATS else None
    objects = load_bytes(out.read_bytes(), str(out), password)
    leaf = x509.load_pem_x509_certificate(inputs["leaf"].read_bytes())
    certs = [o.value for o in objects if o.type == "certificate"]
    keys = [o.value for o in objects if o.type == "private_key"]
    if fmt == "chain":
        assert len(certs) == 2 and leaf not in certs
    elif fmt in ("p7b", "jks"):
        # containers without an order of their own: the leaf is among them, once
        assert certs.count(leaf) == 1, certs
    elif not fmt.startswith("key-"):
        assert certs[0] == leaf, certs  # leaf first, as servers and devices read it
    if fmt.startswith("key-") or fmt.startswith("pfx") or fmt == "jks":
        assert [spki_sha256(k) for k in keys] == [spki_sha256(leaf)]
        if os.name == "posix":
            assert _mode(out) == 0o600
    else:
        assert keys == []


def test_export_ovoc_target(run: Invoke, inputs: Files, tmp_path: Path) -> None:
    """--target ovoc writes server.crt, server.key (0600, PKCS#1), root.crt, ca1.crt, ca2.crt."""
    result = run("export", *_all(inputs), "--target", "ovoc", "--out-dir", "ovoc")
    assert result.exit_code == 0, result.output
    out = tmp_path / "ovoc"
    assert sorted(p.name for p in out.iterdir()) == [
        "ca1.crt", "ca2.crt", "root.crt", "server.crt", "server.key"
    ]
    assert (out / "server.key").read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    if os.name == "posix":
        assert _mode(out / "server.key") == 0o600
    # Round trip: the staged files assemble back into the input's bundle.
    back = assemble(load_files(sorted(out.iterdir())))
    original = assemble(load_files(_all(inputs)))
    assert (back.leaf, back.chain, back.root) == (original.leaf, original.chain, original.root)
    assert back.private_key is not None
    assert spki_sha256(back.private_key) == spki_sha256(original.leaf)


def test_export_sbc_target(run: Invoke, inputs: Files, tmp_path: Path) -> None:
    """--target sbc writes certificate.pem, private_key.pem and trusted_roots.pem."""
    result = run("export", *_all(inputs), "--target", "sbc", "--out-dir", "sbc", "--json")
    assert result.exit_code == 0, result.output
    names = sorted(Path(w["path"]).name for w in json.loads(result.stdout)["written"])
    assert names == ["certificate.pem", "private_key.pem", "trusted_roots.pem"]
    trusted = load_bytes((tmp_path / "sbc" / "trusted_roots.pem").read_bytes())
    assert len(trusted) == 3


@pytest.mark.oracle
def test_openssl_verifies_exported_ovoc_set(run: Invoke, inputs: Files, tmp_path: Path) -> None:
    """openssl verifies server.crt with root.crt and ca1/ca2 as untrusted intermediates."""
    openssl = require_tool("openssl")
    assert run("export", *_all(inputs), "--target", "ovoc", "--out-dir", "ovoc").exit_code == 0
    out = tmp_path / "ovoc"
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes((out / "ca1.crt").read_bytes() + (out / "ca2.crt").read_bytes())
    verify = subprocess.run([openssl, "verify", "-CAfile", str(out / "root.crt"), "-untrusted",
                             str(untrusted), str(out / "server.crt")],
                            capture_output=True, text=True, check=True)
    assert verify.stdout.strip().endswith("OK")


def test_export_reads_encrypted_input(
    run: Invoke, inputs: Files, tmp_path: Path, rsa_issued: Issued
) -> None:
    """An encrypted input key is read with --password-env and written as PKCS#1."""
    inputs["key"].write_bytes(rsa_issued.key.private_bytes(  # type: ignore[union-attr]  # has key
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"in-pass"),
    ))
    out = tmp_path / "k.pem"
    missing = run("export", *_all(inputs), "--format", "key-pkcs1", "--out", str(out))
    assert missing.exit_code == 2
    result = run("export", *_all(inputs), "--format", "key-pkcs1", "--out", str(out),
                 "--password-env", "CF_IN")
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_export_refuses_on_error_findings(
    run: Invoke, inputs: Files, tmp_path: Path, lab_ca: LabCA
) -> None:
    """An expired leaf is an error finding: exit 1, nothing written, unless --force."""
    now = dt.datetime.now(dt.UTC)
    expired = lab_ca.issue(("old.example.com",), key_type="ec-p256",
                           not_before=now - dt.timedelta(days=400),
                           not_after=now - dt.timedelta(days=1))
    inputs["leaf"].write_bytes(expired.leaf_pem)
    inputs["key"].write_bytes(expired.key_pem())
    inputs["chain"].write_bytes(expired.chain_pem)
    inputs["root"].write_bytes(expired.root_pem)
    out = tmp_path / "x.pem"
    result = run("export", *_all(inputs), "--format", "pem", "--out", str(out))
    assert result.exit_code == 1
    assert "EXPIRED" in result.stderr and "--force" in result.stderr
    assert not out.exists()
    as_json = run("export", *_all(inputs), "--format", "pem", "--out", str(out), "--json")
    assert as_json.exit_code == 1
    assert "EXPIRED" in [f["code"] for f in json.loads(as_json.stdout)["findings"]]
    forced = run("export", *_all(inputs), "--format", "pem", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert out.exists()


def test_export_ovoc_without_root_is_refused(run: Invoke, inputs: Files, tmp_path: Path) -> None:
    """OVOC without the root certificate: ROOT_MISSING error, exit 1, nothing written."""
    files = [str(inputs["leaf"]), str(inputs["chain"]), str(inputs["key"])]
    result = run("export", *files, "--target", "ovoc", "--out-dir", "ovoc")
    assert result.exit_code == 1
    assert "ROOT_MISSING" in result.stderr
    assert not (tmp_path / "ovoc").exists()


def test_export_never_overwrites_without_force(run: Invoke, inputs: Files, tmp_path: Path) -> None:
    """Existing outputs are kept (exit 2) unless --force."""
    out = tmp_path / "x.pem"
    out.write_bytes(b"keep me")
    result = run("export", *_all(inputs), "--format", "pem", "--out", str(out))
    assert result.exit_code == 2 and "refusing to overwrite" in result.stderr
    assert out.read_bytes() == b"keep me"
    (tmp_path / "ovoc").mkdir()
    (tmp_path / "ovoc" / "server.key").write_bytes(b"old key")
    target = run("export", *_all(inputs), "--target", "ovoc", "--out-dir", "ovoc")
    assert target.exit_code == 2 and "server.key" in target.stderr
    assert (tmp_path / "ovoc" / "server.key").read_bytes() == b"old key"
    assert sorted(p.name for p in (tmp_path / "ovoc").iterdir()) == ["server.key"]
    assert run("export", *_all(inputs), "--format", "pem", "--out", str(out),
               "--force").exit_code == 0
    assert out.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "pem", "--target", "ovoc", "--out", "x"], "exactly one of"),
        ([], "exactly one of"),
        (["--format", "pkcs12", "--out", "x"], "'pkcs12' is unknown"),
        (["--target", "f5", "--out-dir", "x"], "'f5' is unknown"),
        (["--format", "pem"], "give --out FILE"),
        (["--target", "ovoc", "--out", "x"], "give --out-dir DIR"),
        (["--format", "pfx", "--out", "x.pfx"], "no output password"),
        (["--format", "pem", "--out", "x", "--out-password-env", "PW"], "is not encrypted"),
        (["--format", "pfx", "--out", "x.pfx", "--out-password-env", "UNSET_VAR_X"],
         "'UNSET_VAR_X'"),
    ],
)
def test_export_usage_errors(
    run: Invoke, inputs: Files, tmp_path: Path, args: list[str], message: str
) -> None:
    """Contradictory or missing options exit 2 with a one-line message."""
    result = run("export", *_all(inputs), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_export_key_format_without_key(run: Invoke, inputs: Files, tmp_path: Path) -> None:
    """A key format from certificates only exits 2 asking for the key file."""
    result = run("export", str(inputs["leaf"]), "--format", "key-pkcs8", "--out", "k.pem")
    assert result.exit_code == 2
    assert "no private key among the inputs" in result.stderr
    assert "add the key file" in result.stderr
    target = run("export", str(inputs["leaf"]), "--target", "sbc", "--out-dir", "sbc")
    assert target.exit_code == 2 and "'sbc' needs it" in target.stderr


def test_export_unreadable_input(run: Invoke, tmp_path: Path) -> None:
    """A missing or garbage input file exits 2 without a traceback."""
    (tmp_path / "junk.crt").write_bytes(b"not a certificate")
    for path in ("missing.crt", "junk.crt"):
        result = run("export", path, "--format", "pem", "--out", "x.pem")
        assert result.exit_code == 2
        assert "Traceback" not in result.output


def test_registered_in_the_real_app() -> None:
    """The certfleet entry point lists csr and export."""
    out = subprocess.run(
        [sys.executable, "-c", "from certfleet.cli.app import main; main()", "--help"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200",
                                             "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    assert " csr " in out.stdout and " export " in out.stdout


def test_unwritable_outputs(run: Invoke, inputs: Files, tmp_path: Path) -> None:
    """An output folder that is a file, or --out naming a folder, exits 2 without a traceback."""
    (tmp_path / "plain").write_bytes(b"")
    for result in (
        run("csr", "--cn", "a.example.com", "--key-type", "ec-p256", "--out-dir", "plain"),
        run("export", *_all(inputs), "--target", "sbc", "--out-dir", "plain"),
        run("export", *_all(inputs), "--format", "pem", "--out", "plain/x.pem"),
        run("export", *_all(inputs), "--format", "pem", "--out", str(tmp_path)),
    ):
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "cannot write" in result.stderr or "is a folder" in result.stderr
