"""Every certificate, key, PKCS#7 and PKCS#12 vector of pyca/cryptography goes through the loader.

The ``cryptography-vectors`` package ships the odd, broken and hostile inputs
that cryptography itself is tested with. Each file either loads, or is refused
with certfleet's own error carrying a one-line message; nothing else escapes.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cryptography
import cryptography_vectors  # the test extra installs it (pinned to cryptography's release)
import pytest
from cryptography import x509

from certfleet.errors import CertfleetError, PasswordError
from certfleet.pki.bundle import assemble
from certfleet.pki.checks import check_bundle
from certfleet.pki.load import load_bytes
from certfleet.pki.model import LoadedObject

VECTORS_ROOT = Path(os.path.dirname(cryptography_vectors.__file__))
# Certificates and CSRs, PKCS#12, PKCS#7, and every key serialisation.
FOLDERS = ("x509", "pkcs12", "pkcs7", "asymmetric")
# Most vectors are a few KB; the few over this are KAT text files (ML-KEM,
# ML-DSA, Ed25519 sign.input, RSA SigVer) that hold no certificate or key.
MAX_BYTES = 1_000_000
# None, and the two passwords the encrypted vectors use.
PASSWORDS: tuple[bytes | None, ...] = (None, b"cryptography", b"password")
# The 405 PKITS PKCS#12 files open with b"password"; each one then costs
# cryptography ~70 ms (RSA key checks), so every 8th one, in name order, is
# opened: the others are the same shape and go through the loader with the
# other passwords.
PKITS_PKCS12 = "x509/PKITS_data/pkcs12/"
PKITS_SAMPLE_EVERY = 8
# Reported, never asserted: tests do not depend on timing.
SLOW_SECONDS = 0.5


@dataclass
class Outcome:
    """What the loader did with the files of one folder."""

    files: int = 0
    skipped_large: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    parsed_files: set[str] = field(default_factory=set)
    objects: Counter[str] = field(default_factory=Counter)
    escaped: list[str] = field(default_factory=list)
    bad_messages: list[str] = field(default_factory=list)
    bad_objects: list[str] = field(default_factory=list)
    slow: list[tuple[float, str]] = field(default_factory=list)
    warnings: int = 0
    seconds: float = 0.0


def vector_files(folder: str) -> Iterator[Path]:
    """Every regular file under ``folder``, in a stable order; non-files are skipped."""
    for path in sorted((VECTORS_ROOT / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


def check_objects(objects: list[LoadedObject], source: str) -> list[str]:
    """Problems with what ``load_bytes`` returned (empty when it is well formed)."""
    problems: list[str] = []
    if not isinstance(objects, list) or not objects:
        return [f"{source}: returned {objects!r} instead of a non-empty list"]
    for position, obj in enumerate(objects):
        if not isinstance(obj, LoadedObject):
            problems.append(f"{source}: object {position} is {type(obj).__name__}")
            continue
        expected = {
            "certificate": x509.Certificate,
            "csr": x509.CertificateSigningRequest,
        }.get(obj.type)
        if obj.type not in ("certificate", "private_key", "csr"):
            problems.append(f"{source}: object {position} has type {obj.type!r}")
        elif expected is not None and not isinstance(obj.value, expected):
            problems.append(f"{source}: {obj.type} {position} holds {type(obj.value).__name__}")
        elif obj.type == "private_key" and not hasattr(obj.value, "private_bytes"):
            problems.append(f"{source}: key {position} holds {type(obj.value).__name__}")
        if obj.source != source or obj.index != position:
            problems.append(f"{source}: object {position} says {obj.source!r}#{obj.index}")
    return problems


def assemble_and_check(objects: list[LoadedObject], label: str, outcome: Outcome) -> None:
    """What loaded goes on through assemble() and check_bundle(): certfleet errors only."""
    if not any(obj.type == "certificate" for obj in objects):
        return
    try:
        bundle = assemble(objects)
        check_bundle(bundle, hosts=("www.example.com",))
    except CertfleetError as exc:
        outcome.counts[f"assemble: {type(exc).__name__}"] += 1
        if not exc.message.strip() or "\n" in exc.message:
            outcome.bad_messages.append(f"{label} assemble: {exc.message!r}")
    except Exception as exc:  # the point of the test: record anything else
        outcome.escaped.append(f"{label} assemble/check: {type(exc).__module__}.{exc!r}")
    else:
        outcome.counts["assembled and checked"] += 1


def run_folder(folder: str) -> Outcome:
    """Load every file of ``folder`` with each password and record what happened."""
    outcome = Outcome()
    started = time.perf_counter()
    pkits_seen = 0
    for path in vector_files(folder):
        source = path.relative_to(VECTORS_ROOT).as_posix()
        outcome.files += 1
        if path.stat().st_size > MAX_BYTES:
            outcome.skipped_large.append(source)
            continue
        data = path.read_bytes()
        passwords = PASSWORDS
        if source.startswith(PKITS_PKCS12):
            if pkits_seen % PKITS_SAMPLE_EVERY:
                passwords = tuple(p for p in PASSWORDS if p != b"password")
            pkits_seen += 1
        for password in passwords:
            label = f"{source} (password={password!r})"
            file_started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    objects = load_bytes(data, source=source, password=password)
                except CertfleetError as exc:
                    outcome.counts[type(exc).__name__] += 1
                    message = exc.message
                    if not message or not message.strip() or "\n" in message or "\r" in message:
                        outcome.bad_messages.append(f"{label}: {message!r}")
                    if isinstance(exc, PasswordError) and password is None:
                        reason = getattr(exc, "reason", None)
                        if reason != "missing":
                            outcome.bad_messages.append(f"{label}: reason={reason!r}")
                except Exception as exc:  # the point of the test: record anything else
                    outcome.escaped.append(f"{label}: {type(exc).__module__}.{exc!r}")
                else:
                    outcome.counts["parsed"] += 1
                    outcome.bad_objects.extend(check_objects(objects, source))
                    if password is None:
                        outcome.objects.update(obj.type for obj in objects)
                    if source not in outcome.parsed_files:
                        assemble_and_check(objects, label, outcome)
                    outcome.parsed_files.add(source)
            outcome.warnings += len(caught)
            elapsed = time.perf_counter() - file_started
            if elapsed > SLOW_SECONDS:
                outcome.slow.append((elapsed, label))
    outcome.seconds = time.perf_counter() - started
    return outcome


def test_vectors_match_the_installed_cryptography() -> None:
    """The vectors are those of the cryptography release certfleet runs on."""
    assert cryptography_vectors.__version__ == cryptography.__version__, (
        f"cryptography-vectors {cryptography_vectors.__version__} is installed but cryptography "
        f"is {cryptography.__version__}: install cryptography-vectors=="
        f"{cryptography.__version__} (pinned in pyproject.toml's test extra)"
    )


def test_every_folder_exists() -> None:
    """The vector folders the robustness test reads are where the package puts them."""
    missing = [folder for folder in FOLDERS if not (VECTORS_ROOT / folder).is_dir()]
    assert not missing, f"cryptography_vectors at {VECTORS_ROOT} has no {missing}"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("folder", FOLDERS)
def test_every_vector_loads_or_raises_certfleet_error(
    folder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each vector loads (then assembles, checks) or raises a one-line CertfleetError; no other."""
    outcome = run_folder(folder)
    with capsys.disabled():
        refused = ", ".join(
            f"{count} {name}" for name, count in sorted(outcome.counts.items()) if name != "parsed"
        )
        print(
            f"\n[vectors {folder}] {outcome.files} files, {len(outcome.parsed_files)} parsed "
            f"({dict(outcome.objects)}); loads: {outcome.counts['parsed']} parsed, {refused}; "
            f"{len(outcome.skipped_large)} skipped > {MAX_BYTES} bytes; "
            f"{outcome.warnings} warnings; {outcome.seconds:.1f} s"
        )
        for elapsed, label in sorted(outcome.slow, reverse=True)[:10]:
            print(f"[vectors {folder}]   slow: {elapsed:.2f} s {label}")
    assert outcome.files > 0, f"no vector files under {VECTORS_ROOT / folder}"
    assert not outcome.escaped, (
        f"{len(outcome.escaped)} loads raised something other than CertfleetError:\n"
        + "\n".join(outcome.escaped)
    )
    assert not outcome.bad_messages, "messages that are not one line:\n" + "\n".join(
        outcome.bad_messages
    )
    assert not outcome.bad_objects, "malformed results:\n" + "\n".join(outcome.bad_objects)


