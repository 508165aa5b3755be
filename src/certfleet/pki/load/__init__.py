"""Read certificates, private keys and CSRs from whatever a CA or a tool handed over.

The format is detected from the content, never from the file name: a
``.crt`` may be PEM or DER, a ``.pem`` may hold a chain, a key and a CSR in
any order, a ``.pfx`` may be AES, 3DES or RC2-40 protected. Public API:

- :func:`load_bytes` -- every object in one blob of bytes.
- :func:`load_files` -- every object in several files, in order.

Files that are not certificates are named as what they are (empty, a ZIP
archive, an HTML page, cut off, a folder, over 16 MiB); key-derivation costs
read from a file (PKCS#12 MAC and bags, encrypted PKCS#8 PBKDF2 and scrypt)
are capped before any derivation starts.

Both raise only :class:`~certfleet.errors.CertificateError` (nothing usable,
a corrupt block, an unreadable file) and
:class:`~certfleet.errors.PasswordError` (encrypted content and the password
is missing or wrong; ``reason`` is ``"missing"`` or ``"wrong"``).

The work is split by concept: :mod:`.sniff` tells what the bytes hold,
:mod:`.der` reads DER/BER shapes, :mod:`.containers` opens PKCS#7, PKCS#12
and JKS, :mod:`.limits` caps what a file may ask of the key derivation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ...errors import CertificateError
from ..model import LoadedObject
from ..quiet import quietly
from .common import PASSWORD_HINT
from .limits import MAX_KDF_ITERATIONS, MAX_SCRYPT_MEMORY
from .sniff import load_bytes

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_KDF_ITERATIONS",
    "MAX_SCRYPT_MEMORY",
    "PASSWORD_HINT",
    "load_bytes",
    "load_files",
]

#: Certificates, keys, chains and keystores are kilobytes; a CA bundle of every
#: public root is under 1 MiB. Larger input is the wrong file (an ISO, a backup).
MAX_INPUT_BYTES = 16 * 1024 * 1024


@quietly
def load_files(
    paths: Sequence[str | os.PathLike[str]], password: bytes | None = None
) -> list[LoadedObject]:
    """Every object of every file in ``paths``; ``source`` is each path as given.

    Raises CertificateError (unreadable file, nothing usable) and PasswordError.
    """
    objects: list[LoadedObject] = []
    for path in paths:
        name = os.fspath(path)
        if Path(name).is_dir():
            # Windows says "Permission denied" when a folder is read: name it plainly.
            raise CertificateError(
                f"cannot read {name!r}: it is a folder, not a file",
                hint="give the certificate, chain and key files inside it, one by one",
                path=name,
            )
        try:
            # At most one byte past the cap: a device like /dev/zero ends there too,
            # while a pipe (`check <(curl ...)`) is read like a file.
            with Path(name).open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CertificateError(
                f"cannot read {name!r}: {reason}",
                hint="check the path and that you may read the file",
                path=name,
            ) from exc
        if len(data) > MAX_INPUT_BYTES:
            raise CertificateError(
                f"{name!r} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB: too large "
                "for a certificate, key or keystore file",
                hint="check that the right file was given",
                path=name,
            )
        objects.extend(load_bytes(data, name, password))
    return objects
