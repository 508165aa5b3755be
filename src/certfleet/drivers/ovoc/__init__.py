"""The OVOC driver, by concept.

* :mod:`.menu`: EmsServerManager's settings (:class:`OvocMenu`) and label matching; pure.
* :mod:`.terminal`: the PTY screen reader and what a quiet screen asks; pure but for reads.
* :mod:`.staging`: what OVOC would make of the staged files, and safe names; pure.
* :mod:`.config`: the driver's settings as frozen objects, and its progress state.
* :mod:`.ssh`: host key check, login, SFTP error mapping, ``su``.
* :mod:`.ems`: the EmsServerManager dialogue (walk, import, back out).
* :mod:`.sftp`: the staging folder over SFTP (bounded reads, upload and rename).
* :mod:`.probe`: a rehearsal up to the first change (:meth:`OvocDriver.probe`).
* :mod:`.driver`: :class:`OvocDriver`, the SSH/SFTP driver.

Every name that ``certfleet.drivers.ovoc`` offered as a module is still here.
"""

from __future__ import annotations

from .config import (
    OvocProgress,
    SshLogin,
    StagingSettings,
    SuSettings,
    TerminalSettings,
    Timeouts,
)
from .driver import OvocDriver
from .menu import (
    MenuStep,
    OvocMenu,
    _back_option,
    _match_option,
    _pick_option,
    menu_options,
)
from .probe import ProbeCheck, ProbeReport
from .ssh import host_key_sha256
from .staging import NEEDS_PEM_KEY, StagingReport, diagnosis_line, inspect_staged
from .terminal import _Screen

__all__ = [
    "NEEDS_PEM_KEY",
    "MenuStep",
    "OvocDriver",
    "OvocMenu",
    "OvocProgress",
    "ProbeCheck",
    "ProbeReport",
    "SshLogin",
    "StagingReport",
    "StagingSettings",
    "SuSettings",
    "TerminalSettings",
    "Timeouts",
    "_Screen",
    "_back_option",
    "_match_option",
    "_pick_option",
    "diagnosis_line",
    "host_key_sha256",
    "inspect_staged",
    "menu_options",
]
