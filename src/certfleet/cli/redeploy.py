"""``--redeploy``, ``--ignore-finding CODE`` and ``--force`` (an alias of ``--redeploy``).

``--force`` used to mean two things: deploy where the certificate is served
already, and go past preflight errors. It now means the first only, and says
so once; going past an error takes ``--ignore-finding CODE``, and only for a
code the profile lets be ignored (see :func:`certfleet.pki.profiles.not_overridable`).
"""

from __future__ import annotations

import typer

from .common import err_console, fail

REDEPLOY_OPTION = typer.Option(
    False, "--redeploy", help="Deploy also where the current version is served already.")
FORCE_OPTION = typer.Option(False, "--force", help="An alias of --redeploy (only).")
IGNORE_OPTION = typer.Option(
    [], "--ignore-finding", metavar="CODE",
    help="Go past this preflight error code (repeatable); only codes that may be ignored.")

FORCE_NOTICE = ("note: --force is an alias of --redeploy; it no longer goes past preflight "
                "errors (pass --ignore-finding CODE for that)")


def known_codes() -> dict[str, str]:
    """Every finding code of the checks and the profiles, with what it means."""
    from ..pki.checks import FINDING_CODES as CHECKS
    from ..pki.profiles import FINDING_CODES as PROFILES

    return {code: text for code, (_, text) in {**CHECKS, **PROFILES}.items()}


def resolve(force: bool, redeploy: bool, ignore: list[str], *,
            json_out: bool = False) -> tuple[bool, list[str]]:
    """(redeploy, codes to ignore), the codes checked; a bad code exits 2 naming why."""
    from ..pki.profiles import not_overridable

    if force:
        err_console.print(FORCE_NOTICE, markup=False, highlight=False, soft_wrap=True)
    codes: list[str] = []
    known = known_codes()
    for raw in ignore:
        code = raw.strip().upper()
        if code not in known:
            fail(f"--ignore-finding {raw!r}: no such finding code",
                 "name a code a preflight reported (e.g. NAME_NOT_COVERED); the README lists "
                 "them", json_out=json_out)
        why = not_overridable(code)
        if why is not None:
            fail(f"--ignore-finding {code}: this finding cannot be ignored: {why}",
                 "fix the files (or the setting) it names", json_out=json_out)
        if code not in codes:
            codes.append(code)
    return force or redeploy, codes
