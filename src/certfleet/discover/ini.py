"""What discovery reads from an SBC's INI file: TLS contexts, SIP interfaces, the web's context.

The table, column and parameter names are data, in this one module, as the
OVOC menu labels are. ``TLSContexts`` (``Name``) is the table certfleet
already reads. The others are assumptions after the AudioCodes INI file as we
know it (the SIP Interfaces table ``SIPInterface`` with its ``TLSContext``
and ``TLSMutualAuthentication`` columns, bound to an IP interface of
``InterfaceTable`` by ``NetworkInterface``; the web server's TLS context as
a parameter): check them against the User's Manual of your firmware, and add
the names it uses to the tuples below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["IniView", "SipInterface", "read_ini"]

#: The SIP Interfaces table and its columns.
SIP_INTERFACE_TABLES = ("SIPInterface",)
SIP_NAME_COLUMNS = ("InterfaceName",)
SIP_NETWORK_COLUMNS = ("NetworkInterface",)
SIP_TLS_PORT_COLUMNS = ("TLSPort",)
SIP_CONTEXT_COLUMNS = ("TLSContext", "TLSContextName")
SIP_MUTUAL_COLUMNS = ("TLSMutualAuthentication",)
#: The IP interfaces table: an interface's name and address.
IP_INTERFACE_TABLES = ("InterfaceTable",)
IP_NAME_COLUMNS = ("InterfaceName",)
IP_ADDRESS_COLUMNS = ("IPAddress",)
#: The TLS contexts table (name per index).
TLS_CONTEXT_TABLES = ("TLSContexts",)
TLS_CONTEXT_NAME_COLUMNS = ("Name",)
#: The parameter naming the TLS context of the web server (management HTTPS).
WEB_CONTEXT_PARAMETERS = ("WebTLSContext", "HTTPSTLSContext", "TLSContextForWeb")

_SECTION = re.compile(r"^\[\s*(\\?)\s*([A-Za-z0-9_ ]+?)\s*\]$")
_ROW = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s+(\d+)\s*=\s*(.*?);?\s*$")
_PARAM = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class SipInterface:
    """One SIP interface: its name, address (when the INI says), TLS port, context, mTLS."""

    name: str
    address: str | None
    tls_port: int
    context: str | None
    mutual: bool


@dataclass(frozen=True)
class IniView:
    contexts: dict[int, str]
    sip_interfaces: list[SipInterface]
    web_context: str | None

    def context_index(self, name: str | None) -> int | None:
        if name is None:
            return None
        if name.isdigit() and int(name) in self.contexts:
            return int(name)
        return next((i for i, n in self.contexts.items() if n == name), None)


def _values(text: str) -> list[str]:
    out: list[str] = []
    for part in re.findall(r'"[^"]*"|[^,]+', text):
        out.append(part.strip().strip('"'))
    return out


def _tables(ini: str) -> tuple[dict[str, list[dict[str, str]]], dict[str, str]]:
    """Every table as a list of rows (column -> value), and every plain parameter."""
    tables: dict[str, list[dict[str, str]]] = {}
    params: dict[str, str] = {}
    current: str | None = None
    columns: list[str] = []
    for raw in ini.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        section = _SECTION.match(line)
        if section:
            current = None if section.group(1) else section.group(2).replace(" ", "")
            columns = []
            continue
        if line.upper().startswith("FORMAT"):
            _, _, rest = line.partition("=")
            columns = [c.strip() for c in rest.rstrip(";").split(",")]
            columns = [c.split("_", 1)[1] if "_" in c else c for c in columns]
            continue
        row = _ROW.match(line)
        if row and current is not None and row.group(1) == current and columns:
            values = _values(row.group(3))
            cells = dict(zip(columns, values, strict=False))
            cells["Index"] = row.group(2)
            tables.setdefault(current, []).append(cells)
            continue
        param = _PARAM.match(line)
        if param:
            params[param.group(1)] = param.group(2).strip('"')
    return tables, params


def _pick(row: dict[str, str], names: tuple[str, ...]) -> str | None:
    return next((row[n] for n in names if n in row), None)


def read_ini(ini: str) -> IniView:
    """The contexts, SIP interfaces and web context an INI file names (missing: empty)."""
    tables, params = _tables(ini)
    contexts: dict[int, str] = {}
    for table in TLS_CONTEXT_TABLES:
        for row in tables.get(table, []):
            index = row.get("Index", "")
            if index.isdigit():
                contexts[int(index)] = _pick(row, TLS_CONTEXT_NAME_COLUMNS) or index
    addresses: dict[str, str] = {}
    for table in IP_INTERFACE_TABLES:
        for row in tables.get(table, []):
            name, address = _pick(row, IP_NAME_COLUMNS), _pick(row, IP_ADDRESS_COLUMNS)
            if name and address:
                addresses[name] = address
    interfaces: list[SipInterface] = []
    for table in SIP_INTERFACE_TABLES:
        for row in tables.get(table, []):
            port = _pick(row, SIP_TLS_PORT_COLUMNS) or "0"
            if not port.isdigit() or not 0 < int(port) < 65536:
                continue
            network = _pick(row, SIP_NETWORK_COLUMNS)
            interfaces.append(SipInterface(
                name=_pick(row, SIP_NAME_COLUMNS) or f"sip-{port}",
                address=addresses.get(network) if network else None,
                tls_port=int(port),
                context=_pick(row, SIP_CONTEXT_COLUMNS),
                mutual=(_pick(row, SIP_MUTUAL_COLUMNS) or "0") not in ("0", "", "-1"),
            ))
    web = next((params[p] for p in WEB_CONTEXT_PARAMETERS if p in params), None)
    return IniView(contexts, interfaces, web)
