"""What OVOC would make of the files in its staging folder, and which names are safe.

Pure: :func:`inspect_staged` reads the files of the staging folder (name →
bytes) as EmsServerManager would and reports, as findings, what it would
reject (missing, misnamed, encrypted, unreadable or mismatched files) plus
the toolkit's bundle checks. :func:`safe_staged_name` decides whether a name
read from the device may become a local file name (in a backup).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...pki.model import Bundle, Finding
from ...pki.profiles import OVOC_PROFILE, OvocProfile

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_STAGED_FILES",
    "MAX_STAGED_FILE_BYTES",
    "NEEDS_PEM_KEY",
    "TMP_PREFIX",
    "StagingReport",
    "diagnosis_line",
    "inspect_staged",
    "profile_names",
    "safe_staged_name",
]

TMP_PREFIX = ".certfleet-"
NEEDS_PEM_KEY = "OVOC needs an unencrypted PEM key (PKCS#1, 'Apache compatible')"
#: The longest file name read from the device that is kept (bytes of UTF-8; 255 is the
#: limit of common file systems).
MAX_NAME_LENGTH = 128
#: The largest staged file read back (bytes): certificates and keys are a few kilobytes.
MAX_STAGED_FILE_BYTES = 1024 * 1024
#: The most entries of the staging folder listed.
MAX_STAGED_FILES = 1000
_WINDOWS_RESERVED = re.compile(r"(?:con|prn|aux|nul|com\d|lpt\d)(?:\..*)?", re.IGNORECASE)


def safe_staged_name(name: str) -> bool:
    """Whether ``name``, read from the device, may become a local file name.

    One path component: no ``/`` or ``\\``, no ``:`` (a Windows drive or
    stream), not ``.``/``..`` nor any leading dot, no control characters,
    not a Windows device name, at most :data:`MAX_NAME_LENGTH` bytes.
    """
    return (bool(name) and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_LENGTH
            and not name.startswith(".") and not any(c in name for c in "/\\:\0")
            and not any(ord(c) < 32 or ord(c) == 127 for c in name)
            and name == name.strip() and _WINDOWS_RESERVED.fullmatch(name) is None)


def profile_names(profile: OvocProfile, names: Sequence[str]) -> list[str]:
    """Of ``names``, those the profile owns (cert, key, root, intermediates)."""
    pattern = re.escape(profile.intermediate_pattern).replace(r"\{n\}", r"\d+")
    owned = {profile.cert_file, profile.key_file, profile.root_file}
    return [n for n in names if n in owned or re.fullmatch(pattern, n)]


@dataclass
class StagingReport:
    """What the staging folder holds and what OVOC would make of it."""

    staging_dir: str
    exists: bool
    files: list[tuple[str, int]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exists and not any(f.severity == "error" for f in self.findings)

    @property
    def diagnosis(self) -> str | None:
        return diagnosis_line(self.findings)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "staging_dir": self.staging_dir,
            "exists": self.exists,
            "files": [{"name": n, "size": s} for n, s in self.files],
            "findings": [f.to_dict() for f in self.findings],
            "diagnosis": self.diagnosis,
        }


def diagnosis_line(findings: Sequence[Finding]) -> str | None:
    """One line naming what OVOC would reject, or None when nothing would be."""
    errors = [f for f in findings if f.severity == "error"]
    if not errors:
        return None
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"OVOC will reject these files: {errors[0].message}{more}"


def _finding(code: str, message: str, hint: str, subject: str, severity: str = "error") -> Finding:
    return Finding(code, severity, message, hint, subject)  # type: ignore[arg-type]  # literal


def _key_problem(name: str, data: bytes) -> tuple[str, str] | None:
    """(code, message) when ``data`` is not a key OVOC can read, else None."""
    text = data.lstrip(b"\xef\xbb\xbf")
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in text:
        return "OVOC_KEY_ENCRYPTED", f"{name} is an encrypted PKCS#8 key; {NEEDS_PEM_KEY}"
    if b"Proc-Type: 4,ENCRYPTED" in text:
        return ("OVOC_KEY_ENCRYPTED",
                f"{name} is an encrypted PEM key (OpenSSL legacy encryption); {NEEDS_PEM_KEY}")
    if b"-----BEGIN" not in text:
        if text[:1] == b"\x30":
            return "OVOC_KEY_FORMAT", f"{name} is a DER (binary) key; {NEEDS_PEM_KEY}"
        return "OVOC_KEY_UNREADABLE", f"{name} holds no PEM private key; {NEEDS_PEM_KEY}"
    if b"PRIVATE KEY-----" not in text:
        return ("OVOC_KEY_UNREADABLE",
                f"{name} holds no private key (it looks like a certificate); {NEEDS_PEM_KEY}")
    return None


def inspect_staged(
    files: Mapping[str, bytes],
    profile: OvocProfile = OVOC_PROFILE,
    hosts: Sequence[str] = (),
    *,
    expiry_warn_days: int = 30,
) -> list[Finding]:
    """Findings on the files of an OVOC staging folder, by the profile's names.

    Reports what EmsServerManager would reject (missing, misnamed,
    encrypted, unreadable or mismatched files) and, when the files can be
    read, the toolkit's bundle checks (chain, expiry, names). Pure.
    """
    from ...pki.checks import check_bundle

    findings: list[Finding] = []
    cert_name, key_name, root_name = profile.cert_file, profile.key_file, profile.root_file
    others = sorted(n for n in files if n not in {cert_name, key_name, root_name}
                    and not re.fullmatch(re.escape(profile.intermediate_pattern)
                                         .replace(r"\{n\}", r"\d+"), n))
    leaf = _staged_leaf(files, cert_name, others, findings)
    key = _staged_key(files, profile, others, leaf, findings)
    chain, root = _staged_chain(files, profile, findings)
    if leaf is not None:
        bundle = Bundle(leaf=leaf, chain=tuple(chain), root=root, private_key=key)
        seen = {f.code for f in findings}
        for finding in check_bundle(bundle, hosts, expiry_warn_days=expiry_warn_days):
            if finding.code == "KEY_MISSING" and seen & {
                "OVOC_KEY_MISSING", "OVOC_KEY_ENCRYPTED", "OVOC_KEY_UNREADABLE",
                "OVOC_KEY_FORMAT", "OVOC_KEY_MISMATCH",
            }:
                continue
            if finding.code == "CHAIN_INCOMPLETE" and "OVOC_ROOT_MISSING" in seen:
                continue
            findings.append(finding)
    rank = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: rank[f.severity])


def _staged_leaf(files: Mapping[str, bytes], cert_name: str, others: Sequence[str],
                 findings: list[Finding]) -> x509.Certificate | None:
    """The staged server certificate; None (said in ``findings``) when missing or unreadable."""
    from cryptography import x509

    leaf: x509.Certificate | None = None
    if cert_name not in files:
        found = [n for n in others if n.lower().endswith((".crt", ".cer", ".pem"))]
        extra = f" (found {', '.join(map(repr, found))}; OVOC reads only {cert_name!r})" \
            if found else ""
        findings.append(_finding("OVOC_CERT_MISSING", f"{cert_name} is missing{extra}",
                                 f"stage the server certificate as {cert_name} (PEM)", cert_name))
    else:
        try:
            leaf = x509.load_pem_x509_certificate(files[cert_name].lstrip(b"\xef\xbb\xbf"))
        except ValueError:
            what = "a DER (binary) certificate" if files[cert_name][:1] == b"\x30" \
                else "not a PEM certificate"
            findings.append(_finding("OVOC_CERT_UNREADABLE", f"{cert_name} is {what}; "
                                     "OVOC needs a PEM certificate",
                                     f"convert it to PEM and stage it as {cert_name}", cert_name))
    return leaf


def _staged_key(files: Mapping[str, bytes], profile: OvocProfile, others: Sequence[str],
                leaf: x509.Certificate | None, findings: list[Finding]) -> Any:
    """The staged private key when it can be read and belongs to ``leaf``; else None."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from ...pki.model import spki_sha256

    key_name, cert_name = profile.key_file, profile.cert_file
    containers = [n for n in others if n.lower().endswith((".pfx", ".p12"))]
    key: Any = None
    if key_name not in files:
        where = (f"; the key is only inside {', '.join(map(repr, containers))}"
                 if containers else "")
        findings.append(_finding(
            "OVOC_KEY_MISSING", f"{key_name} is missing{where}; {NEEDS_PEM_KEY}",
            f"export the key in PEM ('Apache compatible'), e.g. certfleet ovoc deploy "
            f"with the .pfx and its password, which writes {key_name} for you", key_name))
    else:
        problem = _key_problem(key_name, files[key_name])
        if problem is None:
            try:
                key = serialization.load_pem_private_key(
                    files[key_name].lstrip(b"\xef\xbb\xbf"), password=None)
            except (ValueError, TypeError):
                problem = ("OVOC_KEY_UNREADABLE",
                           f"{key_name} cannot be read as a PEM private key; {NEEDS_PEM_KEY}")
        if problem is not None:
            findings.append(_finding(problem[0], problem[1],
                                     "export the key unencrypted in PEM ('Apache compatible'), "
                                     "or let `certfleet ovoc deploy` write it: pass the .pfx or "
                                     "the encrypted key with --input-password-env", key_name))
        elif (profile.key_format == "pkcs1" and isinstance(key, rsa.RSAPrivateKey)
              and b"BEGIN RSA PRIVATE KEY" not in files[key_name]):
            findings.append(_finding(
                "OVOC_KEY_FORMAT", f"{key_name} is a PKCS#8 key; OVOC documents PKCS#1 "
                "('BEGIN RSA PRIVATE KEY', 'Apache compatible')",
                "let certfleet write the key in PKCS#1", key_name, "warning"))
        if key is not None and leaf is not None and spki_sha256(key) != spki_sha256(leaf):
            findings.append(_finding(
                "OVOC_KEY_MISMATCH", f"{key_name} does not belong to {cert_name}",
                "stage the key that was used for this certificate's CSR", key_name))
            key = None
    return key


def _staged_chain(files: Mapping[str, bytes], profile: OvocProfile, findings: list[Finding],
                  ) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """The staged intermediates (in their numbers' order) and root, as far as readable."""
    from cryptography import x509

    root_name = profile.root_file
    chain: list[x509.Certificate] = []
    n = 1
    while (name := profile.intermediate_pattern.format(n=n)) in files:
        try:
            chain.append(x509.load_pem_x509_certificate(files[name]))
        except ValueError:
            findings.append(_finding("OVOC_CERT_UNREADABLE", f"{name} is not a PEM certificate",
                                     f"stage the intermediate as PEM in {name}", name))
        n += 1
    root = None
    if root_name not in files:
        findings.append(_finding("OVOC_ROOT_MISSING", f"{root_name} is missing",
                                 f"stage the CA's root certificate as {root_name} (PEM)",
                                 root_name))
    else:
        try:
            root = x509.load_pem_x509_certificate(files[root_name])
        except ValueError:
            findings.append(_finding("OVOC_CERT_UNREADABLE", f"{root_name} is not a PEM "
                                     "certificate", f"stage the root as PEM in {root_name}",
                                     root_name))
    return chain, root
