"""The OVOC driver: stage the files over SFTP, ``su`` to root, walk EmsServerManager.

The job of the story, done by a program: the files of the ``ovoc`` profile
(``server.crt``, ``server.key``, ``root.crt``, ``ca1.crt``…) go into
``/home/acems/server_certs`` under temporary names and are renamed into
place; a PTY session as ``acems`` runs ``su -``, ``EmsServerManager``, and
picks Security → Server Certificate Updates → Import Server Certificates
from Certificate Authority (CA) by matching the labels on the screen (the
numbers are a fallback only), answers "Press Enter to continue" and the
keystore password prompt, and reads OVOC's verdict. A refusal is explained
from the staged files (:func:`inspect_staged`); the template in
:mod:`certfleet.drivers.base` verifies the served certificate and rolls
back (re-stage the previous files, import again) when needed.

The terminal is read as a person reads it: escape sequences (colours,
clear-screen, window titles) and carriage returns are dropped, and a screen
is acted on once the output has gone quiet, by what its last line asks: a
confirmation ("y"), a pager or "Press Enter" (Enter), a password prompt (the
keystore password, and only there), a menu (the entry whose label matches,
or the way back), root's shell prompt (done). Anything else is left
unanswered until the timeout, whose error carries the last lines of the
screen. The import's verdict is read from OVOC's own words (configurable in
:class:`OvocMenu`). Passwords are scrubbed from the transcript.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import posixpath
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    ConfigError,
    DeviceAuthError,
    DeviceConnectionError,
    DeviceRefusedError,
    DeviceTimeoutError,
    HostKeyError,
    InputError,
    RollbackError,
)
from ..pki.model import Bundle, Finding
from ..pki.profiles import OVOC_PROFILE, Artifact, Artifacts, OvocProfile, render_target
from .base import Backup, Driver, EventCallback
from .tlsprobe import Listener

if TYPE_CHECKING:
    import asyncssh

__all__ = [
    "MenuStep",
    "OvocDriver",
    "OvocMenu",
    "StagingReport",
    "diagnosis_line",
    "host_key_sha256",
    "inspect_staged",
]

_TMP_PREFIX = ".certfleet-"
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clear screen
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: the window title a shell prompt sets
    r"|\x1b[()*+][A-Za-z0-9]"  # character set selection
    r"|\x1b[=>78cDEHMNOZ]"  # keypad modes, save/restore cursor, reset
)
# An escape sequence cut at the end of a read: kept until the rest arrives.
_PARTIAL_ESC = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]{0,512}\x1b?|[()*+])?\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab and newline
# A menu entry: "11. Label", "11) Label", "11 - Label", "[11] Label", "(11) Label", "q. Quit".
_OPTION = re.compile(
    r"^[\[(]?\s*([0-9]{1,3}|[A-Za-z])\s*(?:[.):\]]|\s-|-)\s*((?:[^\W\d_]|[(\[]).*?)\s*$")
_PROMPT_END = re.compile(r"[:?>\]$#%][ \t]*$")
_SHELL_END = re.compile(r"[$#][ \t]*$")
NEEDS_PEM_KEY = "OVOC needs an unencrypted PEM key (PKCS#1, 'Apache compatible')"


@dataclass(frozen=True)
class MenuStep:
    """One menu choice: the entry whose text matches ``label``; ``number`` as a fallback."""

    label: str
    number: str | None = None


@dataclass(frozen=True)
class OvocMenu:
    """How EmsServerManager looks. Labels and numbers from the story; the rest [assumed].

    The prompt patterns are regular expressions searched, case-insensitively,
    in the last line with text on it once the screen has gone quiet (escape
    sequences removed). ``success`` and ``failure`` are searched in what the
    import printed. Every field can be overridden from the inventory for
    another firmware.

    * ``menu_prompt``: the question under a menu (with entries above it);
    * ``continue_prompt``: "Press Enter to continue", pagers ("-- More --"): answered
      with Enter;
    * ``confirm_prompt``: "Are you sure? (y/n)": answered with ``confirm_answer``
      ("yes" when the question offers yes/no);
    * ``password_prompt``: the only place the keystore password is ever typed
      (again when asked to confirm it);
    * ``back_labels``: the entry that leaves a menu (its key is read from the
      screen); ``back`` the key to type when no such entry is shown.
    """

    path: tuple[MenuStep, ...] = (
        MenuStep("Security"),
        MenuStep("Server Certificate Updates", "11"),
        MenuStep("Import Server Certificates from Certificate Authority (CA)", "3"),
    )
    command: str = "EmsServerManager"
    menu_prompt: str = r"[:>?\]][ \t]*$"
    continue_prompt: str = (
        r"\b(?:press|hit|type)\s+(?:the\s+)?[\[<(]?\s*(?:enter|return|any\s+key|a\s+key)\b"
        r"|-+\s*more\s*-+|^\s*\(?more\)?\s*(?:\(\d+%\))?\s*[:>]?\s*$"
    )
    confirm_prompt: str = (
        r"[(\[]\s*y(?:es)?\s*/\s*no?\s*[)\]]|\by(?:es)?/no?\b|\bare\s+you\s+sure\b"
        r"|\b(?:proceed|continue)\s*\?\s*$"
    )
    confirm_answer: str = "y"
    password_prompt: str = (
        r"^(?!.*\b(?:error|fail\w*|invalid|incorrect|wrong|mismatch|not\s+match|success\w*)\b)"
        r"(?:.*\bpass(?:word|phrase)\b.*[:>?\]][ \t]*$"
        r"|\s*(?:please\s+)?(?:enter|type|re-?enter|retype|re-?type|confirm|verify|repeat"
        r"|provide|input)\b.*\bpass(?:word|phrase)\b[^.!]*$"
        r"|\s*pass(?:word|phrase)\s+used\b[^.!]*$)"
    )
    success: tuple[str, ...] = (
        r"PKCS#12 file and JKS Keystore generated successfully",
        r"Imported files and generated PKCS#12 with JKS Keystore files",
    )
    failure: str = r"\b(?:error|failed|failure|fail|could\s+not|cannot|unable\s+to)\b"
    back_labels: str = (
        r"^(?:quit|exit|back|go\s+back|return|previous(?:\s+menu)?|main\s+menu|up)\b"
    )
    back: str = "q"

    def __post_init__(self) -> None:
        patterns = {"menu_prompt": self.menu_prompt, "continue_prompt": self.continue_prompt,
                    "confirm_prompt": self.confirm_prompt,
                    "password_prompt": self.password_prompt, "failure": self.failure,
                    "back_labels": self.back_labels}
        patterns.update({f"success[{i}]": p for i, p in enumerate(self.success)})
        for name, value in patterns.items():
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"menu {name} {value!r} is not a regular expression: {exc}") from exc
        if not self.path:
            raise ValueError("menu path must name at least one entry")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> OvocMenu:
        """A menu from inventory settings: ``labels`` and ``numbers`` (lists, same length)
        for the path, and any other field by name. Raises ConfigError."""
        values: dict[str, Any] = {}
        known = {"labels", "numbers", "command", "menu_prompt", "continue_prompt",
                 "confirm_prompt", "confirm_answer", "password_prompt", "success", "failure",
                 "back_labels", "back"}
        for raw_key, value in mapping.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise ConfigError(f"OVOC menu setting {raw_key!r} is unknown",
                                  hint=f"use one of {', '.join(sorted(known))}")
            values[key] = value
        labels = values.pop("labels", None)
        numbers = values.pop("numbers", None)
        if labels is not None or numbers is not None:
            default = cls()
            labels = list(labels) if labels is not None else [s.label for s in default.path]
            numbers = list(numbers) if numbers is not None else [None] * len(labels)
            if len(numbers) != len(labels):
                raise ConfigError(f"OVOC menu numbers {numbers!r} do not pair with labels "
                                  f"{labels!r}", hint="give one number (or \"\") per label")
            values["path"] = tuple(MenuStep(str(label), str(number) if number else None)
                                   for label, number in zip(labels, numbers, strict=True))
        if "success" in values:
            values["success"] = tuple(values["success"])
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"OVOC menu settings: {exc}",
                              hint="fix the menu settings in the inventory") from exc


def host_key_sha256(key: asyncssh.SSHKey) -> str:
    """``SHA256:...`` fingerprint as ssh-keygen -l prints it."""
    digest = hashlib.sha256(key.public_data).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# ---- staged files: what OVOC would say about them -------------------------------


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

    def to_dict(self) -> dict[str, Any]:
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
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from ..pki.checks import check_bundle
    from ..pki.model import spki_sha256

    findings: list[Finding] = []
    cert_name, key_name, root_name = profile.cert_file, profile.key_file, profile.root_file
    others = sorted(n for n in files if n not in {cert_name, key_name, root_name}
                    and not re.fullmatch(re.escape(profile.intermediate_pattern)
                                         .replace(r"\{n\}", r"\d+"), n))
    containers = [n for n in others if n.lower().endswith((".pfx", ".p12"))]

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


# ---- the terminal ----------------------------------------------------------------

Classify = Callable[[str], "tuple[str, str] | None"]


class _Screen:
    """A PTY session read as a screen: settle on prompts, type answers, keep a transcript.

    ``text`` is what the device drew, escape sequences and control characters
    removed, line ends as ``\\n`` and every secret replaced by ``********``.
    ``mark`` is where the output that follows the last answer begins.
    """

    def __init__(self, process: asyncssh.SSHClientProcess[str], secrets: list[str],
                 quiet: float = 0.3, newline: str = "\n") -> None:
        self._process = process
        self._secrets = [s for s in secrets if s]
        self._longest = max((len(s) for s in self._secrets), default=0)
        self.quiet = quiet
        self.newline = newline
        self.text = ""
        self.mark = 0
        self._pending = ""  # an escape sequence or CR cut at a read boundary

    def feed(self, chunk: str) -> None:
        data = self._pending + chunk
        self._pending = ""
        partial = _PARTIAL_ESC.search(data)
        if partial:
            data, self._pending = data[:partial.start()], data[partial.start():]
        if data.endswith("\r"):
            data, self._pending = data[:-1], "\r" + self._pending
        start = max(0, len(self.text) - self._longest)
        self.text += self.clean(data)
        if self._secrets:  # a secret echoed across two reads
            tail = self.text[start:]
            scrubbed = self._scrub(tail)
            if scrubbed != tail:
                self.text = self.text[:start] + scrubbed

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def clean(self, raw: str) -> str:
        text = _ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")
        return self._scrub(_CONTROL.sub("", text))

    def since_mark(self) -> str:
        return self.text[self.mark:]

    def last_lines(self, count: int = 10) -> list[str]:
        return [line for line in self.text.rstrip().split("\n") if line.strip()][-count:]

    def timeout_error(self, message: str) -> DeviceTimeoutError:
        screen = self.last_lines()
        return DeviceTimeoutError(
            f"{message}; last screen: " + " | ".join(line.strip() for line in screen),
            hint="the device asked something certfleet does not know, or is silent; "
            "adjust the menu settings for this firmware or raise the timeout",
            screen="\n".join(screen),
        )

    async def settle(
        self, classify: Classify, accept: Sequence[str], timeout: float, waiting_for: str,
        *, stuck: float | None = None,
    ) -> tuple[str, str]:
        """Wait until the output after the mark goes quiet on a screen ``classify`` names.

        ``classify(window)`` returns ``(kind, line)`` or None (still drawing).
        Screens of a kind in ``accept`` are returned; other kinds (a question
        certfleet does not answer here) keep waiting, for ``stuck`` seconds of
        silence at most. A generic screen (kind ending in ``?``) needs the full
        quiet time; a specific one a short one. Raises DeviceTimeoutError.
        """
        import asyncssh

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_output = loop.time()
        short = min(self.quiet, 0.02)
        while True:
            now = loop.time()
            state = classify(self.since_mark())
            wait = short if state is not None and not state[0].endswith("?") else self.quiet
            if state is not None and now - last_output >= wait:
                kind = state[0].rstrip("?")
                if kind in accept:
                    return kind, state[1]
                if stuck is not None and now - last_output >= stuck:
                    raise self.timeout_error(f"no {waiting_for} after {stuck:g} s")
            if now >= deadline:
                raise self.timeout_error(f"no {waiting_for} after {timeout:g} s")
            step = deadline - now  # the text changes only with output: wait for it
            if state is not None:
                elapsed = now - last_output
                if elapsed < wait:
                    step = min(step, wait - elapsed)
                elif stuck is not None:
                    step = min(step, max(stuck - elapsed, 0.01))
            try:
                chunk = await asyncio.wait_for(self._process.stdout.read(4096), step)
            except TimeoutError:
                continue
            except (OSError, asyncssh.Error) as exc:
                raise DeviceConnectionError(f"the SSH session ended: {exc}",
                                            hint="check the device and retry") from exc
            if not chunk:
                raise DeviceConnectionError(
                    f"the SSH session ended while waiting for {waiting_for}; last screen: "
                    + " | ".join(line.strip() for line in self.last_lines()),
                    hint="check the device and retry",
                )
            self.feed(chunk)
            last_output = loop.time()

    def send(self, line: str) -> None:
        """Type ``line`` and Enter; what follows is read from here on."""
        self.mark = len(self.text)
        self._process.stdin.write(line + self.newline)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _words(text: str) -> frozenset[str]:
    """The words of a label, plural 's' dropped: 'Certificates Update' ~ 'Certificate Updates'."""
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") else w
                     for w in re.findall(r"[a-z0-9#]+", text.casefold()))


def _prompt_shape(prompt: str) -> str:
    """A shell prompt without its digits and spaces: '[root@ovoc ~ 12]#' ~ '[root@ovoc ~ 13]#'."""
    return re.sub(r"[\d\s]+", "", prompt)


def _last_line(window: str) -> str:
    """The last line with something on it (where a prompt waits)."""
    for line in reversed(window.split("\n")):
        if line.strip():
            return line.rstrip()
    return ""


def menu_options(screen: str) -> list[tuple[str, str]]:
    """(key, label) of every menu entry on ``screen``.

    Entries look like ``11. Label``, ``11) Label``, `` 11 - Label``, ``[11] Label``,
    ``(11) Label`` or ``q. Quit``, one or more per line (columns apart by 3+ spaces).
    """
    options: list[tuple[str, str]] = []
    for line in screen.split("\n"):
        for cell in re.split(r"\t+|\s{3,}", line.strip()):
            match = _OPTION.match(cell)
            if match:
                options.append((match.group(1), match.group(2).strip()))
    return options


def _pick_option(screen: str, step: MenuStep) -> str | None:
    """The key of the entry labelled ``step.label`` on ``screen`` (see :func:`_match_option`)."""
    found = _match_option(screen, step)
    return found[1] if found else None


def _match_option(screen: str, step: MenuStep, *, fallbacks: bool = True
                  ) -> tuple[int, str] | None:
    """(how loosely it matched: 0 best, key) of the entry labelled ``step.label``.

    Tried in turn: the same text, a prefix ("Security" finds "Security Menu"),
    contained, all its words in the entry (plural or not), the same without
    its parenthesised parts ("... Authority (CA)" finds "... Authority"); then
    ``step.number``; last, the one entry whose words (two or more) are all in
    the label ("Import from CA").
    """
    options = [(key, _norm(text)) for key, text in menu_options(screen)]
    label = _norm(step.label)
    words = _words(step.label)
    core = _words(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", step.label))
    tests: tuple[Callable[[str], bool], ...] = (
        lambda t: t == label, lambda t: t.startswith(label), lambda t: label in t,
        lambda t: bool(words) and words <= _words(t),
        lambda t: bool(core) and core <= _words(t),
    )
    for tier, test in enumerate(tests):
        hits = [key for key, text in options if test(text)]
        if hits:
            return tier, hits[-1]
    if not fallbacks:
        return None
    if step.number is not None and any(key == step.number for key, _ in options):
        return len(tests), step.number
    inside = {key for key, text in options if len(_words(text)) >= 2 and _words(text) <= words}
    return (len(tests) + 1, inside.pop()) if len(inside) == 1 else None


def _back_option(screen: str, pattern: str) -> str | None:
    """The key of the menu's Quit/Back/Exit entry, if it shows one."""
    hits = [key for key, text in menu_options(screen)
            if re.search(pattern, text.strip(), re.IGNORECASE)]
    return hits[-1] if hits else None


