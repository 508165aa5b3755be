"""Text from a device, a certificate, a target or a file, made safe to show.

Such text is data: an escape sequence in a certificate's CN must not change
the terminal's title or clear its screen, and a cell of a CSV file must not
become a spreadsheet formula. Every table and message that shows such text
goes through :func:`visible` (the CLI's ``text`` adds rich markup escaping on
top); every CSV cell through :func:`csv_cell`.
"""

from __future__ import annotations

import re

__all__ = ["csv_cell", "visible"]

# C0 controls but tab and line feed, DEL and the C1 controls (U+0080..U+009F: U+009B is
# a CSI on terminals that read them).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What makes a spreadsheet read a cell as a formula when it comes first.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def visible(value: object) -> str:
    """``str(value)`` with each control character written out as ``\\x1b``.

    Tab and line feed stay as they are; every other C0 control, DEL and the
    C1 controls are shown, never sent to the terminal.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def csv_cell(value: str) -> str:
    """A CSV cell's text: control characters shown (:func:`visible`) and, when it could be
    read as a formula (``=``, ``+``, ``-``, ``@`` first, also after leading blanks), a
    leading ``'``."""
    shown = visible(value)
    if shown.lstrip(" \t\r\n").startswith(_FORMULA_START) or shown.startswith(_FORMULA_START):
        return "'" + shown
    return shown
