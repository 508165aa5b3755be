"""Keep the parsing library's warnings off the user's terminal.

``cryptography`` warns, on every access, about certificates that real CAs
and Windows tools do issue: a serial number that is negative or zero, a
country name that is not two letters, a PKCS#12 file encoded in BER. Those
files still load and work; a Python warning with a source line in the
middle of ``certfleet check`` output would only alarm (and break the
"JSON only on stdout" promise when stderr is merged). What is worth
saying is said as a finding or in ``inspect`` output (the serial is shown
as it is); the warnings themselves are silenced where the pki layer parses.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

__all__ = ["certificate_notes", "quiet_crypto_warnings", "quietly", "silence_crypto_warnings"]

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def quiet_crypto_warnings() -> Iterator[None]:
    """Within the block, drop the warnings ``cryptography`` emits while parsing."""
    with warnings.catch_warnings():
        # CryptographyDeprecationWarning (a negative serial...) is a UserWarning, and
        # so are the name-attribute and BER warnings cryptography raises while parsing.
        # The pki layer warns about nothing on purpose: all of them can go.
        warnings.simplefilter("ignore", UserWarning)
        yield


#: The parser's own complaints about names (a CN over 64 characters, a country that is
#: not two letters), raised as plain UserWarnings on every access to the name.
_NAME_WARNING = r"Attribute's length must be"


def silence_crypto_warnings() -> None:
    """For the whole process: drop the warnings ``cryptography`` emits about odd
    certificates, wherever they are touched (a table, a JSON field, a check).

    :func:`quiet_crypto_warnings` covers the parsing calls of the pki layer, but a
    certificate warns again each time its serial or its names are read, long after
    it was loaded, from threads and asyncio tasks where ``catch_warnings`` (one
    global state) cannot be scoped safely. The command line installs this once;
    the filters go first, so ``-W default`` or ``PYTHONWARNINGS`` do not bring the
    source lines back. What is worth saying is said by :func:`certificate_notes`.
    """
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    warnings.filterwarnings("ignore", message=_NAME_WARNING, category=UserWarning)


#: Upper bounds of RFC 5280 (Appendix A, ub-*) for the name attributes certificates
#: carry, in characters.
_NAME_BOUNDS = {"2.5.4.3": ("CN", 64), "2.5.4.10": ("O", 64), "2.5.4.11": ("OU", 64),
                "2.5.4.7": ("L", 128), "2.5.4.8": ("ST", 128)}


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def certificate_notes(cert: Any) -> list[str]:
    """What ``cryptography`` would warn about in ``cert``, in certfleet's words: a serial
    that is not positive, a name attribute longer than RFC 5280 allows. Never raises."""
    notes: list[str] = []
    with _no_warnings():
        try:
            serial = cert.serial_number
        except ValueError:
            serial = 1
        if serial < 0:
            notes.append("serial number is negative (RFC 5280 requires positive)")
        elif serial == 0:
            notes.append("serial number is zero (RFC 5280 requires positive)")
        for where in ("subject", "issuer"):
            try:
                name = getattr(cert, where)
                attributes = list(name)
            except ValueError:
                continue
            for attribute in attributes:
                bound = _NAME_BOUNDS.get(attribute.oid.dotted_string)
                value = attribute.value
                if bound is not None and isinstance(value, str) and len(value) > bound[1]:
                    notes.append(f"{where} {bound[0]} is {len(value)} characters (RFC 5280 "
                                 f"allows {bound[1]})")
    return notes


def quietly(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``func`` inside :func:`quiet_crypto_warnings`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with quiet_crypto_warnings():
            return func(*args, **kwargs)

    return wrapper