def test_known_good_vectors_do_load() -> None:
    """A plain certificate, a passwordless PKCS#12 and an encrypted one load: not all is refused."""
    cert = load_bytes((VECTORS_ROOT / "x509/cryptography.io.pem").read_bytes())
    assert [obj.type for obj in cert] == ["certificate"]
    p12 = load_bytes((VECTORS_ROOT / "pkcs12/no-password.p12").read_bytes())
    assert sorted(obj.type for obj in p12) == ["certificate", "private_key"]
    encrypted = (VECTORS_ROOT / "pkcs12/cert-key-aes256cbc.p12").read_bytes()
    with pytest.raises(PasswordError):
        load_bytes(encrypted)
    loaded = load_bytes(encrypted, password=b"cryptography")
    assert sorted(obj.type for obj in loaded) == ["certificate", "private_key"]
    assert all(obj.encrypted for obj in loaded if obj.type == "private_key")


# Every 25th vector in name order, plus the ones that once escaped the loader.
CLI_SAMPLE_EVERY = 25
CLI_EXTRA = ("x509/custom/invalid_version.pem", "x509/requests/bad-version.pem")


def cli_sample() -> list[Path]:
    every = [path for folder in FOLDERS for path in vector_files(folder)]
    picked = [p for p in every[::CLI_SAMPLE_EVERY] if p.stat().st_size <= MAX_BYTES]
    extra = [VECTORS_ROOT / name for name in CLI_EXTRA if (VECTORS_ROOT / name).is_file()]
    return [*picked, *extra]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("command", ["inspect", "check"])
def test_cli_json_on_vectors_never_shows_a_traceback(command: str) -> None:
    """`certfleet inspect|check --json VECTOR` exits cleanly with JSON, whatever the vector."""
    import json

    from typer.testing import CliRunner

    from certfleet.cli.app import app

    runner = CliRunner()
    sample = cli_sample()
    assert len(sample) > 50
    problems: list[str] = []
    for path in sample:
        source = path.relative_to(VECTORS_ROOT).as_posix()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = runner.invoke(app, [command, "--json", str(path)])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"{source}: {type(result.exception).__name__}: {result.exception}")
            continue
        if "Traceback" in result.output:
            problems.append(f"{source}: a traceback was printed")
        try:
            document = json.loads(result.stdout)
        except ValueError:
            problems.append(f"{source}: exit {result.exit_code}, stdout is not JSON")
            continue
        if result.exit_code == 2 and not (isinstance(document, dict) and document.get("error")):
            problems.append(f"{source}: exit 2 without an error in the JSON")
    assert not problems, f"{len(problems)} of {len(sample)} vectors:\n" + "\n".join(problems)
