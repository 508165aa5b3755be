"""``certfleet discover``: find the devices of an estate and write its inventory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import console, err_console, fail, handle_errors, print_json

if TYPE_CHECKING:
    from ..discover import Estate

TARGETS_ARGUMENT = typer.Argument(
    ..., help="Hosts, host:ports or CIDR ranges (10.0.1.0/24, 10.0.1.0/24:443,5061); "
    "without ports: 443, 5061, 22 and --port.")
PORT_OPTION = typer.Option([], "--port", min=1, max=65535,
    help="Another port for targets without ports "
    "(repeatable).")
PINS_OPTION = typer.Option(
    None, "--pins-from",
    help="A previous discovery's inventory: hosts whose certificate or host key "
    "matches one of its pins are proven.")
OUT_OPTION = typer.Option(None, "--out", help="Write the inventory here "
    "(never over an existing file without --force).")


def _password(var: str | None, flag: str) -> str | None:
    import os

    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        fail(f"{flag} {var}: the variable is not set or empty",
             f"export {var}=... first, or leave {flag} out to discover without logging in")
    return value


def next_steps(estate: Estate, out: Path | None, targets: list[str]) -> list[str]:
    """What to do with the inventory, in order."""
    import shlex

    where = shlex.quote(str(out)) if out is not None else "certfleet.toml"
    steps = [f"review the pins in {where}: compare each fingerprint with its device"]
    if any(not d.logged_in for d in estate.devices):
        steps.append("read the TLS contexts with credentials, to proven hosts only: certfleet "
                     f"discover {' '.join(shlex.quote(t) for t in targets)} --pins-from "
                     f"{where} --sbc-user Admin --sbc-password-env VAR --ssh-password-env VAR "
                     "--out certfleet.toml")
    for cert in estate.certificates:
        steps.append(f"store what the devices serve today, with its key: certfleet adopt "
                     f"{cert.name} last-year.pfx --password-env VAR -i {where}")
    steps.append(f"rehearse on every device, changing nothing: certfleet plan --probe -i {where}")
    return steps


def _print(estate: Estate, out: Path | None, targets: list[str]) -> None:
    def say(line: str, style: str = "") -> None:
        console.print(line, style=style or None, markup=False, highlight=False, soft_wrap=True)

    say(f"probed {estate.probed:,} endpoints; answered: "
        f"{sum(len(d.listeners) for d in estate.devices) + len(estate.unmanaged)} listeners "
        f"on {len(estate.devices)} devices, {len(estate.unmanaged)} unmanaged")
    if estate.silent:
        detail = ", ".join(f"{n:,} {what}" for what, n in sorted(estate.silent.items(),
                                                               key=lambda i: -i[1]))
        say(f"{sum(estate.silent.values()):,} endpoints did not answer ({detail})")
    for device in estate.devices:
        login = ("logged in" if device.logged_in else "pin proven, not logged in"
                 if device.proven else "not logged in (no pin proves it)")
        say(f"  {device.kind:<4} {device.name}: {', '.join(device.addresses)}; "
            f"{len(device.listeners)} listeners; certificate {device.certificate or '-'}; "
            f"{login}")
    for item in estate.unmanaged:
        what = item.get("subject") or item.get("ssh_banner")
        say(f"  unmanaged {item['host']}:{item['port']}: {what}")
    if estate.trust_on_first_use:
        say(f"TRUST ON FIRST USE: credentials were sent to {len(estate.credentials_sent_to)} "
            "endpoints without a pin proving them: " + ", ".join(estate.credentials_sent_to),
            "bold red")
    if out is not None:
        say(f"wrote {out}")
    say("Next steps:")
    for number, step in enumerate(next_steps(estate, out, targets), 1):
        say(f"  {number}. {step}")


def register(app: typer.Typer) -> None:
    @app.command("discover")
    @handle_errors
    def discover_command(
        targets: list[str] = TARGETS_ARGUMENT,
        port: list[int] = PORT_OPTION,
        sbc_user: str = typer.Option("Admin", "--sbc-user", help="The SBCs' REST user."),
        sbc_password_env: str | None = typer.Option(
            None, "--sbc-password-env", metavar="VAR",
            help="Variable holding the SBCs' REST password (sent to proven hosts only)."),
        ssh_user: str = typer.Option("acems", "--ssh-user", help="OVOC's SSH user."),
        ssh_password_env: str | None = typer.Option(
            None, "--ssh-password-env", metavar="VAR",
            help="Variable holding OVOC's SSH password (sent to proven hosts only)."),
        pins_from: Path | None = PINS_OPTION,
        trust_on_first_use: bool = typer.Option(
            False, "--trust-on-first-use",
            help="Send the credentials to every recognised host, proven or not (said loudly)."),
        concurrency: int = typer.Option(256, "--concurrency", min=1, max=4096,
                                        help="Probes at once."),
        timeout: float = typer.Option(2.0, "--timeout", min=0.1, max=120,
                                      help="Seconds per probe."),
        out: Path | None = OUT_OPTION,
        force: bool = typer.Option(False, "--force", help="Overwrite --out; discover ranges "
                                   "larger than a /16."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON only, on stdout."),
    ) -> None:
        """Find an estate's SBCs, OVOC and TLS listeners, read-only; write its inventory.

        The commented inventory holds the pins seen (review them).
        A password is sent only to a host whose certificate or SSH host key matches a pin
        of --pins-from, or with --trust-on-first-use. Exit code: 0 done, 2 bad input.
        """
        import asyncio
        import datetime as dt

        from ..discover import Credentials, Pins, discover, read_pins, render_toml
        from ..fsutil import write_file_atomic

        if pins_from is not None and trust_on_first_use:
            fail("--pins-from and --trust-on-first-use exclude each other",
                 "choose one: pins from a reviewed inventory, or trust on first use")
        if out is not None and out.exists() and not force:
            fail(f"--out {out} exists; discover never writes over an inventory",
                 "choose another --out FILE, or pass --force to replace it")
        creds = Credentials(
            sbc_user=sbc_user, sbc_password=_password(sbc_password_env, "--sbc-password-env"),
            sbc_password_env=sbc_password_env, ssh_user=ssh_user,
            ssh_password=_password(ssh_password_env, "--ssh-password-env"),
            ssh_password_env=ssh_password_env)
        pins = read_pins(pins_from) if pins_from is not None else Pins(
            trust_on_first_use=trust_on_first_use)
        if not json_out and trust_on_first_use:
            err_console.print("[bold red]--trust-on-first-use[/]: credentials go to every "
                              "recognised host, whatever its certificate or host key")
        estate = asyncio.run(discover(list(targets), extra_ports=list(port), pins=pins,
                                      credentials=creds, concurrency=concurrency,
                                      timeout=timeout, force=force))
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if out is not None:
            write_file_atomic(out, render_toml(estate, when=when).encode())
        if json_out:
            data = estate.to_dict()
            data["inventory"] = str(out) if out is not None else None
            data["inventory_toml"] = render_toml(estate, when=when)
            data["next_steps"] = next_steps(estate, out, list(targets))
            print_json(data)
            return
        if out is None:
            console.print(render_toml(estate, when=when), markup=False, highlight=False,
                          soft_wrap=True)
        _print(estate, out, list(targets))
