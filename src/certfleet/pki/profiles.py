"""Target profiles: the whole set of files a device wants, rendered from a bundle.

What each device expects is partly assumed (file names on OVOC, whether an
SBC certificate upload may carry intermediates), so every such choice is a
field of a frozen profile with its default here, in one place, and can be
overridden from the inventory through :func:`profile_from_mapping`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import CertificateError, ConfigError
from .export import certificate_label
from .export import require_key as _require_key
from .keygen import profile_key_pem as _key_pem
from .model import Bundle, Finding, Severity
from .model import certificates_pem as _pem
from .quiet import quietly

__all__ = [
    "FINDING_CODES",
    "KEYSTORE_PASSWORD_SAFE",
    "NOT_OVERRIDABLE",
    "OVOC_PROFILE",
    "PROFILES",
    "SBC_PROFILE",
    "Artifact",
    "Artifacts",
    "OvocProfile",
    "SbcProfile",
    "TargetProfile",
    "keystore_password_findings",
    "not_overridable",
    "profile_findings",
    "profile_from_mapping",
    "render_target",
]

_KEY_FORMATS = ("pkcs1", "pkcs8")

#: Codes of the device findings a profile's ``preflight`` adds to the general
#: checks (same shape as ``checks.FINDING_CODES``; severity may depend on the device).
FINDING_CODES: dict[str, tuple[Severity, str]] = {
    "KEY_MISSING": ("error", "no private key was given, and the device needs one"),
    "ROOT_MISSING": ("error", "no root certificate was given: an error for OVOC (root.crt), "
                     "a warning for an SBC's trusted root store"),
    "KEY_TYPE": ("warning", "the key is not RSA; OVOC is only known to import RSA keys"),
    "OVOC_KEYSTORE_PASSWORD": ("error", "OVOC's import cannot take the keystore password "
                               "(missing, shorter than 6, or not printable ASCII)"),
}

#: Error codes ``--ignore-finding`` cannot pass, with why: the device's files cannot
#: be made, or the device cannot take them. Every other code is overridable.
#: A profile's own such codes are in its ``blocking_findings`` (``ROOT_MISSING`` for
#: OVOC: see :attr:`OvocProfile.blocking_findings`), and a device kind declares them.
NOT_OVERRIDABLE: dict[str, str] = {
    "KEY_MISSING": "without the private key the device's files cannot be made",
    "KEY_MISMATCH": "the key does not belong to the certificate: no handshake could succeed",
    "BAD_SIGNATURE": "a certificate of the chain is not signed by its issuer: "
                     "no client could verify it",
    "CSR_GIVEN": "a certificate request was given, not the issued certificate",
    "OVOC_KEYSTORE_PASSWORD": "OVOC's import cannot take this keystore password "
                              "(nor could a rollback's import)",
}


def not_overridable(code: str, own: Mapping[str, str] | None = None) -> str | None:
    """Why ``code`` cannot be ignored (None when it can). Pure.

    ``own``: the codes a device kind declares errors on its devices, with why
    (``ROOT_MISSING`` on OVOC: it needs ``root.crt``); without it, a code that
    is an error only on some kind may be ignored.
    """
    if code in NOT_OVERRIDABLE:
        return NOT_OVERRIDABLE[code]
    return (own or {}).get(code)


#: The characters a keystore password for OVOC may hold, in words (for messages).
KEYSTORE_PASSWORD_SAFE = (
    "printable ASCII: letters A-Z a-z, digits, space and !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~, "
    "no space at either end, at least 6 characters"
)


def keystore_password_findings(password: str | None) -> list[Finding]:
    """What stops OVOC's import from taking ``password`` as its keystore password. Pure.

    OVOC turns the staged files into a PKCS#12 file with OpenSSL, then into
    a JKS keystore with Java's keytool. A PKCS#12 file written by OpenSSL
    under a non-ASCII password cannot be opened by keytool (OpenSSL encodes
    the password as UTF-8 bytes, Java as BMPString): the import fails, and
    so would a rollback's import under the same password. The safe set is
    therefore printable ASCII (``' '`` to ``'~'``), which both tools read
    the same way; control characters cannot be typed at the prompt, and a
    space at either end is dropped by a shell's ``read``. Quotes, ``$``,
    backticks and backslashes are fine: the password is typed at the
    prompt, never put on a command line. EmsServerManager wants 6 or more.

    Returns an ``OVOC_KEYSTORE_PASSWORD`` error finding (at most one), or [].
    """
    problem: str | None = None
    if not password:
        problem = "the keystore password for OVOC's import prompt is missing"
    else:
        bad = sorted({c for c in password if not " " <= c <= "~"})
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
            problem = (f"the keystore password holds character(s) OVOC's import cannot take "
                       f"({shown}): keytool cannot open the PKCS#12 file OpenSSL writes "
                       "with a non-ASCII password, so the import (and a rollback's) would fail")
        elif password != password.strip(" "):
            problem = ("the keystore password begins or ends with a space, which "
                       "EmsServerManager's prompt drops")
        elif len(password) < 6:
            problem = "the keystore password is shorter than 6 characters; OVOC needs 6 or more"
    if problem is None:
        return []
    return [Finding("OVOC_KEYSTORE_PASSWORD", "error", problem,
                    hint=f"choose a keystore password of {KEYSTORE_PASSWORD_SAFE}",
                    subject="keystore password")]


@dataclass(frozen=True)
class Artifact:
    """One file for a target. ``secret`` files (keys) are written 0600."""

    name: str
    data: bytes
    secret: bool = False

    def __repr__(self) -> str:
        kind = "secret" if self.secret else "public"
        return f"<Artifact {self.name!r} {len(self.data)} bytes {kind}>"


@dataclass(frozen=True)
class Artifacts:
    """The files a target wants, in the order they should be staged."""

    files: tuple[Artifact, ...]

    def __post_init__(self) -> None:
        names = [a.name for a in self.files]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"artifact names {duplicates!r} appear more than once")

    def __iter__(self) -> Iterator[Artifact]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def names(self) -> list[str]:
        return [a.name for a in self.files]

    def get(self, name: str) -> bytes:
        """The bytes of file ``name``. Raises KeyError naming the files there are."""
        for artifact in self.files:
            if artifact.name == name:
                return artifact.data
        raise KeyError(f"no artifact {name!r}; there are {self.names()!r}")

    def as_dict(self) -> dict[str, bytes]:
        return {a.name: a.data for a in self.files}

    def write_to_dir(self, path: Path | str, *, overwrite: bool = True) -> list[Path]:
        """Write every file into directory ``path`` (created if missing).

        Secret files go through ``fsutil.write_private_file`` (0600), others
        through ``fsutil.write_file_atomic``. With ``overwrite=False`` nothing
        is written when any target file exists (ConfigError naming it).
        """
        from ..fsutil import write_file_atomic, write_private_file

        directory = Path(path)
        targets = [directory / a.name for a in self.files]
        if not overwrite:
            existing = [str(t) for t in targets if t.exists()]
            if existing:
                raise ConfigError(
                    f"{existing[0]!r} exists; refusing to overwrite",
                    hint="pass --force to overwrite, or choose another directory",
                    path=existing[0],
                )
        written = []
        for artifact, target in zip(self.files, targets, strict=True):
            if artifact.secret:
                written.append(write_private_file(target, artifact.data))
            else:
                written.append(write_file_atomic(target, artifact.data))
        return written


def _check_file_name(field_name: str, value: str) -> None:
    if not value or value.strip() != value or any(c in value for c in '/\\:*?"<>|'):
        raise ValueError(f"{field_name} {value!r} is not a plain file name")


def _key_missing(bundle: Bundle, target: str) -> list[Finding]:
    if bundle.private_key is not None:
        return []
    return [
        Finding(
            "KEY_MISSING",
            "error",
            f"no private key for {certificate_label(bundle.leaf)!r}; {target} needs it",
            hint="add the key file to the input",
            subject=certificate_label(bundle.leaf),
        )
    ]


def _root_missing(bundle: Bundle, severity: Severity, consequence: str, hint: str) -> Finding:
    """ROOT_MISSING for ``bundle``: what the target does without the root, and the fix."""
    label = certificate_label(bundle.leaf)
    return Finding("ROOT_MISSING", severity,
                   f"no root CA certificate for {label!r}; {consequence}", hint=hint,
                   subject=label)


@dataclass(frozen=True)
class OvocProfile:
    """Files staged in OVOC's ``server_certs`` directory for EmsServerManager.

    Defaults (names assumed, no public source): ``server.crt`` leaf PEM,
    ``server.key`` unencrypted PEM key (``key_format="pkcs1"``: PKCS#1
    ``BEGIN RSA PRIVATE KEY`` for RSA, SEC1 for EC; ``"pkcs8"``:
    ``BEGIN PRIVATE KEY``), ``root.crt`` root PEM, ``ca1.crt``, ``ca2.crt``…
    the intermediates leaf side first (``intermediate_pattern`` with ``{n}``
    counting from 1). ``cert_includes_chain`` appends the intermediates to
    ``server.crt``.
    """

    kind: ClassVar[str] = "ovoc"
    #: Codes that are errors for OVOC and cannot be ignored, with why.
    blocking_findings: ClassVar[Mapping[str, str]] = {
        "ROOT_MISSING": "OVOC's import needs root.crt: without the root its files cannot be made",
    }

    cert_file: str = "server.crt"
    key_file: str = "server.key"
    root_file: str = "root.crt"
    intermediate_pattern: str = "ca{n}.crt"
    key_format: str = "pkcs1"
    cert_includes_chain: bool = False

    def __post_init__(self) -> None:
        for name in ("cert_file", "key_file", "root_file"):
            _check_file_name(name, getattr(self, name))
        if "{n}" not in self.intermediate_pattern:
            raise ValueError(
                f"intermediate_pattern {self.intermediate_pattern!r} has no {{n}} "
                "for the intermediate's number"
            )
        try:
            first = self.intermediate_pattern.format(n=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"intermediate_pattern {self.intermediate_pattern!r} may only use {{n}}"
            ) from exc
        _check_file_name("intermediate_pattern", first)
        names = [self.cert_file, self.key_file, self.root_file]
        numbered = re.compile(
            "^" + r"\d+".join(re.escape(p) for p in self.intermediate_pattern.split("{n}")) + "$"
        )
        if len(set(names)) != len(names) or any(numbered.match(n) for n in names):
            raise ValueError(
                f"OVOC file names {[*names, self.intermediate_pattern]!r} are not all different"
            )
        if self.key_format not in _KEY_FORMATS:
            raise ValueError(f"key_format {self.key_format!r} is not one of pkcs1, pkcs8")

    def keystore_password_findings(self, password: str | None) -> list[Finding]:
        """See :func:`keystore_password_findings` (the same for every OVOC profile)."""
        return keystore_password_findings(password)

    def preflight(self, bundle: Bundle) -> list[Finding]:
        """What would stop OVOC from importing this bundle: missing key or root."""
        findings = _key_missing(bundle, "OVOC")
        if bundle.root is None:
            findings.append(_root_missing(
                bundle, "error", f"OVOC needs it as {self.root_file!r}",
                "add the root certificate file from the CA's download to the input"))
        if bundle.private_key is not None and not isinstance(bundle.private_key, rsa.RSAPrivateKey):
            findings.append(
                Finding(
                    "KEY_TYPE",
                    "warning",
                    "the key is not RSA; OVOC is only known to import RSA keys",
                    hint="request the certificate with an RSA key (certfleet csr --key-type "
                    "rsa2048) if the import fails",
                    subject=certificate_label(bundle.leaf),
                )
            )
        return findings

    def render_available(self, bundle: Bundle) -> Artifacts:
        """Every file that can be made from ``bundle``, complete or not: the certificate,
        the key when the bundle has one, the root when it has one, the intermediates.

        For a deploy forced past preflight errors; :meth:`render` refuses an
        incomplete bundle.
        """
        cert = _pem(bundle.fullchain if self.cert_includes_chain else [bundle.leaf])
        files = [Artifact(self.cert_file, cert, False)]
        if bundle.private_key is not None:
            files.append(Artifact(self.key_file, _key_pem(bundle.private_key, self.key_format),
                                  True))
        if bundle.root is not None:
            files.append(Artifact(self.root_file, _pem([bundle.root]), False))
        for n, intermediate in enumerate(bundle.chain, start=1):
            files.append(Artifact(self.intermediate_pattern.format(n=n), _pem([intermediate]),
                                  False))
        return Artifacts(tuple(files))

    def render(self, bundle: Bundle) -> Artifacts:
        key = _require_key(bundle, "OVOC")
        if bundle.root is None:
            raise CertificateError(
                f"bundle for {certificate_label(bundle.leaf)!r} has no root CA certificate; "
                f"OVOC needs {self.root_file!r}",
                hint="add the root certificate file from the CA's download to the input",
            )
        cert = _pem(bundle.fullchain if self.cert_includes_chain else [bundle.leaf])
        files = [
            Artifact(self.cert_file, cert, False),
            Artifact(self.key_file, _key_pem(key, self.key_format), True),
            Artifact(self.root_file, _pem([bundle.root]), False),
        ]
        for n, intermediate in enumerate(bundle.chain, start=1):
            name = self.intermediate_pattern.format(n=n)
            files.append(Artifact(name, _pem([intermediate]), False))
        return Artifacts(tuple(files))


@dataclass(frozen=True)
class SbcProfile:
    """Files for a Mediant SBC TLS Context: ``certificate.pem``, ``private_key.pem``,
    ``trusted_roots.pem``.

    ``certificate``: ``"leaf"`` (default; whether the upload may carry
    intermediates is undocumented) or ``"fullchain"``. ``trusted_roots``:
    ``"chain+root"`` (default: intermediates then root, concatenated PEM),
    ``"root"`` or ``"none"`` (no ``trusted_roots.pem``). ``key_format``: as
    for :class:`OvocProfile`; AudioCodes documents PKCS#1.
    """

    kind: ClassVar[str] = "sbc"
    certificate_file: ClassVar[str] = "certificate.pem"
    key_file: ClassVar[str] = "private_key.pem"
    trusted_roots_file: ClassVar[str] = "trusted_roots.pem"

    key_format: str = "pkcs1"
    certificate: Literal["leaf", "fullchain"] = "leaf"
    trusted_roots: Literal["chain+root", "root", "none"] = "chain+root"

    def __post_init__(self) -> None:
        if self.key_format not in _KEY_FORMATS:
            raise ValueError(f"key_format {self.key_format!r} is not one of pkcs1, pkcs8")
        if self.certificate not in ("leaf", "fullchain"):
            raise ValueError(f"certificate {self.certificate!r} is not one of leaf, fullchain")
        if self.trusted_roots not in ("chain+root", "root", "none"):
            raise ValueError(
                f"trusted_roots {self.trusted_roots!r} is not one of chain+root, root, none"
            )

    def _trusted(self, bundle: Bundle) -> list[x509.Certificate]:
        certs = list(bundle.chain) if self.trusted_roots == "chain+root" else []
        if self.trusted_roots != "none" and bundle.root is not None:
            certs.append(bundle.root)
        return certs

    def preflight(self, bundle: Bundle) -> list[Finding]:
        """Missing key (error); missing root when the profile uploads it (warning)."""
        findings = _key_missing(bundle, "the SBC")
        if self.trusted_roots != "none" and bundle.root is None:
            findings.append(_root_missing(
                bundle, "warning", "the SBC's trusted root store will not get it",
                "add the root certificate file to the input, unless the SBC already trusts "
                "that root"))
        return findings

    def render(self, bundle: Bundle) -> Artifacts:
        key = _require_key(bundle, "the SBC")
        cert = _pem(bundle.fullchain if self.certificate == "fullchain" else [bundle.leaf])
        files = [
            Artifact(self.certificate_file, cert, False),
            Artifact(self.key_file, _key_pem(key, self.key_format), True),
        ]
        trusted = self._trusted(bundle)
        if trusted:
            files.append(Artifact(self.trusted_roots_file, _pem(trusted), False))
        return Artifacts(tuple(files))


@runtime_checkable
class TargetProfile(Protocol):
    """The file set a device kind wants: its own preflight findings and its files.

    :class:`OvocProfile` and :class:`SbcProfile` are the two built in; a kind
    of a plugin may bring its own (any object with these two methods).
    """

    def preflight(self, bundle: Bundle) -> list[Finding]:
        """The findings this file set adds for ``bundle`` (errors stop a deploy)."""
        ...

    def render(self, bundle: Bundle) -> Artifacts:
        """Every file the device wants for ``bundle``."""
        ...


OVOC_PROFILE = OvocProfile()
SBC_PROFILE = SbcProfile()
_BUILT_IN: dict[str, OvocProfile | SbcProfile] = {"ovoc": OVOC_PROFILE, "sbc": SBC_PROFILE}
PROFILES: dict[str, TargetProfile] = dict(_BUILT_IN)


def profile_findings(bundle: Bundle, profile: TargetProfile,
                     findings: Sequence[Finding]) -> list[Finding]:
    """The general ``findings`` of ``bundle`` merged with ``profile``'s device findings.

    A device finding replaces the general ones of the same code (KEY_MISSING
    is a warning in general, an error for a device); errors come first, then
    warnings, then infos, each in the order found.
    """
    device = profile.preflight(bundle)
    codes = {f.code for f in device}
    merged = [*device, *(f for f in findings if f.code not in codes)]
    merged.sort(key=lambda f: ("error", "warning", "info").index(f.severity))
    return merged


@quietly
def render_target(bundle: Bundle, profile: TargetProfile) -> Artifacts:
    """Every file ``profile``'s device wants for ``bundle``.

    The key is converted to the profile's format. Raises PrivateKeyError
    when the bundle has no key. For OVOC, a bundle without the root raises
    CertificateError: EmsServerManager builds its keystore from root.crt,
    and an import that fails half-way on the appliance is the failure this
    tool exists to prevent. SBC trusted roots are written from what the
    bundle has (no ``trusted_roots.pem`` when it has nothing to trust).
    """
    return profile.render(bundle)


def profile_from_mapping(kind: str, mapping: Mapping[str, Any]) -> TargetProfile:
    """The ``kind`` (``ovoc`` / ``sbc``) profile with fields from ``mapping``.

    Keys may use ``-`` or ``_``. Raises ConfigError for an unknown kind, an
    unknown key, a value of the wrong type or an invalid value.
    """
    if kind not in _BUILT_IN:
        raise ConfigError(
            f"target profile kind {kind!r} is unknown",
            hint=f"use one of {', '.join(_BUILT_IN)}",
        )
    cls = type(_BUILT_IN[kind])
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for raw_key, value in mapping.items():
        key = str(raw_key).replace("-", "_")
        if key not in fields:
            raise ConfigError(
                f"{kind} profile setting {raw_key!r} is unknown",
                hint=f"use one of {', '.join(sorted(fields))}",
            )
        expected = bool if key == "cert_includes_chain" else str
        if not isinstance(value, expected):
            raise ConfigError(
                f"{kind} profile setting {raw_key!r} must be a {expected.__name__}, "
                f"not {value!r}",
                hint="fix the value in the inventory",
            )
        values[key] = value
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(
            f"{kind} profile: {exc}", hint="fix the value in the inventory"
        ) from exc
