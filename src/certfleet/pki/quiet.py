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
from typing import ParamSpec, TypeVar

__all__ = ["quiet_crypto_warnings", "quietly"]

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


def quietly(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``func`` inside :func:`quiet_crypto_warnings`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with quiet_crypto_warnings():
            return func(*args, **kwargs)

    return wrapper
