"""An emulation of OVOC's ``EmsServerManager`` text menu and its certificate import.

Three parts, usable apart:

* :func:`run_ems_manager` draws the menus from a data file
  (``ovoc_menus.json`` beside this module, or any dict of the same shape)
  over any :class:`MenuIO` and calls back for the import itself;
* :func:`process_import` does what OVOC does with the staged PEM files:
  checks them, builds a PKCS#12 file and a JKS keystore protected by the
  password answered at the prompt, or fails with the "SEM PKCS#12 file"
  error of the story;
* a relay (``python3 ems_emulator.py --relay SOCKET``) for tests behind a
  real OpenSSH daemon: the relay runs on the device's terminal as the ``su``
  target user with nothing but the standard library, and forwards the
  terminal to :class:`RelayEmsServer`, which runs the menu in the test
  process. That keeps the throwaway users away from the test's Python
  environment, which they may not be allowed to read.

This module imports only the standard library at top level so that it runs
as a plain script (the relay); cryptography and pyjks are imported where the
import is processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DEFAULT_MENUS",
    "KEYTOOL_PASSWORD_ERROR",
    "EmsFaults",
    "ImportResult",
    "MenuIO",
    "RelayEmsServer",
    "load_menus",
    "process_import",
    "relay_main",
    "run_ems_manager",
]

DEFAULT_MENUS = Path(__file__).with_name("ovoc_menus.json")

# Relay frames: one type byte, a 4-byte big-endian length, the payload.
_OUT, _ECHO_ON, _ECHO_OFF, _EXIT, _LINE, _EOF = b"o", b"e", b"n", b"x", b"l", b"z"


def load_menus(source: Path | str | Mapping[str, object] | None = None) -> dict[str, Any]:
    """The menu definition: the packaged file, another file, or a dict (copied)."""
    if source is None:
        source = DEFAULT_MENUS
    if isinstance(source, Mapping):
        copied: dict[str, Any] = json.loads(json.dumps(source))  # a deep copy
        return copied
    data = json.loads(Path(source).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "menus" not in data or "import" not in data:
        raise ValueError(f"menu file {str(source)!r} has no 'menus' and 'import' sections")
    return data


class MenuIO(Protocol):
    """A terminal as the menu sees it."""

    async def write(self, text: str) -> None: ...

    async def readline(self, echo: bool = True) -> str | None:
        """One line typed by the user (without its end), None at end of input."""
        ...


@dataclass
class EmsFaults:
    """Faults a test can inject into the menu.

    ``inject_prompt`` is shown (``inject_prompt_times`` times) between
    "Press Enter to continue" and the password prompt, as a firmware that
    asks one more question would. ``keystore_error`` makes every import
    fail the way keytool does on a keystore password it cannot take. ``hook``
    (when set) is awaited with a point name and the session's MenuIO at
    ``"menu"`` (inside the import dialogue, before the password prompt) and
    ``"import"`` (the import done, before its verdict is shown); when it
    returns False the dialogue ends as if input had ended.
    """

    inject_prompt: str | None = None
    inject_prompt_times: int = 1
    #: When set, every import fails with this line, as keytool's refusal of the
    #: keystore password reads (the lab's own import is not run).
    keystore_error: str | None = None
    #: Called with a menu's title before the menu is drawn (in the lab's thread): a test
    #: hook to cut the connection or cancel the client at the menu.
    on_menu: Callable[[str], None] | None = None
    hook: Callable[[str, MenuIO], Awaitable[bool]] | None = None


#: What keytool prints when it cannot open a PKCS#12 file under the password given.
KEYTOOL_PASSWORD_ERROR = (
    "keytool error: java.io.IOException: keystore password was incorrect")

ImportCallback = Callable[[str], Awaitable[tuple[bool, list[str]]]]


def _render_menu(menu: Mapping[str, Any]) -> str:
    rule = "=" * 64
    lines = ["", rule, f"  {menu['title']}", rule]
    for option in menu["options"]:
        lines.append(f"  {option['key']:>3}. {option['label']}")
    quit_option = menu.get("quit")
    if quit_option:
        lines.append(f"  {quit_option['key']:>3}. {quit_option['label']}")
    lines.append("-" * 64)
    return "\n".join(lines) + "\n"


async def run_ems_manager(
    io: MenuIO,
    on_import: ImportCallback,
    menus: Mapping[str, Any] | None = None,
    faults: EmsFaults | None = None,
) -> None:
    """Run the menu until the user quits the main menu or input ends."""
    menus = menus if menus is not None else load_menus()
    faults = faults if faults is not None else EmsFaults()
    await io.write("\n".join(menus.get("banner", [])) + "\n")
    stack = [str(menus["root_menu"])]
    while stack:
        menu = menus["menus"][stack[-1]]
        if faults.on_menu is not None:
            faults.on_menu(str(menu["title"]))
        await io.write(_render_menu(menu))
        await io.write(str(menus["prompt"]))
        line = await io.readline()
        if line is None:
            return
        choice = line.strip()
        if not choice:
            continue
        quit_option = menu.get("quit") or {}
        if choice.lower() == str(quit_option.get("key", "q")).lower():
            stack.pop()
            continue
        option = next((o for o in menu["options"] if str(o["key"]) == choice), None)
        if option is None:
            await io.write(str(menus["invalid"]).format(choice=choice) + "\n")
            continue
        if "menu" in option:
            stack.append(str(option["menu"]))
        elif option.get("action") == "import_ca":
            if not await _import_flow(io, on_import, menus, faults):
                return
        else:
            await io.write(str(menus["unavailable"]) + "\n" + str(menus["press_enter"]))
            if await io.readline() is None:
                return


async def _import_flow(
    io: MenuIO, on_import: ImportCallback, menus: Mapping[str, Any], faults: EmsFaults
) -> bool:
    """The import dialogue; False when input ended."""
    spec = menus["import"]
    await io.write("\n" + str(spec["title"]) + "\n" + "\n".join(spec.get("intro", [])) + "\n")
    await io.write(str(spec["continue_prompt"]))
    if await io.readline() is None:
        return False
    if faults.inject_prompt and faults.inject_prompt_times > 0:
        faults.inject_prompt_times -= 1
        await io.write(faults.inject_prompt)
        if await io.readline() is None:
            return False
    if faults.hook is not None and not await faults.hook("menu", io):
        return False
    await io.write(str(spec["password_prompt"]))
    password = await io.readline(echo=False)
    await io.write("\n")
    if password is None:
        return False
    if len(password) < 6:
        await io.write(str(spec["short_password"]) + "\n")
    else:
        await io.write("\n".join(spec.get("working", [])) + "\n")
        ok, lines = await on_import(password)
        if faults.hook is not None and not await faults.hook("import", io):
            return False
        await io.write("\n".join([*lines, *spec["success" if ok else "failure"]]) + "\n")
    await io.write(str(menus["press_enter"]))
    return await io.readline() is not None


# ---- the import itself --------------------------------------------------------


@dataclass
class ImportResult:
    """What one import did. ``reason`` says why it failed (the device never says)."""

    ok: bool
    reason: str = ""
    cert_pem: bytes = b""
    key_pem: bytes = b""
    chain_pem: bytes = b""
    pkcs12_path: Path | None = None
    jks_path: Path | None = None
    files: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # what the appliance prints about it


def _intermediate_names(staging: Path, pattern: str) -> list[str]:
    names = []
    for n in range(1, 100):
        name = pattern.format(n=n)
        if not (staging / name).is_file():
            break
        names.append(name)
    return names


def process_import(
    staging: Path, out_dir: Path, password: str, files: Mapping[str, str] | None = None
) -> ImportResult:
    """Check the staged PEM files and build ``sem.p12`` and ``sem.jks`` in ``out_dir``.

    Fails (``ok=False``, nothing written) when OVOC would: the certificate or
    key missing or unreadable, the key encrypted, or not the certificate's.
    """
    import jks
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    names = dict(load_menus()["files"]) if files is None else dict(files)
    cert_name, key_name = names["certificate"], names["private_key"]
    present = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []

    def fail(reason: str, output: list[str] | None = None) -> ImportResult:
        return ImportResult(False, reason, files=present, output=output or [])

    cert_file, key_file = staging / cert_name, staging / key_name
    if not cert_file.is_file():
        return fail(f"{cert_name} is missing")
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except ValueError:
        return fail(f"{cert_name} is not a PEM certificate")
    if not key_file.is_file():
        return fail(f"{key_name} is missing")
    key_data = key_file.read_bytes()
    if b"ENCRYPTED" in key_data:
        return fail(f"{key_name} is encrypted")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        return fail(f"{key_name} is not an unencrypted PEM private key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        return fail(f"{key_name} does not match {cert_name}")
    chain: list[x509.Certificate] = []
    for name in [*_intermediate_names(staging, names["intermediate_pattern"]), names["root"]]:
        path = staging / name
        if not path.is_file():
            continue
        try:
            chain.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except ValueError:
            return fail(f"{name} is not a PEM certificate")
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, dsa.DSAPrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return fail(f"{key_name} holds a key type PKCS#12 cannot carry")
    if not password.isascii():
        # OpenSSL writes the PKCS#12 file with the password's UTF-8 bytes, keytool reads it
        # as BMPString: the keystore step fails, as measured on OpenSSL 3 and Java 17.
        return fail("keytool cannot open the PKCS#12 file (non-ASCII keystore password)",
                    [KEYTOOL_PASSWORD_ERROR])
    # Legacy 3DES/SHA-1 protection, as an appliance's older Java expects.
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password.encode())
    )
    p12 = pkcs12.serialize_key_and_certificates(b"sem", key, cert, chain or None, encryption)
    pkcs8 = key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    entry = jks.PrivateKeyEntry.new("sem", [c.public_bytes(der) for c in [cert, *chain]], pkcs8)
    keystore = jks.KeyStore.new("jks", [entry])
    out_dir.mkdir(parents=True, exist_ok=True)
    p12_path, jks_path = out_dir / "sem.p12", out_dir / "sem.jks"
    p12_path.write_bytes(p12)
    jks_path.write_bytes(keystore.saves(password))
    pem = serialization.Encoding.PEM
    return ImportResult(
        True,
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        chain_pem=b"".join(c.public_bytes(pem) for c in chain if c.issuer != c.subject),
        pkcs12_path=p12_path,
        jks_path=jks_path,
        files=present,
    )


# ---- relay for a real terminal --------------------------------------------------


def _frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


def relay_main(socket_path: str) -> int:
    """Forward this terminal to a :class:`RelayEmsServer` (standard library only)."""
    import socket

    try:
        import termios
    except ImportError:  # pragma: no cover - the relay runs on the POSIX device only
        termios = None  # type: ignore[assignment]  # no termios off POSIX

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    stream = sock.makefile("rwb", buffering=0)
    tty = sys.stdin.isatty() and termios is not None
    saved = termios.tcgetattr(sys.stdin.fileno()) if tty else None

    def set_echo(on: bool) -> None:
        if saved is None:
            return
        attrs = termios.tcgetattr(sys.stdin.fileno())
        attrs[3] = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, attrs)

    try:
        while True:
            header = stream.read(5)
            if not header or len(header) < 5:
                return 1
            kind, size = header[:1], struct.unpack(">I", header[1:])[0]
            payload = stream.read(size) if size else b""
            if kind == _OUT:
                sys.stdout.write(payload.decode("utf-8"))
                sys.stdout.flush()
            elif kind in (_ECHO_ON, _ECHO_OFF):
                set_echo(kind == _ECHO_ON)
                line = sys.stdin.readline()
                set_echo(True)
                if not line:
                    stream.write(_frame(_EOF))
                else:
                    stream.write(_frame(_LINE, line.rstrip("\r\n").encode("utf-8")))
            elif kind == _EXIT:
                return 0
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, saved)
        sock.close()


class _RelayIO:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def write(self, text: str) -> None:
        self._writer.write(_frame(_OUT, text.encode("utf-8")))
        await self._writer.drain()

    async def readline(self, echo: bool = True) -> str | None:
        self._writer.write(_frame(_ECHO_ON if echo else _ECHO_OFF))
        await self._writer.drain()
        try:
            header = await self._reader.readexactly(5)
            payload = await self._reader.readexactly(struct.unpack(">I", header[1:])[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return payload.decode("utf-8") if header[:1] == _LINE else None


class RelayEmsServer:
    """Runs the menu for every relay that connects to a Unix socket (tests only).

    ``on_import(password)`` runs in this process, so it may read any staged
    file and swap the certificate a test's web server presents.
    """

    def __init__(
        self,
        socket_path: Path,
        on_import: ImportCallback,
        menus: Mapping[str, object] | None = None,
        faults: EmsFaults | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.on_import = on_import
        self.menus = load_menus(menus)
        self.faults = faults or EmsFaults()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="ems-relay")
        self._server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await run_ems_manager(_RelayIO(reader, writer), self.on_import, self.menus,
                                  self.faults)
            writer.write(_frame(_EXIT))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def start(self) -> RelayEmsServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._handle, path=str(self.socket_path)), self._loop
        )
        self._server = future.result(10)
        os.chmod(self.socket_path, 0o777)  # the su target user of the test connects to it
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._server = None
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    def __enter__(self) -> RelayEmsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``ems_emulator.py --relay SOCKET``: forward this terminal to a RelayEmsServer."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--relay":
        return relay_main(args[1])
    sys.stderr.write("usage: ems_emulator.py --relay SOCKET\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