# ---- the driver ------------------------------------------------------------------


class OvocDriver(Driver):
    """Deploys the ``ovoc`` file set to one OVOC appliance over SSH/SFTP.

    Arguments (all explicit, so that an inventory can build one):

    * ``name``: the device's name in messages; ``host``/``ssh_port``: where SSH listens;
    * ``user``/``password``: the SSH login (``acems``); ``client_keys``: key files instead;
    * ``su_user``/``su_password``: whom ``su`` becomes (``root``) and its password;
    * ``keystore_password``: the answer to EmsServerManager's password prompt;
    * ``known_hosts`` (a file) or ``host_key`` (an OpenSSH public key line or a
      ``SHA256:`` fingerprint): how the host key is verified; neither refuses;
    * ``staging_dir``: ``/home/acems/server_certs``; ``dir_mode``/``file_mode``: modes
      of the folder (when created or world-writable) and of the staged files;
    * ``listeners``: the TLS ports to verify (default ``host:443``);
    * ``profile``: the file names (:class:`~certfleet.pki.profiles.OvocProfile`);
    * ``menu``: labels, fallback numbers and prompts (:class:`OvocMenu`);
    * ``su_command``: ``su -`` by default (``{user}`` is replaced by ``su_user``);
    * ``shell_prompt``, ``su_prompt``, ``su_failure``: patterns (searched in the last
      line of a quiet screen; ``su_failure`` in all su printed) for the login shell's
      prompt, su's question and su's refusal;
    * ``settle_time``: how long the output must stay quiet before a screen that only
      looks like a prompt is answered; ``newline``: what Enter sends;
    * timeouts in seconds: ``connect_timeout``, ``prompt_timeout`` (each screen),
      ``import_timeout`` (OVOC's verdict), ``verify_timeout`` (new cert served).
    """

    kind = "ovoc"

    def __init__(
        self,
        name: str,
        host: str,
        *,
        ssh_port: int = 22,
        user: str = "acems",
        password: str | None = None,
        client_keys: Sequence[str] | None = None,
        su_user: str = "root",
        su_password: str | None = None,
        keystore_password: str | None = None,
        known_hosts: str | Path | None = None,
        host_key: str | None = None,
        staging_dir: str = "/home/acems/server_certs",
        dir_mode: int = 0o750,
        file_mode: int = 0o600,
        listeners: Sequence[Listener] | None = None,
        profile: OvocProfile = OVOC_PROFILE,
        menu: OvocMenu | None = None,
        su_command: str = "su - {user}",
        shell_prompt: str = r"[$#>%][ \t]*\Z",
        su_prompt: str = r"password[^\n]*:[ \t]*\Z",
        su_failure: str = (r"authentication failure|incorrect password|\bsorry\b"
                           r"|wrong password|su:\s*(?:failure|permission denied)"),
        settle_time: float = 0.3,
        newline: str = "\n",
        connect_timeout: float = 30.0,
        prompt_timeout: float = 60.0,
        import_timeout: float = 600.0,
        verify_timeout: float = 600.0,
        on_event: EventCallback | None = None,
    ) -> None:
        super().__init__(name, listeners if listeners is not None else [Listener(host, 443)],
                         on_event=on_event, verify_timeout=verify_timeout)
        if not staging_dir.startswith("/"):
            raise ConfigError(f"staging_dir {staging_dir!r} must be an absolute path",
                              hint="use e.g. /home/acems/server_certs")
        if host_key is not None and not (host_key.startswith("SHA256:")
                                         or len(host_key.split()) >= 2):
            raise ConfigError(
                f"host key pin {host_key!r} is neither 'SHA256:...' nor an OpenSSH key line",
                hint="pin the fingerprint ssh-keygen -lf prints, or the key line itself",
            )
        self.host = host
        self.ssh_port = ssh_port
        self.user = user
        self.password = password
        self.client_keys = list(client_keys) if client_keys else None
        self.su_user = su_user
        self.su_password = su_password
        self.keystore_password = keystore_password
        self.known_hosts = Path(known_hosts) if known_hosts is not None else None
        self.host_key = host_key
        self.staging_dir = staging_dir.rstrip("/") or "/"
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.profile = profile
        self.menu = menu or OvocMenu()
        self.su_command = su_command
        self.shell_prompt = shell_prompt
        self.su_prompt = su_prompt
        self.su_failure = su_failure
        self.settle_time = settle_time
        self.newline = newline
        for what, pattern in (("shell_prompt", shell_prompt), ("su_prompt", su_prompt),
                              ("su_failure", su_failure)):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{what} {pattern!r} is not a regular expression: {exc}",
                                  hint="fix the pattern") from exc
        self.connect_timeout = connect_timeout
        self.prompt_timeout = prompt_timeout
        self.import_timeout = import_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._screen: _Screen | None = None
        self._transcripts: list[str] = []
        self._renamed = False  # staged files were replaced
        self._imported = False  # an import of new files succeeded
        self.last_diagnosis: str | None = None  # why OVOC refused the last import
        self._dirty = False  # the shell may be inside a menu (after an error)
        self._menu_from = 0
        self._root_prompt: str | None = None  # the root shell's prompt line, as seen
        self._located = False  # the staging folder was checked against the SFTP home

    # ---- connection ------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        return [s for s in (self.password, self.su_password, self.keystore_password) if s]

    def _host_key_accepts(self, key: asyncssh.SSHKey) -> bool:
        import asyncssh

        fingerprint = host_key_sha256(key)
        if self.host_key is not None:
            if self.host_key.startswith("SHA256:"):
                return self.host_key.rstrip("=") == fingerprint
            try:
                pinned = asyncssh.import_public_key(self.host_key)
            except (asyncssh.KeyImportError, ValueError):
                return False
            return bool(pinned.public_data == key.public_data)
        if self.known_hosts is not None:
            try:
                known = asyncssh.read_known_hosts(str(self.known_hosts))
            except (OSError, ValueError):
                return False
            result = known.match(self.host, self.host, self.ssh_port)
            return any(k.public_data == key.public_data for k in result[0])
        return False

    async def _open(self) -> asyncssh.SSHClientConnection:
        import asyncssh

        if self.known_hosts is not None and not self.known_hosts.is_file():
            raise ConfigError(f"known_hosts file {str(self.known_hosts)!r} does not exist",
                              hint="give an existing file, or pin --host-key-sha256")
        driver = self
        seen: list[asyncssh.SSHKey] = []

        class Client(asyncssh.SSHClient):
            def validate_host_public_key(self, host: str, addr: str, port: int,
                                         key: asyncssh.SSHKey) -> bool:
                seen.append(key)
                return driver._host_key_accepts(key)

        options: dict[str, Any] = {}
        if self.client_keys is not None:
            options["client_keys"] = self.client_keys
        else:
            options["client_keys"] = None
            options["agent_path"] = None
        try:
            conn, _ = await asyncio.wait_for(
                asyncssh.create_connection(
                    Client, self.host, self.ssh_port, username=self.user,
                    password=self.password, known_hosts=([], [], []),
                    preferred_auth="publickey,keyboard-interactive,password",
                    connect_timeout=self.connect_timeout, **options,
                ),
                self.connect_timeout + 5,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            fingerprint = host_key_sha256(seen[-1]) if seen else "unknown"
            how = ("does not match the pinned key" if self.host_key
                   else f"is not in {str(self.known_hosts)!r}" if self.known_hosts
                   else "is not pinned")
            raise HostKeyError(
                f"SSH host key of {self.host}:{self.ssh_port} {how}: it is {fingerprint}",
                hint=f"if this is the right device, pin it with --host-key-sha256 {fingerprint} "
                "(or add it to the known_hosts file); if the key changed unexpectedly, "
                "find out why before going on",
                device=self.name, fingerprint=fingerprint,
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise DeviceAuthError(
                f"SSH login as {self.user!r} to {self.host}:{self.ssh_port} was refused",
                hint="check the user and the password (--password-env); OVOC lets only "
                "acems log in over SSH", device=self.name,
            ) from exc
        except (TimeoutError, asyncssh.misc.ChannelOpenError) as exc:
            raise DeviceTimeoutError(
                f"SSH to {self.host}:{self.ssh_port} did not answer within "
                f"{self.connect_timeout:g} s", hint="check the host, port and firewall",
                device=self.name,
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DeviceConnectionError(
                f"cannot connect to {self.host}:{self.ssh_port} over SSH: {reason}",
                hint="check the host, port and that SSH is enabled", device=self.name,
            ) from exc
        return conn

    async def _op(self, what: str, coro: Any) -> Any:
        """Run one SFTP operation with a timeout, mapping failures to DeviceErrors."""
        import asyncssh

        try:
            return await asyncio.wait_for(coro, self.prompt_timeout)
        except asyncio.CancelledError:
            # Cancelled midway (Ctrl-C, SIGTERM): the session may still be busy with the
            # operation, so the rollback opens a new one (see restore).
            self._dirty = True
            raise
        except TimeoutError as exc:
            self._dirty = True  # the same: a session stuck on this operation
            raise DeviceTimeoutError(f"{what} did not finish within {self.prompt_timeout:g} s",
                                     hint="check the device and retry", device=self.name) from exc
        except asyncssh.SFTPPermissionDenied as exc:
            raise DeviceRefusedError(f"{what}: permission denied ({exc.reason})",
                                     hint=f"check that {self.user!r} may write "
                                     f"{self.staging_dir!r}", device=self.name) from exc
        except asyncssh.SFTPError as exc:
            if isinstance(exc, asyncssh.SFTPConnectionLost):
                raise DeviceConnectionError(f"{what}: the connection dropped",
                                            hint="check the device and retry",
                                            device=self.name) from exc
            raise DeviceRefusedError(f"{what}: {exc.reason}", hint="check the staging folder",
                                     device=self.name) from exc
        except (OSError, asyncssh.Error) as exc:
            raise DeviceConnectionError(f"{what}: the connection dropped ({exc})",
                                        hint="check the device and retry",
                                        device=self.name) from exc

    async def connect(self) -> None:
        """SSH in as ``user``, open SFTP, and become ``su_user`` (checked with whoami)."""
        if self.keystore_password is None or len(self.keystore_password) < 6:
            raise ConfigError("the keystore password for OVOC's import prompt is missing "
                              "or shorter than 6 characters",
                              hint="set it with --keystore-password-env VAR (6+ characters)")
        if self.su_password is None:
            raise ConfigError(f"the password of {self.su_user!r} for su is missing",
                              hint="set it with --su-password-env VAR")
        await self._connect_all()

    async def _connect_all(self) -> None:
        await self._close_quietly()
        self._conn = await self._open()
        self._sftp = await self._op("starting SFTP", self._conn.start_sftp_client())
        await self._locate_staging_dir()
        await self._start_root_shell()

    async def _start_root_shell(self) -> None:
        import asyncssh

        assert self._conn is not None
        try:
            process = await asyncio.wait_for(
                self._conn.create_process(term_type="vt100", term_size=(132, 50),
                                          encoding="utf-8"),
                self.prompt_timeout,
            )
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise DeviceConnectionError(f"cannot open a shell on {self.host}: {exc}",
                                        hint="check that acems has a login shell",
                                        device=self.name) from exc
        if self._screen is not None:
            self._transcripts.append(self._screen.text)
        screen = self._screen = _Screen(process, self._secrets(), self.settle_time,
                                        self.newline)
        self._root_prompt = None
        shell = re.compile(self.shell_prompt, re.IGNORECASE)
        su_prompt = re.compile(self.su_prompt, re.IGNORECASE)
        su_failure = re.compile(self.su_failure, re.IGNORECASE)

        def at_shell(window: str) -> tuple[str, str] | None:
            line = _last_line(window)
            # "?": a banner line may end in $ or # too, so only a quiet one is a prompt
            return ("prompt?", line) if line and shell.search(line) else None

        def after_su(window: str) -> tuple[str, str] | None:
            line = _last_line(window)
            if su_failure.search(window):
                return "fail", line
            if line and su_prompt.search(line):
                return "password", line
            return at_shell(window)

        def is_target(prompt: str) -> bool:
            return (self.su_user == "root" and prompt.rstrip().endswith("#")) \
                or bool(re.search(rf"\b{re.escape(self.su_user)}@", prompt))

        await screen.settle(at_shell, ["prompt"], self.prompt_timeout, "shell prompt")
        # A shell that does not take the configured form ("su - root") may take a shorter one.
        forms = [self.su_command.format(user=self.su_user)]
        if self.su_user == "root":
            forms += ["su -", "su"]
        for form in dict.fromkeys(forms):
            screen.send(form)
            kind, line = await screen.settle(after_su, ["password", "fail", "prompt"],
                                             self.prompt_timeout, "su password prompt")
            if kind != "prompt" or is_target(line):
                break
        if kind == "password":
            screen.send(self.su_password or "")
            kind, line = await screen.settle(after_su, ["fail", "prompt", "password"],
                                             self.prompt_timeout, "shell prompt after su")
        if kind != "prompt":  # refused, or asked again (as sudo does after a wrong one)
            raise DeviceAuthError(f"su to {self.su_user!r} on {self.host} was refused "
                                  "(wrong password)",
                                  hint="check the password given with --su-password-env",
                                  device=self.name)
        self._root_prompt = line
        if is_target(line):
            return  # root's prompt ('#', or 'root@host'): no need to ask (or need whoami)
        before = len(screen.text)
        screen.send("whoami")
        kind, line = await screen.settle(self._classify, ["shell"], self.prompt_timeout,
                                         "whoami answer")
        answer = [text.strip() for text in screen.text[before:].split("\n")]
        if self.su_user not in answer:
            raise DeviceAuthError(f"su did not make {self.user!r} {self.su_user!r}",
                                  hint="check --su-user and the su command", device=self.name)

    async def _close_quietly(self) -> None:
        if self._screen is not None:
            self._transcripts.append(self._screen.text)
            self._screen = None
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # closing must not raise
                self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            try:
                self._conn.close()
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            except Exception:  # closing must not raise
                pass
            self._conn = None

    async def close(self) -> None:
        screen = self._screen
        if screen is not None:
            try:
                screen.send("exit")
                screen.send("exit")
                await asyncio.sleep(0)
            except Exception:  # closing must not raise
                pass
        await self._close_quietly()

    def transcript(self) -> str | None:
        parts = [*self._transcripts]
        if self._screen is not None:
            parts.append(self._screen.text)
        text = "\n".join(p for p in parts if p)
        for secret in self._secrets():
            text = text.replace(secret, "********")
        return text or None

    # ---- staging ---------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return posixpath.join(self.staging_dir, name)

    async def list_staging(self) -> list[tuple[str, int]] | None:
        """(name, size) of the regular files staged now; None when the folder is missing."""
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp
        try:
            entries = await self._op(f"listing {self.staging_dir!r}",
                                     sftp.readdir(self.staging_dir))
        except DeviceRefusedError as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                return None
            raise
        files = []
        for entry in entries:
            mode = entry.attrs.permissions
            if entry.filename in (".", "..") or (mode is not None and not stat.S_ISREG(mode)):
                continue
            files.append((entry.filename, int(entry.attrs.size or 0)))
        return sorted(files)

    async def download_staging(self) -> tuple[bool, dict[str, bytes]]:
        """(exists, files) of the staging folder, leaving out certfleet's temporary files."""
        assert self._sftp is not None
        listing = await self.list_staging()
        if listing is None:
            return False, {}
        files: dict[str, bytes] = {}
        for name, _size in listing:
            if name.startswith(_TMP_PREFIX):
                continue
            files[name] = await self._read(name)
        return True, files

    async def _read(self, name: str) -> bytes:
        assert self._sftp is not None
        sftp = self._sftp

        async def read() -> bytes:
            async with sftp.open(self._path(name), "rb") as handle:
                data: bytes = await handle.read()
                return data

        result: bytes = await self._op(f"downloading {name!r}", read())
        return result

    async def _exists(self, path: str) -> bool:
        import asyncssh

        assert self._sftp is not None
        try:
            await self._op(f"checking {path!r}", self._sftp.stat(path))
        except DeviceRefusedError as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                return False
            raise
        return True

    async def _locate_staging_dir(self) -> None:
        """Follow an SFTP server rooted in the user's home folder.

        When neither the staging folder nor its parent exists as given
        (``/home/acems/server_certs``) but the SFTP session starts in a home
        folder of another name, the same place under that home is used.
        """
        assert self._sftp is not None
        home_prefix = f"/home/{self.user}/"
        if not self.staging_dir.startswith(home_prefix) or self._located:
            return
        self._located = True
        parent = posixpath.dirname(self.staging_dir)
        if await self._exists(self.staging_dir) or await self._exists(parent):
            return
        home = str(await self._op("finding the SFTP home folder", self._sftp.realpath(".")))
        if not home.startswith("/") or home.rstrip("/") + "/" == home_prefix:
            return
        candidate = posixpath.join(home, self.staging_dir[len(home_prefix):])
        if await self._exists(posixpath.dirname(candidate)):
            self.emit("locate", "ok", f"SFTP starts in {home!r}: staging in {candidate!r}")
            self.staging_dir = candidate

    async def _ensure_staging_dir(self) -> None:
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp
        try:
            attrs = await self._op(f"checking {self.staging_dir!r}", sftp.stat(self.staging_dir))
        except DeviceRefusedError as exc:
            if not isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                raise
            await self._op(f"creating {self.staging_dir!r}",
                           sftp.mkdir(self.staging_dir,
                                      asyncssh.SFTPAttrs(permissions=self.dir_mode)))
            await self._chmod(self.staging_dir, self.dir_mode)
            return
        if attrs.permissions is not None and attrs.permissions & 0o002:
            # The story's chmod 777 lets any local user swap the key: tighten it.
            await self._chmod(self.staging_dir, self.dir_mode)

    async def _stage(self, files: Sequence[Artifact], remove_others: Sequence[str]) -> None:
        """Upload ``files`` under temporary names, rename them into place, remove others."""
        import asyncssh

        assert self._sftp is not None
        sftp = self._sftp
        await self._ensure_staging_dir()
        temps: list[tuple[str, str]] = []
        for artifact in files:
            tmp = self._path(f"{_TMP_PREFIX}{artifact.name}.tmp")
            await self._op(f"uploading {artifact.name!r}",
                           self._write(sftp, tmp, artifact.data))
            temps.append((tmp, self._path(artifact.name)))
        for tmp, final in temps:
            self._renamed = True
            try:
                await self._op(f"renaming into {final!r}", sftp.posix_rename(tmp, final))
            except DeviceRefusedError as exc:
                if not isinstance(exc.__cause__, asyncssh.SFTPOpUnsupported):
                    raise
                await self._remove(final)
                await self._op(f"renaming into {final!r}", sftp.rename(tmp, final))
        for name in remove_others:
            self._renamed = True
            await self._remove(self._path(name))

    async def _write(self, sftp: asyncssh.SFTPClient, path: str, data: bytes) -> None:
        import asyncssh

        attrs = asyncssh.SFTPAttrs(permissions=self.file_mode)
        # One write request (block_size=0: the files are small), so that a write cut
        # short leaves no background task behind.
        handle = await sftp.open(path, "wb", attrs, block_size=0)
        try:
            await handle.write(data)
        except BaseException:
            # Not closed here: a session stuck on the write would hold the close too.
            # It is dropped instead, and the rollback opens a new one (see restore).
            self._dirty = True
            raise
        await handle.close()
        await self._chmod(path, self.file_mode)

    async def _chmod(self, path: str, mode: int) -> None:
        """Set ``mode``; a server that cannot (no setstat) keeps the mode asked at creation."""
        import asyncssh

        assert self._sftp is not None
        try:
            await self._op(f"setting the mode of {path!r}", self._sftp.chmod(path, mode))
        except DeviceRefusedError as exc:
            if not isinstance(exc.__cause__, asyncssh.SFTPOpUnsupported):
                raise

    async def _remove(self, path: str) -> None:
        import asyncssh

        assert self._sftp is not None
        try:
            await self._op(f"removing {path!r}", self._sftp.remove(path))
        except DeviceRefusedError as exc:
            if not isinstance(exc.__cause__, asyncssh.SFTPNoSuchFile):
                raise

    async def _remove_temps(self) -> None:
        listing = await self.list_staging()
        for name, _ in listing or []:
            if name.startswith(_TMP_PREFIX):
                await self._remove(self._path(name))

    def _profile_names(self, names: Sequence[str]) -> list[str]:
        """Of ``names``, those the profile owns (cert, key, root, intermediates)."""
        pattern = re.escape(self.profile.intermediate_pattern).replace(r"\{n\}", r"\d+")
        owned = {self.profile.cert_file, self.profile.key_file, self.profile.root_file}
        return [n for n in names if n in owned or re.fullmatch(pattern, n)]

    def render(self, bundle: Bundle) -> Artifacts:
        """The profile's files for ``bundle``; what can be made when forced past errors."""
        from cryptography.hazmat.primitives import serialization

        try:
            return render_target(bundle, self.profile)
        except InputError:
            # Only reached when preflight errors were overridden (--force): stage what
            # exists and let OVOC answer, as the user asked.
            pem = serialization.Encoding.PEM
            files = [Artifact(self.profile.cert_file, bundle.leaf.public_bytes(pem))]
            if bundle.root is not None:
                files.append(Artifact(self.profile.root_file, bundle.root.public_bytes(pem)))
            for n, cert in enumerate(bundle.chain, 1):
                files.append(Artifact(self.profile.intermediate_pattern.format(n=n),
                                      cert.public_bytes(pem)))
            return Artifacts(tuple(files))

    # ---- hooks -----------------------------------------------------------------------

    def preflight(self, bundle: Bundle) -> list[Finding]:
        """The profile's findings (key and root present, key type) for OVOC."""
        return self.profile.preflight(bundle)

    async def backup(self) -> Backup:
        """Download what is staged now (server.key included)."""
        exists, files = await self.download_staging()
        return Backup(
            device=self.name,
            kind=self.kind,
            files=files,
            meta={"staging_dir": self.staging_dir, "staging_existed": exists,
                  "host": self.host},
            has_private_key=self.profile.key_file in files,
        )

    async def install(self, bundle: Bundle) -> None:
        """Stage the rendered files and run the import. Raises DeviceRefusedError."""
        artifacts = self.render(bundle)
        listing = await self.list_staging() or []
        stale = [n for n in self._profile_names([n for n, _ in listing])
                 if n not in artifacts.names()]
        self.emit("stage", "start", ", ".join(artifacts.names()))
        await self._stage(artifacts.files, stale)
        self.emit("stage", "ok", f"{len(artifacts)} file(s) in {self.staging_dir}")
        self.emit("import", "start")
        ok, verdict = await self._run_import()
        if not ok:
            if self._sftp is None:  # OVOC hung up after its verdict
                await self._connect_all()
            exists, staged = await self.download_staging()
            diagnosis = diagnosis_line(inspect_staged(staged, self.profile)) if exists else None
            self.last_diagnosis = diagnosis
            why = diagnosis or "OVOC gave no reason and the staged files look right"
            raise DeviceRefusedError(
                f"OVOC refused the import ({verdict}); {why}",
                hint="fix the files and rerun; `certfleet ovoc doctor` explains what is staged",
                device=self.name, diagnosis=diagnosis,
            )
        self._imported = True
        self.emit("import", "ok", verdict)

    async def restore(self, backup: Backup) -> None:
        """Put the backed-up files back and import them again."""
        if self._conn is None or self._conn.is_closed() or self._screen is None \
                or self._screen_dirty():
            await self._connect_all()
        if not self._renamed:
            await self._remove_temps()  # nothing was replaced: only clean up
            return
        files = [Artifact(n, d, n == self.profile.key_file) for n, d in backup.files.items()]
        listing = await self.list_staging() or []
        stale = [n for n, _ in listing if n not in backup.files and not n.startswith(_TMP_PREFIX)]
        await self._stage(files, self._profile_names(stale))
        await self._remove_temps()
        if self.profile.cert_file not in backup.files or not backup.has_private_key:
            if self._imported:
                raise RollbackError(
                    "the previous certificate cannot be imported again: no previous files "
                    f"were staged in {self.staging_dir!r}",
                    hint="import the previous certificate by hand in EmsServerManager",
                    device=self.name,
                )
            return  # the import failed, so OVOC still has its previous keystore
        ok, verdict = await self._run_import()
        if not ok:
            raise RollbackError(f"OVOC refused to import the previous files again ({verdict})",
                                hint="check the files in the backup and import them by hand",
                                device=self.name)

    def assume_changed(self) -> None:
        """Treat the device as changed by this session, so that restore() puts a backup from
        an earlier run back: the staged files are replaced and imported again."""
        self._renamed = True
        self._imported = True

    def _screen_dirty(self) -> bool:
        """Whether the shell may be stuck inside a menu (after a timeout)."""
        return self._dirty

    # ---- EmsServerManager -------------------------------------------------------------

    def _classify(self, window: str, *, loose_menu: bool = False,
                  menu_window: str | None = None) -> tuple[str, str] | None:
        """What the screen after the last answer asks, once it is quiet.

        ``confirm``, ``password``, ``continue`` (Enter), ``menu`` (entries and a
        prompt), ``shell`` (back at root's prompt), ``unknown?`` (a line that ends
        like a question nobody here answers), or None (still drawing). Entries
        are read from ``menu_window`` (the text since the last menu choice) when
        given. With ``loose_menu`` (while walking menus) entries with the cursor
        left after a line that is no entry are a menu too, whatever its prompt
        ends with.
        """
        line = _last_line(window)
        if not line:
            return None
        menu = self.menu
        flags = re.IGNORECASE
        asked = line
        if re.fullmatch(r"\s*[^\w\s]{1,3}\s*", line):
            # a bare '>' or ':' under the question: read them as one line
            above = _last_line(window[: window.rstrip().rfind("\n") + 1])
            asked = f"{above} {line.strip()}" if above else line
        if re.search(menu.confirm_prompt, asked, flags):
            return "confirm", asked
        if re.search(menu.password_prompt, asked, flags):
            return "password", asked
        if re.search(menu.continue_prompt, asked, flags):
            return "continue", asked
        root = _prompt_shape(self._root_prompt or "")
        at_root = bool(root) and _prompt_shape(line) == root
        options = menu_options(window if menu_window is None else menu_window)
        if options and not at_root and re.search(menu.menu_prompt, line, flags):
            return "menu", line
        if loose_menu and options and not at_root and not window.endswith("\n") \
                and not menu_options(line):
            return "menu?", line
        if at_root:
            return "shell", line
        if not root and _SHELL_END.search(line):
            return "shell?", line
        if _PROMPT_END.search(line):
            return "unknown?", line  # root's prompt is known: a '#' line here is something else
        return None

    async def _run_import(self) -> tuple[bool, str]:
        """Walk the menu to the import, answer it, and return (ok, OVOC's verdict line)."""
        screen = self._screen
        assert screen is not None
        menu = self.menu
        self._dirty = True
        self._menu_from = len(screen.text)
        screen.send(menu.command)
        index = 0
        while index < len(menu.path):
            step = menu.path[index]
            while True:
                kind, line = await screen.settle(
                    self._walking, ["menu", "continue", "confirm", "shell"],
                    self.prompt_timeout, f"menu with {step.label!r}", stuck=self.prompt_timeout)
                if kind == "menu":
                    break
                if kind == "shell":
                    self._dirty = False
                    raise DeviceRefusedError(
                        f"{menu.command} ended without showing {step.label!r}",
                        hint="check that the menu command runs as this user on the device",
                        device=self.name, screen="\n".join(screen.last_lines(20)))
                screen.send(self._answer(kind, line))
            window = screen.text[self._menu_from:]
            # The entry for this step, or, matched by its label at least as well, one of a
            # later step: a menu that opens deeper (straight in Security) is walked from there.
            found = [(hit[0], j, hit[1]) for j in range(index, len(menu.path))
                     if (hit := _match_option(window, menu.path[j], fallbacks=j == index))]
            key = None
            if found:
                _tier, index, key = min(found)
            if key is None:
                raise DeviceRefusedError(
                    f"EmsServerManager shows no entry {step.label!r}"
                    + (f" nor {step.number!r}" if step.number else ""),
                    hint="set the menu labels (or numbers) for this firmware in the inventory",
                    device=self.name, screen="\n".join(screen.last_lines(20)),
                )
            screen.send(key)
            self._menu_from = screen.mark
            index += 1
        verdict_from = screen.mark
        passwords = 0

        def importing(window: str) -> tuple[str, str] | None:
            state = self._classify(window)
            if passwords and (state is None or state[0] == "unknown?") \
                    and self._verdict(screen.text[verdict_from:], known_only=True)[1]:
                # OVOC said how it went and is busy (a silent restart) or waits unasked
                return "verdict?", _last_line(window)
            return state

        while True:
            timeout = self.import_timeout if passwords else self.prompt_timeout
            try:
                kind, line = await screen.settle(
                    importing, ["menu", "continue", "confirm", "password", "shell", "verdict"],
                    timeout, "import result" if passwords
                    else "'Press Enter to continue' or password prompt",
                    stuck=self.prompt_timeout)
            except DeviceConnectionError:
                if not self._verdict(screen.text[verdict_from:], known_only=True)[1]:
                    raise
                kind = "hung up"  # after its verdict: the verdict stands
            if kind in ("menu", "shell", "verdict", "hung up"):
                break
            if kind == "password":
                if passwords == 0:
                    verdict_from = screen.mark
                passwords += 1
                if passwords > 3:
                    raise DeviceRefusedError(
                        "OVOC keeps asking for the keystore password",
                        hint="check the keystore password (6+ characters) and the menu's "
                        "password prompt setting", device=self.name,
                        screen="\n".join(screen.last_lines(20)))
                screen.send(self.keystore_password or "")
            else:
                screen.send(self._answer(kind, line))
        ok, verdict = self._verdict(screen.text[verdict_from:])
        if kind == "hung up":
            await self._close_quietly()  # reopened when needed (restore)
            return ok, verdict
        if kind == "shell":
            self._dirty = False
            self._menu_from = len(screen.text)
            return ok, verdict
        try:
            await self._leave_menu()
        except (DeviceTimeoutError, DeviceConnectionError):
            # OVOC gave its verdict; a menu that will not let go does not change it
            # (the session is reopened before it is used again).
            self._dirty = True
        return ok, verdict

    def _answer(self, kind: str, line: str) -> str:
        """What to type at a confirmation or a 'Press Enter' screen (never a password)."""
        if kind == "confirm":
            answer = self.menu.confirm_answer
            if answer.casefold() in ("y", "yes") and re.search(r"yes\s*/\s*no", line, re.I):
                return "yes"
            return answer
        return ""

    def _verdict(self, output: str, *, known_only: bool = False) -> tuple[bool, str]:
        """(ok, the line that says so) from what the import printed; not ok when unclear
        (with ``known_only``, the line is then empty)."""
        lines = [line.strip() for line in output.split("\n")
                 if line.strip() and not menu_options(line)]
        for pattern in self.menu.success:
            for line in lines:
                if re.search(pattern, line, re.IGNORECASE):
                    return True, line
        for line in lines:
            if re.search(self.menu.failure, line, re.IGNORECASE):
                return False, line
        if known_only:
            return False, ""
        shown = " | ".join(lines[-3:]) if lines else "nothing"
        return False, f"no known verdict; OVOC printed: {shown}"

    def _walking(self, window: str) -> tuple[str, str] | None:
        screen = self._screen
        assert screen is not None
        return self._classify(window, loose_menu=True,
                              menu_window=screen.text[self._menu_from:])

    async def _leave_menu(self) -> None:
        """Answer 'Press Enter' and back out of every menu until the shell prompt."""
        screen = self._screen
        assert screen is not None
        self._menu_from = screen.mark
        # A menu that shows no way back: try the usual keys, keeping the one that worked.
        guesses = list(dict.fromkeys([self.menu.back, "q", "0", "x"]))
        guess, guessed_at = 0, None
        for _ in range(16):
            kind, line = await screen.settle(
                self._walking, ["menu", "continue", "confirm", "shell"], self.prompt_timeout,
                "menu or shell prompt", stuck=self.prompt_timeout)
            if kind == "shell":
                self._dirty = False
                self._menu_from = len(screen.text)
                return
            if kind == "menu":
                window = screen.text[self._menu_from:]
                key = _back_option(window, self.menu.back_labels)
                if key is None:
                    options = menu_options(window)
                    if guessed_at is not None and options[-len(guessed_at):] == guessed_at:
                        guess += 1  # the same menu again: that key did not work
                    guessed_at = options
                    key = guesses[guess % len(guesses)]
                screen.send(key)
                self._menu_from = screen.mark
            else:
                screen.send(self._answer(kind, line))
        raise DeviceTimeoutError("EmsServerManager did not return to the shell",
                                 hint="check the menu's quit key setting", device=self.name)

    # ---- doctor ------------------------------------------------------------------------

    async def inspect(self, hosts: Sequence[str] = ()) -> StagingReport:
        """Read-only: list and download the staging folder and say what OVOC would do."""
        if self._conn is None:
            self._conn = await self._open()
            self._sftp = await self._op("starting SFTP", self._conn.start_sftp_client())
            await self._locate_staging_dir()
        exists, files = await self.download_staging()
        listing = await self.list_staging() or []
        report = StagingReport(self.staging_dir, exists, listing)
        if not exists:
            report.findings = [_finding(
                "OVOC_STAGING_MISSING", f"{self.staging_dir} does not exist",
                "certfleet ovoc deploy creates it with safe permissions", self.staging_dir)]
        else:
            report.findings = inspect_staged(files, self.profile, hosts)
        return report

